//! Making sure a current daemon answers `hoist push`: starting `hoistd` when none does (same
//! socket, same state directory, detached from the terminal in its own process group so Ctrl-C
//! in the shell does not reach it, logging to `STATE_DIR/hoistd.log`), and handling a daemon of
//! another version or build (version skew): an idle one this command started is restarted on
//! the new binary; any other gets a message with the command that restarts it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::client::Client;
use crate::api::Health;
use crate::paths;

/// How long a freshly started daemon may take to answer.
const DAEMON_START_MS_MAX: u64 = 10_000;
/// How long a daemon told to stop (SIGTERM) may take to go away: its jobs stop at a chunk
/// boundary first (as long as systemd's `TimeoutStopSec` in hoist.service).
const DAEMON_STOP_MS_MAX: u64 = 30_000;
/// Pause between health probes while it starts or stops.
const PROBE_INTERVAL_MS: u64 = 50;
/// hoistd's prefix for the error it exits with (`src/bin/hoistd.rs`).
const DAEMON_ERROR_PREFIX: &str = "hoistd: ";
/// The longest daemon error line quoted (hoistd's own lines are far shorter; a stray line of
/// another program is cut).
const DAEMON_ERROR_CHARS_MAX: usize = 500;

/// The `hoistd` next to this `hoist`, else the one on `PATH`.
fn hoistd_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("hoistd"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("hoistd"))
}

/// A daemon answers on the client's socket after this, started if none did (unless
/// `no_autostart`), restarted if it was autostarted, is idle and runs another build.
pub async fn ensure(
    client: &Client,
    state_dir: Option<PathBuf>,
    no_autostart: bool,
) -> anyhow::Result<()> {
    match client.health().await {
        Ok(health) => match skew(&health) {
            None => Ok(()),
            Some(what)
                if health.autostarted
                    && health.jobs_running == 0
                    && peer_pid(client.socket()).await == Some(health.pid) =>
            {
                restart(client, state_dir, &health, &what).await
            }
            Some(what) => {
                eprintln!("hoist: {}", restart_advice(&health, &what));
                Ok(())
            }
        },
        Err(e) if !e.is_no_daemon() => Err(e.into()),
        Err(_) if no_autostart => bail!(
            "no daemon answers on {}: start one with hoistd, or drop --no-autostart",
            client.socket().display()
        ),
        Err(_) => start(client, state_dir).await,
    }
}

/// The pid of the process serving `socket` as this process sees it (the peer's credentials):
/// a daemon in another pid namespace reports a pid that is not its pid here, and must not be
/// signalled by that number.
async fn peer_pid(socket: &Path) -> Option<u32> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

/// How the answering daemon differs from the `hoistd` this `hoist` would start, in words, or
/// `None` when it is the same version and (where both are known) the same build.
fn skew(health: &Health) -> Option<String> {
    let mine = env!("CARGO_PKG_VERSION");
    if health.version != mine {
        return Some(format!("version {} (this hoist is {mine})", health.version));
    }
    let binary = hoistd_binary();
    let want = paths::binary_identity(&binary)?;
    match &health.build {
        Some(build) if *build != want => Some(format!(
            "another build of version {mine} than {}",
            binary.display()
        )),
        _ => None,
    }
}

/// The one line that says how to move a daemon that cannot be restarted here to the new binary.
fn restart_advice(health: &Health, what: &str) -> String {
    let pid = health.pid;
    if health.autostarted {
        return format!(
            "hoistd (pid {pid}) runs {what} and has {} running job(s): to move to the new \
             binary run `kill -TERM {pid}` (jobs stop at a chunk boundary and resume when the \
             next hoist push starts hoistd)",
            health.jobs_running
        );
    }
    let manager = if cfg!(target_os = "macos") {
        "launchctl kickstart -k gui/$(id -u)/dev.hoist.hoistd"
    } else {
        "systemctl --user restart hoist.service"
    };
    format!(
        "hoistd (pid {pid}) runs {what}: restart it to use the new binary (`{manager}`, or \
         `kill -TERM {pid}` and start hoistd again; jobs resume where they stopped)"
    )
}

