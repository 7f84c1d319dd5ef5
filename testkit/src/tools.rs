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

/// Decompresses the gzip file `path` with Python's zlib reading one member only
/// (`decompressobj(31)` stops at the first member's end and keeps what follows in
/// `unused_data`) and returns the bytes; panics unless that member ends the file.
pub fn python_gzip_one_member(path: &std::path::Path) -> Vec<u8> {
    const SCRIPT: &str = "import sys, zlib\n\
        data = open(sys.argv[1], 'rb').read()\n\
        d = zlib.decompressobj(31)\n\
        out = d.decompress(data) + d.flush()\n\
        assert d.eof, 'the member does not end'\n\
        assert not d.unused_data, '%d bytes after the first member' % len(d.unused_data)\n\
        sys.stdout.buffer.write(out)\n";
    let what = format!("python3 zlib one member of {}", path.display());
    run_ok(
        Command::new("python3").args(["-c", SCRIPT]).arg(path),
        &what,
    )
    .stdout
}
