//! Waiting for the daemon's stop signal. Its own module because both the server (accept loop,
//! connections) and the handlers (event followers) wait for it, and the handlers must not
//! depend on the server that calls them.

use tokio::sync::watch;

/// Resolves once shutdown began (or the sender is gone). Drops the watch guard before
/// returning, so nothing borrowed is held across later awaits.
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
