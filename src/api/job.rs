//! Jobs and their blobs as the API shows them: the spec, the states, the progress.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::JobId;
use crate::digest::Digest;
use crate::environ::CallerEnv;
use crate::platform::Platform;

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

/// Which layers a push splits into parts at file boundaries (format and rules:
/// `docs/SPLIT.md`). On the wire: `"off"`, `"auto"` or `{"max_bytes": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitLayers {
    /// Every layer pushed whole: what a spec stored before the field existed means.
    #[default]
    Off,
    /// Uncompressed layers above 1 GiB, in parts of 256 MiB; compressed layers whole.
    Auto,
    /// Every layer above this many bytes, in parts of at most about that; a compressed layer
    /// above it is refused.
    MaxBytes(u64),
}

impl FromStr for SplitLayers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(SplitLayers::Off),
            "auto" => Ok(SplitLayers::Auto),
            size => crate::units::parse_size(size)
                .map(SplitLayers::MaxBytes)
                .map_err(|e| format!("{e}; or give auto or off")),
        }
    }
}

impl fmt::Display for SplitLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitLayers::Off => f.write_str("off"),
            SplitLayers::Auto => f.write_str("auto"),
            SplitLayers::MaxBytes(b) => write!(f, "{b}"),
        }
    }
}

/// Options of a job that are not its identity. No field carries credentials: the registry client
/// reads docker's config (and runs credential helpers) with the job's environment, kept apart
/// from the spec ([`JobEnv`]) with its secret values in memory only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Talk plain HTTP to the registry (test registries on loopback).
    pub insecure: bool,
    /// Push even when most ELF binaries in the layers are for another architecture than the
    /// config declares; by default the job fails before the manifest commit.
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

/// A validated job description: the daemon only ever sees these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub source: String,
    pub target: String,
    pub platform: Platform,
    pub compression: Compression,
    pub chunk_size_bytes: u64,
    /// More tags of the target's repository, each a valid tag, without duplicates: the blobs
    /// are uploaded once, and every tag is written and read back only after every blob is
    /// verified. Absent in specs stored before the field existed: they load as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_tags: Vec<String>,
    /// Which layers are split into parts; part of the pushed image's identity, so fixed for
    /// the job's life. Specs stored before the field existed load as `off`.
    #[serde(default)]
    pub split_layers: SplitLayers,
    pub options: JobOptions,
}

/// The caller's environment as a job keeps it (in the store, and in `GET /v1/jobs`): the
/// public variables with their values, and only the names of the secret ones, whose values
/// live in the daemon's memory. After a daemon restart the job goes on without them; the names
/// say which to send again (`hoist resume`) if the registry or a proxy then refuses the job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobEnv {
    pub vars: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_names: Vec<String>,
    /// Who submitted the job (uid and groups of the socket's peer): what the environment
    /// names is opened only where that user could, after a daemon restart too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<crate::environ::Caller>,
}

impl JobEnv {
    /// What of `env` may be kept: its public part, and its secrets' names.
    pub fn of(env: &CallerEnv) -> JobEnv {
        JobEnv {
            vars: env
                .public()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret_names: env.secrets().iter().map(|(k, _)| k.to_string()).collect(),
            caller: env.caller().cloned(),
        }
    }

    /// The public variables, with `secrets` added over them.
    pub fn with_secrets(&self, secrets: &CallerEnv) -> CallerEnv {
        CallerEnv::from_vars(self.vars.clone())
            .with_caller(self.caller.clone())
            .merged(secrets)
    }

    /// The secret variables the job was submitted with that `secrets` lacks (the daemon
    /// restarted since), by name.
    pub fn missing_secrets(&self, secrets: &CallerEnv) -> Vec<String> {
        self.secret_names
            .iter()
            .filter(|n| secrets.get(n).is_none())
            .cloned()
            .collect()
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
    pub const ALL: [BlobState; 6] = [
        BlobState::Pending,
        BlobState::Compressing,
        BlobState::Uploading,
        BlobState::Uploaded,
        BlobState::Existed,
        BlobState::Verified,
    ];

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
    /// Compressor pieces done and durable: the input's chunks, then for gzip one more, the
    /// trailer.
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
    /// The caller's environment the job runs with (public values, secret names); absent: the
    /// daemon's own environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<JobEnv>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(format!("{:<10}|", JobState::Done), "done      |");
    }
}
