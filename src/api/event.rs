//! The event stream of a job (`GET /v1/jobs/{id}/events`, NDJSON).

use serde::{Deserialize, Serialize};

use super::ids::JobId;
use super::job::{BlobAction, BlobState, JobState};
use crate::digest::Digest;

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
    /// A run goes on with a blob from its stored upload cursor at `offset_bytes` (> 0) of its
    /// `size_bytes` pushed bytes: the bytes before it are not sent again.
    Resumed {
        digest: Digest,
        offset_bytes: u64,
        size_bytes: u64,
    },
    /// A blob's upload starts again from byte 0 in a new session: the `offset_bytes` the
    /// registry had acknowledged are sent again, for `reason`.
    Restarted {
        digest: Digest,
        offset_bytes: u64,
        size_bytes: u64,
        reason: String,
    },
    /// Export progress of a `docker-daemon:` source: `bytes_done` of the engine's export stream
    /// read (about `size_bytes`, the image's uncompressed size as the engine reports it), and
    /// `layers_done` of the `layers_total` layers the spool still needed compressed.
    Export {
        bytes_done: u64,
        size_bytes: u64,
        layers_done: u64,
        layers_total: u64,
    },
    /// A blob is finished (`uploaded`, `existed` or `verified`).
    BlobDone { digest: Digest, state: BlobState },
    /// A step is retried after a transient failure.
    Retry { what: String, reason: String },
    /// Something to know that does not stop the push (e.g. platforms of an index not pushed).
    Warning { message: String },
    /// Something the job did that is worth knowing and is no problem (e.g. the export skipped
    /// because the registry holds the image already).
    Note { message: String },
    /// The job was deleted. Sent live only (its log is deleted with it), with `seq` 0.
    Deleted {},
}

impl EventKind {
    /// This event with `f` applied to each of its texts (reasons, messages): what the daemon
    /// stores and shows passes through its secrets' redactor this way.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> EventKind {
        match self {
            EventKind::State {
                state,
                reason,
                manifest_digest,
            } => EventKind::State {
                state,
                reason: reason.as_deref().map(&f),
                manifest_digest,
            },
            EventKind::Restarted {
                digest,
                offset_bytes,
                size_bytes,
                reason,
            } => EventKind::Restarted {
                digest,
                offset_bytes,
                size_bytes,
                reason: f(&reason),
            },
            EventKind::Retry { what, reason } => EventKind::Retry {
                what: f(&what),
                reason: f(&reason),
            },
            EventKind::Warning { message } => EventKind::Warning {
                message: f(&message),
            },
            EventKind::Note { message } => EventKind::Note {
                message: f(&message),
            },
            other => other,
        }
    }

    /// The job ended with this event: a follower stops here.
    pub fn is_final(&self) -> bool {
        match self {
            EventKind::State { state, .. } => state.is_final(),
            EventKind::Deleted {} => true,
            _ => false,
        }
    }
}
