//! Test and tool code for hoist, kept out of the library so release builds do not contain it.
//!
//! - [`sample`]: deterministic sample images (OCI layouts) for tests, the demo and benchmarks.
//! - [`testdata`]: deterministic random and text-like bytes for benchmarks, examples and tests.
//! - [`fuzzing`]: entry points of the fuzz targets, replayed by `tests/fuzz_corpus.rs`.
//! - [`layergen`]: layer tars written header by header, and random layers from a seed.
//! - [`apply`]: two models of applying layers (overlay per layer, one tree) to check splits.
//! - [`tools`]: running the outside tools (skopeo, openssl, curl) tests check results with.
//!
//! Used as a dev-dependency of `hoist` (tests, examples, benches, unit tests) and by the fuzz
//! crate; it is never published.

pub mod apply;
pub mod fuzzing;
pub mod layergen;
pub mod sample;
pub mod testdata;
pub mod tools;
