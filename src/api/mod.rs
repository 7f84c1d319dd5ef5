//! The wire format's vocabulary: every request, response and event type, the route table,
//! the error body. Each concern has its own file: `routes` (the route table), `ids` (job IDs),
//! `job` (jobs, blobs and their states), `bodies` (the other request and response bodies),
//! `event` (the event stream), `validate` (what the daemon accepts), `metrics` (the metrics
//! page), `codec` (JSON in and out). The files are private and every item is re-exported
//! here: `crate::api::Name` is its one path. `proto/openapi.yaml` describes the same thing for
//! people and other clients; `tests/daemon_api.rs` fails when [`ROUTES`] and the document
//! disagree.
//!
//! **Architecture Invariant:** only this module knows the wire format. The daemon and the CLI
//! exchange these types and call [`encode`] / [`decode`]; neither builds JSON by hand. How the
//! store keeps these types is the store's business (`store/encode.rs`).
//!
//! Conventions: JSON bodies, `snake_case` field names, sizes in bytes with a `_bytes` suffix,
//! times as Unix epoch milliseconds with a `_ms` suffix, errors as [`ErrorBody`].

mod bodies;
mod codec;
mod event;
mod ids;
mod job;
mod metrics;
mod routes;
mod validate;

pub use crate::environ::Caller;
pub use bodies::{
    Bandwidth, ControlRequest, EnvVars, ErrorBody, Health, JobBandwidth, RetryRequest,
    SubmitRequest,
};
pub use codec::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_NDJSON, CONTENT_TYPE_PROMETHEUS, DecodeError, decode, encode,
    encode_event_line, error_body,
};
pub use event::{Event, EventKind};
pub use ids::{JobId, JobIdError};
pub use job::{
    BlobAction, BlobState, BlobStatus, Compression, Job, JobEnv, JobList, JobOptions, JobSpec,
    JobState, SplitLayers,
};
pub use metrics::Metrics;
pub use routes::{API_PREFIX, Endpoint, ROUTES, Route, RouteError, job_path, match_route};
pub use validate::{
    CHUNK_BYTES_DEFAULT, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, ENV_VALUE_BYTES_MAX, ENV_VARS_MAX,
    REFERENCE_LEN_MAX, SPLIT_LAYERS_DEFAULT, SPLIT_PART_BYTES_MIN,
};
