//! The OCI Distribution client: auth, blob HEAD/mount/POST/PATCH/PUT, resume, manifests,
//! verification. Built for Amazon ECR's quirks (see `docs/ECR.md`) and tested against
//! Debian's distribution registry and an ECR-emulating proxy in front of it.
//!
//! # Shape: steps from one cursor to the next
//! The daemon drives uploads step by step and persists an [`UploadCursor`] (session URL and
//! acknowledged offset) between steps, so every upload call is a function from one cursor to
//! the next:
//!
//! ```text
//! check_repository -> blob_present? -> mount_blob? -> start_upload -> cursor0
//! cursor_n --upload_chunk_from(bytes at cursor_n.offset)--> cursor_n+1 (persist each)
//! after a failure or a restart: resume(cursor) -> Continue(cursor') | Unconfirmed(cursor)
//! finish_upload(cursor, digest, last bytes) -> done ; put_manifest ; verify_tag
//! ```
//!
//! - `upload_chunk_from` returns where the registry is after the step. Normally that is
//!   `offset + chunk.len()`; after ECR's 416 (`First byte of the layer part is N instead of M`)
//!   it is `M`: the caller always sends from `cursor.offset`, so it resyncs by itself.
//! - The acknowledged offset is tracked by the client (ECR's `Range` header is stale), and the
//!   latest `Location` is always used (Debian's registry rejects older ones).
//! - Only an error of a `PATCH` or `PUT` with [`RegistryError::is_upload_gone`] means the
//!   session is lost: start a new one for that blob only. The upload status (`resume`) never
//!   proves it (ECR answers 404 there for live sessions). A wrong guess costs bandwidth, never
//!   correctness: the registry checks the digest at `finish_upload`.
//! - Only safe requests are retried inside the client (idempotent ones, and anything answered
//!   429); a PATCH that failed in flight is left to the caller, who calls `resume`.
//!
//! # Driving an upload (what the daemon does with each outcome)
//! ```text
//! cursor = start_upload(repo)                         persist cursor
//! loop:
//!   bytes = blob[cursor.offset .. cursor.offset + chunk_bytes()]
//!   last piece?  finish_upload(cursor, digest, bytes) -> done
//!   else         upload_chunk_from(cursor, bytes)     -> Ok(next): persist next, go on
//!   Err(e) if e.is_upload_gone()    -> new session for this blob (start_upload); after a
//!                                      failed finish_upload, blob_present first: the PUT
//!                                      may have landed and only its answer was lost
//!   Err(e) if e.is_retryable()      -> back off, then resume(repo, cursor):
//!                                        Continue(c)    -> cursor = c (offset may move either way)
//!                                        Unconfirmed(c) -> cursor = c (the persisted one); the
//!                                                          next PATCH tells (is_upload_gone)
//!   Err(e) if e.is_digest_refused() -> the bytes the registry holds are wrong: new session,
//!                                      from byte 0, once; then fail the blob
//!   Err(e)                          -> fail the job with e's message
//! ```
//! The same `resume` call is the first step after a daemon restart.
//!
//! # Registry behaviours this relies on (measured, see tests/registry.rs and tests/ecr.rs)
//! - Debian's distribution 2.8.2: new `_state` Location on every PATCH, older ones are 404;
//!   a PATCH cut midway keeps the partial bytes and poisons the session: its status answers
//!   404 `BLOB_UPLOAD_INVALID` (or, right after the cut, still the old offset), and the next
//!   PATCH is `is_upload_gone`; a `DIGEST_INVALID` PUT cancels the session.
//! - ECR (emulated by tests/common/ecr_proxy): parts whole or not at all, 201 on PATCH, one
//!   absolute Location, stale `Range`, no status endpoint (404, even with an upload error
//!   code, for a live session), 416 with the committed offset in
//!   the message, 5 MiB minimum part, expiring Basic tokens (403), dropped connection on an
//!   upload POST to a missing repository, 429 without `Retry-After`.
//!
//! # Files
//! - `reference`: [`ImageRef`] parsing and host classification (loopback, ECR).
//! - `credentials`: docker `config.json` and credential helpers.
//! - `auth`: challenges, Basic, Bearer tokens.
//! - `network`: proxies and extra CA roots from the caller's environment.
//! - `transport`: one exchange: auth rounds, stall watchdog, redacted logs.
//! - `retry`: backoff with jitter, `Retry-After`.
//! - `blobs`, `manifests`, `verify`: the API proper.

