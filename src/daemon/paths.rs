//! How the socket is bound so that only its owner can reach it (where it and the state live
//! is [`crate::paths`]).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::DaemonError;

/// The socket to serve: the one systemd passed (socket activation), else `socket` (or the
/// default path) bound by [`bind_socket`]. With `owner_only` (root without `--allow-root`), a
/// socket that others could reach ([`admits_only_owner`]) is refused, and removed if hoistd
/// bound it. Call it inside the tokio runtime.
pub fn listener(
    socket: Option<PathBuf>,
    owner_only: bool,
) -> Result<tokio::net::UnixListener, DaemonError> {
    let activated = super::systemd::activated_listener().map_err(|e| {
        DaemonError::Config(format!(
            "systemd passed a socket hoistd cannot use ({e}): check hoist.socket (ListenStream=)"
        ))
    })?;
    let (listener, path, bound) = match activated {
        Some(l) => {
            tracing::info!("using the socket passed by systemd");
            (l, PathBuf::from("the socket systemd passed"), false)
        }
        None => {
            let socket = match socket {
                Some(s) => s,
                None => crate::paths::default_socket_path().map_err(DaemonError::Config)?,
            };
            let l = bind_socket(&socket)?;
            tracing::info!(socket = %socket.display(), "listening");
            (l, socket, true)
        }
    };
    let io = |source| DaemonError::Io {
        path: path.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(io)?;
    if owner_only && let Err(why) = admits_only_owner(&listener) {
        // A socket systemd passed is systemd's to remove; one hoistd bound is hoistd's.
        if bound {
            let _ = std::fs::remove_file(&path);
        }
        return Err(DaemonError::Config(format!(
            "hoistd refuses to run as root on a socket others could reach: {why}; use a socket \
             in a root-owned directory only root can write (the default), or pass --allow-root"
        )));
    }
    Ok(listener)
}

/// `Ok` when only the daemon's own user can reach `listener`: the socket is a file owned by
/// that user with no permission bits for others (mode 0600), in a directory owned by that user
/// that nobody else can write (so nobody else can swap the socket). Else why not, in words.
/// Root runs without `--allow-root` only on such a socket: the peer-uid check then admits root
/// alone, so a root daemon reads files for nobody who could not read them already.
pub fn admits_only_owner(listener: &tokio::net::UnixListener) -> Result<(), String> {
    let owner = rustix::process::getuid().as_raw();
    let addr = listener
        .local_addr()
        .map_err(|e| format!("its address cannot be read ({e})"))?;
    let path = addr
        .as_pathname()
        .ok_or("the socket has no path in the file system, so no permissions guard it")?;
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|e| format!("{} cannot be examined ({e})", p.display()))
    };
    let meta = stat(path)?;
    if meta.uid() != owner || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} (owner uid {}, mode {:o}) is not owner-only",
            path.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let meta = stat(&dir)?;
    if meta.uid() != owner || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its directory {} (owner uid {}, mode {:o}) lets others replace it",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
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
