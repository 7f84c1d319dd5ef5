//! Fuzzes a whole archive source end to end: the input as a docker-archive and as an OCI
//! archive is opened, resolved for linux/amd64 (the platform guard), planned and verified.
//! The entry point is shared with tests/fuzz_corpus.rs (corpus replay in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hoist_testkit::fuzzing::plan_archive(data));