// Errors carry method, URL, status and the registry's code and message: they are big, but
// only built on the slow path, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

mod auth;
mod blobs;
mod conn_watch;
mod credentials;
mod error;
mod manifests;
mod network;
mod profile;
mod reference;
mod retry;
mod transport;
mod verify;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::Duration;

use reqwest::Method;
use url::Url;

use crate::environ::CallerEnv;

pub use auth::{Challenge, Token, parse_challenge};
pub use blobs::{
    MountOutcome, ResumePoint, UploadCursor, check_upload_location, parse_first_byte_message,
    parse_range_end,
};
pub use credentials::{CredentialLookup, CredentialSource, Credentials};
pub use error::{
    ERROR_TEXT_CHARS_MAX, RegistryError, RegistryErrorBody, TransportKind, redact_url,
    redact_url_str,
};
pub use manifests::{MANIFEST_BYTES_MAX, media_types};
pub use profile::limits_for_host;
pub use reference::{EcrKind, ImageRef, Reference, ecr_kind, is_ecr_host, is_loopback_host};
pub use retry::{RetryPolicy, parse_retry_after, retry, retry_if};
pub use transport::{FILE_PIECE_BYTES, FileRange, ReadAt};
pub use verify::{CONFIG_BYTES_MAX, VerifyError, VerifyReport, verify_tag};

use transport::Req;

pub use crate::chunk_size::{CHUNK_BYTES_DEFAULT, ECR_CHUNK_BYTES_MIN};
/// The stall watchdog's default: abort a request when no byte moved for this long.
pub const STALL_TIMEOUT_S_DEFAULT: u64 = 30;
pub const CONNECT_TIMEOUT_S_DEFAULT: u64 = 30;
/// Idle connections kept per host: blobs upload in parallel over HTTP/1.1.
const POOL_IDLE_PER_HOST_MAX: usize = 16;
/// A link probe (`GET /v2/`) that has not been answered in this long says the link is down.
pub const PROBE_TIMEOUT_MS: u64 = 3000;

/// How a [`RegistryClient`] behaves. `Default` is right for production.
#[derive(Clone)]
pub struct ClientOptions {
    /// Plain HTTP for a non-loopback host (loopback hosts always use plain HTTP).
    pub insecure: bool,
    /// Use these instead of docker's config.json.
    pub credentials: Option<Credentials>,
    /// Where docker's config.json and credential helpers are found.
    pub lookup: CredentialLookup,
    /// PATCH size for this host; default [`CHUNK_BYTES_DEFAULT`]. Raised to 5 MiB on ECR hosts
    /// and to any `OCI-Chunk-Min-Length` the registry announces.
    pub chunk_bytes: Option<u64>,
    /// Abort a request when no byte moved in either direction for this long.
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of safe requests inside the client.
    pub retry: RetryPolicy,
    /// Fail `check_repository` when the repository does not exist (default: no, since
    /// registries, ECR with a create-on-push template among them, create repositories on
    /// push).
    pub require_existing_repository: bool,
    /// Upload bandwidth limits (daemon-wide and per job) every streamed PATCH body pays
    /// before each piece is written; `None`: unlimited.
    pub bandwidth: Option<crate::bandwidth::Limits>,
    /// The environment the client works with: docker's config directory (`DOCKER_CONFIG`,
    /// `HOME`), credential helpers (found on its `PATH`, run with it), proxies, CA files and
    /// `HOME` for `~/.docker/certs.d` (see `docs/NETWORK.md`): from here only, never from the
    /// process environment behind its back. A job's is the caller's; the default is this
    /// process's own (callers without a job).
    pub env: CallerEnv,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            credentials: None,
            lookup: CredentialLookup::default(),
            chunk_bytes: None,
            stall_timeout: Duration::from_secs(STALL_TIMEOUT_S_DEFAULT),
            connect_timeout: Duration::from_secs(CONNECT_TIMEOUT_S_DEFAULT),
            retry: RetryPolicy::default(),
            require_existing_repository: false,
            bandwidth: None,
            env: CallerEnv::from_process(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials) // Credentials' Debug redacts the secret
            .field("lookup", &self.lookup)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("stall_timeout", &self.stall_timeout)
            .field("retry", &self.retry)
            .field(
                "require_existing_repository",
                &self.require_existing_repository,
            )
            .field("env", &self.env) // CallerEnv's Debug hides secret values and proxy URLs
            .finish()
    }
}

