//! Registry errors: what went wrong, on which request (method and URL, query redacted), with
//! the registry's own error code and message, and whether trying again can help.

use std::fmt;
use std::time::Duration;

use url::Url;

/// One entry of the OCI error envelope `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    pub detail: Option<String>,
}

/// Text the registry sends (error code, message, detail, a non-JSON body) is cut to this many
/// characters before it goes into an error message.
pub const ERROR_TEXT_CHARS_MAX: usize = 300;

/// Registry-supplied text made fit for a one-line error (see [`crate::text::one_line`]).
fn clean_text(s: &str) -> String {
    crate::text::one_line(s, ERROR_TEXT_CHARS_MAX)
}

impl RegistryErrorBody {
    /// Parses the first entry of the envelope. Anything that is not the envelope (HTML, plain
    /// text, truncated JSON) becomes the message. Every field is cleaned for a one-line error
    /// (see [`ERROR_TEXT_CHARS_MAX`]): the registry is not trusted to send printable text.
    pub fn parse(body: &[u8]) -> RegistryErrorBody {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let first = v.get("errors").and_then(|e| e.get(0));
            if let Some(first) = first {
                let text = |k: &str| match first.get(k) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(clean_text(s)),
                    Some(other) => Some(clean_text(&other.to_string())),
                };
                return RegistryErrorBody {
                    code: text("code"),
                    message: text("message"),
                    detail: text("detail"),
                };
            }
        }
        let text = clean_text(&String::from_utf8_lossy(body));
        RegistryErrorBody {
            code: None,
            message: (!text.trim().is_empty()).then_some(text),
            detail: None,
        }
    }
}

/// Transport failures (no HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    /// No byte moved in either direction for the stall timeout.
    Stalled,
    /// The connection closed or broke mid-request or mid-response.
    Broken,
    Other,
}

/// Everything the registry client can fail with. Messages are lowercase, name the request, and
/// say what to do next; they never carry credentials or upload-URL query strings.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {message}")]
    Transport {
        method: String,
        url: String,
        kind: TransportKind,
        message: String,
    },
    #[error("{method} {url}: {status}{}", describe(code, message))]
    Status {
        method: String,
        url: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
        detail: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error(
        "repository {repository} does not exist in registry {registry}: create it (aws ecr create-repository --repository-name {repository}) or add a repository creation template with CREATE_ON_PUSH that covers it"
    )]
    RepositoryMissing {
        repository: String,
        registry: String,
    },
    #[error(
        "authentication to {registry} failed ({status}{}) with credentials from {source_desc}: refresh them (e.g. aws ecr get-login-password, docker login) and try again",
        describe(code, message)
    )]
    Auth {
        registry: String,
        source_desc: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    #[error("credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
    #[error(
        "tag {tag} already exists in repository {repository} and the repository is immutable: push under a new tag{}",
        describe(&None, message)
    )]
    ImmutableTag {
        repository: String,
        tag: String,
        message: Option<String>,
    },
    #[error("the registry refused the manifest ({media_type}): {reason}")]
    ManifestRejected {
        media_type: String,
        status: u16,
        code: Option<String>,
        reason: String,
    },
    #[error("manifest is {size} bytes, more than the registry limit of {max} bytes")]
    ManifestTooLarge { size: usize, max: usize },
    #[error(
        "{method} {url}: digest {got} where {expected} was expected: the bytes changed on the way or at rest"
    )]
    DigestMismatch {
        method: String,
        url: String,
        expected: String,
        got: String,
    },
    /// TLS refused the server's certificate: no retry can help until the trust is fixed.
    #[error("{method} {url}: the server's TLS certificate is refused ({reason}): {advice}")]
    Certificate {
        method: String,
        url: String,
        reason: String,
        advice: String,
    },
    #[error("{method} {url}: {message}")]
    Protocol {
        method: String,
        url: String,
        message: String,
    },
    #[error("invalid image reference {0:?}: expected HOST/REPOSITORY[:TAG|@DIGEST]")]
    InvalidReference(String),
    #[error("registry client setup: {0}")]
    Config(String),
}

