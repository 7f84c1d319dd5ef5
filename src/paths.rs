//! Where hoist's files are, for both binaries: the socket, the state directory, and a source
//! path as the daemon will read it. Neutral ground: `cli` and `daemon` both use it, and it uses
//! neither, so the CLI finds the daemon's socket without depending on the daemon.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::source::SourceRef;

/// `$XDG_RUNTIME_DIR/hoist/hoist.sock`; where there is no runtime dir (macOS, a plain ssh
/// session), the socket lives in the state dir: `<state dir>/hoist.sock`.
pub fn default_socket_path() -> Result<PathBuf, String> {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("hoist").join("hoist.sock")),
        None => default_state_dir()
            .map(|d| d.join("hoist.sock"))
            .map_err(|e| format!("{e}; or pass --socket PATH (or set HOIST_SOCKET)")),
    }
}

/// `$XDG_STATE_HOME/hoist`, else `~/.local/state/hoist`.
pub fn default_state_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("hoist"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/hoist")),
        None => Err(
            "neither XDG_STATE_HOME nor HOME is set: pass --state-dir DIR (or set HOIST_STATE_DIR)"
                .into(),
        ),
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is:
/// it may be shared on purpose (e.g. `--socket /tmp/x.sock`), and changing it is not ours to do.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A binary's build identity: its canonical path, size and modification time. Two daemons
/// of the same package version but another build (a rebuilt or reinstalled `hoistd`) differ
/// here, which the version alone would not show. `None` when the file cannot be read.
pub fn binary_identity(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{} size={} mtime={}.{:09}",
        path.display(),
        meta.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

/// `source` with its path replaced by `f(path)` (transport and image reference kept), or
/// `None` when it does not parse or `f` fails (the plan then reports the problem itself).
/// The CLI makes the path absolute (the daemon has another working directory); the daemon
/// canonicalises it at submission, so a symlink swapped afterwards cannot redirect the push.
pub fn map_source_path(
    source: &str,
    f: impl Fn(&Path) -> std::io::Result<PathBuf>,
) -> Option<String> {
    let parsed = source.parse::<SourceRef>().ok()?;
    // A bare path stays bare: detected again the same way, and a colon in it (`app:1`, a
    // file named like an image) is not read as a transport's `PATH:REF` separator.
    if parsed.path().is_some_and(|p| p.as_os_str() == source) {
        return Some(f(Path::new(source)).ok()?.display().to_string());
    }
    let mapped = match parsed {
        SourceRef::DockerArchive { path, reference } => SourceRef::DockerArchive {
            path: f(&path).ok()?,
            reference,
        },
        SourceRef::Oci { dir, reference } => SourceRef::Oci {
            dir: f(&dir).ok()?,
            reference,
        },
        SourceRef::OciArchive { path, reference } => SourceRef::OciArchive {
            path: f(&path).ok()?,
            reference,
        },
        // Not a path: the engine is asked for the image by name.
        engine @ SourceRef::DockerDaemon { .. } => engine,
    };
    Some(mapped.to_string())
}
