//! How the socket is bound so that only its owner can reach it (where it and the state live
//! is [`crate::paths`]).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::DaemonError;

/// The socket to serve: the one systemd passed (socket activation), else `socket` (or the
/// default path) bound by [`bind_socket`]. Call it inside the tokio runtime.
pub fn listener(socket: Option<PathBuf>) -> Result<tokio::net::UnixListener, DaemonError> {
    let activated = super::systemd::activated_listener().map_err(|e| {
        DaemonError::Config(format!(
            "systemd passed a socket hoistd cannot use ({e}): check hoist.socket (ListenStream=)"
        ))
    })?;
    let (listener, path) = match activated {
        Some(l) => {
            tracing::info!("using the socket passed by systemd");
            (l, PathBuf::from("the socket systemd passed"))
        }
        None => {
            let socket = match socket {
                Some(s) => s,
                None => crate::paths::default_socket_path().map_err(DaemonError::Config)?,
            };
            let l = bind_socket(&socket)?;
            tracing::info!(socket = %socket.display(), "listening");
            (l, socket)
        }
    };
    let io = |source| DaemonError::Io {
        path: path.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(io)?;
    tokio::net::UnixListener::from_std(listener).map_err(io)
}

/// [`crate::paths::private_dir`], failing with the daemon's error.
pub fn private_dir(dir: &Path) -> Result<(), DaemonError> {
    crate::paths::private_dir(dir).map_err(|source| DaemonError::Io {
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
