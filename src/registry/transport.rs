//! One HTTP exchange with the registry: authorization (only for the registry host and its token
//! realm), the stall watchdog, bounded response bodies, redacted logs.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::auth::{self, Challenge, Token};
use super::conn_watch::{self, ConnWatch, OpenedSlot};
use super::error::{Redacted, RegistryErrorBody, TransportKind, redact_url};
use super::retry::parse_retry_after;
use super::{Inner, RegistryError};
use crate::digest::Digest;

/// Request bodies are handed to hyper in pieces of this size, so the watchdog sees progress.
const BODY_PIECE_BYTES: usize = 64 * 1024;
/// Responses we read into memory (errors, manifests, configs, tokens) are at most this big.
pub(crate) const RESPONSE_BYTES_MAX: usize = 8 << 20;
/// Of an error answer (not 2xx), only this much is read: enough for any error envelope.
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
/// Responses read into memory must arrive at least this fast on average (after a grace of one
/// stall timeout): a slow-loris registry cannot hold a request open for days.
const RESPONSE_BYTES_PER_S_MIN: u64 = 16 * 1024;
/// Attempts of one logical request: challenge discovery, one credential refresh, the retry.
const AUTH_ROUNDS_MAX: usize = 3;

/// What a request needs: method, URL, extra headers, body, the token scopes it acts under.
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// A body streamed from a file region instead of memory (large PATCH bodies); takes
    /// precedence over `body`. Re-read from the file on every attempt (auth rounds).
    pub body_file: Option<FileRange>,
    /// e.g. `["repository:a/b:pull,push"]`; empty for `/v2/`.
    pub scopes: Vec<String>,
    /// Overrides the stall timeout (a final PUT may legitimately be silent for long).
    pub stall: Option<Duration>,
}

impl Req {
    pub fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            body_file: None,
            scopes: Vec::new(),
            stall: None,
        }
    }
    pub fn header(mut self, name: header::HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
    pub fn body(mut self, b: Bytes) -> Req {
        self.body = Some(b);
        self
    }
    pub fn scope(mut self, s: String) -> Req {
        self.scopes.push(s);
        self
    }
}

/// Something a body can be read from by position: a file, or a file-like view such as the
/// spool's (compressed bytes in one file, stored chunks framed from the source).
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `pos`; 0 only at the end.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, pos)
    }
}

/// A region of an open file (or [`ReadAt`] view), sent as a request body without holding it in
/// memory: read in [`FILE_PIECE_BYTES`] pieces on the blocking pool as hyper asks for them.
#[derive(Clone)]
pub struct FileRange {
    pub file: Arc<dyn ReadAt>,
    pub offset: u64,
    pub len: u64,
}

impl std::fmt::Debug for FileRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRange")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Pieces a [`FileRange`] body is read in: the memory one streamed request holds (plus what
/// hyper and the kernel buffer), whatever the chunk size.
pub const FILE_PIECE_BYTES: usize = 256 * 1024;

