//! The socket API's wire format: every request, response and event type, the route table, and
//! the error body. `proto/openapi.yaml` describes the same thing for people and other clients;
//! `tests/daemon_api.rs` fails when [`ROUTES`] and the document disagree.
//!
//! **Architecture Invariant:** only this module knows the wire format. The daemon and the CLI
//! exchange these types and call [`encode`] / [`decode`]; neither builds JSON by hand.
//!
//! Conventions: JSON bodies, `snake_case` field names, sizes in bytes with a `_bytes` suffix,
//! times as Unix epoch milliseconds with a `_ms` suffix, errors as [`ErrorBody`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// The API version prefix. A breaking change gets `/v2`, never an edit of `/v1`.
pub const API_PREFIX: &str = "/v1";

/// Media type of a JSON body.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Media type of the event stream: one JSON [`Event`] per line.
pub const CONTENT_TYPE_NDJSON: &str = "application/x-ndjson";
/// Media type of the metrics page (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4";

/// Smallest accepted chunk: ECR refuses upload parts below 5 MiB (except the last one).
pub const CHUNK_BYTES_MIN: u64 = crate::registry::ECR_CHUNK_BYTES_MIN;
/// Largest accepted chunk: one chunk is held in memory per upload connection.
pub const CHUNK_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Chunk size when the client does not ask for one.
pub const CHUNK_BYTES_DEFAULT: u64 = crate::registry::CHUNK_BYTES_DEFAULT;
/// Longest accepted source or target string; anything longer is a mistake, not an image name.
pub const REFERENCE_LEN_MAX: usize = 4096;

/// Every endpoint of the socket API. The router matches requests with [`match_route`], which
/// reads [`ROUTES`]; nothing else decides which paths exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Health,
    Metrics,
    SubmitJob,
    ListJobs,
    GetJob,
    DeleteJob,
    JobEvents,
    PauseJob,
    ResumeJob,
    CancelJob,
    RetryJob,
    GetBandwidth,
    SetBandwidth,
    SetJobBandwidth,
}

/// One row of the route table: method, path template (OpenAPI syntax) and endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

/// The route table: the single list of what the daemon serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/health",
        endpoint: Endpoint::Health,
    },
    Route {
        method: "GET",
        path: "/v1/metrics",
        endpoint: Endpoint::Metrics,
    },
    Route {
        method: "POST",
        path: "/v1/jobs",
        endpoint: Endpoint::SubmitJob,
    },
    Route {
        method: "GET",
        path: "/v1/jobs",
        endpoint: Endpoint::ListJobs,
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{id}",
        endpoint: Endpoint::GetJob,
    },
    Route {
        method: "DELETE",
        path: "/v1/jobs/{id}",
        endpoint: Endpoint::DeleteJob,
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{id}/events",
        endpoint: Endpoint::JobEvents,
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/pause",
        endpoint: Endpoint::PauseJob,
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/resume",
        endpoint: Endpoint::ResumeJob,
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/cancel",
        endpoint: Endpoint::CancelJob,
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/retry",
        endpoint: Endpoint::RetryJob,
    },
    Route {
        method: "PUT",
        path: "/v1/jobs/{id}/bandwidth",
        endpoint: Endpoint::SetJobBandwidth,
    },
    Route {
        method: "GET",
        path: "/v1/bandwidth",
        endpoint: Endpoint::GetBandwidth,
    },
    Route {
        method: "PUT",
        path: "/v1/bandwidth",
        endpoint: Endpoint::SetBandwidth,
    },
];

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint {0}: see proto/openapi.yaml for the API")]
    NotFound(String),
    #[error("{method} is not allowed on {path}: allowed are {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    #[error(transparent)]
    BadJobId(#[from] JobIdError),
}

/// Matches a request to an endpoint and the `{id}` path parameter, if the route has one.
pub fn match_route(method: &str, path: &str) -> Result<(Endpoint, Option<JobId>), RouteError> {
    let mut allowed = Vec::new();
    let mut matched = None;
    for route in ROUTES {
        if let Some(param) = match_template(route.path, path) {
            allowed.push(route.method);
            if route.method == method {
                matched = Some((route.endpoint, param));
            }
        }
    }
    match matched {
        Some((endpoint, Some(id))) => Ok((endpoint, Some(id.parse()?))),
        Some((endpoint, None)) => Ok((endpoint, None)),
        None if allowed.is_empty() => Err(RouteError::NotFound(path.to_string())),
        None => Err(RouteError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allowed: allowed.join(", "),
        }),
    }
}

