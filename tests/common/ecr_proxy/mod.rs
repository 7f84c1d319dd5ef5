//! An ECR-emulating proxy in front of the real registry: enforces what docs/ECR.md
//! lists, so the client is tested against ECR's quirks without ECR. Scriptable through the
//! public fields of [`ProxyState`] (atomics and mutexes, changeable while it runs), and it
//! counts bytes in each direction.
//!
//! Emulated:
//! - layer parts are committed whole or not at all: a PATCH body is buffered fully before it
//!   is forwarded, so a PATCH cut midway leaves the offset where it was;
//! - PATCH answers 201; `Location` is absolute, points at the proxy, the same UUID every time
//!   (the registry's `_state` Location is kept inside);
//! - `Range` is stale: it advances after the first PATCH and then stays;
//! - GET upload status answers 404 `BLOB_UPLOAD_UNKNOWN`, for live sessions too (ECR's status
//!   endpoint does not work; the code it sends is unknown, so the emulation sends the one
//!   that looks most like "session gone"), or a bare 404 without a body when
//!   `status_404_without_code` is set;
//! - a part that does not start at the committed offset: 416 `BLOB_UPLOAD_INVALID` "First byte
//!   of the layer part is N instead of M";
//! - every part but the last must be at least `part_min_bytes`, checked at the final PUT
//!   (`LayerPartTooSmallException`); a blob without parts is refused;
//! - an OCI manifest without a top-level `mediaType`: 405 `UNSUPPORTED`; too many layers:
//!   405 `UNSUPPORTED`; manifests over 4 MiB refused; immutable tags: 400 `TAG_INVALID`;
//! - manifest GET/HEAD without `Docker-Content-Digest`;
//! - cross-repository mount off (a mount POST opens a plain upload session) unless enabled;
//! - Basic challenge with expiring tokens (403 "Your authorization token has expired"), or a
//!   Bearer challenge backed by our token service (as ECR Public);
//! - a missing repository: upload POST gets a dropped connection, the rest 404 `NAME_UNKNOWN`;
//!   unless a repository creation template with `CREATE_ON_PUSH` covers it
//!   (`create_on_push`): then the upload POST creates it, and it works like any other;
//! - 429 `TOOMANYREQUESTS` bursts without `Retry-After` (`throttle_next`), 503 bursts
//!   (`fail_next_5xx`); the sizes of the committed parts in order (`part_sizes`);
//! - faults: cut the connection after N request-body bytes; drop the response after the
//!   registry accepted a chunk or completed the blob (the lost acknowledgement).
//! - holds, while a flag is set: parts (`part_delay_ms`), manifest PUTs, tag-list GETs, HEADs
//!   of blobs the registry has; a test kills its client while the job is in the state those
//!   requests belong to.
//!
//! Use (see tests/ecr.rs):
//! ```ignore
//! let reg = TestRegistry::start();
//! let proxy = EcrProxy::start(reg.addr).await;          // ECR defaults: 5 MiB parts, no auth
//! proxy.state.part_min_bytes.store(1 << 20, SeqCst);    // smaller data in tests
//! proxy.basic_auth(&["token-1"]);                       // user AWS
//! proxy.set_repositories(&["team/app"]);                // others are missing
//! proxy.create_on_push(&["prod"]);                       // prod/... is created on push
//! *proxy.state.cut_next_body_after.lock().unwrap() = Some(512 * 1024);
//! proxy.state.drop_next_patch_response.store(true, SeqCst);
//! proxy.state.throttle_next.store(3, SeqCst);
//! // point the client (or hoistd) at proxy.host(); check proxy.bytes_in(), proxy.log()
//! ```
//! For faults against the real registry's own behaviour (a cut that leaves a partial part),
//! use `cut_proxy::CutProxy` instead: it forwards bytes as they come.
#![allow(dead_code)]

mod manifests;
mod uploads;

use manifests::handle_manifest;
use uploads::{handle_upload, upload_location};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::serve::{Cut, Resp, ServerTask, oci_error, respond, spawn_server};
use super::token_service::TokenState;

pub const ECR_PART_MIN_BYTES: u64 = 5 << 20;
pub const ECR_MANIFEST_BYTES_MAX: usize = 4 << 20;
pub const ECR_LAYERS_MAX: usize = 127;
pub const REGISTRY_ID: &str = "123456789012";
pub const EXPIRED_MESSAGE: &str =
    "Your authorization token has expired. Reauthenticate and try again.";