/// Auth state shared by all requests to one host.
#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    source: Option<CredentialSource>,
    /// `None`: not fetched yet; `Some(None)`: anonymous.
    credentials: Option<Option<Credentials>>,
    /// Bearer tokens by space-joined scope list.
    tokens: HashMap<String, auth::Token>,
    /// Bumped by every credential refresh: requests that failed with older credentials just
    /// retry instead of running the helper again.
    generation: u64,
}

pub(crate) struct Inner {
    /// The host as the user wrote it (`docker.io`, `127.0.0.1:5000`).
    host: String,
    /// `scheme://api-host/`.
    base: Url,
    /// Replaced whole by [`RegistryClient::renew_connections`]: reqwest cannot flush its pool.
    http: RwLock<reqwest::Client>,
    /// The connections `http` (and the clients it replaced) opened, for the stall watchdog.
    conn_watch: Arc<conn_watch::ConnWatch>,
    /// The link recovery the connection pool was last renewed for.
    renewed: AtomicU64,
    opts: ClientOptions,
    ecr: bool,
    auth: Mutex<AuthState>,
    /// Serialises credential fetches: parallel uploads that all meet an expired token run the
    /// helper once (it may call a rate-limited API such as ECR's GetAuthorizationToken).
    fetch_lock: tokio::sync::Mutex<()>,
    /// Largest `OCI-Chunk-Min-Length` seen.
    chunk_min_announced: AtomicU64,
}

/// A client for one registry host. Cheap to clone (shared state behind an `Arc`): auth state,
/// token cache and connection pool are shared by clones.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("host", &self.inner.host)
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

static CRYPTO_PROVIDER: Once = Once::new();

