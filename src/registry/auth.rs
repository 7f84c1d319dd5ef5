//! The `/v2/` challenge and what it asks for: Basic (ECR) or a Bearer token from a realm.
//! Tokens are cached per scope until shortly before they expire.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::credentials::Credentials;

/// Tokens are refreshed this long before the expiry the token service announced.
const TOKEN_EXPIRY_SLACK_S: u64 = 10;
/// Docker's default when the token service gives no `expires_in`.
const TOKEN_TTL_S_DEFAULT: u64 = 60;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="x",service="y",scope="z"` (quoted or bare values,
/// commas inside quotes allowed). Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.get("realm").cloned(),
        }),
        // A Bearer challenge without a realm (or with an empty one) says nowhere to get a token.
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm").filter(|r| !r.is_empty()).cloned()?,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// `Authorization: Basic base64(user:secret)`.
pub fn basic_header(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.secret))
    )
}

/// A bearer token; `Debug` redacts it.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl Token {
    /// From a token-service answer: `token` or `access_token`, `expires_in` seconds.
    pub fn from_response(body: &[u8], now: Instant) -> Option<Token> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let value = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())?
            .to_string();
        let ttl = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(TOKEN_TTL_S_DEFAULT);
        let usable = ttl.saturating_sub(TOKEN_EXPIRY_SLACK_S).max(1);
        Some(Token {
            value,
            expires: now + Duration::from_secs(usable),
        })
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Basic realm="https://1.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#
            ),
            Some(Challenge::Basic {
                realm: Some("https://1.dkr.ecr.us-east-1.amazonaws.com/".into())
            })
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, service=s"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        // An empty realm names no token service: not a usable Bearer challenge.
        assert_eq!(parse_challenge("bearer reaLm=,http://12"), None);
        assert_eq!(parse_challenge(r#"Bearer realm="""#), None);
    }

    #[test]
    fn tokens() {
        let now = Instant::now();
        let t = Token::from_response(br#"{"access_token":"abc","expires_in":300}"#, now).unwrap();
        assert!(t.is_fresh(now + Duration::from_secs(200)));
        assert!(!t.is_fresh(now + Duration::from_secs(295)));
        assert!(!format!("{t:?}").contains("abc"));
        assert!(Token::from_response(b"{}", now).is_none());
        assert!(Token::from_response(b"nope", now).is_none());
    }
}