/// `Some(param)` when `path` fits `template`; `param` is the `{...}` segment, if any.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut param = None;
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') && !ps.is_empty() => {
                param = Some(ps)
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// The path of a job endpoint, for clients: `job_path(&id, "pause")` is `/v1/jobs/ID/pause`.
pub fn job_path(id: &JobId, action: &str) -> String {
    if action.is_empty() {
        format!("{API_PREFIX}/jobs/{id}")
    } else {
        format!("{API_PREFIX}/jobs/{id}/{action}")
    }
}

/// A job's ID: `j` followed by 16 lowercase hex digits. Parsed once at the boundary.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job ID (j and 16 hex digits): list jobs with `hoist ls`")]
pub struct JobIdError(pub String);

/// Hex digits in a job ID after the `j`.
const JOB_ID_HEX_LEN: usize = 16;

impl JobId {
    /// A fresh random ID.
    pub fn random() -> JobId {
        JobId(format!("j{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix('j')
            .ok_or_else(|| JobIdError(s.to_string()))?;
        if hex.len() == JOB_ID_HEX_LEN
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(JobId(s.to_string()))
        } else {
            Err(JobIdError(s.to_string()))
        }
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Layer compression for blobs that are pushed compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("compression {other:?} is not gzip or zstd")),
        }
    }
}

/// Options of a job that are not its identity. No field carries credentials: the registry client
/// reads docker's config itself, so nothing secret ever reaches the store or the socket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Talk plain HTTP to the registry (test registries on loopback).
    pub insecure: bool,
    /// Push even when most ELF binaries in the layers are for another architecture than the
    /// config declares (issue 8); by default the job fails before the manifest commit.
    #[serde(default)]
    pub allow_arch_mismatch: bool,
    /// Give up at this moment (Unix seconds): until then the job keeps retrying through
    /// outages; past it the job fails with the reason. `None`: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_s: Option<u64>,
    /// This job's own upload limit, under the daemon-wide one; `None`: only the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_s: Option<u64>,
}

/// `POST /v1/jobs` body: what to push where. Absent fields take the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size_bytes: Option<u64>,
    #[serde(default)]
    pub options: JobOptions,
}

/// A validated job description: the daemon only ever sees these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub source: String,
    pub target: String,
    pub platform: Platform,
    pub compression: Compression,
    pub chunk_size_bytes: u64,
    pub options: JobOptions,
}

impl SubmitRequest {
    /// Checks the request and fills in defaults. The error is the message for the client.
    pub fn validate(self) -> Result<JobSpec, String> {
        for (what, value) in [("source", &self.source), ("target", &self.target)] {
            if value.trim().is_empty() {
                return Err(format!("{what} is empty: give an image {what}"));
            }
            if value.len() > REFERENCE_LEN_MAX || value.chars().any(char::is_control) {
                return Err(format!(
                    "{what} is longer than {REFERENCE_LEN_MAX} characters or has control characters: check the {what}"
                ));
            }
        }
        // `user:password@registry/...` would carry credentials into the store and the logs.
        let host = self.target.split('/').next().unwrap_or_default();
        if host.contains('@') || self.target.contains("://") {
            return Err(
                "target must be REGISTRY/REPOSITORY[:TAG] without a scheme or credentials: log in with `docker login REGISTRY` instead"
                    .into(),
            );
        }
        let platform = match &self.platform {
            None => Platform::linux_amd64(),
            Some(p) => p
                .parse()
                .map_err(|e: crate::platform::PlatformError| e.to_string())?,
        };
        let chunk_size_bytes = self.chunk_size_bytes.unwrap_or(CHUNK_BYTES_DEFAULT);
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_size_bytes) {
            return Err(format!(
                "chunk size {chunk_size_bytes} bytes is outside {CHUNK_BYTES_MIN}..={CHUNK_BYTES_MAX}: ECR needs at least 5 MiB per chunk"
            ));
        }
        Ok(JobSpec {
            source: self.source,
            target: self.target,
            platform,
            compression: self.compression.unwrap_or_default(),
            chunk_size_bytes,
            options: self.options,
        })
    }
}

