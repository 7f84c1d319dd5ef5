//! Fuzzes the tar indexer (`TarIndex::from_file`) on the input written to a scratch file:
//! no panic, one-line errors, every located entry inside the archive.
//! The entry point is shared with tests/fuzz_corpus.rs (corpus replay in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hoist_testkit::fuzzing::index_tar(data));
