//! Fuzzes the manifest, index, config and `manifest.json` parsers and the platform guard:
//! pieces separated by 0xff; the first is the index (or single manifest), the rest are blobs.
//! The entry point is shared with tests/fuzz_corpus.rs (corpus replay in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hoist_testkit::fuzzing::parse_image(data));
