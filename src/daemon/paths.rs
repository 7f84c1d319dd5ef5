//! Where the socket and the state live, and how the socket is bound so that only its owner can
//! reach it.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::DaemonError;

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
pub fn private_dir(dir: &Path) -> Result<(), DaemonError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DaemonError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Binds the socket at `path`: its directory is created 0700 if missing, a stale socket from a
/// dead daemon is removed, a live one is refused, and the socket gets mode 0600. Between `bind`
/// and `chmod` the socket has umask permissions, but the 0700 directory already shuts others out.
pub fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let io = |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_dir(parent)?;
        if let Ok(meta) = std::fs::metadata(parent)
            && meta.permissions().mode() & 0o077 != 0
        {
            // Not fatal: the socket is 0600 and every peer's uid is checked, but say so.
            tracing::warn!(
                dir = %parent.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the socket's directory is open to other users; prefer a 0700 directory"
            );
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(DaemonError::Config(format!(
                "{} exists and is not a socket: remove it or choose another --socket",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}