/// Where a job is in its life.
///
/// ```text
/// queued -> preparing -> uploading -> verifying -> committing -> verified -> done
///    any state before committing -> paused -> queued (resume)
///    any unfinished state -> cancelled;  any running state -> failed (reason) -> queued (retry)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Preparing,
    Uploading,
    Verifying,
    Committing,
    Verified,
    Done,
    Failed,
    Paused,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 10] = [
        JobState::Queued,
        JobState::Preparing,
        JobState::Uploading,
        JobState::Verifying,
        JobState::Committing,
        JobState::Verified,
        JobState::Done,
        JobState::Failed,
        JobState::Paused,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Preparing => "preparing",
            JobState::Uploading => "uploading",
            JobState::Verifying => "verifying",
            JobState::Committing => "committing",
            JobState::Verified => "verified",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The job's task is (or should be) working: preparing through verified.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            JobState::Preparing
                | JobState::Uploading
                | JobState::Verifying
                | JobState::Committing
                | JobState::Verified
        )
    }

    /// Nothing more happens to the job by itself: done, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the push does with one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobAction {
    /// Upload the bytes as they are in the source.
    AsIs,
    /// Compress into the spool, then upload the compressed bytes.
    Compress,
}

/// Where one blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobState {
    Pending,
    Compressing,
    Uploading,
    /// Uploaded by this job.
    Uploaded,
    /// The registry had it already (HEAD or cross-repository mount).
    Existed,
    /// HEAD-checked after the upload: the registry has it with the right size.
    Verified,
}

impl BlobState {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Pending => "pending",
            BlobState::Compressing => "compressing",
            BlobState::Uploading => "uploading",
            BlobState::Uploaded => "uploaded",
            BlobState::Existed => "existed",
            BlobState::Verified => "verified",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BlobState::Uploaded | BlobState::Existed | BlobState::Verified
        )
    }
}

impl FromStr for BlobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            BlobState::Pending,
            BlobState::Compressing,
            BlobState::Uploading,
            BlobState::Uploaded,
            BlobState::Existed,
            BlobState::Verified,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown blob state {s:?}"))
    }
}

impl BlobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::AsIs => "as_is",
            BlobAction::Compress => "compress",
        }
    }
}

impl FromStr for BlobAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "as_is" => Ok(BlobAction::AsIs),
            "compress" => Ok(BlobAction::Compress),
            other => Err(format!("unknown blob action {other:?}")),
        }
    }
}

/// One blob of a job, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    /// Digest of the blob in the push plan (the source's digest); the key of the blob.
    pub digest: Digest,
    pub size_bytes: u64,
    pub media_type: String,
    pub action: BlobAction,
    pub state: BlobState,
    /// For a compressed blob, once compressed: the digest and size of the bytes uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_size_bytes: Option<u64>,
    /// Bytes the registry acknowledged (of the pushed bytes).
    pub uploaded_bytes: u64,
    pub compressed_chunks: u64,
}

impl BlobStatus {
    /// Bytes the registry receives: the compressed size once known.
    pub fn upload_size_bytes(&self) -> u64 {
        self.pushed_size_bytes.unwrap_or(self.size_bytes)
    }
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why the job failed, or what it is waiting for; one line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Digest>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Blobs of the push plan, empty until the job is prepared.
    #[serde(default)]
    pub blobs: Vec<BlobStatus>,
}

impl Job {
    /// Bytes to upload: compressed sizes where known.
    pub fn bytes_total(&self) -> u64 {
        self.blobs.iter().map(BlobStatus::upload_size_bytes).sum()
    }

    pub fn bytes_uploaded(&self) -> u64 {
        self.blobs
            .iter()
            .map(|b| b.uploaded_bytes.min(b.upload_size_bytes()))
            .sum()
    }
}

/// `GET /v1/jobs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// `GET` and `PUT /v1/bandwidth` body: the daemon-wide upload limit, shared by every job.
/// `null` (or absent): unlimited. A change applies to uploads already running.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bandwidth {
    pub bytes_per_s: Option<u64>,
}

