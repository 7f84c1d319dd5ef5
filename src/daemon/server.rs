//! The socket server: accepts connections, refuses peers of another uid, serves HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::routes::{self, App};
use super::shutdown::stopped;
use crate::environ::Caller;

/// How long open connections (event followers) may take to finish after shutdown began.
const CONNECTION_DRAIN_MS_MAX: u64 = 2_000;
/// Open connections served at once; more are closed right after `accept`. Clients are the
/// user's own `hoist` processes: hundreds at once means something loops.
const CONNECTIONS_MAX: usize = 256;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY_DELAY_MS: u64 = 100;

/// Serves `listener` until `shutdown` turns true, then lets open connections finish (bounded).
pub async fn serve(listener: UnixListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let daemon_uid = rustix::process::getuid().as_raw();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= CONNECTIONS_MAX {
                        warn!(open = conns.len(), "too many connections: closing a new one");
                        drop(stream);
                        continue;
                    }
                    let allowed = peer_allowed(&stream, daemon_uid);
                    let caller = peer_caller(&stream);
                    conns.spawn(serve_connection(stream, app.clone(), allowed, caller, shutdown.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_DELAY_MS)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(CONNECTION_DRAIN_MS_MAX), drain)
        .await
        .is_err()
    {
        debug!("closing connections that did not finish in time");
        conns.abort_all();
    }
}

/// The peer must run as the daemon's uid. Without credentials it is refused.
fn peer_allowed(stream: &UnixStream, daemon_uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == daemon_uid => true,
        Ok(cred) => {
            warn!(peer_uid = cred.uid(), peer_pid = ?cred.pid(), daemon_uid, "refused a connection from another user");
            false
        }
        Err(e) => {
            warn!(error = %e, "refused a connection whose peer credentials cannot be read");
            false
        }
    }
}

/// Who is on the other end (uid, gid, groups), for the jobs it submits: their files are
/// opened only where that user could open them.
fn peer_caller(stream: &UnixStream) -> Option<Caller> {
    let cred = stream.peer_cred().ok()?;
    Some(Caller::of_peer(cred.uid(), cred.gid(), cred.pid()))
}

async fn serve_connection(
    stream: UnixStream,
    app: Arc<App>,
    allowed: bool,
    caller: Option<Caller>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        if let Some(caller) = &caller {
            req.extensions_mut().insert(caller.clone());
        }
        async move {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let resp = if allowed {
                routes::handle(app, req).await
            } else {
                routes::refused()
            };
            debug!(%method, %path, status = resp.status().as_u16(), "request");
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        }
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
