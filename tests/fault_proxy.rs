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

/// A server that reads `bytes` before answering and closing, so the proxy's faults, not an
/// early answer, decide what happens to a large request.
async fn sink(bytes: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = 0usize;
                while got < bytes {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            });
        }
    });
    addr
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