/// How the proxy authenticates clients.
pub enum ProxyAuth {
    None,
    /// ECR: user `AWS`, password one of `valid`; one of `expired` gives the expired-token 403.
    Basic {
        valid: HashSet<String>,
        expired: HashSet<String>,
    },
    /// ECR Public style: tokens from our token service.
    Bearer {
        realm: String,
        tokens: Arc<TokenState>,
    },
}

/// One upload session as the proxy sees it.
#[derive(Debug, Clone)]
pub struct ProxyUpload {
    pub repo: String,
    /// The real registry's latest Location (with `_state`).
    pub upstream_url: String,
    pub committed: u64,
    pub parts: Vec<u64>,
    pub first_part_end: Option<u64>,
    /// Held while a part is checked and committed: ECR applies one part of an upload at a time
    /// (a retry that arrives while the previous part still commits sees its result).
    pub serial: Arc<tokio::sync::Mutex<()>>,
}

/// Scripting and counters. Change fields while the proxy runs.
pub struct ProxyState {
    pub upstream: SocketAddr,
    pub part_min_bytes: AtomicU64,
    pub layers_max: AtomicUsize,
    pub immutable_tags: AtomicBool,
    pub mount_enabled: AtomicBool,
    pub auth: Mutex<ProxyAuth>,
    /// `None`: every repository exists; `Some(set)`: only these (as if created in ECR).
    pub repositories: Mutex<Option<HashSet<String>>>,
    /// Prefixes of the repository creation templates that apply to `CREATE_ON_PUSH`: an upload
    /// POST to a missing repository under one of them creates it. `ROOT` covers every name.
    pub create_on_push_prefixes: Mutex<Vec<String>>,
    /// Answer the next N requests with 429.
    pub throttle_next: AtomicU32,
    /// Answer the next N requests with 503 (a burst of server errors).
    pub fail_next_5xx: AtomicU32,
    /// Cut the connection of the next request with a body once it has sent this many bytes.
    pub cut_next_body_after: Mutex<Option<u64>>,
    /// Forward the next PATCH, then drop the response (the registry has the part).
    pub drop_next_patch_response: AtomicBool,
    /// Forward the next final PUT, then drop the response (the blob is complete).
    pub drop_next_finish_response: AtomicBool,
    /// Hold every part (PATCH or PUT with a body) this long after receiving it whole and
    /// before committing it: a kill meanwhile loses exactly that part.
    pub part_delay_ms: AtomicU64,
    /// Parts received and waiting for `part_delay_ms`.
    pub parts_held: AtomicU32,
    /// Hold manifest PUTs (after receiving them) while set.
    pub hold_manifest_puts: AtomicBool,
    /// Set once a manifest PUT was held.
    pub manifest_puts_held: AtomicBool,
    /// Manifest PUTs still let through while `hold_manifest_puts` is set (one per PUT), so
    /// a push of several tags can be stopped between two of them.
    pub manifest_puts_before_hold: AtomicU32,
    /// Hold tag-list GETs while set: a push's repository check, so its job stays `preparing`.
    pub hold_tag_lists: AtomicBool,
    /// Tag-list GETs held so far.
    pub tag_lists_held: AtomicU32,
    /// Hold blob HEADs the registry answers 200 while set (answered, then held): in a
    /// repository that starts empty, the HEADs of blobs already uploaded, so a job that
    /// verifies stays `verifying` while the HEADs before its uploads go through.
    pub hold_present_blob_heads: AtomicBool,
    /// Blob HEADs held so far.
    pub present_blob_heads_held: AtomicU32,
    /// Request-body bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Response-body bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Part bytes the registry accepted (committed) through PATCH or PUT.
    pub bytes_committed: AtomicU64,
    pub throttled: AtomicU32,
    pub cuts: AtomicU32,
    pub status_gets: AtomicU32,
    /// Answer upload status GETs with a bare 404 (no error body, so no code) instead of
    /// `BLOB_UPLOAD_UNKNOWN`.
    pub status_404_without_code: AtomicBool,
    pub out_of_order: AtomicU32,
    /// Every request: "METHOD path had_authorization".
    pub log: Mutex<Vec<String>>,
    /// Sizes of the PATCH parts committed, in order (all sessions).
    pub part_sizes: Mutex<Vec<u64>>,
    pub uploads: Mutex<HashMap<String, ProxyUpload>>,
    addr: Mutex<Option<SocketAddr>>,
}

