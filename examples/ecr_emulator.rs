//! The tests' ECR emulation (`tests/common/ecr_proxy`) as a program, for benchmarks: ECR's
//! atomic layer parts (a part cut midway is not committed; the upload goes on from the last
//! whole part), 5 MiB minimum parts and the rest of `docs/ECR.md`, in front of a real
//! registry. `scripts/demo.sh` pushes through it and `scripts/bench.sh` measures the kill -9
//! resume through it, since Debian's registry cancels an upload whose PATCH was cut (see
//! `docs/PERFORMANCE.md`).
//!
//! usage: ecr_emulator UPSTREAM_ADDR  (prints its own `127.0.0.1:PORT`, serves until killed)
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::net::SocketAddr;

#[tokio::main]
async fn main() {
    let upstream: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(a)) => a,
        _ => {
            eprintln!("usage: ecr_emulator UPSTREAM_ADDR (the registry's 127.0.0.1:PORT)");
            std::process::exit(2);
        }
    };
    let proxy = common::ecr_proxy::EcrProxy::start(upstream).await;
    println!("{}", proxy.host());
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
}