fn describe(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl RegistryError {
    /// Whether the same request may succeed later: connection failures, stalls, 408, 429, 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => {
                matches!(*status, 408 | 429) || (500..=599).contains(status)
            }
            _ => false,
        }
    }

    /// Whether the registry, its token service, a credential helper or a proxy refused the
    /// credentials sent (or their absence): only other credentials can change the answer.
    pub fn is_refusal(&self) -> bool {
        match self {
            RegistryError::Auth { .. } | RegistryError::Credentials { .. } => true,
            RegistryError::Status { status, .. } => matches!(*status, 401 | 403 | 407),
            _ => false,
        }
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. }
            | RegistryError::Auth { status, .. }
            | RegistryError::ManifestRejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry's error code (`BLOB_UPLOAD_UNKNOWN`, `DENIED`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            RegistryError::Status { code, .. }
            | RegistryError::Auth { code, .. }
            | RegistryError::ManifestRejected { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// `Retry-After` of a 429/503, when the registry sent one (ECR does not).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The upload session is gone (finished, cancelled, expired, or poisoned by a cut PATCH):
    /// the blob must start again in a new session (`start_upload`).
    pub fn is_upload_gone(&self) -> bool {
        matches!(
            self,
            RegistryError::Status { status: 404, code: Some(c), .. }
                if c == "BLOB_UPLOAD_UNKNOWN" || c == "BLOB_UPLOAD_INVALID"
        )
    }

    /// The registry refused the final PUT because the bytes it holds do not hash to the
    /// digest (Debian: 400 `DIGEST_INVALID`; ECR: 400 `BLOB_UPLOAD_INVALID` "None of the
    /// provided layer digests match ..."), or answered another digest. The backstop for a
    /// wrong resume guess: send the blob again from byte 0 in a new session (once).
    pub fn is_digest_refused(&self) -> bool {
        match self {
            RegistryError::DigestMismatch { .. } => true,
            RegistryError::Status {
                status: 400,
                code: Some(c),
                message,
                ..
            } => {
                c == "DIGEST_INVALID"
                    || (c == "BLOB_UPLOAD_INVALID"
                        && message.as_deref().is_some_and(|m| m.contains("digest")))
            }
            _ => false,
        }
    }

    pub(crate) fn transport(method: &str, url: &Url, e: &reqwest::Error) -> RegistryError {
        if let Some(refused) = certificate_refusal(e) {
            return RegistryError::Certificate {
                method: method.to_string(),
                url: redact_url(url),
                reason: clean_text(&refused.to_string()),
                advice: certificate_advice(url, &refused),
            };
        }
        let kind = if e.is_connect() {
            TransportKind::Connect
        } else if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_body() || e.is_request() {
            TransportKind::Broken
        } else {
            TransportKind::Other
        };
        // reqwest's Display names the URL with its query: print the cause chain without it.
        let mut message = e_without_url(e);
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        // A proxy that wants credentials for its tunnel answers 407 before the registry is
        // reached: no retry helps, only the proxy's user and password (hyper's words).
        if message.contains(PROXY_AUTH_REQUIRED) {
            return RegistryError::Status {
                method: method.to_string(),
                url: redact_url(url),
                status: 407,
                code: None,
                message: Some(
                    "the proxy asks for credentials: give them in the proxy URL (http://USER:PASSWORD@HOST:PORT)".into(),
                ),
                detail: None,
                retry_after: None,
            };
        }
        RegistryError::Transport {
            method: method.to_string(),
            url: redact_url(url),
            kind,
            message,
        }
    }
}

/// What hyper's tunnel says when the proxy answers CONNECT with 407.
const PROXY_AUTH_REQUIRED: &str = "proxy authorization required";

/// The certificate error of rustls somewhere in `e`'s causes. An `io::Error` hides its payload
/// from `source()` (and TLS connectors wrap one `io::Error` in another), so payloads are
/// followed too.
fn certificate_refusal(e: &reqwest::Error) -> Option<rustls::CertificateError> {
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    while let Some(s) = pending.pop() {
        if let Some(rustls::Error::InvalidCertificate(c)) = s.downcast_ref::<rustls::Error>() {
            return Some(c.clone());
        }
        if let Some(inner) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        pending.extend(s.source());
    }
    None
}

/// What to do about a refused certificate: a private CA goes where docker looks for it.
fn certificate_advice(url: &Url, refused: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    };
    match refused {
        C::UnknownIssuer | C::BadSignature => format!(
            "if the registry uses a private CA, put its certificate into ~/{}/{host}/ca.crt or {}/{host}/ca.crt (or name it in SSL_CERT_FILE), then retry",
            super::network::USER_CERTS_D,
            super::network::SYSTEM_CERTS_D
        ),
        _ => "check the registry's certificate (the names it is valid for, its dates) and this machine's clock, then retry".into(),
    }
}

fn e_without_url(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection failed".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_body() {
        "request or response body failed".into()
    } else if e.is_request() {
        "request failed".into()
    } else if e.is_decode() {
        "response could not be decoded".into()
    } else {
        "error".into()
    }
}

/// The URL for logs and messages: scheme, host, path; any query (upload `_state`, tokens) is
/// replaced by `REDACTED`, user info is dropped.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("REDACTED"));
    }
    u.set_fragment(None);
    u.to_string()
}

/// Same as [`redact_url`] for a string that may not parse.
pub fn redact_url_str(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact_url(&u),
        Err(_) => match url.split_once('?') {
            Some((path, _)) => format!("{path}?REDACTED"),
            None => url.to_string(),
        },
    }
}

/// Wrapper that prints an upload URL without its query.
pub(crate) struct Redacted<'a>(pub &'a Url);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parses_and_garbage_does_not_crash() {
        let b = RegistryErrorBody::parse(
            br#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"First byte of the layer part is 0 instead of 11304960","detail":{"x":1}}]}"#,
        );
        assert_eq!(b.code.as_deref(), Some("BLOB_UPLOAD_INVALID"));
        assert!(b.message.unwrap().contains("11304960"));
        assert_eq!(b.detail.as_deref(), Some(r#"{"x":1}"#));
        for junk in [
            &b"{\"errors\":"[..],
            b"<html>bad gateway</html>",
            b"",
            b"{\"errors\":[]}",
            b"\xff\xfe",
        ] {
            let b = RegistryErrorBody::parse(junk);
            assert!(b.code.is_none());
        }
    }

    #[test]
    fn urls_lose_their_query() {
        let u = Url::parse(
            "http://u:p@127.0.0.1:5000/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1",
        )
        .unwrap();
        let r = redact_url(&u);
        assert!(!r.contains("SECRET") && !r.contains(":p@"), "{r}");
        assert!(r.ends_with("/v2/a/blobs/uploads/x?REDACTED"), "{r}");
        assert_eq!(redact_url_str("not a url?_state=S"), "not a url?REDACTED");
    }

    #[test]
    fn retryable_statuses() {
        let s = |status| RegistryError::Status {
            method: "PATCH".into(),
            url: "u".into(),
            status,
            code: None,
            message: None,
            detail: None,
            retry_after: None,
        };
        for st in [408, 429, 500, 502, 503] {
            assert!(s(st).is_retryable(), "{st}");
        }
        for st in [400, 401, 403, 404, 416] {
            assert!(!s(st).is_retryable(), "{st}");
        }
    }
}
