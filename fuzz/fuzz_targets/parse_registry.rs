//! Fuzzes what a registry sends: `WWW-Authenticate`, `Range`, `Location` (and the upload
//! origin check), `Retry-After`, ECR's 416 message, the OCI error envelope, URL redaction.
//! The entry point is shared with tests/fuzz_corpus.rs (corpus replay in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hoist_testkit::fuzzing::parse_registry(data));
