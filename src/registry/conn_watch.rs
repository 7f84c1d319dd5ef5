//! Which TCP connection carries a request, and how much of what was written to it the peer has
//! not acknowledged yet: the stall watchdog's view of a request body that already left the
//! process (it may sit in socket buffers for a minute on a slow link, or forever behind a
//! frozen peer whose kernel took it all).
//!
//! reqwest does not hand out a connection's socket. What it does give:
//! - a connector layer ([`WatchLayer`]) sees every new connection and its addresses (local,
//!   peer: the proxy's when there is one, the registry's otherwise; TLS or not);
//! - a request body is polled by the task that runs its connection (hyper's dispatcher), so
//!   the body knows that task;
//! - a response names the connection's addresses (`HttpInfo`).
//!
//! Tokio numbers tasks in the order they are spawned, and hyper spawns a connection's task in
//! the same poll in which the connector finished it. So the layer notes the number of a task
//! spawned just before (when the connector finishes) and, when the connection was made for a
//! request in its own task, the request notes one spawned just after that poll: the
//! connection's task lies between. A body's task then names its connection: the one whose
//! interval holds it (the one the request opened, when several do), and the response of a
//! request whose body that task polled binds the two for good. A request whose connection
//! stays unknown (intervals that overlap, connections made in the background) gets the
//! watchdog's rate rule instead.
//!
//! The unacknowledged bytes are the kernel's (`/proc/net/tcp`, Linux; nothing elsewhere),
//! found by the connection's addresses, so no file descriptor is borrowed and a closed
//! connection simply is not found.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use tokio::task::Id as TaskId;

/// A connection's addresses: local, peer.
pub(crate) type Addrs = (SocketAddr, SocketAddr);

/// Where the connector tells the request that opened a connection which one it is.
pub(crate) type OpenedSlot = Arc<OnceLock<Addrs>>;

tokio::task_local! {
    static OPENING: OpenedSlot;
}

/// The number of a task spawned now: every task spawned later has a greater one.
fn task_number_now() -> TaskId {
    tokio::spawn(async {}).id()
}

/// Runs `fut` (a request being sent) so that a connection the connector opens for it, in
/// this task, is written into `slot`, and `watch` learns which task numbers its connection's
/// task may have.
pub(crate) async fn opening<F: Future>(
    slot: OpenedSlot,
    watch: Arc<ConnWatch>,
    fut: F,
) -> F::Output {
    let mut fut = std::pin::pin!(OPENING.scope(slot.clone(), fut));
    let mut noted = false;
    std::future::poll_fn(|cx| {
        let polled = fut.as_mut().poll(cx);
        if !noted && let Some(addrs) = slot.get() {
            // Hyper spawned the connection's task in the poll that finished the connector.
            noted = true;
            watch.spawned_before(*addrs, task_number_now());
        }
        polled
    })
    .await
}

/// Connections above this many known ones are checked for being closed when a new one opens
/// (where the kernel's table cannot tell, the oldest are forgotten).
const KNOWN_CONNS_PRUNE_AT: usize = 32;

struct Known {
    addrs: Addrs,
    task: Option<TaskId>,
    /// The connection's task was spawned after the first and before the second, if known.
    after: TaskId,
    before: Option<TaskId>,
}

impl Known {
    fn may_run_on(&self, task: TaskId) -> bool {
        self.task.is_none() && self.after < task && self.before.is_none_or(|b| task < b)
    }
}

/// The connections one registry client opened, and the task that runs each, once known.
#[derive(Default)]
pub(crate) struct ConnWatch {
    known: Mutex<Vec<Known>>,
    /// Known connections above which the closed ones are forgotten next: twice what was
    /// left the last time, so the kernel's table is read once per doubling, not per connection.
    prune_at: std::sync::atomic::AtomicUsize,
}

