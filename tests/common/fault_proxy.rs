//! A TCP fault proxy of ours, in front of the real registry: the network faults a laptop's
//! uplink produces, injected below HTTP so the client under test sees real resets and stalls.
//!
//! Scriptable per test through [`Faults`] (changeable while connections are open):
//! - `reset_after_upstream_bytes`: after N client->registry bytes in total, the connection in
//!   which the Nth byte falls is closed with a real TCP RST (SO_LINGER 0); repeats every N bytes
//!   when `reset_every` is set;
//! - `blackhole_until`: stop forwarding in both directions without closing (a sleeping laptop,
//!   dead Wi-Fi), until the given instant;
//! - `blackhole_after_upstream_bytes`: the same, for the given time, once N more client->registry
//!   bytes went through (to catch a request at an exact point, e.g. after its body left the
//!   client);
//! - `freeze_after_upstream_bytes`: once N more client->registry bytes went through, the
//!   connection in which the Nth byte falls stops reading from the client for the given time,
//!   then carries on; other connections, new ones among them, are untouched (a registry or
//!   middlebox whose application froze while its kernel still acknowledges what fits into its
//!   receive buffer: a silent stall);
//! - `refuse_until`: a link that refuses (a route gone, a captive portal that resets): new
//!   connections are reset as soon as they are accepted and open ones at their next byte,
//!   until the given instant;
//! - `upstream_bytes_per_sec`: a bandwidth cap on the client->registry direction, shared by
//!   all connections;
//! - `conn_bytes_per_sec`: a bandwidth cap on every connection on its own, in each direction
//!   separately, as per-flow shaping on a real path caps each TCP connection (so N connections
//!   together get N times the cap);
//! - `latency`: added to every forwarded read, with up to `jitter` more;
//! - `slice_bytes`: forward writes in slices of at most this many bytes.
//!
//! It counts bytes in each direction, resets performed, connections and the most connections
//! open at once.
//!
//! HTTP-level faults (lost acknowledgements, 429/503 bursts, expiring tokens, vanishing
//! sessions, ECR's atomic parts) live in `ecr_proxy`; stack the two for both kinds at once:
//! `FaultProxy::start(ecr.addr)` then `ecr.serve_behind(fault.addr)`, so that ECR's absolute
//! upload Locations also cross the TCP faults (see `tests/push_faults.rs`, `Link`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::serve::ServerTask;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub reset_after_upstream_bytes: Option<u64>,
    pub reset_every: bool,
    pub blackhole_until: Option<Instant>,
    pub blackhole_after_upstream_bytes: Option<(u64, Duration)>,
    pub freeze_after_upstream_bytes: Option<(u64, Duration)>,
    pub refuse_until: Option<Instant>,
    pub upstream_bytes_per_sec: Option<u64>,
    pub conn_bytes_per_sec: Option<u64>,
    pub latency: Duration,
    pub jitter: Duration,
    pub slice_bytes: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Client -> registry bytes forwarded.
    pub upstream_bytes: AtomicU64,
    /// Registry -> client bytes forwarded.
    pub downstream_bytes: AtomicU64,
    pub resets: AtomicU64,
    pub connections: AtomicU64,
    /// Connections open now, and the most open at once.
    pub open: AtomicU64,
    pub open_max: AtomicU64,
}

struct Shared {
    faults: Mutex<Faults>,
    counters: Counters,
    /// Upstream byte count at which the next reset happens.
    next_reset_at: Mutex<Option<u64>>,
    /// Upstream byte count at which a blackhole of the given length starts.
    blackhole_at: Mutex<Option<(u64, Duration)>>,
    /// Upstream byte count at which one connection freezes for the given length, and when
    /// the freeze began.
    freeze_at: Mutex<Option<(u64, Duration)>>,
    frozen_at: Mutex<Option<std::time::SystemTime>>,
}

