//! Starting `hoistd` when no daemon answers: same socket, same state directory, detached from
//! the terminal (its own process group, so Ctrl-C in the shell does not reach it), logging to
//! `STATE_DIR/hoistd.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::client::Client;
use crate::paths;

/// How long a freshly started daemon may take to answer.
const DAEMON_START_MS_MAX: u64 = 10_000;
/// Pause between health probes while it starts.
const PROBE_INTERVAL_MS: u64 = 50;

/// The `hoistd` next to this `hoist`, else the one on `PATH`.
fn hoistd_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("hoistd"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("hoistd"))
}

/// Starts a daemon on the client's socket and waits until it answers.
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
            bail!(
                "hoistd exited at start ({status}): see {} for why, or start hoistd yourself",
                log_path.display()
            );
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