impl ConnWatch {
    fn opened(&self, addrs: Addrs, after: TaskId) {
        let mut known = self.known.lock().expect("conn watch lock");
        known.push(Known {
            addrs,
            task: None,
            after,
            before: None,
        });
        let prune_at = self
            .prune_at
            .load(Ordering::Relaxed)
            .max(KNOWN_CONNS_PRUNE_AT);
        if known.len() > prune_at {
            // Reading procfs is quick and never blocks on a device: fine under the lock.
            match kernel::table() {
                Some(table) => known.retain(|k| table.unacked(k.addrs).is_some()),
                None => {
                    let excess = known.len() - KNOWN_CONNS_PRUNE_AT;
                    known.drain(..excess);
                }
            }
            self.prune_at.store(known.len() * 2, Ordering::Relaxed);
        }
    }

    fn spawned_before(&self, addrs: Addrs, before: TaskId) {
        let mut known = self.known.lock().expect("conn watch lock");
        if let Some(k) = known.iter_mut().rev().find(|k| k.addrs == addrs) {
            k.before = Some(before);
        }
    }

    /// Records that `task` runs the connection `addrs` (the task of a closed connection
    /// never polls again, so an older binding of either side is dropped).
    pub(crate) fn bind(&self, task: TaskId, addrs: Addrs) {
        let mut known = self.known.lock().expect("conn watch lock");
        for k in known.iter_mut() {
            if k.task == Some(task) {
                k.task = None;
            }
        }
        // A local address names one live connection; an older entry of it is a closed one.
        match known.iter_mut().rev().find(|k| k.addrs == addrs) {
            Some(k) => k.task = Some(task),
            None => known.push(Known {
                addrs,
                task: Some(task),
                after: task,
                before: None,
            }),
        }
    }

    /// The connection `task` runs: bound, else the only live one whose task may be `task`
    /// (the one `opened` names, when several may), then bound.
    fn conn_of(&self, task: TaskId, opened: Option<Addrs>, table: &kernel::Table) -> Option<Addrs> {
        let known = self.known.lock().expect("conn watch lock");
        if let Some(k) = known.iter().find(|k| k.task == Some(task)) {
            return Some(k.addrs);
        }
        let fits: Vec<Addrs> = known
            .iter()
            .filter(|k| k.may_run_on(task) && table.unacked(k.addrs).is_some())
            .map(|k| k.addrs)
            .collect();
        drop(known);
        let found = match opened {
            _ if fits.len() == 1 => Some(fits[0]),
            Some(a) if fits.contains(&a) => Some(a),
            _ => None,
        }?;
        self.bind(task, found);
        Some(found)
    }

    /// Bytes written to the connection `task` runs that its peer has not acknowledged yet;
    /// `None` when that connection or the kernel's count is unknown.
    pub(crate) async fn unacked_bytes(
        self: &Arc<Self>,
        task: TaskId,
        opened: Option<Addrs>,
    ) -> Option<u64> {
        let watch = self.clone();
        // procfs is a file: read it off the async runtime.
        tokio::task::spawn_blocking(move || {
            let table = kernel::table()?;
            let addrs = watch.conn_of(task, opened, &table)?;
            table.unacked(addrs)
        })
        .await
        .ok()
        .flatten()
    }
}

/// The addresses of the connection a response came on.
pub(crate) fn response_addrs(resp: &reqwest::Response) -> Option<Addrs> {
    let info = resp.extensions().get::<HttpInfo>()?;
    Some((info.local_addr(), info.remote_addr()))
}

/// The connector layer that tells a [`ConnWatch`] about every connection its client opens.
#[derive(Clone)]
pub(crate) struct WatchLayer {
    pub watch: Arc<ConnWatch>,
}