/// A running proxy; stops accepting when dropped (open connections end with the runtime).
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: ServerTask,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`. Needs a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::serve(listener, upstream)
    }

    /// Like [`FaultProxy::start`], with the client side's receive buffer capped at `bytes`: a
    /// blackhole then closes the TCP window within that many bytes, as a dead link leaves the
    /// client's data unacknowledged (loopback's autotuned buffers would take megabytes in).
    pub async fn start_with_window(upstream: SocketAddr, bytes: u32) -> FaultProxy {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind proxy");
        Self::serve(socket.listen(64).expect("listen"), upstream)
    }

    fn serve(listener: TcpListener, upstream: SocketAddr) -> FaultProxy {
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            counters: Counters::default(),
            next_reset_at: Mutex::new(None),
            blackhole_at: Mutex::new(None),
            freeze_at: Mutex::new(None),
            frozen_at: Mutex::new(None),
        });
        let s = shared.clone();
        let task = ServerTask::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.counters.connections.fetch_add(1, Ordering::Relaxed);
                if s.refusing() {
                    send_rst(client);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let open = s.counters.open.fetch_add(1, Ordering::Relaxed) + 1;
                    s.counters.open_max.fetch_max(open, Ordering::Relaxed);
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, s.clone()).await;
                    }
                    s.counters.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        FaultProxy { addr, shared, task }
    }

    /// `127.0.0.1:PORT`, the host clients use to reach the registry through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces the fault script. A reset threshold counts from the bytes already sent.
    pub fn set(&self, faults: Faults) {
        let now = self.upstream_bytes();
        *self.shared.next_reset_at.lock().unwrap() =
            faults.reset_after_upstream_bytes.map(|n| now + n);
        *self.shared.blackhole_at.lock().unwrap() = faults
            .blackhole_after_upstream_bytes
            .map(|(n, d)| (now + n, d));
        *self.shared.freeze_at.lock().unwrap() = faults
            .freeze_after_upstream_bytes
            .map(|(n, d)| (now + n, d));
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// When a connection froze (`freeze_after_upstream_bytes`), if one did.
    pub fn frozen_at(&self) -> Option<std::time::SystemTime> {
        *self.shared.frozen_at.lock().unwrap()
    }

    pub fn upstream_bytes(&self) -> u64 {
        self.shared.counters.upstream_bytes.load(Ordering::Relaxed)
    }

    pub fn downstream_bytes(&self) -> u64 {
        self.shared
            .counters
            .downstream_bytes
            .load(Ordering::Relaxed)
    }

    pub fn resets(&self) -> u64 {
        self.shared.counters.resets.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.shared.counters.connections.load(Ordering::Relaxed)
    }

    /// The most connections that were open at once.
    pub fn connections_open_max(&self) -> u64 {
        self.shared.counters.open_max.load(Ordering::Relaxed)
    }
}

const PIPE_BUF_BYTES: usize = 64 * 1024;

/// How far a connection's pacing may fall behind the real clock and then catch up: a late
/// wake-up of the proxy is made up for, but an idle connection banks no burst beyond this.
const CONN_BURST_MS: u64 = 100;

/// Paces one direction of one connection to `Faults::conn_bytes_per_sec` (a virtual clock that
/// runs `n / rate` ahead for every `n` bytes forwarded, as a link's serialization does).
#[derive(Default)]
struct Pacer {
    due: Option<Instant>,
}

impl Pacer {
    /// The bytes one pacing step may forward: a fiftieth of a second's worth.
    fn slice(rate: u64) -> usize {
        usize::try_from((rate / 50).max(1)).unwrap_or(usize::MAX)
    }

    /// Waits until `bytes` more may leave at `rate` bytes per second.
    async fn pace(&mut self, rate: u64, bytes: usize) {
        let now = Instant::now();
        let floor = now
            .checked_sub(Duration::from_millis(CONN_BURST_MS))
            .unwrap_or(now);
        let start = self.due.map_or(now, |due| due.max(floor));
        let due = start + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        self.due = Some(due);
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, s: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // One kill switch for both directions: a reset in one tears down the whole connection.
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
    let up = {
        let s = s.clone();
        let mut kill = kill_rx.clone();
        async move {
            let mut buf = vec![0u8; PIPE_BUF_BYTES];
            let mut pacer = Pacer::default();
            let mut reset = false;
            loop {
                let n = tokio::select! {
                    r = cr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                    _ = kill.wait_for(|k| *k) => break,
                };
                match forward(&s, &buf[..n], &mut sw, true, &mut pacer).await {
                    Ok(()) => {}
                    Err(Stop::Closed) => break,
                    Err(Stop::Reset) => {
                        reset = true;
                        let _ = kill_tx.send(true);
                        break;
                    }
                }
            }
            if !reset {
                let _ = sw.shutdown().await;
            }
            (reset, cr)
        }
    };
    let down = {
        let s = s.clone();
        let mut kill = kill_rx;
        async move {
            let mut buf = vec![0u8; PIPE_BUF_BYTES];
            let mut pacer = Pacer::default();
            loop {
                let n = tokio::select! {
                    r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                    _ = kill.wait_for(|k| *k) => break,
                };
                if forward(&s, &buf[..n], &mut cw, false, &mut pacer)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Pass the registry's close on at once (a half-close), or a client waiting for EOF
            // would never see it.
            if !*kill.borrow() {
                let _ = cw.shutdown().await;
            }
            cw
        }
    };
    let ((reset, cr), cw) = tokio::join!(up, down);
    if reset {
        s.counters.resets.fetch_add(1, Ordering::Relaxed);
        // A real RST: SO_LINGER 0 then close, so the client sees ECONNRESET, not a clean EOF.
        if let Ok(client) = cr.reunite(cw) {
            send_rst(client);
        }
    }
}

impl Shared {
    fn refusing(&self) -> bool {
        let faults = self.faults.lock().unwrap();
        faults.refuse_until.is_some_and(|t| t > Instant::now())
    }
}

/// Closes `stream` with a TCP RST (SO_LINGER 0), so the client sees ECONNRESET.
fn send_rst(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let sock = socket2::Socket::from(std);
        let _ = sock.set_linger(Some(Duration::ZERO));
    }
}

/// Why forwarding stopped: a scripted reset, or the peer went away.
enum Stop {
    Reset,
    Closed,
}

async fn forward(
    s: &Shared,
    mut data: &[u8],
    out: &mut tokio::net::tcp::OwnedWriteHalf,
    upstream: bool,
    pacer: &mut Pacer,
) -> Result<(), Stop> {
    while !data.is_empty() {
        if s.refusing() {
            return Err(Stop::Reset);
        }
        let faults = s.faults.lock().unwrap().clone();
        if let Some(until) = faults.blackhole_until {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
                continue;
            }
        }
        delay(&faults).await;
        let mut take = faults.slice_bytes.unwrap_or(usize::MAX).min(data.len());
        if upstream {
            let sent = s.counters.upstream_bytes.load(Ordering::Relaxed);
            let blackhole_at = *s.blackhole_at.lock().unwrap();
            if let Some((at, length)) = blackhole_at {
                if sent >= at {
                    *s.blackhole_at.lock().unwrap() = None;
                    s.faults.lock().unwrap().blackhole_until = Some(Instant::now() + length);
                    continue;
                }
                take = take.min((at - sent) as usize);
            }
            let freeze_at = *s.freeze_at.lock().unwrap();
            if let Some((at, length)) = freeze_at {
                if sent >= at {
                    // This connection only: the other directions and connections go on.
                    *s.freeze_at.lock().unwrap() = None;
                    *s.frozen_at.lock().unwrap() = Some(std::time::SystemTime::now());
                    tokio::time::sleep(length).await;
                    continue;
                }
                take = take.min((at - sent) as usize);
            }
            let reset_at = *s.next_reset_at.lock().unwrap();
            if let Some(at) = reset_at {
                if sent >= at {
                    let mut next = s.next_reset_at.lock().unwrap();
                    *next = match (faults.reset_every, faults.reset_after_upstream_bytes) {
                        (true, Some(n)) => Some(sent + n),
                        _ => None,
                    };
                    return Err(Stop::Reset);
                }
                take = take.min((at - sent) as usize);
            }
            if let Some(rate) = faults.upstream_bytes_per_sec {
                take = take.min((rate / 20).max(1) as usize);
                tokio::time::sleep(Duration::from_secs_f64(take as f64 / rate as f64)).await;
            }
        }
        if let Some(rate) = faults.conn_bytes_per_sec {
            take = take.min(Pacer::slice(rate));
            pacer.pace(rate, take).await;
        }
        if out.write_all(&data[..take]).await.is_err() {
            return Err(Stop::Closed);
        }
        let counter = if upstream {
            &s.counters.upstream_bytes
        } else {
            &s.counters.downstream_bytes
        };
        counter.fetch_add(take as u64, Ordering::Relaxed);
        data = &data[take..];
    }
    Ok(())
}

/// The scripted latency and jitter of one forwarded read.
async fn delay(faults: &Faults) {
    if !faults.latency.is_zero() || !faults.jitter.is_zero() {
        let jitter = if faults.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand_below(faults.jitter.as_nanos() as u64))
        };
        tokio::time::sleep(faults.latency + jitter).await;
    }
}

fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}
