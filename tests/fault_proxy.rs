//! The fault proxy injects what it claims: real resets, stalls, and byte counts.
use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, Faults};

/// Sends a PATCH-like request with a `body_bytes` body through `addr`; returns the I/O result.
fn send_body(addr: std::net::SocketAddr, body_bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /v2/ HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {body_bytes}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = body_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// A loopback server that runs `handle` on every connection it accepts.
async fn serve<F, Fut>(handle: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// A server that reads `bytes` before answering and closing, so the proxy's faults, not an
/// early answer, decide what happens to a large request.
async fn sink(bytes: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve(move |mut s| async move {
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        while got < bytes {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_counts() {
    let reg = common::TestRegistry::start();
    let proxy = FaultProxy::start(reg.addr).await;
    let addr = proxy.addr;
    let out = tokio::task::spawn_blocking(move || common::http_get(addr, "/v2/"))
        .await
        .unwrap()
        .expect("registry answers through the proxy");
    assert_eq!(out.0, 200);
    assert!(proxy.upstream_bytes() > 30, "request bytes counted");
    assert!(proxy.downstream_bytes() > 30, "response bytes counted");
    assert_eq!(proxy.resets(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_n_upstream_bytes() {
    let proxy = FaultProxy::start(sink(4_000_000).await).await;
    proxy.set(Faults {
        reset_after_upstream_bytes: Some(1_000_000),
        ..Faults::default()
    });
    let addr = proxy.addr;
    let res = tokio::task::spawn_blocking(move || send_body(addr, 4_000_000))
        .await
        .unwrap();
    let err = res.expect_err("the connection is cut");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "a reset, not a clean close: {err:?}"
    );
    assert_eq!(proxy.resets(), 1);
    assert_eq!(proxy.upstream_bytes(), 1_000_000, "exactly N bytes passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_stalls_then_recovers() {
    let reg = common::TestRegistry::start();
    let proxy = FaultProxy::start(reg.addr).await;
    proxy.set(Faults {
        blackhole_until: Some(Instant::now() + Duration::from_millis(700)),
        ..Faults::default()
    });
    let addr = proxy.addr;
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || common::http_get(addr, "/v2/"))
        .await
        .unwrap()
        .expect("answers after the stall");
    assert_eq!(out.0, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the request was held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_slows_uploads() {
    let sink_addr = sink(1_000_000).await;
    let proxy = FaultProxy::start(sink_addr).await;
    proxy.set(Faults {
        upstream_bytes_per_sec: Some(2_000_000),
        ..Faults::default()
    });
    let addr = proxy.addr;
    let started = Instant::now();
    let _ = tokio::task::spawn_blocking(move || send_body(addr, 1_000_000))
        .await
        .unwrap();
    assert!(proxy.upstream_bytes() >= 1_000_000);
    // 1 MB at 2 MB/s takes about 0.5 s; uncapped loopback takes milliseconds.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// A server that sends `bytes` bytes on every connection, then closes it.
async fn source(bytes: usize) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    serve(move |mut s| async move {
        let _ = s.write_all(&vec![b'y'; bytes]).await;
    })
    .await
}

/// Bytes per second of one upload of `bytes` through `addr`, timed until the sink's answer.
async fn upload_rate(addr: std::net::SocketAddr, bytes: usize) -> f64 {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        send_body(addr, bytes).expect("the upload goes through");
        bytes as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

const CONN_CAP_BYTES_PER_SEC: u64 = 8 << 20;
/// Half a second's worth at the cap: long enough to measure, short for the suite.
const CONN_CAP_TEST_BYTES: usize = 4 << 20;

/// Whether `rate` is near the per-connection cap: a behaviour check with generous bounds
/// (the machine is shared), not a performance assertion.
fn near_cap(rate: f64) -> bool {
    let cap = CONN_CAP_BYTES_PER_SEC as f64;
    rate > 0.5 * cap && rate < 1.3 * cap
}

/// A proxy in front of `upstream` that caps every connection at the test's cap.
async fn capped_proxy(upstream: std::net::SocketAddr) -> FaultProxy {
    let proxy = FaultProxy::start(upstream).await;
    proxy.set(Faults {
        conn_bytes_per_sec: Some(CONN_CAP_BYTES_PER_SEC),
        ..Faults::default()
    });
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_cap_holds_for_each_connection() {
    let proxy = capped_proxy(sink(CONN_CAP_TEST_BYTES).await).await;
    let one = upload_rate(proxy.addr, CONN_CAP_TEST_BYTES).await;
    assert!(near_cap(one), "one connection: {one:.0} B/s");
    // Two at once: each gets the cap on its own, so together they pass about twice as much.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        upload_rate(proxy.addr, CONN_CAP_TEST_BYTES),
        upload_rate(proxy.addr, CONN_CAP_TEST_BYTES)
    );
    let together = 2.0 * CONN_CAP_TEST_BYTES as f64 / started.elapsed().as_secs_f64();
    assert!(
        near_cap(a) && near_cap(b),
        "two connections: {a:.0} and {b:.0} B/s"
    );
    assert!(
        together > 1.4 * CONN_CAP_BYTES_PER_SEC as f64,
        "two connections share no cap: {together:.0} B/s together"
    );
    assert!(
        proxy.connections_open_max() >= 2,
        "the two were open at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_cap_holds_for_downloads() {
    let proxy = capped_proxy(source(CONN_CAP_TEST_BYTES).await).await;
    let addr = proxy.addr;
    let rate = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), CONN_CAP_TEST_BYTES);
        got.len() as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap();
    assert!(near_cap(rate), "download: {rate:.0} B/s");
    assert_eq!(proxy.downstream_bytes(), CONN_CAP_TEST_BYTES as u64);
}