pub struct EcrProxy {
    pub addr: SocketAddr,
    pub state: Arc<ProxyState>,
    task: ServerTask,
}

impl EcrProxy {
    /// A proxy to `upstream` with ECR's defaults (5 MiB parts, no auth, every repo exists).
    pub async fn start(upstream: SocketAddr) -> EcrProxy {
        let state = Arc::new(ProxyState {
            upstream,
            part_min_bytes: AtomicU64::new(ECR_PART_MIN_BYTES),
            layers_max: AtomicUsize::new(ECR_LAYERS_MAX),
            immutable_tags: AtomicBool::new(false),
            mount_enabled: AtomicBool::new(false),
            auth: Mutex::new(ProxyAuth::None),
            repositories: Mutex::new(None),
            create_on_push_prefixes: Mutex::new(Vec::new()),
            throttle_next: AtomicU32::new(0),
            fail_next_5xx: AtomicU32::new(0),
            cut_next_body_after: Mutex::new(None),
            drop_next_patch_response: AtomicBool::new(false),
            drop_next_finish_response: AtomicBool::new(false),
            part_delay_ms: AtomicU64::new(0),
            parts_held: AtomicU32::new(0),
            hold_manifest_puts: AtomicBool::new(false),
            manifest_puts_held: AtomicBool::new(false),
            manifest_puts_before_hold: AtomicU32::new(0),
            hold_tag_lists: AtomicBool::new(false),
            tag_lists_held: AtomicU32::new(0),
            hold_present_blob_heads: AtomicBool::new(false),
            present_blob_heads_held: AtomicU32::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_committed: AtomicU64::new(0),
            throttled: AtomicU32::new(0),
            cuts: AtomicU32::new(0),
            status_gets: AtomicU32::new(0),
            status_404_without_code: AtomicBool::new(false),
            out_of_order: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
            part_sizes: Mutex::new(Vec::new()),
            uploads: Mutex::new(HashMap::new()),
            addr: Mutex::new(None),
        });
        let st = state.clone();
        let (addr, task) = spawn_server(move |req| {
            let st = st.clone();
            async move {
                let r = handle(&st, req).await;
                if let Ok(resp) = &r {
                    use hyper::body::Body as _;
                    let n = resp.body().size_hint().exact().unwrap_or(0);
                    st.bytes_out.fetch_add(n, Ordering::SeqCst);
                }
                r
            }
        })
        .await;
        *state.addr.lock().unwrap() = Some(addr);
        EcrProxy { addr, state, task }
    }

    /// Clients reach the proxy through `front` (a TCP fault proxy in front of it): the
    /// absolute upload Locations point there, so every request crosses the faults.
    pub fn serve_behind(&self, front: SocketAddr) {
        *self.state.addr.lock().unwrap() = Some(front);
    }

    /// `127.0.0.1:PORT`, the registry host clients use.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// ECR Basic auth with these valid passwords.
    pub fn basic_auth(&self, valid: &[&str]) {
        *self.state.auth.lock().unwrap() = ProxyAuth::Basic {
            valid: valid.iter().map(|s| s.to_string()).collect(),
            expired: HashSet::new(),
        };
    }

    /// Moves `password` from valid to expired; makes `next` valid.
    pub fn expire_password(&self, password: &str, next: &str) {
        if let ProxyAuth::Basic { valid, expired } = &mut *self.state.auth.lock().unwrap() {
            valid.remove(password);
            expired.insert(password.to_string());
            valid.insert(next.to_string());
        }
    }

    pub fn bearer_auth(&self, realm: String, tokens: Arc<TokenState>) {
        *self.state.auth.lock().unwrap() = ProxyAuth::Bearer { realm, tokens };
    }

    /// Only these repositories exist.
    pub fn set_repositories(&self, repos: &[&str]) {
        *self.state.repositories.lock().unwrap() =
            Some(repos.iter().map(|s| s.to_string()).collect());
    }

    /// Repository creation templates with `CREATE_ON_PUSH` for these prefixes (as ECR's
    /// `prefix`: `prod` covers `prod/...`; `ROOT` covers every repository).
    pub fn create_on_push(&self, prefixes: &[&str]) {
        *self.state.create_on_push_prefixes.lock().unwrap() =
            prefixes.iter().map(|s| s.to_string()).collect();
    }

