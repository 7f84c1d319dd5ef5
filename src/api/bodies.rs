//! Request and response bodies other than jobs and events.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::job::{Compression, JobOptions};
use crate::environ::{CallerEnv, is_secret};

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
    /// Which layers to split into parts; absent: [`SPLIT_LAYERS_DEFAULT`](super::SPLIT_LAYERS_DEFAULT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_layers: Option<super::job::SplitLayers>,
    /// More tags of the target's repository, written with the same manifest after the
    /// target's own reference (see [`JobSpec::extra_tags`](super::JobSpec::extra_tags)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_tags: Vec<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// The caller's environment (see [`EnvVars`]); checked by [`EnvVars::validate`], not by
    /// [`SubmitRequest::validate`]. Absent: the job uses the daemon's own environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvVars>,
}

/// The caller's environment as the CLI sends it: the variables a push depends on
/// ([`crate::environ::is_relevant`]), secret ones with their values. The daemon keeps the
/// public ones with the job and the secret ones in memory only. Debug shows secret names,
/// never their values.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl EnvVars {
    pub fn of(env: &CallerEnv) -> EnvVars {
        EnvVars(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                (
                    k,
                    if is_secret(k, v) {
                        "<secret>"
                    } else {
                        v.as_str()
                    },
                )
            }))
            .finish()
    }
}

/// `POST /v1/jobs/{id}/resume` body, optional: the caller's environment again (`/retry` takes
/// it in [`RetryRequest`]).
/// Present, it replaces the job's (after a daemon restart, this is how a job gets its secret
/// variables back); absent, the job keeps what it has.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvVars>,
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

/// `POST /v1/jobs/{id}/retry` body, optional: no body (or `{}`) retries the job with its
/// options as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The caller's environment again, as for resume: present, it replaces the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvVars>,
    /// A new deadline (Unix seconds) that replaces the job's own, e.g. for a job that failed
    /// because its deadline passed; absent: the job keeps its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_s: Option<u64>,
}

/// `GET /v1/health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    pub version: String,
    /// The daemon binary's identity when it started (`paths::binary_identity`): a client
    /// compares it with the `hoistd` it would start, so a rebuilt binary counts as another
    /// build. Absent when the daemon cannot tell (or is older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    pub pid: u32,
    pub jobs_running: u64,
    /// Started by `hoist` itself (autostart), not by systemd, launchd or a person: `hoist`
    /// may then restart it on a new binary when no job runs.
    #[serde(default)]
    pub autostarted: bool,
}

/// Every error response: one line that says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
