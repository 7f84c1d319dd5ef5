//! systemd integration without unsafe code: socket activation (`LISTEN_FDS`) and readiness
//! notification (`NOTIFY_SOCKET`). Both are optional: without systemd they do nothing.

use std::io;
use std::os::unix::net::{UnixDatagram, UnixListener};

/// The listening socket systemd passed as fd 3, if any. `listenfd` checks `LISTEN_PID` against
/// our pid and that the fd is a Unix stream socket; it is the one place with `unsafe` (turning
/// the inherited raw fd into a listener), in a small, widely used crate.
pub fn activated_listener() -> io::Result<Option<UnixListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    fds.take_unix_listener(0)
}

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`) to `$NOTIFY_SOCKET`. Returns `Ok(false)` when
/// not started by systemd. Handles filesystem paths and abstract addresses (`@name`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = addr.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = addr.strip_prefix('@') {
        send_abstract(&sock, name.as_bytes(), state)?;
    } else if addr.starts_with('/') {
        sock.send_to(state.as_bytes(), &addr)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("NOTIFY_SOCKET={addr} is neither a path nor an abstract address"),
        ));
    }
    Ok(true)
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket addresses exist only on Linux",
    ))
}
