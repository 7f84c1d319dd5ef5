//! hoist: resumable, platform-checked pushes of container images.
//!
//! # Layout
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.
//! - [`digest`], [`platform`]: newtypes parsed once at the boundary.
//! - [`text`]: outside text (registry bodies, library errors) made fit for a one-line error.
//! - [`source`]: reads `docker save` archives, OCI layouts and OCI archives in place.
//! - [`image`]: manifest, index and config documents; the platform guard.
//! - [`plan`]: the push plan: every blob, where its bytes come from, what is done to them.
//! - [`limits`]: what a registry accepts (parts per upload, bytes per layer, layers per image).
//! - [`compress`]: deterministic, chunked, parallel gzip/zstd.
//! - [`registry`]: the OCI Distribution client (resumable chunked uploads, ECR quirks).
//! - [`store`]: SQLite, the only module with SQL.
//! - [`daemon`]: the job scheduler and the socket server.
//! - [`api`]: the socket API's wire types, mirroring `proto/openapi.yaml`.
//! - [`cli`]: the `hoist` command's subcommands (the binaries stay thin).
//! - [`environ`]: the caller's environment a job carries (which variables, which are secret).
//! - [`paths`], [`units`]: where hoist's files are, and quantities as people type them; shared by
//!   the CLI and the daemon so neither imports the other.

pub mod api;
pub mod bandwidth;
pub mod chunk_size;
pub mod cli;
pub mod compress;
pub mod daemon;
pub mod digest;
pub mod elf;
pub mod environ;
pub mod image;
pub mod inspect;
pub mod limits;
pub mod paths;
pub mod plan;
pub mod platform;
pub mod registry;
pub mod source;
pub mod split;
pub mod store;
pub mod tarscan;
pub mod text;
pub mod units;
