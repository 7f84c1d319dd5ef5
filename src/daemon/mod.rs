//! The daemon: socket server, scheduler, and the seam to the push pipeline.
//!
//! # Layout
//! - [`run`]: the whole daemon, given a bound listener; `hoistd` and tests call it.
//! - `server`: accept loop, peer-uid check, HTTP/1.1 (hyper) per connection.
//! - `routes`: request handlers (wire types from [`crate::api`] only).
//! - `shutdown`: the wait for the stop signal, shared by `server` and `routes`.
//! - [`scheduler`]: the one owner of job state (an actor over a bounded channel).
//! - [`job`]: the seam: [`job::JobBody`] is the push itself, [`job::JobContext`] its reporting.
//! - [`prepare`]: the push's first step: open the source, plan, record the plan.
//! - [`sweep`]: at start-up, removes spool directories no job needs any more.
//! - [`systemd`]: socket activation and readiness notification.
//! - [`paths`]: the listening socket, systemd's or bound safely (where files live is
//!   [`crate::paths`]).

pub mod harden;
pub mod job;
pub mod metrics;
pub mod paths;
pub mod prepare;
pub mod push;
mod routes;
pub mod scheduler;
mod server;
mod shutdown;
pub mod sweep;
pub mod systemd;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{Store, StoreError};

pub use crate::limits::UPLOADS_IN_FLIGHT_MAX_DEFAULT;
/// Jobs running at once, unless configured otherwise; more wait in `queued`.
pub const JOBS_RUNNING_MAX_DEFAULT: usize = 4;
/// How long finished jobs are kept, unless configured otherwise (`hoistd --keep-jobs`).
pub const KEEP_JOBS_DEFAULT: &str = "7d";

/// How long shutdown waits for jobs to reach a chunk boundary before leaving anyway (their
/// cursors are committed already; a later daemon resumes them).
const SHUTDOWN_JOBS_MS_MAX: u64 = 20_000;

/// Daemon settings.
#[derive(Clone)]
pub struct Config {
    pub uploads_in_flight_max: usize,
    pub jobs_running_max: usize,
    /// The push itself: [`push::PushBody`] in production; tests inject their own.
    pub job_body: Arc<dyn job::JobBody>,
    /// Stall timeout, backoff cap and the global bandwidth bucket. The production body holds
    /// the same settings (see [`Config::with_net`]); the API changes the bucket's rate.
    pub net: push::NetSettings,
    /// How long done and cancelled jobs are kept after they ended; `None`: for ever.
    pub keep_jobs: Option<Duration>,
    /// This daemon's build identity for `GET /v1/health` (`paths::binary_identity` of its
    /// executable, taken at start before the file can be replaced).
    pub build: Option<String>,
    /// Started by `hoist`'s autostart (`hoistd --autostarted`), told to clients by health.
    pub autostarted: bool,
}

impl Config {
    /// The production body with these network settings (the body and the API share them).
    pub fn with_net(net: push::NetSettings) -> Config {
        Config {
            uploads_in_flight_max: UPLOADS_IN_FLIGHT_MAX_DEFAULT,
            jobs_running_max: JOBS_RUNNING_MAX_DEFAULT,
            job_body: Arc::new(push::PushBody::with_net(net.clone())),
            net,
            keep_jobs: crate::units::parse_retention(KEEP_JOBS_DEFAULT)
                .expect("the default retention parses"),
            build: None,
            autostarted: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_net(push::NetSettings::default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the state database in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another hoistd already answers on {0}: use it, or stop it first")]
    AlreadyRunning(PathBuf),
    #[error("{0}")]
    Config(String),
}

/// Runs the daemon on `listener` with its state in `state_dir` until `shutdown` resolves;
/// then stops jobs at a chunk boundary, persists, and returns.
pub async fn run(
    listener: UnixListener,
    state_dir: &Path,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let store_failed = store_failed(state_dir);
    let store = open_store(state_dir).await?;
    let spool_root = state_dir.join("spool");
    // Before the scheduler: no job runs yet, so no spool is being written.
    sweep_orphans(&store, &spool_root)
        .await
        .map_err(store_failed)?;
    let counters = Arc::new(metrics::Counters::default());
    let sched_config = scheduler::SchedulerConfig {
        uploads_in_flight_max: config.uploads_in_flight_max,
        jobs_running_max: config.jobs_running_max,
        spool_root,
        body: config.job_body,
        keep_jobs: config.keep_jobs,
    };
    let (handle, sched_task) = scheduler::start(sched_config, store.clone(), counters.clone())
        .await
        .map_err(store_failed)?;
    // The server, its connections and event followers stop when this flips to true.
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = Arc::new(routes::App {
        scheduler: handle.clone(),
        store,
        counters,
        stopping: stop_rx.clone(),
        bandwidth: config.net.bandwidth.clone(),
        build: config.build,
        autostarted: config.autostarted,
    });
    let server = tokio::spawn(server::serve(listener, app, stop_rx));
    match systemd::notify("READY=1") {
        Ok(true) => info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot notify systemd"),
    }
    info!(state_dir = %state_dir.display(), "hoistd ready");

    shutdown.await;
    info!("shutting down");
    let _ = systemd::notify("STOPPING=1");
    if tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_JOBS_MS_MAX),
        handle.shutdown(),
    )
    .await
    .is_err()
    {
        warn!("jobs did not stop in time; their last committed cursors resume them next start");
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    sched_task.abort();
    info!("hoistd stopped");
    Ok(())
}

fn store_failed(dir: &Path) -> impl Fn(StoreError) -> DaemonError + Copy + '_ {
    move |source| DaemonError::Store {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Opens the store in `state_dir` (created 0700) and checks the database's integrity.
async fn open_store(state_dir: &Path) -> Result<Store, DaemonError> {
    let store_failed = store_failed(state_dir);
    paths::private_dir(state_dir)?;
    let dir = state_dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| DaemonError::Config(format!("the store could not start: {e}")))?
        .map_err(store_failed)?;
    // A damaged database would resume jobs from wrong cursors: refuse to start on one. The
    // database holds a few rows per job, so the full check takes milliseconds.
    store.integrity_check().await.map_err(store_failed)?;
    Ok(store)
}

/// Removes the spool directories of jobs that no longer need one ([`sweep::sweep_spool`]).
async fn sweep_orphans(store: &Store, spool_root: &Path) -> Result<(), StoreError> {
    let keep: HashSet<_> = store
        .jobs()
        .await?
        .into_iter()
        .filter(|job| sweep::needs_spool(job.state))
        .map(|job| job.id)
        .collect();
    let root = spool_root.to_path_buf();
    match tokio::task::spawn_blocking(move || sweep::sweep_spool(&root, &keep)).await {
        Ok(swept) if swept != sweep::Swept::default() => {
            info!(
                dirs = swept.dirs,
                files = swept.files,
                "removed leftovers from the spool"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "the spool sweep stopped abnormally"),
    }
    Ok(())
}