/// `PUT /v1/jobs/{id}/bandwidth` body: the job's own upload limit, under the daemon-wide one.
/// `bytes_per_s` must be present: a number (at least 1) sets the limit, `null` removes it, so
/// an empty object cannot lift a limit by accident. A running job's uploads follow a change
/// within about 100 ms; the limit is kept in the job's spec for later runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobBandwidth {
    // `deserialize_with` makes the field required: serde's derive would take a missing
    // `Option` as `None`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub bytes_per_s: Option<u64>,
}

impl JobBandwidth {
    /// The limit asked for (`None`: no job limit). The error is the message for the client.
    pub fn validate(self) -> Result<Option<u64>, String> {
        match self.bytes_per_s {
            Some(0) => Err(
                "bytes_per_s 0 is not a limit: give at least 1, or null to remove the job's limit"
                    .into(),
            ),
            other => Ok(other),
        }
    }
}

/// `GET /v1/health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    pub version: String,
    pub pid: u32,
    pub jobs_running: u64,
}

/// One entry of a job's event stream (`GET /v1/jobs/{id}/events`, NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing across the daemon's whole event log; a follower resumes with `?after=SEQ`.
    pub seq: u64,
    pub job: JobId,
    pub time_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The job changed state.
    State {
        state: JobState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest_digest: Option<Digest>,
    },
    /// A blob is part of the push plan.
    Blob {
        digest: Digest,
        size_bytes: u64,
        media_type: String,
        action: BlobAction,
    },
    /// Compression progress of one blob.
    Compress {
        digest: Digest,
        chunks_done: u64,
        bytes_done: u64,
    },
    /// The registry acknowledged `offset_bytes` of the blob's `size_bytes` pushed bytes (the
    /// compressed size once known).
    Progress {
        digest: Digest,
        offset_bytes: u64,
        size_bytes: u64,
    },
    /// A blob is finished (`uploaded`, `existed` or `verified`).
    BlobDone { digest: Digest, state: BlobState },
    /// A step is retried after a transient failure.
    Retry { what: String, reason: String },
    /// Something to know that does not stop the push (e.g. platforms of an index not pushed).
    Warning { message: String },
    /// The job was deleted. Sent live only (its log is deleted with it), with `seq` 0.
    Deleted {},
}

impl EventKind {
    /// The job ended with this event: a follower stops here.
    pub fn is_final(&self) -> bool {
        match self {
            EventKind::State { state, .. } => state.is_final(),
            EventKind::Deleted {} => true,
            _ => false,
        }
    }
}

/// Every error response: one line that says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Counters of `GET /v1/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub retries: u64,
    pub resumes: u64,
    pub jobs_running: u64,
    pub upload_slots_in_use: u64,
    pub jobs_by_state: Vec<(JobState, u64)>,
}

impl Metrics {
    /// The Prometheus text exposition of these counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "hoist_upload_bytes_total",
                "Blob bytes acknowledged by registries.",
                self.bytes_sent,
            ),
            (
                "hoist_upload_chunks_total",
                "Blob chunks acknowledged by registries.",
                self.chunks_sent,
            ),
            (
                "hoist_retries_total",
                "Steps retried after a transient failure.",
                self.retries,
            ),
            (
                "hoist_resumes_total",
                "Jobs resumed after a pause or a daemon restart.",
                self.resumes,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        let gauges = [
            (
                "hoist_jobs_running",
                "Jobs whose task runs now.",
                self.jobs_running,
            ),
            (
                "hoist_upload_slots_in_use",
                "Upload connections open now (capped by --uploads-max).",
                self.upload_slots_in_use,
            ),
        ];
        for (name, help, value) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out.push_str("# HELP hoist_jobs Jobs in the store, by state.\n# TYPE hoist_jobs gauge\n");
        for state in JobState::ALL {
            let n = self
                .jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            out.push_str(&format!("hoist_jobs{{state=\"{state}\"}} {n}\n"));
        }
        out
    }
}

/// A body that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the body is not a valid {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

/// Encodes a wire value as JSON bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_vec(value).expect("api types always serialise")
}