    /// Whether the repository exists in the emulated registry (created, or created on push).
    pub fn repository_exists(&self, repo: &str) -> bool {
        repo_exists(&self.state, repo)
    }

    pub fn bytes_in(&self) -> u64 {
        self.state.bytes_in.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

/// What the path addresses.
enum Route {
    Base,
    UploadStart { repo: String },
    Upload { repo: String, uuid: String },
    Blob { repo: String },
    Manifest { repo: String, reference: String },
    Tags { repo: String },
    Other,
}

fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Other;
    };
    if rest.is_empty() {
        return Route::Base;
    }
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        let repo = rest[..i].to_string();
        let uuid = &rest[i + "/blobs/uploads/".len()..];
        return if uuid.is_empty() {
            Route::UploadStart { repo }
        } else {
            Route::Upload {
                repo,
                uuid: uuid.to_string(),
            }
        };
    }
    if let Some(i) = rest.rfind("/blobs/") {
        return Route::Blob {
            repo: rest[..i].to_string(),
        };
    }
    if let Some(i) = rest.rfind("/manifests/") {
        return Route::Manifest {
            repo: rest[..i].to_string(),
            reference: rest[i + "/manifests/".len()..].to_string(),
        };
    }
    if let Some(i) = rest.rfind("/tags/list") {
        return Route::Tags {
            repo: rest[..i].to_string(),
        };
    }
    Route::Other
}

pub(crate) fn header(req_headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    req_headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads the whole request body, counting bytes, cutting the connection when scripted to.
pub(crate) async fn read_body(st: &ProxyState, body: Incoming) -> Result<Bytes, Cut> {
    let cut_after = st.cut_next_body_after.lock().unwrap().take();
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Cut("client went away mid-body"))?;
        if let Ok(data) = frame.into_data() {
            st.bytes_in.fetch_add(data.len() as u64, Ordering::SeqCst);
            buf.extend_from_slice(&data);
            if let Some(n) = cut_after
                && buf.len() as u64 >= n
            {
                st.cuts.fetch_add(1, Ordering::SeqCst);
                return Err(Cut("scripted cut after N body bytes"));
            }
        }
    }
    if let Some(n) = cut_after {
        // The body was shorter than N: keep the cut for the next one.
        *st.cut_next_body_after.lock().unwrap() = Some(n);
    }
    Ok(Bytes::from(buf))
}

