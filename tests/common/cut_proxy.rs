//! A transparent TCP proxy that can cut a connection in the middle of a request: for faults
//! against the real registry (whose behaviour after a cut PATCH differs from ECR's). Bytes are
//! forwarded as they come, so the registry sees the partial body, as it would from a client
//! whose link died.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::serve::ServerTask;

pub struct CutState {
    /// Client->registry bytes still allowed before the connection carrying them is cut;
    /// negative: no cut scheduled.
    pub budget: AtomicI64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub cuts: AtomicU32,
    /// Client->registry bytes per second (0: unlimited): a slow uplink.
    pub rate_up: AtomicU64,
}

pub struct CutProxy {
    pub addr: SocketAddr,
    pub state: Arc<CutState>,
    task: ServerTask,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(CutState {
            budget: AtomicI64::new(-1),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            cuts: AtomicU32::new(0),
            rate_up: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = ServerTask::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    pipe(client, server, st).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        CutProxy { addr, state, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Cut the connection that carries the client's next `n` bytes (counted from now), right
    /// after forwarding them.
    pub fn cut_after(&self, n: u64) {
        self.state.budget.store(n as i64, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, st: Arc<CutState>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let st2 = st.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let budget = st.budget.load(Ordering::SeqCst);
            let allowed = if budget >= 0 {
                n.min(budget as usize)
            } else {
                n
            };
            if sw.write_all(&buf[..allowed]).await.is_err() {
                return;
            }
            st.bytes_up.fetch_add(allowed as u64, Ordering::SeqCst);
            // A slow uplink: pace what we forward.
            if let Some(us) =
                (allowed as u64 * 1_000_000).checked_div(st.rate_up.load(Ordering::SeqCst))
            {
                tokio::time::sleep(std::time::Duration::from_micros(us)).await;
            }
            if budget >= 0 {
                let left = budget - allowed as i64;
                if left <= 0 {
                    st.budget.store(-1, Ordering::SeqCst);
                    st.cuts.fetch_add(1, Ordering::SeqCst);
                    return; // dropping both halves resets the connection
                }
                st.budget.store(left, Ordering::SeqCst);
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            st2.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
        }
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