impl<S> tower_layer::Layer<S> for WatchLayer {
    type Service = WatchService<S>;
    fn layer(&self, inner: S) -> WatchService<S> {
        WatchService {
            inner,
            watch: self.watch.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct WatchService<S> {
    inner: S,
    watch: Arc<ConnWatch>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> tower_service::Service<R> for WatchService<S>
where
    S: tower_service::Service<R>,
    S::Response: Connection + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let slot = OPENING.try_with(Arc::clone).ok();
        let caller = tokio::task::try_id();
        let watch = self.watch.clone();
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let conn = connecting.await?;
            let mut extras = http::Extensions::new();
            conn.connected().get_extras(&mut extras);
            if let Some(info) = extras.get::<HttpInfo>() {
                let addrs = (info.local_addr(), info.remote_addr());
                watch.opened(addrs, task_number_now());
                // Finished in another task, the connect lost the race to a pooled connection
                // (hyper then finishes it in the background for the pool): not this request's.
                // (No task at all is a runtime's `block_on`: background work is always a task.)
                if let Some(slot) = slot
                    && tokio::task::try_id() == caller
                {
                    let _ = slot.set(addrs);
                }
            }
            Ok(conn)
        })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod kernel {
    use std::collections::HashMap;
    use std::net::{IpAddr, SocketAddr};

    use super::Addrs;

    /// `st` of an established connection in procfs (`TCP_ESTABLISHED`); a closing or
    /// closed one (`TIME_WAIT` and the like) carries no request.
    const STATE_ESTABLISHED: &str = "01";

    /// The established TCP connections of this network namespace (`/proc/net/tcp` and
    /// `tcp6`): their send queues by local and peer address as procfs writes them.
    pub(super) struct Table {
        queues: HashMap<(String, String), u64>,
    }

    pub(super) fn table() -> Option<Table> {
        let mut text = std::fs::read_to_string("/proc/net/tcp").ok()?;
        if let Ok(v6) = std::fs::read_to_string("/proc/net/tcp6") {
            text.push_str(&v6);
        }
        let queues = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let (_, l, p, st, queues) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
                if st != STATE_ESTABLISHED {
                    return None;
                }
                let tx = u64::from_str_radix(queues.split(':').next()?, 16).ok()?;
                Some(((l.to_string(), p.to_string()), tx))
            })
            .collect();
        Some(Table { queues })
    }

    impl Table {
        /// The connection's send queue: bytes written and not yet acknowledged by the peer
        /// (`tx_queue`, the kernel's `write_seq - snd_una`, what `SIOCOUTQ` answers).
        pub(super) fn unacked(&self, (local, peer): Addrs) -> Option<u64> {
            self.queues
                .get(&(proc_addr(local), proc_addr(peer)))
                .copied()
        }
    }

    /// An address as procfs prints it: each 32-bit word of the address as the machine holds
    /// it, in hex, then the port.
    pub(super) fn proc_addr(a: SocketAddr) -> String {
        let words: String = match a.ip() {
            IpAddr::V4(ip) => format!("{:08X}", u32::from_ne_bytes(ip.octets())),
            IpAddr::V6(ip) => ip
                .octets()
                .chunks_exact(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect(),
        };
        format!("{words}:{:04X}", a.port())
    }
}

/// No portable count of a socket's unacknowledged bytes: the watchdog uses its rate rule.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod kernel {
    use super::Addrs;

    pub(super) struct Table;

    pub(super) fn table() -> Option<Table> {
        None
    }

    impl Table {
        pub(super) fn unacked(&self, _: Addrs) -> Option<u64> {
            None
        }
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_procfs_writes_them() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let want = if cfg!(target_endian = "little") {
            "0100007F:1F90"
        } else {
            "7F000001:1F90"
        };
        assert_eq!(kernel::proc_addr(v4), want);
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let last = if cfg!(target_endian = "little") {
            "01000000"
        } else {
            "00000001"
        };
        assert_eq!(
            kernel::proc_addr(v6),
            format!("000000000000000000000000{last}:01BB")
        );
    }

    #[test]
    fn a_connected_socket_is_found_with_its_send_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let addrs = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let table = kernel::table().expect("procfs");
        assert_eq!(table.unacked(addrs), Some(0));
        let gone = (addrs.1, addrs.1);
        assert_eq!(table.unacked(gone), None);
    }
}
