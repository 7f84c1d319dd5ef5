//! Waking up after an outage. While any operation of any job waits out a dead link to a
//! registry ([`super::patience::Patience`]), that registry is probed every
//! [`PROBE_INTERVAL_MS`] (`GET /v2/` on a new connection, [`crate::registry::LinkProbe`]),
//! whatever the operations' own backoff, and at once when the machine's routes or addresses
//! change ([`super::netwatch`], Linux). The first probe that is answered after the link was
//! seen down ends the wait of every waiting operation for that registry, daemon-wide; each
//! job's client then drops its pooled connections, which may belong to the old network.
//!
//! A probe answered without the link having been seen down wakes the waiters too (a request
//! that stalled on a dead connection while the link came back), but such quiet recoveries
//! come no sooner than a gap after the probes started and after the last recovery, a gap
//! that doubles each time: a request cut while the registry is reachable is not sent again
//! at once, and one that keeps failing on a healthy link is still retried with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::{LinkProbe, RegistryClient};

/// How often a registry with waiting operations is probed.
pub const PROBE_INTERVAL_MS: u64 = 1000;
/// The longest gap between two quiet recoveries (probe answered, link never seen down).
const QUIET_GAP_MS_MAX: u64 = 60_000;

/// Daemon-wide: one link monitor per registry, and the machine's network changes.
pub struct Links {
    hosts: Mutex<HashMap<String, Weak<Link>>>,
    /// Bumped on every route or address change the network watcher sees.
    changes: watch::Sender<u64>,
    watcher: OnceLock<()>,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            hosts: Mutex::default(),
            changes: watch::Sender::new(0),
            watcher: OnceLock::new(),
        }
    }
}

impl Links {
    /// Says the machine's routes or addresses changed: every monitor probes at once.
    pub fn network_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The monitor of `client`'s registry (by base URL), made on first use. Starts the
    /// network watcher once.
    pub fn link(self: &Arc<Self>, client: &RegistryClient) -> Arc<Link> {
        self.watcher
            .get_or_init(|| super::netwatch::start(Arc::downgrade(self)));
        let mut hosts = self.hosts.lock().expect("links lock");
        hosts.retain(|_, l| l.strong_count() > 0);
        let key = client.base_url().to_string();
        if let Some(link) = hosts.get(&key).and_then(Weak::upgrade) {
            return link;
        }
        let probe = client
            .link_probe()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no link probe: waits end by their backoff"),
            )
            .ok();
        let link = Arc::new(Link {
            probe: probe.map(Arc::new),
            recoveries: watch::Sender::new(0),
            outages_over: std::sync::atomic::AtomicU64::new(0),
            changes: self.changes.subscribe(),
            monitor: Mutex::new(Monitor::default()),
        });
        hosts.insert(key, Arc::downgrade(&link));
        link
    }
}

/// One registry's link as the probes see it.
pub struct Link {
    /// `None`: no probe could be built; waits end by their own backoff only.
    probe: Option<Arc<LinkProbe>>,
    /// Bumped on every recovery; waiters wait for the next bump.
    recoveries: watch::Sender<u64>,
    /// Recoveries after the link was seen down.
    outages_over: std::sync::atomic::AtomicU64,
    changes: watch::Receiver<u64>,
    monitor: Mutex<Monitor>,
}

#[derive(Default)]
struct Monitor {
    waiters: usize,
    probing: bool,
    /// A probe went unanswered since the last recovery.
    down_seen: bool,
    /// When the probes started this time: a quiet recovery waits at least the quiet gap, so
    /// an operation cut while the link is fine is not sent again within milliseconds (the
    /// registry may still be handling the cut request).
    probing_since: Option<Instant>,
    last_recovery: Option<Instant>,
    quiet_gap: Duration,
}

impl Link {
    /// The number of recoveries after the link was seen down (for
    /// [`RegistryClient::renew_connections`]); a quiet one keeps the pooled connections,
    /// which the registry never stopped answering on.
    pub fn outages_over(&self) -> u64 {
        self.outages_over.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves at the next recovery after this call; never without a probe.
    pub async fn recovered(self: &Arc<Self>) {
        let Some(probe) = &self.probe else {
            return std::future::pending().await;
        };
        let mut rx = self.recoveries.subscribe();
        let _waiter = self.enter(probe);
        // The sender lives in `self`: `changed` only ends with a new recovery.
        let _ = rx.changed().await;
    }

    /// Counts a waiter in, starting the probes if none run.
    fn enter(self: &Arc<Self>, probe: &Arc<LinkProbe>) -> Waiter {
        let mut m = self.monitor.lock().expect("link lock");
        m.waiters += 1;
        if !m.probing {
            m.probing = true;
            m.probing_since = Some(Instant::now());
            tokio::spawn(self.clone().probe_loop(probe.clone()));
        }
        Waiter(self.clone())
    }

    /// Probes every [`PROBE_INTERVAL_MS`] and on every network change, each probe on its own
    /// (a blackholed probe must not delay the next), while anyone waits.
    async fn probe_loop(self: Arc<Self>, probe: Arc<LinkProbe>) {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        let mut watching = true;
        let mut tick = tokio::time::interval(Duration::from_millis(PROBE_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = tokio::task::JoinSet::new();
        loop {
            let start = tokio::select! {
                _ = tick.tick() => true,
                r = changes.changed(), if watching => {
                    watching = r.is_ok();
                    watching
                }
                Some(r) = probes.join_next() => {
                    self.observed(r.unwrap_or(false));
                    false
                }
            };
            if !self.wanted() {
                return;
            }
            if start {
                let probe = probe.clone();
                probes.spawn(async move { probe.link_up().await });
            }
        }
    }

    /// Whether anyone still waits; if not, the probes stop (under the lock, so a waiter that
    /// comes meanwhile starts them again).
    fn wanted(&self) -> bool {
        let mut m = self.monitor.lock().expect("link lock");
        m.probing = m.waiters > 0;
        m.probing
    }

    /// One probe's answer: a recovery when the link was seen down, or a quiet one once the
    /// probes have run for the quiet gap and that long has passed since the last recovery.
    fn observed(&self, up: bool) {
        let mut m = self.monitor.lock().expect("link lock");
        if !up {
            m.down_seen = true;
            return;
        }
        let (base, max) = (
            Duration::from_millis(PROBE_INTERVAL_MS),
            Duration::from_millis(QUIET_GAP_MS_MAX),
        );
        let now = Instant::now();
        let since_recovery = m.last_recovery.map(|t| now - t);
        if m.down_seen || since_recovery.is_none_or(|s| s >= max) {
            m.quiet_gap = base;
        }
        if !m.down_seen {
            let waited = m.probing_since.is_some_and(|t| now - t >= m.quiet_gap);
            let spaced = since_recovery.is_none_or(|s| s >= m.quiet_gap);
            if !(waited && spaced) {
                return;
            }
            m.quiet_gap = (m.quiet_gap * 2).min(max);
        }
        if m.down_seen {
            self.outages_over
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        m.down_seen = false;
        m.last_recovery = Some(now);
        drop(m);
        self.recoveries.send_modify(|n| *n += 1);
    }
}

/// A waiting operation, counted while it waits.
struct Waiter(Arc<Link>);

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.monitor.lock().expect("link lock").waiters -= 1;
    }
}