/// Installs rustls' ring provider once per process (reqwest is built without one).
pub fn install_crypto_provider() {
    CRYPTO_PROVIDER.call_once(|| {
        // Err means another provider is installed already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl RegistryClient {
    /// A client for `host` (`HOST[:PORT]`, as in an image reference).
    pub fn new(host: &str, opts: ClientOptions) -> Result<Self, RegistryError> {
        install_crypto_provider();
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(RegistryError::Config(format!(
                "{host:?} is not a registry host"
            )));
        }
        let api_host = if host == reference::DOCKER_HUB || host == "index.docker.io" {
            reference::DOCKER_HUB_API_HOST
        } else {
            host
        };
        let scheme = if opts.insecure || is_loopback_host(host) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{api_host}/"))
            .map_err(|e| RegistryError::Config(format!("{host:?} is not a registry host: {e}")))?;
        let conn_watch = Arc::new(conn_watch::ConnWatch::default());
        let http = http_client(host, &opts, Pool::Keep(&conn_watch))?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                host: host.to_string(),
                base,
                http: RwLock::new(http),
                conn_watch,
                renewed: AtomicU64::new(0),
                ecr: is_ecr_host(host),
                opts,
                auth: Mutex::new(AuthState::default()),
                fetch_lock: tokio::sync::Mutex::new(()),
                chunk_min_announced: AtomicU64::new(0),
            }),
        })
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// `http(s)://HOST/`: where requests go (plain HTTP for loopback or `insecure`).
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// Whether the host is Amazon ECR by name, private or public (defaults only: an ECR
    /// behind another name must work as well).
    pub fn is_ecr(&self) -> bool {
        self.inner.ecr
    }

    /// Which ECR the host is by name, for defaults and limits.
    pub fn ecr_kind(&self) -> Option<EcrKind> {
        reference::ecr_kind(&self.inner.host)
    }

    /// PATCH size for this host: configured or 16 MiB, at least [`Self::chunk_bytes_min`].
    pub fn chunk_bytes(&self) -> u64 {
        self.inner
            .opts
            .chunk_bytes
            .unwrap_or(CHUNK_BYTES_DEFAULT)
            .max(self.chunk_bytes_min())
    }

    /// The smallest part this registry takes (except the last): 5 MiB on ECR, what it
    /// announced in `OCI-Chunk-Min-Length`, else 1. For callers that shrink parts after
    /// failures.
    pub fn chunk_bytes_min(&self) -> u64 {
        let floor = if self.inner.ecr {
            ECR_CHUNK_BYTES_MIN
        } else {
            1
        };
        floor.max(self.inner.chunk_min_announced.load(Ordering::Relaxed))
    }

    /// Where this client's credentials come from (for messages; never the secret itself).
    pub fn credential_source(&self) -> Result<CredentialSource, RegistryError> {
        self.inner.credential_source()
    }

    /// `GET /v2/`: checks the registry answers, learns its auth challenge and checks the
    /// credentials are accepted.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.inner.url("v2/")?;
        let req = Req::new(Method::GET, url);
        let resp = retry(&self.inner.opts.retry, "ping", || self.inner.send_ok(&req)).await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(resp.error(&Method::GET))
        }
    }

    /// A probe of whether this registry answers at all, for the link monitor while jobs
    /// wait out an outage.
    pub fn link_probe(&self) -> Result<LinkProbe, RegistryError> {
        Ok(LinkProbe {
            url: self.inner.url("v2/")?,
            http: http_client(&self.inner.host, &self.inner.opts, Pool::Probe)?,
        })
    }

    /// Drops the pooled connections (by replacing the HTTP client) unless that was done for
    /// `recovery` already: after an outage they may belong to the old network and would only
    /// stall. Requests in flight keep the client they started with.
    pub fn renew_connections(&self, recovery: u64) -> Result<(), RegistryError> {
        if self.inner.renewed.load(Ordering::Acquire) >= recovery {
            return Ok(());
        }
        // Built outside the lock (it may read certificates); two tasks may both build one,
        // only the first is kept. The mark moves with the swap, so whoever sees it sees the
        // new client.
        let fresh = http_client(
            &self.inner.host,
            &self.inner.opts,
            Pool::Keep(&self.inner.conn_watch),
        )?;
        let mut http = self.inner.http.write().expect("http lock");
        if self.inner.renewed.load(Ordering::Acquire) < recovery {
            *http = fresh;
            self.inner.renewed.store(recovery, Ordering::Release);
        }
        Ok(())
    }

    /// Checks the registry answers for `repository` (auth, reachability). A missing one is
    /// fine unless `require_existing_repository`: ECR creates it on the first push when a
    /// repository creation template covers it, and otherwise drops the upload POST, which
    /// `start_upload` turns into [`RegistryError::RepositoryMissing`].
    pub async fn check_repository(&self, repository: &str) -> Result<(), RegistryError> {
        match self.tags_probe(repository).await? {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("NAME_UNKNOWN") && err.status() == Some(404) => {
                if self.inner.opts.require_existing_repository {
                    return Err(RegistryError::RepositoryMissing {
                        repository: repository.to_string(),
                        registry: self.inner.host.clone(),
                    });
                }
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the registry says `repository` does not exist (`404 NAME_UNKNOWN` on a tag
    /// list); `false` when it exists or cannot tell (a failed request).
    pub(crate) async fn repository_unknown(&self, repository: &str) -> bool {
        matches!(
            self.tags_probe(repository).await,
            Ok(Err(e)) if e.status() == Some(404) && e.code() == Some("NAME_UNKNOWN")
        )
    }

    /// `GET /v2/<repo>/tags/list?n=1`: `Ok(Ok(()))` on a 2xx, `Ok(Err(answer))` for any other
    /// answer, `Err` when the request failed.
    async fn tags_probe(
        &self,
        repository: &str,
    ) -> Result<Result<(), RegistryError>, RegistryError> {
        let mut url = self.inner.repo_url(repository, "tags/list")?;
        url.set_query(Some("n=1"));
        let req = Req::new(Method::GET, url).scope(pull_scope(repository));
        let resp = retry(&self.inner.opts.retry, "check repository", || {
            self.inner.send_ok(&req)
        })
        .await?;
        if resp.status.is_success() {
            return Ok(Ok(()));
        }
        Ok(Err(resp.error(&Method::GET)))
    }
}

/// `GET /v2/` on a new connection, without auth or retries: any HTTP answer (a 401 too)
/// means the link to the registry is up; no answer within [`PROBE_TIMEOUT_MS`] means down.
pub struct LinkProbe {
    url: Url,
    http: reqwest::Client,
}

impl LinkProbe {
    pub async fn link_up(&self) -> bool {
        self.http.get(self.url.clone()).send().await.is_ok()
    }
}

/// Whether a client keeps idle connections: uploads do (and tell the stall watchdog's
/// [`conn_watch::ConnWatch`] about them), link probes must not (a pooled connection from
/// before an outage would answer for the old network).
#[derive(Clone, Copy)]
enum Pool<'a> {
    Keep(&'a Arc<conn_watch::ConnWatch>),
    Probe,
}

/// The HTTP client of a [`RegistryClient`], or of its link probes (no pool, and every phase
/// bounded by [`PROBE_TIMEOUT_MS`]).
/// The HTTP client for `host`, with the caller's proxies and CA roots: the same for the
/// pooled client, its renewals and the link probe, so a probe reaches the registry the way
/// uploads do.
fn http_client(
    host: &str,
    opts: &ClientOptions,
    pool: Pool<'_>,
) -> Result<reqwest::Client, RegistryError> {
    let builder = network::configure(reqwest::Client::builder(), host, &opts.env)?;
    // A dead link (dropped Wi-Fi, a laptop that slept) leaves sent data unacknowledged, or
    // the peer's window shut: the kernel drops such a connection after the stall timeout.
    // This covers the bytes of a body that already left the process even where the stall
    // watchdog cannot read the kernel's acknowledgements (see `conn_watch`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let builder = builder.tcp_user_timeout(opts.stall_timeout);
    let builder = match pool {
        Pool::Keep(watch) => builder
            .connect_timeout(opts.connect_timeout)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
            .connector_layer(conn_watch::WatchLayer {
                watch: watch.clone(),
            }),
        Pool::Probe => {
            let limit = Duration::from_millis(PROBE_TIMEOUT_MS);
            builder
                .connect_timeout(limit)
                .timeout(limit)
                .pool_max_idle_per_host(0)
        }
    };
    builder
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .tcp_nodelay(true)
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RegistryError::Config(format!("HTTP client: {e}")))
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Inner {
    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.base
            .join(path)
            .map_err(|e| RegistryError::Config(format!("bad path {path:?}: {e}")))
    }

    /// `/v2/<repo>/<rest>`, refusing repository names that would escape the path.
    fn repo_url(&self, repo: &str, rest: &str) -> Result<Url, RegistryError> {
        if repo.is_empty()
            || repo.contains("..")
            || repo.starts_with('/')
            || repo.contains(['?', '#', ' '])
        {
            return Err(RegistryError::InvalidReference(repo.to_string()));
        }
        self.url(&format!("v2/{repo}/{rest}"))
    }

    fn credential_source(&self) -> Result<CredentialSource, RegistryError> {
        if let Some(s) = &self.auth.lock().expect("auth lock").source {
            return Ok(s.clone());
        }
        let s = match &self.opts.credentials {
            Some(c) => CredentialSource::Explicit(c.clone()),
            None => self.opts.lookup.source_for(&self.host, &self.opts.env)?,
        };
        self.auth.lock().expect("auth lock").source = Some(s.clone());
        Ok(s)
    }

    /// The credentials, fetched once (helpers are slow) until a refresh.
    async fn credentials(&self) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = &self.auth.lock().expect("auth lock").credentials {
            return Ok(c.clone());
        }
        let _one_fetch = self.fetch_lock.lock().await;
        if let Some(c) = &self.auth.lock().expect("auth lock").credentials {
            return Ok(c.clone());
        }
        self.fetch_credentials().await
    }

    /// Runs the source (holding `fetch_lock`).
    async fn fetch_credentials(&self) -> Result<Option<Credentials>, RegistryError> {
        let source = self.credential_source()?;
        let c = self
            .opts
            .lookup
            .fetch(&self.host, &source, &self.opts.env)
            .await?;
        self.auth.lock().expect("auth lock").credentials = Some(c.clone());
        Ok(c)
    }

    pub(crate) fn auth_generation(&self) -> u64 {
        self.auth.lock().expect("auth lock").generation
    }

    /// Forgets credentials and tokens, re-reads the source (config.json may have changed) and
    /// fetches again (a helper such as docker-credential-ecr-login mints a new token) -- unless
    /// someone refreshed since `seen_generation`, in which case their result is used.
    async fn refresh_credentials(&self, seen_generation: u64) -> Result<(), RegistryError> {
        let _one_fetch = self.fetch_lock.lock().await;
        {
            let mut st = self.auth.lock().expect("auth lock");
            if st.generation != seen_generation {
                return Ok(());
            }
            st.credentials = None;
            st.source = None;
            st.tokens.clear();
        }
        let r = self.fetch_credentials().await.map(|_| ());
        self.auth.lock().expect("auth lock").generation += 1;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_chunk_policy_per_host() {
        let c = |h: &str, o: ClientOptions| RegistryClient::new(h, o).unwrap();
        assert_eq!(
            c("127.0.0.1:5000", ClientOptions::default()).base_url(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            c("localhost", ClientOptions::default()).base_url(),
            "http://localhost/"
        );
        assert_eq!(
            c("[::1]:5000", ClientOptions::default()).base_url(),
            "http://[::1]:5000/"
        );
        assert_eq!(
            c("example.com", ClientOptions::default()).base_url(),
            "https://example.com/"
        );
        let insecure = ClientOptions {
            insecure: true,
            ..ClientOptions::default()
        };
        assert_eq!(
            c("10.1.2.3:5000", insecure).base_url(),
            "http://10.1.2.3:5000/"
        );
        assert_eq!(
            c("docker.io", ClientOptions::default()).base_url(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            c("example.com", ClientOptions::default()).chunk_bytes(),
            16 << 20
        );
        let small = || ClientOptions {
            chunk_bytes: Some(1 << 20),
            ..ClientOptions::default()
        };
        assert_eq!(c("example.com", small()).chunk_bytes(), 1 << 20);
        for ecr in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "123456789012.dkr-ecr.us-east-1.on.aws",
            "public.ecr.aws",
        ] {
            assert_eq!(c(ecr, small()).chunk_bytes(), ECR_CHUNK_BYTES_MIN, "{ecr}");
            assert_eq!(
                c(ecr, small()).chunk_bytes_min(),
                ECR_CHUNK_BYTES_MIN,
                "{ecr}"
            );
        }
        assert!(RegistryClient::new("a/b", ClientOptions::default()).is_err());
    }

    #[test]
    fn options_debug_redacts_credentials() {
        let o = ClientOptions {
            credentials: Some(Credentials {
                username: "AWS".into(),
                secret: "hunter2".into(),
            }),
            ..ClientOptions::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