/// Encodes one event as an NDJSON line (with the trailing newline).
pub fn encode_event_line(event: &Event) -> Vec<u8> {
    let mut line = encode(event);
    line.push(b'\n');
    line
}

/// Decodes a wire value; `what` names it in the error ("job", "submit request").
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError { what, source })
}

/// The JSON error body for `message`.
pub fn error_body(message: impl Into<String>) -> Vec<u8> {
    encode(&ErrorBody {
        error: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match() {
        let id = JobId::random();
        assert_eq!(
            match_route("GET", "/v1/jobs").unwrap(),
            (Endpoint::ListJobs, None)
        );
        assert_eq!(
            match_route("POST", &job_path(&id, "pause")).unwrap(),
            (Endpoint::PauseJob, Some(id.clone()))
        );
        assert_eq!(
            match_route("DELETE", &job_path(&id, "")).unwrap(),
            (Endpoint::DeleteJob, Some(id.clone()))
        );
        assert_eq!(
            match_route("PUT", &job_path(&id, "bandwidth")).unwrap(),
            (Endpoint::SetJobBandwidth, Some(id))
        );
        assert!(matches!(
            match_route("PUT", "/v1/jobs"),
            Err(RouteError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            match_route("GET", "/v1/nope"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            match_route("GET", "/v1/jobs/"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            match_route("GET", "/v1/jobs/xyz"),
            Err(RouteError::BadJobId(_))
        ));
    }

    #[test]
    fn submit_defaults_and_limits() {
        let req: SubmitRequest =
            decode("submit request", br#"{"source":"a.tar","target":"r/x:1"}"#).unwrap();
        let spec = req.clone().validate().unwrap();
        assert_eq!(spec.platform, Platform::linux_amd64());
        assert_eq!(spec.chunk_size_bytes, CHUNK_BYTES_DEFAULT);
        let small = SubmitRequest {
            chunk_size_bytes: Some(1024),
            ..req
        };
        assert!(small.clone().validate().unwrap_err().contains("5 MiB"));
        for target in [
            "user:pw@registry.example/a:1",
            "https://registry.example/a:1",
        ] {
            let creds = SubmitRequest {
                target: target.into(),
                chunk_size_bytes: None,
                ..small.clone()
            };
            assert!(
                creds.validate().unwrap_err().contains("docker login"),
                "{target}"
            );
        }
        let by_digest = SubmitRequest {
            target: format!("registry.example/a@{}", Digest::sha256_of(b"x")),
            chunk_size_bytes: None,
            ..small
        };
        assert!(by_digest.validate().is_ok());
        assert!(
            decode::<SubmitRequest>(
                "submit request",
                br#"{"source":"a","target":"b","password":"x"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn job_bandwidth_needs_the_field_and_refuses_zero() {
        let ok = |b: &[u8]| decode::<JobBandwidth>("job bandwidth", b).map(|r| r.validate());
        assert_eq!(ok(br#"{"bytes_per_s":5}"#).unwrap(), Ok(Some(5)));
        assert_eq!(ok(br#"{"bytes_per_s":null}"#).unwrap(), Ok(None));
        assert!(
            ok(br#"{"bytes_per_s":0}"#)
                .unwrap()
                .unwrap_err()
                .contains("null")
        );
        assert!(ok(b"{}").is_err());
        assert!(ok(br#"{"bytes_per_s":-1}"#).is_err());
        assert!(ok(br#"{"bytes_per_s":1,"x":2}"#).is_err());
    }

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(format!("{:<10}|", JobState::Done), "done      |");
        let id = JobId::random();
        assert_eq!(format!("{id:<18}|").len(), 19);
    }

    #[test]
    fn event_round_trip() {
        let ev = Event {
            seq: 7,
            job: JobId::random(),
            time_ms: 1,
            kind: EventKind::State {
                state: JobState::Done,
                reason: None,
                manifest_digest: Some(Digest::sha256_of(b"m")),
            },
        };
        let line = encode_event_line(&ev);
        assert!(line.ends_with(b"\n"));
        let back: Event = decode("event", &line).unwrap();
        assert_eq!(back, ev);
        assert!(back.kind.is_final());
    }
}
