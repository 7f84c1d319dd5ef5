//! Running the outside tools tests check their results with (skopeo, openssl, curl, python3).

use std::process::{Command, Output};

/// Runs `cmd` to completion and returns its output; panics, naming `what` and quoting the
/// tool's stderr, when it cannot start or exits unsuccessfully.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
