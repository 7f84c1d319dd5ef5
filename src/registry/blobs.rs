//! Blob steps: HEAD, mount, POST, PATCH, status/resume, PUT, DELETE.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header;
use url::Url;

use super::error::{Redacted, RegistryErrorBody, redact_url};
use super::retry::retry_if;
use super::transport::{FileRange, Req, Resp};
use super::{RegistryClient, RegistryError, pull_scope, push_scope, retry};
use crate::digest::Digest;

/// Where an upload session stands, as acknowledged by the registry: what the daemon persists.
/// `session_url` is the latest `Location` (absolute; its query may hold the registry's state,
/// so it is redacted in `Debug` and logs). `offset` is the number of bytes acknowledged.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadCursor {
    pub session_url: String,
    pub offset: u64,
}

impl fmt::Debug for UploadCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadCursor")
            .field("session_url", &super::redact_url_str(&self.session_url))
            .field("offset", &self.offset)
            .finish()
    }
}

/// What a cross-repository mount gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// The blob is in the repository now.
    Mounted,
    /// The registry did not mount (blob absent there, mounting disabled as on ECR by default)
    /// and opened an upload session instead: use it.
    Upload(UploadCursor),
}

/// Where to go on from a persisted cursor. Either way the caller sends from `cursor.offset`;
/// the variants say how much the registry vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePoint {
    /// The registry said where the session is (which may differ from the persisted offset).
    Continue(UploadCursor),
    /// The registry's upload status said nothing that can be trusted (404 or 405, as ECR
    /// answers for live sessions): the cursor is the persisted one, and the next PATCH on it
    /// tells whether the session lives (an error with
    /// [`RegistryError::is_upload_gone`] means it does not).
    Unconfirmed(UploadCursor),
}

impl ResumePoint {
    /// The cursor to send from.
    pub fn cursor(self) -> UploadCursor {
        match self {
            ResumePoint::Continue(c) | ResumePoint::Unconfirmed(c) => c,
        }
    }
}

/// Parses ECR's `First byte of the layer part is N instead of M`: `(N, M)`; `M` is what the
/// registry has committed.
pub fn parse_first_byte_message(msg: &str) -> Option<(u64, u64)> {
    let rest = &msg[msg.find("First byte of the layer part is ")?
        + "First byte of the layer part is ".len()..];
    let (n, rest) = rest.split_once(" instead of ")?;
    let m: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((n.trim().parse().ok()?, m.parse().ok()?))
}