/// A response with its body read (HEAD: empty).
pub(crate) struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub url: Url,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Location`, resolved against the request URL.
    pub fn location(&self) -> Option<Url> {
        self.header("location").and_then(|l| self.url.join(l).ok())
    }

    /// A `Docker-Content-Digest` that names another digest than `expected` is an error (the
    /// header is optional: ECR leaves it out of some answers).
    pub fn check_digest(&self, method: &str, expected: &Digest) -> Result<(), RegistryError> {
        match self.header("docker-content-digest") {
            Some(d) if d != expected.to_string() => Err(RegistryError::DigestMismatch {
                method: method.into(),
                url: redact_url(&self.url),
                expected: expected.to_string(),
                got: d.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub fn error(&self, method: &Method) -> RegistryError {
        let b = RegistryErrorBody::parse(&self.body);
        RegistryError::Status {
            method: method.to_string(),
            url: redact_url(&self.url),
            status: self.status.as_u16(),
            code: b.code,
            message: b.message,
            detail: b.detail,
            retry_after: self.header("retry-after").and_then(parse_retry_after),
        }
    }
}

/// Kernel socket buffers hold up to this much of a request body after it left our process
/// (Linux autotunes send buffers to 4 MiB): it still has to cross the link.
const SEND_BUFFER_BYTES_GUESS: u64 = 4 << 20;
/// The slowest link the rate rule waits for while that buffer drains, when the body was too
/// small to measure the link's rate by.
const DRAIN_BYTES_PER_S_MIN: u64 = 64 * 1024;
/// How often (at most) the watchdog reads the kernel's unacknowledged bytes of a handed-over
/// body.
const ACK_POLL_MS: u64 = 1000;
/// At least this many readings of that count fall within one stall timeout.
const ACK_READINGS_PER_STALL_MIN: u32 = 4;
/// `Progress::unacked` before the first reading.
const UNACKED_UNKNOWN: u64 = u64::MAX;

/// Last time a byte moved, for the stall watchdog.
struct Progress {
    start: Instant,
    last_ms: AtomicU64,
    /// Request body: total and how much hyper has taken.
    body_len: u64,
    body_taken: AtomicU64,
    /// When hyper had taken [`SEND_BUFFER_BYTES_GUESS`] of the body, and its last piece
    /// (ms since `start`; 0: not yet): what it took in between came at the link's pace.
    buffer_full_ms: AtomicU64,
    body_done_ms: AtomicU64,
    /// The task that runs the connection: the one that polls the body.
    conn_task: OnceLock<tokio::task::Id>,
    /// A connection the connector opened for this request, in its own task.
    opened: OpenedSlot,
    /// The kernel's unacknowledged bytes at the watchdog's last reading.
    unacked: AtomicU64,
}

impl Progress {
    fn new(body_len: u64) -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            body_len,
            body_taken: AtomicU64::new(0),
            buffer_full_ms: AtomicU64::new(0),
            body_done_ms: AtomicU64::new(0),
            conn_task: OnceLock::new(),
            opened: OpenedSlot::default(),
            unacked: AtomicU64::new(UNACKED_UNKNOWN),
        })
    }
    fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).max(1)
    }
    fn tick(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// Hyper took `n` more bytes of the body, on the connection's task.
    fn took(&self, n: u64) {
        self.tick();
        if let Some(task) = tokio::task::try_id() {
            let _ = self.conn_task.set(task);
        }
        let taken = self.body_taken.fetch_add(n, Ordering::Relaxed) + n;
        if taken >= SEND_BUFFER_BYTES_GUESS.min(self.body_len) {
            let _ = self.buffer_full_ms.compare_exchange(
                0,
                self.now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if taken >= self.body_len {
            self.body_done_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }
    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
    fn handed_over(&self) -> bool {
        self.body_len > 0 && self.body_taken.load(Ordering::Relaxed) >= self.body_len
    }

    /// The wait a handed-over body gets beyond the stall timeout. Where the kernel tells
    /// what the peer acknowledged: none, and every reading that changed counts as movement
    /// (acknowledgements drain the queue; hyper's last piece refills it): a frozen peer's
    /// queue does not change, whether full or empty. Elsewhere: [`Self::rate_allowance`].
    async fn drain_allowance(&self, watch: &Arc<ConnWatch>) -> Duration {
        let unacked = match self.conn_task.get() {
            Some(task) => watch.unacked_bytes(*task, self.opened.get().copied()).await,
            None => None,
        };
        let Some(unacked) = unacked else {
            return self.rate_allowance();
        };
        let before = self.unacked.swap(unacked, Ordering::Relaxed);
        if before != UNACKED_UNKNOWN && before != unacked {
            self.tick();
        }
        Duration::ZERO
    }

    /// Time for the body's tail in socket buffers to cross the link, at the pace hyper took
    /// the body once those buffers were full (that pace is the link's); a body too small to
    /// fill them says nothing of the link: then at [`DRAIN_BYTES_PER_S_MIN`]. This cannot tell
    /// a slow link from a frozen peer whose kernel took the body: the kernel's count can.
    fn rate_allowance(&self) -> Duration {
        let buffered = self.body_len.min(SEND_BUFFER_BYTES_GUESS);
        let paced_ms = self
            .body_done_ms
            .load(Ordering::Relaxed)
            .saturating_sub(self.buffer_full_ms.load(Ordering::Relaxed));
        let paced_bytes = self.body_len.saturating_sub(SEND_BUFFER_BYTES_GUESS);
        let rate = if paced_bytes > 0 {
            (paced_bytes.saturating_mul(1000) / paced_ms.max(1)).max(DRAIN_BYTES_PER_S_MIN)
        } else {
            DRAIN_BYTES_PER_S_MIN
        };
        Duration::from_millis(buffered.saturating_mul(1000) / rate)
    }
}

/// Resolves once nothing moved for `limit` (plus the drain allowance of a handed-over body).
async fn stalled(p: &Progress, limit: Duration, watch: &Arc<ConnWatch>) {
    // With a body, the watchdog wakes up every `poll`: the kernel's count is first read right
    // after the body was handed over, not one stall timeout later, and read several times
    // within a stall timeout (a short one would end before a change showed).
    let poll = if p.body_len > 0 {
        Duration::from_millis(ACK_POLL_MS).min(limit / ACK_READINGS_PER_STALL_MIN)
    } else {
        Duration::MAX
    };
    loop {
        let limit = if p.handed_over() {
            limit + p.drain_allowance(watch).await
        } else {
            limit
        };
        let idle = p.idle();
        if idle >= limit {
            return;
        }
        tokio::time::sleep((limit - idle).min(poll)).await;
    }
}

fn progress_body(bytes: Bytes, progress: Arc<Progress>) -> reqwest::Body {
    let len = bytes.len();
    let pieces = (0..len)
        .step_by(BODY_PIECE_BYTES)
        .map(move |i| bytes.slice(i..(i + BODY_PIECE_BYTES).min(len)));
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces).map(move |piece| {
        progress.took(piece.len() as u64);
        Ok::<_, Infallible>(piece)
    }))
}

fn file_body(
    range: FileRange,
    progress: Arc<Progress>,
    limits: Option<crate::bandwidth::Limits>,
) -> reqwest::Body {
    let end = range.offset + range.len;
    let stream = futures_util::stream::unfold(range.offset, move |pos| {
        let file = range.file.clone();
        let progress = progress.clone();
        let limits = limits.clone();
        async move {
            if pos >= end {
                return None;
            }
            let n = ((end - pos) as usize).min(FILE_PIECE_BYTES);
            if let Some(limits) = &limits {
                // Every bandwidth limit on the path is paid before the piece is written. A wait
                // for tokens is ours, not the link's: it ticks the stall watchdog.
                let mut left = n as u64;
                while left > 0 {
                    let step = left.min(BODY_PIECE_BYTES as u64);
                    limits.acquire(step).await;
                    progress.tick();
                    left -= step;
                }
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                let mut done = 0;
                while done < n {
                    match file.read_at(&mut buf[done..], pos + done as u64) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the file to upload is shorter than expected",
                            ));
                        }
                        Ok(k) => done += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Bytes::from(buf))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match read {
                Ok(piece) => {
                    progress.took(piece.len() as u64);
                    Some((Ok(piece), pos + n as u64))
                }
                // End the stream after the error: hyper aborts the request.
                Err(e) => Some((Err(e), end)),
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// ECR's expired-token answer: `403 denied: Your authorization token has expired`.
fn is_expired_token(resp: &Resp) -> bool {
    resp.status == StatusCode::FORBIDDEN
        && String::from_utf8_lossy(&resp.body)
            .to_ascii_lowercase()
            .contains("authorization token has expired")
}

impl Inner {
    /// Whether `url` is the registry itself (same scheme, host and port): only then does it get
    /// an Authorization header.
    pub(crate) fn is_registry_url(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Sends `req`, following the auth challenge: learns it on the first 401, refreshes the
    /// credentials once on 401 or an expired ECR token, then gives up with an `Auth` error.
    pub(crate) async fn send(&self, req: &Req) -> Result<Resp, RegistryError> {
        let mut refreshed = false;
        for _round in 0..AUTH_ROUNDS_MAX {
            let known = self.auth.lock().expect("auth lock").challenge.is_some();
            let generation = self.auth_generation();
            let authz = if self.is_registry_url(&req.url) {
                self.authorization(&req.scopes).await?
            } else {
                None
            };
            let resp = self.send_once(req, authz.as_deref()).await?;
            // A HEAD answer has no body to tell an expired ECR token from a refusal: a 403 to a
            // HEAD is worth one refresh too.
            let challenged = resp.status == StatusCode::UNAUTHORIZED
                || is_expired_token(&resp)
                || (resp.status == StatusCode::FORBIDDEN && req.method == Method::HEAD);
            if !challenged || !self.is_registry_url(&req.url) {
                return Ok(resp);
            }
            let challenge = resp
                .header("www-authenticate")
                .and_then(auth::parse_challenge);
            {
                let mut st = self.auth.lock().expect("auth lock");
                if let Some(c) = challenge {
                    st.challenge = Some(c);
                }
                st.tokens.remove(&req.scopes.join(" "));
            }
            if !known && authz.is_none() && self.auth.lock().expect("auth lock").challenge.is_some()
            {
                // First contact: now we know what to send.
                continue;
            }
            if refreshed {
                return Err(self.auth_error(&resp).await);
            }
            refreshed = true;
            tracing::info!(registry = %self.host, status = resp.status.as_u16(), "credentials refused or expired: fetching fresh ones");
            self.refresh_credentials(generation).await?;
        }
        Err(RegistryError::Protocol {
            method: req.method.to_string(),
            url: redact_url(&req.url),
            message: "the registry keeps asking for authentication".into(),
        })
    }

    /// [`Inner::send`], with throttling and server errors (408, 429, 5xx) turned into errors,
    /// so that retry loops see them.
    pub(crate) async fn send_ok(&self, req: &Req) -> Result<Resp, RegistryError> {
        let resp = self.send(req).await?;
        let s = resp.status.as_u16();
        if s == 408 || s == 429 || (500..=599).contains(&s) {
            return Err(resp.error(&req.method));
        }
        Ok(resp)
    }

    async fn auth_error(&self, resp: &Resp) -> RegistryError {
        let b = RegistryErrorBody::parse(&resp.body);
        let source_desc = match self.credential_source() {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        RegistryError::Auth {
            registry: self.host.clone(),
            source_desc,
            status: resp.status.as_u16(),
            code: b.code,
            message: b.message,
        }
    }

    /// The `Authorization` value for a request to the registry under `scopes`, if the
    /// challenge asks for one and we have what it needs.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>, RegistryError> {
        let challenge = self.auth.lock().expect("auth lock").challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => {
                Ok(self.credentials().await?.map(|c| auth::basic_header(&c)))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                let now = Instant::now().into_std();
                if let Some(t) = self.auth.lock().expect("auth lock").tokens.get(&key)
                    && t.is_fresh(now)
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let value = format!("Bearer {}", token.value);
                self.auth
                    .lock()
                    .expect("auth lock")
                    .tokens
                    .insert(key, token);
                Ok(Some(value))
            }
        }
    }

    /// The token realm gets the user's credentials (Basic), so it must be a place they can go:
    /// HTTPS anywhere (Docker Hub's realm is auth.docker.io), plain HTTP only on the registry's
    /// own host, a loopback host, or when the user asked for an insecure registry. Never
    /// another scheme. Why: a registry (or a man in the middle of a plain-HTTP registry)
    /// must not be able to send the credentials in clear to a host of its choosing.
    fn check_realm(&self, realm: &Url) -> Result<(), RegistryError> {
        let host = realm.host_str().unwrap_or("");
        let ok = match realm.scheme() {
            "https" => !host.is_empty(),
            "http" => {
                self.opts.insecure
                    || Some(host) == self.base.host_str()
                    || super::is_loopback_host(host)
            }
            _ => false,
        };
        if ok {
            return Ok(());
        }
        Err(RegistryError::Credentials {
            registry: self.host.clone(),
            message: format!(
                "the registry's token realm {} is not HTTPS on a host that may receive credentials: refused to send them there (check the registry address; pass --insecure only for a registry you trust on a plain-HTTP network)",
                redact_url(realm)
            ),
        })
    }

    /// GET realm?service=..&scope=.. with Basic credentials when we have some.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, RegistryError> {
        let mut url = Url::parse(realm).map_err(|_| RegistryError::Protocol {
            method: "GET".into(),
            url: self.host.clone(),
            message: format!("token realm {realm:?} is not a URL"),
        })?;
        self.check_realm(&url)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let creds = self.credentials().await?;
        let authz = creds.as_ref().map(auth::basic_header);
        let req = Req::new(Method::GET, url.clone());
        let resp = self.send_once(&req, authz.as_deref()).await?;
        if !resp.status.is_success() {
            return Err(self.auth_error(&resp).await);
        }
        Token::from_response(&resp.body, Instant::now().into_std()).ok_or_else(|| {
            RegistryError::Protocol {
                method: "GET".into(),
                url: redact_url(&url),
                message: "the token service answered without a token".into(),
            }
        })
    }

    /// One request, no auth logic. Aborted when no byte moves for the stall timeout.
    pub(crate) async fn send_once(
        &self,
        req: &Req,
        authz: Option<&str>,
    ) -> Result<Resp, RegistryError> {
        let body_len = match (&req.body_file, &req.body) {
            (Some(f), _) => f.len,
            (None, Some(b)) => b.len() as u64,
            (None, None) => 0,
        };
        let progress = Progress::new(body_len);
        let rb = self.request(req, authz, &progress)?;
        let method = req.method.clone();
        let url = req.url.clone();
        let started = Instant::now();
        let stall = req
            .stall
            .unwrap_or(self.opts.stall_timeout)
            .max(self.opts.stall_timeout);
        let p = progress.clone();
        let watch = self.conn_watch.clone();
        let exchange = async move {
            let resp = conn_watch::opening(p.opened.clone(), watch.clone(), rb.send())
                .await
                .map_err(|e| RegistryError::transport(method.as_str(), &url, &e))?;
            p.tick();
            if let (Some(task), Some(addrs)) =
                (p.conn_task.get(), conn_watch::response_addrs(&resp))
            {
                watch.bind(*task, addrs);
            }
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = if method == Method::HEAD {
                Vec::new()
            } else {
                read_body(resp, &method, &url, stall, &p).await?
            };
            Ok(Resp {
                status,
                headers,
                url,
                body: Bytes::from(body),
            })
        };
        let result = tokio::select! {
            r = exchange => r,
            _ = stalled(&progress, stall, &self.conn_watch) => Err(RegistryError::Transport {
                method: req.method.to_string(),
                url: redact_url(&req.url),
                kind: TransportKind::Stalled,
                message: format!("no bytes moved for {} s: aborted", stall.as_secs_f64()),
            }),
        };
        match &result {
            Ok(r) => tracing::debug!(
                method = %req.method,
                url = %Redacted(&req.url),
                status = r.status.as_u16(),
                sent = body_len,
                ms = started.elapsed().as_millis() as u64,
                "registry request"
            ),
            Err(e) => {
                tracing::debug!(method = %req.method, url = %Redacted(&req.url), error = %e, "registry request failed")
            }
        }
        result
    }

    /// The HTTP request for `req`: its headers, `authz` (marked sensitive, so never logged),
    /// and its body, counted by `progress` as hyper takes it.
    fn request(
        &self,
        req: &Req,
        authz: Option<&str>,
        progress: &Arc<Progress>,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let http = self.http.read().expect("http lock").clone();
        let mut rb = http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(a) = authz {
            let mut v = HeaderValue::from_str(a).map_err(|_| RegistryError::Credentials {
                registry: self.host.clone(),
                message: "the credentials contain characters that cannot go in a header".into(),
            })?;
            v.set_sensitive(true);
            rb = rb.header(header::AUTHORIZATION, v);
        }
        if let Some(f) = &req.body_file {
            rb = rb
                .header(header::CONTENT_LENGTH, f.len.to_string())
                .body(file_body(
                    f.clone(),
                    progress.clone(),
                    self.opts.bandwidth.clone(),
                ));
        } else if let Some(b) = &req.body {
            rb = rb
                .header(header::CONTENT_LENGTH, b.len().to_string())
                .body(progress_body(b.clone(), progress.clone()));
        } else if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
            rb = rb.header(header::CONTENT_LENGTH, "0");
        }
        Ok(rb)
    }
}

/// Reads a response body into memory: at most [`RESPONSE_BYTES_MAX`], only the first
/// [`ERROR_BODY_BYTES_MAX`] of an error answer, and no slower on average than
/// [`RESPONSE_BYTES_PER_S_MIN`] after a grace of `stall`.
async fn read_body(
    mut resp: reqwest::Response,
    method: &Method,
    url: &Url,
    stall: Duration,
    p: &Progress,
) -> Result<Vec<u8>, RegistryError> {
    let status = resp.status();
    let mut body = Vec::new();
    let body_started = Instant::now();
    loop {
        let c = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(RegistryError::transport(method.as_str(), url, &e)),
        };
        p.tick();
        // A body trickling in (one byte a second) keeps the stall watchdog quiet: bound the
        // whole read by a minimum average rate.
        let allowed = stall
            + Duration::from_millis(
                (body.len() as u64).saturating_mul(1000) / RESPONSE_BYTES_PER_S_MIN,
            );
        if body_started.elapsed() > allowed {
            return Err(RegistryError::Transport {
                method: method.to_string(),
                url: redact_url(url),
                kind: TransportKind::Stalled,
                message: format!(
                    "the response came too slowly ({} bytes in {} s): aborted",
                    body.len() + c.len(),
                    body_started.elapsed().as_secs()
                ),
            });
        }
        if !status.is_success() && body.len() + c.len() > ERROR_BODY_BYTES_MAX {
            // An error answer: its first bytes say what is wrong; the rest is not read (the
            // connection is dropped, not reused).
            let keep = ERROR_BODY_BYTES_MAX - body.len();
            body.extend_from_slice(&c[..keep.min(c.len())]);
            break;
        }
        if body.len() + c.len() > RESPONSE_BYTES_MAX {
            return Err(RegistryError::Protocol {
                method: method.to_string(),
                url: redact_url(url),
                message: format!("response body larger than {RESPONSE_BYTES_MAX} bytes"),
            });
        }
        body.extend_from_slice(&c);
    }
    Ok(body)
}
