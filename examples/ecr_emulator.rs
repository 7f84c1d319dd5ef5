//! The tests' ECR emulation (`tests/common/ecr_proxy`) as a program, for benchmarks: ECR's
//! atomic layer parts (a part cut midway is not committed; the upload goes on from the last
//! whole part), 5 MiB minimum parts and the rest of `docs/ECR.md`, in front of a real
//! registry. `scripts/demo.sh` pushes through it and `scripts/bench.sh` measures the kill -9
//! resume through it, since Debian's registry cancels an upload whose PATCH was cut (see
//! `docs/PERFORMANCE.md`).
//!
//! With `--conn-mib-per-sec N` the tests' TCP fault proxy (`tests/common/fault_proxy.rs`) sits
//! in front and caps every TCP connection on its own at N MiB/s in each direction, as
//! per-flow shaping on a real path does; `--no-ecr` leaves the emulation out (the fault proxy
//! forwards straight to the registry). `scripts/bench.sh --split` measures through that.
//!
//! usage: ecr_emulator [--conn-mib-per-sec N] [--no-ecr] UPSTREAM_ADDR
//! Prints its own `127.0.0.1:PORT` and serves until SIGTERM or SIGINT; then, with the fault
//! proxy, prints the bytes it forwarded:
//! `upstream_bytes=N downstream_bytes=N connections=N connections_open_max=N`.
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use common::fault_proxy::{FaultProxy, Faults};

#[derive(Parser)]
struct Args {
    /// The registry's 127.0.0.1:PORT.
    upstream: SocketAddr,
    /// Cap every TCP connection at this many MiB/s in each direction (fault proxy in front).
    #[arg(long)]
    conn_mib_per_sec: Option<u64>,
    /// No ECR emulation: only the fault proxy, straight to the registry (needs the cap).
    #[arg(long, requires = "conn_mib_per_sec")]
    no_ecr: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ecr = if args.no_ecr {
        None
    } else {
        Some(common::ecr_proxy::EcrProxy::start(args.upstream).await)
    };
    let fault = match args.conn_mib_per_sec {
        Some(mib) => {
            let behind = ecr.as_ref().map_or(args.upstream, |e| e.addr);
            let fault = FaultProxy::start(behind).await;
            fault.set(Faults {
                conn_bytes_per_sec: Some(mib << 20),
                ..Faults::default()
            });
            if let Some(ecr) = &ecr {
                ecr.serve_behind(fault.addr);
            }
            Some(fault)
        }
        None => None,
    };
    let host = match (&fault, &ecr) {
        (Some(f), _) => f.host(),
        (None, Some(e)) => e.host(),
        (None, None) => unreachable!("clap requires the cap with --no-ecr"),
    };
    println!("{host}");
    let _ = std::io::stdout().flush();
    stopped().await;
    if let Some(f) = fault {
        println!(
            "upstream_bytes={} downstream_bytes={} connections={} connections_open_max={}",
            f.upstream_bytes(),
            f.downstream_bytes(),
            f.connections(),
            f.connections_open_max()
        );
        let _ = std::io::stdout().flush();
    }
}

/// Returns on SIGTERM or SIGINT.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