/// `Range: 0-<end>` (or `bytes=0-<end>`) -> end.
pub fn parse_range_end(v: &str) -> Option<u64> {
    let v = v.trim().trim_start_matches("bytes=");
    let (start, end) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

/// Checks that an upload session `Location` (already resolved against the request URL) stays
/// on the origin (scheme, host, port) of the request that opened or advanced the session.
///
/// Why: the blob bytes go wherever the Location points, and a session URL is persisted and
/// resumed later. A registry (or anything between us and it) must not be able to send the
/// upload to `file://`, to plain `http://` after `https://`, or to another host. ECR and the
/// distribution registry answer absolute Locations on their own host.
pub fn check_upload_location(request: &Url, location: &Url) -> Result<(), RegistryError> {
    let same = location.scheme() == request.scheme()
        && location.host_str() == request.host_str()
        && location.port_or_known_default() == request.port_or_known_default();
    if same {
        return Ok(());
    }
    Err(RegistryError::Protocol {
        method: "upload".into(),
        url: redact_url(request),
        message: format!(
            "the registry sent an upload Location on another origin ({}): refused, blobs are only sent to {}://{}",
            redact_url(location),
            request.scheme(),
            request.host_str().unwrap_or("").to_string()
                + &request.port().map(|p| format!(":{p}")).unwrap_or_default(),
        ),
    })
}

/// How fast we assume a registry verifies a blob at the final PUT (Debian's: ~330 MB/s per
/// core): the final PUT's stall allowance is the blob size at this rate, at least the stall
/// timeout.
const FINISH_BYTES_PER_S_MIN: u64 = 50_000_000;

fn is_429(e: &RegistryError) -> bool {
    e.status() == Some(429)
}

impl RegistryClient {
    /// HEAD the blob: `true` when the registry has it with this digest and size. A timeout or
    /// a 5xx is an error, never "absent" (that would re-upload for nothing).
    pub async fn blob_present(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, RegistryError> {
        let url = self
            .inner
            .repo_url(repository, &format!("blobs/{digest}"))?;
        let req = Req::new(Method::HEAD, url).scope(pull_scope(repository));
        let resp = retry(&self.inner.opts.retry, "blob HEAD", || {
            self.inner.send_ok(&req)
        })
        .await?;
        match resp.status.as_u16() {
            200 => {
                if let Some(d) = resp.header("docker-content-digest")
                    && d != digest.to_string()
                {
                    tracing::warn!(%digest, registry_digest = d, "HEAD answered another digest: uploading");
                    return Ok(false);
                }
                if let Some(len) = resp
                    .header("content-length")
                    .and_then(|l| l.parse::<u64>().ok())
                    && len != size
                {
                    tracing::warn!(%digest, size, registry_size = len, "HEAD answered another size: uploading");
                    return Ok(false);
                }
                Ok(true)
            }
            // A redirect to storage means the registry has the blob.
            301 | 302 | 303 | 307 | 308 => Ok(true),
            404 => Ok(false),
            _ => Err(resp.error(&Method::HEAD)),
        }
    }

    /// Cross-repository mount (`POST ?mount=&from=`).
    pub async fn mount_blob(
        &self,
        repository: &str,
        from_repository: &str,
        digest: &Digest,
    ) -> Result<MountOutcome, RegistryError> {
        let mut url = self.inner.repo_url(repository, "blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from_repository);
        let req = Req::new(Method::POST, url)
            .scope(push_scope(repository))
            .scope(pull_scope(from_repository));
        let resp = retry(&self.inner.opts.retry, "blob mount", || {
            self.inner.send_ok(&req)
        })
        .await?;
        match resp.status.as_u16() {
            201 => {
                resp.check_digest("POST", digest)?;
                Ok(MountOutcome::Mounted)
            }
            202 => Ok(MountOutcome::Upload(
                self.session_from(&resp, &Method::POST)?,
            )),
            _ => Err(resp.error(&Method::POST)),
        }
    }

    /// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`).
    pub async fn start_upload(&self, repository: &str) -> Result<UploadCursor, RegistryError> {
        let url = self.inner.repo_url(repository, "blobs/uploads/")?;
        let req = Req::new(Method::POST, url).scope(push_scope(repository));
        let resp = match retry_if(&self.inner.opts.retry, "upload POST", is_429, || {
            self.inner.send_ok(&req)
        })
        .await
        {
            Ok(r) => r,
            Err(e @ RegistryError::Transport { .. }) => {
                // ECR drops the connection when the repository is missing (and no create-on-push
                // template covers it): say so if that is it, on any host, since ECR is also
                // reached through names no list knows.
                if self.repository_unknown(repository).await {
                    return Err(RegistryError::RepositoryMissing {
                        repository: repository.to_string(),
                        registry: self.inner.host.clone(),
                    });
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if resp.status.as_u16() != 202 && !resp.status.is_success() {
            return Err(resp.error(&Method::POST));
        }
        self.session_from(&resp, &Method::POST)
    }

    fn session_from(&self, resp: &Resp, method: &Method) -> Result<UploadCursor, RegistryError> {
        if let Some(min) = resp
            .header("oci-chunk-min-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.inner
                .chunk_min_announced
                .fetch_max(min, Ordering::Relaxed);
        }
        let location = resp.location().ok_or_else(|| RegistryError::Protocol {
            method: method.to_string(),
            url: redact_url(&resp.url),
            message: "the registry opened an upload without a Location".into(),
        })?;
        check_upload_location(&resp.url, &location)?;
        Ok(UploadCursor {
            session_url: location.to_string(),
            offset: 0,
        })
    }

    /// The push scope of an upload URL (`/v2/<repo>/blobs/uploads/<uuid>`): tokens are per
    /// repository, and a cursor knows only its URL.
    fn upload_scope(url: &Url) -> Vec<String> {
        let path = url.path();
        match (path.strip_prefix("/v2/"), path.rfind("/blobs/uploads/")) {
            (Some(_), Some(i)) if i > 4 => vec![push_scope(&path[4..i])],
            _ => Vec::new(),
        }
    }

    fn cursor_url(cursor: &UploadCursor) -> Result<Url, RegistryError> {
        Url::parse(&cursor.session_url).map_err(|_| RegistryError::Protocol {
            method: "PATCH".into(),
            url: super::redact_url_str(&cursor.session_url),
            message: "the upload cursor's session URL is not absolute".into(),
        })
    }

    /// Sends the bytes of a file region (`range.len` bytes at `range.offset`) as the bytes at
    /// `cursor.offset` (PATCH with `Content-Range`), streamed in
    /// [`FILE_PIECE_BYTES`](super::FILE_PIECE_BYTES) pieces: memory stays at a few pieces
    /// whatever the chunk size. Returns the next cursor: the latest Location and the
    /// acknowledged offset. Any 2xx is success (ECR answers 201). On ECR's 416 the registry's
    /// committed offset is returned instead, and the caller continues from there. The stall
    /// watchdog applies as for any request; a PATCH that fails in flight is not retried here
    /// (only a 429, which took no bytes): call `resume`.
    pub async fn upload_chunk_from(
        &self,
        cursor: &UploadCursor,
        range: FileRange,
    ) -> Result<UploadCursor, RegistryError> {
        let len = range.len;
        self.patch(cursor, len, move |mut req| {
            req.body_file = Some(range);
            req
        })
        .await
    }

    async fn patch(
        &self,
        cursor: &UploadCursor,
        len: u64,
        with_body: impl FnOnce(Req) -> Req,
    ) -> Result<UploadCursor, RegistryError> {
        if len == 0 {
            return Ok(cursor.clone());
        }
        let url = Self::cursor_url(cursor)?;
        let end = cursor.offset + len - 1;
        let req = Req::new(Method::PATCH, url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_RANGE, &format!("{}-{end}", cursor.offset));
        let mut req = with_body(req);
        req.scopes = Self::upload_scope(&url);
        let resp = retry_if(&self.inner.opts.retry, "upload PATCH", is_429, || {
            self.inner.send_ok(&req)
        })
        .await?;
        let next_url = resp.location().unwrap_or(url);
        check_upload_location(&resp.url, &next_url)?;
        if resp.status.is_success() {
            if let Some(reg_end) = resp.header("range").and_then(parse_range_end)
                && reg_end != end
            {
                // ECR's Range goes stale after the first part; ours is the truth.
                tracing::debug!(
                    acknowledged_end = end,
                    registry_range_end = reg_end,
                    "registry Range disagrees: ignored"
                );
            }
            return Ok(UploadCursor {
                session_url: next_url.to_string(),
                offset: end + 1,
            });
        }
        if resp.status.as_u16() == 416 {
            let body = RegistryErrorBody::parse(&resp.body);
            let committed = body
                .message
                .as_deref()
                .and_then(parse_first_byte_message)
                .map(|(_, m)| m)
                .or_else(|| {
                    resp.header("range")
                        .and_then(parse_range_end)
                        .map(|e| e + 1)
                });
            if let Some(m) = committed.filter(|m| *m != cursor.offset) {
                tracing::warn!(url = %Redacted(&next_url), sent_from = cursor.offset, committed = m, "registry is elsewhere: resyncing");
                return Ok(UploadCursor {
                    session_url: next_url.to_string(),
                    offset: m,
                });
            }
        }
        Err(resp.error(&Method::PATCH))
    }

    /// Finds where the registry really is for a persisted cursor. Asks the upload status
    /// (GET, 204 + `Range`) where supported: a `Range` ahead of the cursor (a lost
    /// acknowledgement) is followed; on ECR one behind it is stale and ignored. A 404 or 405
    /// there proves nothing (ECR's status endpoint answers 404 for live sessions, with or
    /// without an upload error code): `Unconfirmed` at the persisted offset, and the next
    /// PATCH there decides (2xx: go on; 416: resync from the registry's offset; 404
    /// [`RegistryError::is_upload_gone`]: start the blob again). Debian's registry, whose
    /// session a cut PATCH poisons, answers that PATCH with 404 `BLOB_UPLOAD_UNKNOWN`.
    pub async fn resume(
        &self,
        repository: &str,
        cursor: &UploadCursor,
    ) -> Result<ResumePoint, RegistryError> {
        let url = Self::cursor_url(cursor)?;
        let req = Req::new(Method::GET, url.clone()).scope(push_scope(repository));
        let resp = retry(&self.inner.opts.retry, "upload status", || {
            self.inner.send_ok(&req)
        })
        .await?;
        let status = resp.status.as_u16();
        if resp.status.is_success() {
            let next_url = resp.location().unwrap_or(url);
            check_upload_location(&resp.url, &next_url)?;
            let offset = match resp.header("range").and_then(parse_range_end) {
                // `0-0` means 0 or 1 byte on distribution: keep our count if it is one of them.
                Some(0) if cursor.offset <= 1 => cursor.offset,
                // ECR's Range lags behind what it stored: never go back because of it.
                Some(end) if self.inner.ecr => (end + 1).max(cursor.offset),
                Some(end) => end + 1,
                None => cursor.offset,
            };
            if offset != cursor.offset {
                tracing::info!(
                    persisted = cursor.offset,
                    registry = offset,
                    "resuming where the registry is"
                );
            }
            return Ok(ResumePoint::Continue(UploadCursor {
                session_url: next_url.to_string(),
                offset,
            }));
        }
        let err = resp.error(&Method::GET);
        if status == 404 || status == 405 {
            tracing::info!(url = %Redacted(&resp.url), status, code = err.code().unwrap_or(""), offset = cursor.offset, "upload status unknown: the next PATCH at the persisted offset tells");
            return Ok(ResumePoint::Unconfirmed(cursor.clone()));
        }
        Err(err)
    }

    /// Completes the upload: `PUT ?digest=` carrying `last` (possibly empty). Checks
    /// `Docker-Content-Digest` when the registry sends it. If this fails in flight the PUT may
    /// still have succeeded: `blob_present` before starting the blob again.
    pub async fn finish_upload(
        &self,
        cursor: &UploadCursor,
        digest: &Digest,
        last: Bytes,
    ) -> Result<(), RegistryError> {
        let mut url = Self::cursor_url(cursor)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut req = Req::new(Method::PUT, url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream");
        req.scopes = Self::upload_scope(&url);
        // The registry checks the digest of the whole blob before it answers: no byte moves
        // meanwhile. Allow for that at FINISH_BYTES_PER_S_MIN.
        let total = cursor.offset + last.len() as u64;
        req.stall = Some(Duration::from_secs(total / FINISH_BYTES_PER_S_MIN));
        if !last.is_empty() {
            let end = cursor.offset + last.len() as u64 - 1;
            req = req
                .header(header::CONTENT_RANGE, &format!("{}-{end}", cursor.offset))
                .body(last);
        }
        let resp = retry_if(&self.inner.opts.retry, "upload PUT", is_429, || {
            self.inner.send_ok(&req)
        })
        .await?;
        if !resp.status.is_success() {
            return Err(resp.error(&Method::PUT));
        }
        resp.check_digest("PUT", digest)?;
        Ok(())
    }

    /// Abandons an upload session (`DELETE`); a session already gone is fine.
    pub async fn cancel_upload(&self, cursor: &UploadCursor) -> Result<(), RegistryError> {
        let url = Self::cursor_url(cursor)?;
        let mut req = Req::new(Method::DELETE, url.clone());
        req.scopes = Self::upload_scope(&url);
        let resp = retry(&self.inner.opts.retry, "upload DELETE", || {
            self.inner.send_ok(&req)
        })
        .await?;
        if resp.status.is_success() || resp.status.as_u16() == 404 {
            Ok(())
        } else {
            Err(resp.error(&Method::DELETE))
        }
    }

    /// GETs a small blob (a config) into memory, following redirects (without credentials to
    /// other hosts), and checks its digest.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size_max: usize,
    ) -> Result<Bytes, RegistryError> {
        const REDIRECTS_MAX: usize = 5;
        let mut url = self
            .inner
            .repo_url(repository, &format!("blobs/{digest}"))?;
        for _ in 0..=REDIRECTS_MAX {
            let req = Req::new(Method::GET, url.clone()).scope(pull_scope(repository));
            let resp = retry(&self.inner.opts.retry, "blob GET", || {
                self.inner.send_ok(&req)
            })
            .await?;
            if resp.status.is_redirection() {
                url = resp.location().ok_or_else(|| resp.error(&Method::GET))?;
                // Storage redirects (S3) go to other hosts, without credentials; never to
                // another scheme than HTTP(S).
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(RegistryError::Protocol {
                        method: "GET".into(),
                        url: redact_url(&resp.url),
                        message: format!(
                            "the registry redirected to {}: refused, only http and https are followed",
                            redact_url(&url)
                        ),
                    });
                }
                continue;
            }
            if !resp.status.is_success() {
                return Err(resp.error(&Method::GET));
            }
            if resp.body.len() > size_max {
                return Err(RegistryError::Protocol {
                    method: "GET".into(),
                    url: redact_url(&resp.url),
                    message: format!("blob is larger than {size_max} bytes"),
                });
            }
            let got = Digest::sha256_of(&resp.body);
            if digest.algorithm() == got.algorithm() && &got != digest {
                return Err(RegistryError::DigestMismatch {
                    method: "GET".into(),
                    url: redact_url(&resp.url),
                    expected: digest.to_string(),
                    got: got.to_string(),
                });
            }
            return Ok(resp.body);
        }
        Err(RegistryError::Protocol {
            method: "GET".into(),
            url: redact_url(&url),
            message: "too many redirects".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ecr_416_and_ranges() {
        assert_eq!(
            parse_first_byte_message("First byte of the layer part is 0 instead of 11304960"),
            Some((0, 11304960))
        );
        assert_eq!(
            parse_first_byte_message("x: First byte of the layer part is 5 instead of 7."),
            Some((5, 7))
        );
        assert_eq!(parse_first_byte_message("something else"), None);
        assert_eq!(parse_range_end("0-1023"), Some(1023));
        assert_eq!(parse_range_end("bytes=0-5"), Some(5));
        assert_eq!(parse_range_end("5-9"), None);
    }

    #[test]
    fn cursor_debug_and_serde() {
        let c = UploadCursor {
            session_url: "http://h/v2/a/blobs/uploads/u?_state=SECRET".into(),
            offset: 7,
        };
        assert!(!format!("{c:?}").contains("SECRET"));
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<UploadCursor>(&j).unwrap(), c);
    }
}
