//! `hoistd`: the daemon. Parses arguments, takes its socket from `daemon::paths::listener`
//! (systemd's, or one it binds), and calls `daemon::run` until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use hoist::daemon::{self, Config};
use hoist::paths;

/// The hoist daemon: owns push jobs and serves the `hoist` CLI on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/hoist/hoist.sock]. Ignored when systemd
    /// passes a socket (socket activation).
    #[arg(long, env = "HOIST_SOCKET")]
    socket: Option<PathBuf>,
    /// Directory for the job database and the spool [default: $XDG_STATE_HOME/hoist].
    #[arg(long, env = "HOIST_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Upload connections across all jobs.
    #[arg(long, env = "HOIST_UPLOADS_MAX", default_value_t = daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT)]
    uploads_max: usize,
    /// Jobs running at once; more wait in the queue.
    #[arg(long, env = "HOIST_JOBS_MAX", default_value_t = daemon::JOBS_RUNNING_MAX_DEFAULT)]
    jobs_max: usize,
    /// Drop a registry request when no byte moved for this long (e.g. 30s, 2m); the upload
    /// resumes by itself (a sleeping laptop, a dead Wi-Fi).
    #[arg(long, env = "HOIST_STALL_TIMEOUT", default_value = "30s", value_parser = hoist::units::parse_duration)]
    stall_timeout: std::time::Duration,
    /// The longest wait between two attempts while the network is down (e.g. 5m, 30s).
    #[arg(long, env = "HOIST_RETRY_MAX", default_value = "5m", value_parser = hoist::units::parse_duration)]
    retry_max: std::time::Duration,
    /// Upload limit shared by all jobs (e.g. 10MiB/s, 20Mbit/s, off); `hoist limit` changes it
    /// while the daemon runs.
    #[arg(long, env = "HOIST_BANDWIDTH")]
    bandwidth: Option<String>,
    /// Remove done and cancelled jobs, with their events, this long after they ended (e.g.
    /// 7d, 12h); `off` keeps them. Checked at start-up and periodically. Failed jobs stay
    /// until retried or removed with `hoist rm`.
    #[arg(long, env = "HOIST_KEEP_JOBS", default_value = daemon::KEEP_JOBS_DEFAULT)]
    keep_jobs: String,
    /// Run as root even on a socket others could reach. Without it, root runs only when the
    /// socket is owner-only (mode 0600) in a root-owned directory nobody else can write.
    #[arg(
        long,
        env = "HOIST_ALLOW_ROOT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_root: bool,
    /// Started by `hoist` (autostart): health says so, and `hoist` may restart this daemon on
    /// a new binary when no job runs.
    #[arg(long, hide = true)]
    autostarted: bool,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // Every line passes the secrets the scheduler holds: a library's error may quote one.
        .with_writer(|| hoist::environ::RedactingWriter(std::io::stderr()))
        // Colour only for people: not in hoistd.log, not in the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hoistd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::harden::no_core_dumps().context("cannot turn off core dumps")?;
    if args.uploads_max == 0 || args.jobs_max == 0 {
        bail!("--uploads-max and --jobs-max must be at least 1");
    }
    let rate = match &args.bandwidth {
        Some(r) => hoist::units::parse_rate(r).map_err(|e| anyhow::anyhow!("--bandwidth: {e}"))?,
        None => None,
    };
    let keep_jobs = hoist::units::parse_retention(&args.keep_jobs)
        .map_err(|e| anyhow::anyhow!("--keep-jobs: {e}"))?;
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => paths::default_state_dir().map_err(anyhow::Error::msg)?,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Root serves only a socket that admits root alone, unless told otherwise.
        let owner_only = rustix::process::getuid().is_root() && !args.allow_root;
        let listener = daemon::paths::listener(args.socket, owner_only)?;
        let net = daemon::push::NetSettings {
            stall_timeout: args.stall_timeout,
            retry_delay_max: args.retry_max,
            bandwidth: hoist::bandwidth::Bucket::new(rate),
        };
        let config = Config {
            uploads_in_flight_max: args.uploads_max,
            jobs_running_max: args.jobs_max,
            keep_jobs,
            build: std::env::current_exe()
                .ok()
                .and_then(|exe| paths::binary_identity(&exe)),
            autostarted: args.autostarted,
            ..Config::with_net(net)
        };
        daemon::run(listener, &state_dir, config, shutdown_signal()?).await?;
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