/// Stops the idle autostarted daemon (SIGTERM), waits until it no longer answers, then starts
/// the new binary on the same socket.
async fn restart(
    client: &Client,
    state_dir: Option<PathBuf>,
    health: &Health,
    what: &str,
) -> anyhow::Result<()> {
    let pid = health.pid;
    eprintln!(
        "hoist: restarting hoistd (pid {pid}, {what}) on {}",
        hoistd_binary().display()
    );
    let stop_failed =
        || format!("cannot stop hoistd (pid {pid}): stop it yourself, then run hoist again");
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    let raw = raw.with_context(stop_failed)?;
    rustix::process::kill_process(raw, rustix::process::Signal::TERM).with_context(stop_failed)?;
    let deadline = Instant::now() + Duration::from_millis(DAEMON_STOP_MS_MAX);
    loop {
        match client.health().await {
            Err(e) if e.is_no_daemon() => break,
            _ if Instant::now() > deadline => bail!(
                "hoistd (pid {pid}) did not stop within {} s: stop it yourself, then run hoist again",
                DAEMON_STOP_MS_MAX / 1000
            ),
            _ => tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await,
        }
    }
    start(client, state_dir).await
}

/// Starts a daemon on the client's socket and waits until it answers. When it exits instead,
/// the error says the daemon's own last error line from its log.
pub async fn start(client: &Client, state_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let state_dir = match state_dir {
        Some(d) => d,
        None => paths::default_state_dir().map_err(anyhow::Error::msg)?,
    };
    paths::private_dir(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let log_path = state_dir.join("hoistd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    // Where this start's lines begin: earlier starts' lines are not this one's reason.
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let binary = hoistd_binary();
    eprintln!(
        "hoist: starting {} on {} (log: {})",
        binary.display(),
        client.socket().display(),
        log_path.display()
    );
    let mut child = spawn(&binary, client.socket(), &state_dir, log)?;
    let deadline = Instant::now() + Duration::from_millis(DAEMON_START_MS_MAX);
    loop {
        if client.health().await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            match last_error(&log_path, log_start) {
                Some(line) => bail!(
                    "hoistd exited at start: {line} ({status}; log: {})",
                    log_path.display()
                ),
                None => bail!(
                    "hoistd exited at start ({status}): see {} for why, or start hoistd yourself",
                    log_path.display()
                ),
            }
        }
        if Instant::now() > deadline {
            bail!(
                "hoistd did not answer within {} s: see {}",
                DAEMON_START_MS_MAX / 1000,
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await;
    }
}

/// The daemon's own error line among the log's lines from byte `from` on (the line hoistd
/// exits with, its prefix removed), else the last line it wrote; `None` when it wrote nothing.
fn last_error(log_path: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(log_path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .filter_map(|l| l.strip_prefix(DAEMON_ERROR_PREFIX))
        .next_back()
        .or_else(|| lines().next_back())
        .map(|l| crate::text::one_line(l, DAEMON_ERROR_CHARS_MAX))
}

/// What of the shell's environment an autostarted hoistd keeps: where its socket and state
/// live, its own settings (`HOIST_*`), and a `PATH`. Nothing else: the shell's credentials,
/// proxies and AWS variables reach the daemon only with each job, for that job, and a daemon
/// that outlives the shell must not hold them in its own environment (`/proc/PID/environ`).
const AUTOSTART_ENV_KEEP: &[&str] = &[
    "HOME",
    "PATH",
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "TMPDIR",
];
const AUTOSTART_ENV_PREFIX: &str = "HOIST_";

/// The variables of this process that an autostarted hoistd gets.
fn autostart_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| {
                AUTOSTART_ENV_KEEP.contains(&k) || k.starts_with(AUTOSTART_ENV_PREFIX)
            })
        })
        .collect()
}

fn spawn(
    binary: &Path,
    socket: &Path,
    state_dir: &Path,
    log: std::fs::File,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let err = log.try_clone()?;
    Command::new(binary)
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--autostarted")
        .env_clear()
        .envs(autostart_env())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: the shell's Ctrl-C and job control stay with `hoist`.
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {}: install hoistd next to hoist or on PATH",
                binary.display()
            )
        })
}