/// The upstream answer.
pub struct Upstream {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// One request to the real registry over a fresh connection.
pub(crate) async fn forward(
    st: &ProxyState,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Upstream, Cut> {
    let stream = tokio::net::TcpStream::connect(st.upstream)
        .await
        .map_err(|_| Cut("upstream down"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Cut("upstream handshake"))?;
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", st.upstream.to_string())
        .header("content-length", body.len().to_string());
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let resp = sender
        .send_request(b.body(Full::new(body)).expect("request"))
        .await
        .map_err(|_| Cut("upstream request failed"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|_| Cut("upstream body"))?
        .to_bytes();
    Ok(Upstream {
        status,
        headers,
        body,
    })
}

pub(crate) fn pass(up: Upstream, drop_headers: &[&str]) -> Resp {
    let mut r = hyper::Response::builder().status(up.status);
    for (k, v) in up.headers.iter() {
        let name = k.as_str();
        if drop_headers.contains(&name)
            || name == "content-length"
            || name == "transfer-encoding"
            || name == "connection"
        {
            continue;
        }
        r = r.header(k, v);
    }
    r.body(Full::new(up.body)).expect("response")
}

/// `/path?query` of an absolute or relative upstream URL.
pub(crate) fn path_and_query(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

fn repo_of(r: &Route) -> Option<&str> {
    match r {
        Route::UploadStart { repo }
        | Route::Upload { repo, .. }
        | Route::Blob { repo }
        | Route::Manifest { repo, .. }
        | Route::Tags { repo } => Some(repo),
        _ => None,
    }
}

fn check_auth(
    st: &ProxyState,
    headers: &hyper::HeaderMap,
    method: &Method,
    r: &Route,
) -> Option<Resp> {
    let authz = header(headers, "authorization");
    match &*st.auth.lock().unwrap() {
        ProxyAuth::None => None,
        ProxyAuth::Basic { valid, expired } => check_basic(valid, expired, authz),
        ProxyAuth::Bearer { realm, tokens } => check_bearer(realm, tokens, authz, method, r),
    }
}

/// ECR's Basic auth: user `AWS`, a password from the valid set; an expired one gets ECR's 403.
fn check_basic(
    valid: &HashSet<String>,
    expired: &HashSet<String>,
    authz: Option<String>,
) -> Option<Resp> {
    let challenge = || {
        let mut r = oci_error(401, "DENIED", "Not Authorized");
        r.headers_mut().insert(
            "www-authenticate",
            format!(r#"Basic realm="https://{REGISTRY_ID}.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#)
                .parse()
                .unwrap(),
        );
        r
    };
    let Some(a) = authz.and_then(|a| a.strip_prefix("Basic ").map(str::to_string)) else {
        return Some(challenge());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(a.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .unwrap_or_default();
    let Some(("AWS", pw)) = decoded.split_once(':') else {
        return Some(challenge());
    };
    if expired.contains(pw) {
        return Some(oci_error(403, "DENIED", EXPIRED_MESSAGE));
    }
    if valid.contains(pw) {
        None
    } else {
        Some(challenge())
    }
}

/// Bearer tokens from the token service, scoped to a repository and pull or push.
fn check_bearer(
    realm: &str,
    tokens: &TokenState,
    authz: Option<String>,
    method: &Method,
    r: &Route,
) -> Option<Resp> {
    let repo = repo_of(r);
    let action = if matches!(*method, Method::GET | Method::HEAD) {
        "pull"
    } else {
        "push"
    };
    let ok = match (
        authz.as_deref().and_then(|a| a.strip_prefix("Bearer ")),
        repo,
    ) {
        (Some(t), Some(repo)) => tokens.allows(t, repo, action),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if ok {
        return None;
    }
    let scope = repo
        .map(|r| format!(r#",scope="repository:{r}:pull,push""#))
        .unwrap_or_default();
    let mut resp = oci_error(401, "UNAUTHORIZED", "authentication required");
    resp.headers_mut().insert(
        "www-authenticate",
        format!(r#"Bearer realm="{realm}",service="hoist-proxy"{scope}"#)
            .parse()
            .unwrap(),
    );
    Some(resp)
}

fn repo_exists(st: &ProxyState, repo: &str) -> bool {
    st.repositories
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|s| s.contains(repo))
}

async fn handle(st: &Arc<ProxyState>, req: Request<Incoming>) -> Result<Resp, Cut> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    st.log.lock().unwrap().push(format!(
        "{method} {path} {}",
        if parts.headers.contains_key("authorization") {
            "auth"
        } else {
            "noauth"
        }
    ));
    let r = route(&path);
    if let Some(resp) = check_auth(st, &parts.headers, &method, &r)
        .or_else(|| injected_fault(st))
        .map(Ok)
        .or_else(|| missing_repository(&r, st))
    {
        let resp = resp?;
        // Drain the body so the connection stays usable.
        let _ = read_body(st, body).await;
        return Ok(resp);
    }
    let proxy_addr = st.addr.lock().unwrap().expect("proxy address set");
    match r {
        Route::Base => {
            let _ = read_body(st, body).await;
            Ok(respond(
                200,
                &[("content-type", "application/json".into())],
                "{}",
            ))
        }
        Route::Other => Ok(oci_error(404, "NOT_FOUND", "no such endpoint")),
        Route::Tags { repo } => {
            hold_while(&st.hold_tag_lists, &st.tag_lists_held).await;
            list_tags(st, method, &path, query, &repo).await
        }
        Route::Blob { .. } => {
            let head = method == Method::HEAD;
            let up = forward(st, method, &path, &[], Bytes::new()).await?;
            if head && up.status == 200 {
                hold_while(&st.hold_present_blob_heads, &st.present_blob_heads_held).await;
            }
            Ok(pass(up, &[]))
        }
        Route::UploadStart { repo } => {
            let _ = read_body(st, body).await?;
            start_upload(st, proxy_addr, &path, query, &repo).await
        }
        Route::Upload { repo, uuid } => {
            handle_upload(st, proxy_addr, &parts, body, &repo, &uuid, query).await
        }
        Route::Manifest { repo, reference } => {
            handle_manifest(st, &parts, body, &repo, &reference).await
        }
    }
}

/// Holds a request while `hold` is set, counting it in `held`: a test keeps a job in the state
/// this request belongs to for as long as it needs.
async fn hold_while(hold: &AtomicBool, held: &AtomicU32) {
    if !hold.load(Ordering::SeqCst) {
        return;
    }
    held.fetch_add(1, Ordering::SeqCst);
    while hold.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A throttle (429) or a 5xx the test asked for, counted in `throttled`.
fn injected_fault(st: &ProxyState) -> Option<Resp> {
    let take = |n: &AtomicU32| {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let resp = if take(&st.throttle_next) {
        oci_error(429, "TOOMANYREQUESTS", "Rate exceeded")
    } else if take(&st.fail_next_5xx) {
        oci_error(503, "UNAVAILABLE", "service unavailable")
    } else {
        return None;
    };
    st.throttled.fetch_add(1, Ordering::SeqCst);
    Some(resp)
}

/// Whether a `CREATE_ON_PUSH` template covers `repo` (ECR matches a template's prefix as a
/// namespace: `prod` covers `prod/app`, not `production`).
fn created_on_push(st: &ProxyState, repo: &str) -> bool {
    st.create_on_push_prefixes.lock().unwrap().iter().any(|p| {
        p == "ROOT"
            || repo
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// ECR's answer for a repository that was not created: 404 NAME_UNKNOWN, except an upload POST,
/// whose connection ECR cuts, or which creates the repository when a create-on-push template
/// covers it.
fn missing_repository(r: &Route, st: &ProxyState) -> Option<Result<Resp, Cut>> {
    let repo = repo_of(r)?;
    if repo_exists(st, repo) {
        return None;
    }
    if matches!(r, Route::UploadStart { .. }) {
        if created_on_push(st, repo) {
            if let Some(set) = st.repositories.lock().unwrap().as_mut() {
                set.insert(repo.to_string());
            }
            return None;
        }
        return Some(Err(Cut("upload POST to a missing repository")));
    }
    Some(Ok(oci_error(
        404,
        "NAME_UNKNOWN",
        &format!(
            "The repository with name '{repo}' does not exist in the registry with id '{REGISTRY_ID}'"
        ),
    )))
}

/// The tag list; an empty one for a repository that exists here but holds nothing yet.
async fn list_tags(
    st: &ProxyState,
    method: Method,
    path: &str,
    query: Option<String>,
    repo: &str,
) -> Result<Resp, Cut> {
    let up = forward(
        st,
        method,
        &format!("{path}?{}", query.unwrap_or_default()),
        &[],
        Bytes::new(),
    )
    .await?;
    if up.status == 404 {
        // The repository exists here (created in "ECR") even if nothing was pushed.
        let body = serde_json::json!({"name": repo, "tags": []}).to_string();
        return Ok(respond(
            200,
            &[("content-type", "application/json".into())],
            body,
        ));
    }
    Ok(pass(up, &[]))
}

/// An upload POST: opened upstream (a mount only when the test enables it), then kept as a
/// proxy upload whose location points back at the proxy.
async fn start_upload(
    st: &ProxyState,
    proxy_addr: SocketAddr,
    path: &str,
    query: Option<String>,
    repo: &str,
) -> Result<Resp, Cut> {
    let mut q = query.unwrap_or_default();
    if q.contains("mount=") && !st.mount_enabled.load(Ordering::SeqCst) {
        q.clear();
    }
    let pq = if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    };
    let up = forward(st, Method::POST, &pq, &[], Bytes::new()).await?;
    if up.status != 202 {
        return Ok(pass(up, &["location"]));
    }
    let loc = header(&up.headers, "location").unwrap_or_default();
    let upstream_url = url::Url::parse(&format!("http://{}/", st.upstream))
        .unwrap()
        .join(&loc)
        .map(|u| u.to_string())
        .unwrap_or(loc);
    let uuid = header(&up.headers, "docker-upload-uuid")
        .unwrap_or_else(|| format!("{:x}", rand::random::<u64>()));
    st.uploads.lock().unwrap().insert(
        uuid.clone(),
        ProxyUpload {
            repo: repo.to_string(),
            upstream_url,
            committed: 0,
            parts: Vec::new(),
            first_part_end: None,
            serial: Arc::new(tokio::sync::Mutex::new(())),
        },
    );
    Ok(respond(
        202,
        &[
            ("location", upload_location(proxy_addr, repo, &uuid)),
            ("docker-upload-uuid", uuid),
            ("range", "0-0".into()),
        ],
        Bytes::new(),
    ))
}
