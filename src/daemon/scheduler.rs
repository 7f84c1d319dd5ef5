//! The scheduler: the one owner of scheduling state.
//!
//! An actor drains two bounded channels: [`Event`]s, the API's requests (submit, pause, resume,
//! cancel, retry, delete, a job's bandwidth limit) and shutdown; and the runs' reports
//! ([`RunMessage`]: phase, progress, waiting, finished), read first. Only this loop changes a
//! job's state, always through the store first, then tells followers over a `broadcast`
//! channel (late followers read the persisted event log). Job tasks run the [`JobBody`]; the
//! [`RunLink`] caps upload connections across all of them. Each run has its own bandwidth
//! bucket (in its [`JobContext`]), made from the job's stored limit when the run starts and
//! changed by the loop while it runs.
//!
//! The loop owns a job's whole life: a stop carries its [`StopReason`] to the run, and a job
//! that ends without a push (cancel, delete), in whatever state, has its upload sessions
//! released ([`JobBody::discard`]) and its spool removed here, once no run of it is left. A
//! failed job keeps its sessions and cursors (a retry resumes them) but not its spool; a
//! paused one keeps both. Finished jobs are pruned after the retention period
//! ([`SchedulerConfig::keep_jobs`]).
//!
//! It also owns the secret part of each job's caller environment ([`CallerEnv::secrets`]): in
//! memory only, given to each run's context with the job's stored public part, forgotten when
//! the job ends (done, failed, cancelled or deleted; a retry sends them again). Every text it
//! stores or broadcasts (reasons, events) first has every held secret blanked out, and the
//! daemon's log writer does the same with the set it keeps ([`SecretSet`]). A job that had
//! secrets and lost them with a daemon restart goes on with what it has: most registries and
//! proxies need none of a shell's AWS or proxy variables. Only when the registry or a proxy
//! then refuses it ([`JobError::Refused`]) does it wait, paused, naming the variables, until
//! `hoist resume` sends them again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};

use super::job::{
    JobBody, JobContext, JobError, JobOutput, RunLink, RunMessage, RunReport, StopReason,
    StopSender,
};
use super::metrics::Counters;
use crate::api::{self, EventKind, JobId, JobSpec, JobState};
use crate::bandwidth::Bucket;
use crate::environ::{CallerEnv, SecretSet};
use crate::store::{CursorRecord, JobRecord, Store, StoreError};

/// Events that may wait in the scheduler's queue; senders wait beyond this (back-pressure on
/// job tasks that report faster than the store commits).
pub const SCHEDULER_QUEUE_MAX: usize = 1024;
/// Events a slow follower may fall behind before it re-reads the log from the store.
const BROADCAST_LAG_MAX: usize = 1024;

/// A user's request to change a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
    /// Run a failed or cancelled job again; with a deadline, that one replaces the job's.
    Retry {
        deadline_unix_s: Option<u64>,
    },
    Delete,
}

/// Why the scheduler refused a request; the routes turn these into status codes.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("no job {0}: list jobs with `hoist ls`")]
    NotFound(JobId),
    #[error("{0}")]
    Conflict(String),
    #[error("hoistd is shutting down: retry once it is back")]
    ShuttingDown,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SchedError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchJob(id) => SchedError::NotFound(id),
            other => SchedError::Store(other),
        }
    }
}

/// Everything the scheduler reacts to.
pub enum Event {
    Submit {
        spec: JobSpec,
        /// The caller's environment; `None`: the daemon's own.
        env: Option<CallerEnv>,
        reply: oneshot::Sender<Result<JobRecord, SchedError>>,
    },
    Control {
        id: JobId,
        action: Control,
        /// For resume and retry: the caller's environment, replacing the job's.
        env: Option<CallerEnv>,
        reply: oneshot::Sender<Result<Option<JobRecord>, SchedError>>,
    },
    /// Change a job's own upload limit (`None`: no job limit), stored and applied live.
    SetBandwidth {
        id: JobId,
        bytes_per_s: Option<u64>,
        reply: oneshot::Sender<Result<JobRecord, SchedError>>,
    },
    /// Stop every job at a chunk boundary, wait for them, then end the loop.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Settings of the scheduler.
#[derive(Clone)]
pub struct SchedulerConfig {
    pub uploads_in_flight_max: usize,
    pub jobs_running_max: usize,
    pub spool_root: PathBuf,
    pub body: Arc<dyn JobBody>,
    /// How long a finished job (done or cancelled) is kept after it ended; `None`: for ever.
    /// Failed jobs are kept until retried or removed: a failure must not vanish unseen.
    pub keep_jobs: Option<Duration>,
}

/// The states whose jobs are pruned once [`SchedulerConfig::keep_jobs`] has passed.
pub const PRUNED_STATES: [JobState; 2] = [JobState::Done, JobState::Cancelled];
/// The longest time between two prunes (a short retention prunes every half of it).
pub const PRUNE_INTERVAL_S_MAX: u64 = 3600;
/// The shortest time between two prunes.
pub const PRUNE_INTERVAL_MS_MIN: u64 = 500;

/// How often jobs kept for `keep` are pruned: half of it, within the bounds above.
fn prune_interval(keep: Duration) -> Duration {
    (keep / 2).clamp(
        Duration::from_millis(PRUNE_INTERVAL_MS_MIN),
        Duration::from_secs(PRUNE_INTERVAL_S_MAX),
    )
}

/// The API side's handle: send requests, subscribe to events.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Event>,
    events: broadcast::Sender<api::Event>,
}

impl SchedulerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SchedError>>) -> Event,
    ) -> Result<T, SchedError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SchedError::ShuttingDown)?;
        rx.await.map_err(|_| SchedError::ShuttingDown)?
    }

    /// Accepts a job run with the caller's environment `env` (`None`: the daemon's own).
    pub async fn submit(
        &self,
        spec: JobSpec,
        env: Option<CallerEnv>,
    ) -> Result<JobRecord, SchedError> {
        self.ask(|reply| Event::Submit { spec, env, reply }).await
    }

    /// Applies `action`; returns the job afterwards (`None` after a delete). A resume or retry
    /// with `env` runs the job with that environment from now on.
    pub async fn control(
        &self,
        id: JobId,
        action: Control,
        env: Option<CallerEnv>,
    ) -> Result<Option<JobRecord>, SchedError> {
        self.ask(|reply| Event::Control {
            id,
            action,
            env,
            reply,
        })
        .await
    }

    /// Sets the job's own upload limit: stored in its spec, and followed by its running
    /// uploads at once. Returns the job afterwards.
    pub async fn set_bandwidth(
        &self,
        id: JobId,
        bytes_per_s: Option<u64>,
    ) -> Result<JobRecord, SchedError> {
        self.ask(|reply| Event::SetBandwidth {
            id,
            bytes_per_s,
            reply,
        })
        .await
    }

    /// Live events of all jobs from now on. Subscribe before reading the log, then skip
    /// sequence numbers already seen, so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<api::Event> {
        self.events.subscribe()
    }

    /// Asks the scheduler to stop every job and waits until they stopped.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Event::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Running {
    generation: u64,
    stop: StopSender,
    /// The job reached a final state (cancelled) while this run was still stopping: its late
    /// reports are dropped, so a final state event stays the last event in the job's log.
    ended: bool,
    /// The run's own upload limit, shared with its uploads (through its context): a change
    /// of the job's limit is applied here. It goes with the run; the next run makes a new one
    /// from the stored spec.
    bandwidth: Arc<Bucket>,
    /// The job was deleted while this run was stopping: the sessions it had are deleted once
    /// the run has ended, so no DELETE races with a chunk still in flight.
    discard_after: Option<(JobSpec, CallerEnv, Vec<CursorRecord>)>,
}

struct Scheduler {
    config: SchedulerConfig,
    store: Store,
    counters: Arc<Counters>,
    /// What every run's context shares (store, report channel, upload slots, counters).
    link: RunLink,
    events: broadcast::Sender<api::Event>,
    running: HashMap<JobId, Running>,
    /// The secret variables of each job's caller environment: memory only, never stored.
    secrets: HashMap<JobId, CallerEnv>,
    next_generation: u64,
    /// Set once shutdown began: no job starts, and the reply is sent when `running` is empty.
    shutdown: Option<Vec<oneshot::Sender<()>>>,
}

/// Starts the scheduler: jobs that were running when the daemon stopped go back to `queued`
/// and start again by themselves.
pub async fn start(
    config: SchedulerConfig,
    store: Store,
    counters: Arc<Counters>,
) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel(SCHEDULER_QUEUE_MAX);
    let (events, _) = broadcast::channel(BROADCAST_LAG_MAX);
    let (link, reports) = RunLink::new(
        store.clone(),
        config.uploads_in_flight_max,
        counters.clone(),
        SCHEDULER_QUEUE_MAX,
    );
    let mut sched = Scheduler {
        config,
        store,
        counters,
        link,
        events: events.clone(),
        running: HashMap::new(),
        secrets: HashMap::new(),
        next_generation: 1,
        shutdown: None,
    };
    sched.recover().await?;
    sched.start_queued().await;
    let task = tokio::spawn(sched.run(rx, reports));
    Ok((SchedulerHandle { tx, events }, task))
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, mut reports: mpsc::Receiver<RunMessage>) {
        // The first tick is at once: pruning runs at start-up, then periodically.
        let mut prune = self.config.keep_jobs.map(|keep| {
            let mut t = tokio::time::interval(prune_interval(keep));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            // Reports first: a run's reports are handled in the order it sent them, before
            // requests that came later.
            tokio::select! {
                biased;
                Some(m) = reports.recv() => self.report(m).await,
                event = rx.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = async { prune.as_mut().expect("guarded").tick().await }, if prune.is_some() => {
                    self.prune().await;
                }
            }
            if let Some(waiters) = &mut self.shutdown
                && self.running.is_empty()
            {
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
                break;
            }
        }
        info!("scheduler stopped");
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Submit { spec, env, reply } => {
                let _ = reply.send(self.submit(spec, env).await);
            }
            Event::Control {
                id,
                action,
                env,
                reply,
            } => {
                let _ = reply.send(self.control(id, action, env).await);
            }
            Event::SetBandwidth {
                id,
                bytes_per_s,
                reply,
            } => {
                let _ = reply.send(self.set_bandwidth(id, bytes_per_s).await);
            }
            Event::Shutdown { reply } => {
                info!(
                    jobs = self.running.len(),
                    "stopping jobs at a chunk boundary"
                );
                for run in self.running.values() {
                    run.stop.stop(StopReason::Shutdown);
                }
                self.shutdown.get_or_insert_with(Vec::new).push(reply);
            }
        }
    }

    async fn report(&mut self, m: RunMessage) {
        let RunMessage {
            id,
            generation,
            report,
        } = m;
        match report {
            RunReport::Phase { state, reply } => {
                let _ = reply.send(self.phase(id, generation, state).await);
            }
            RunReport::Progress(kind) => {
                // Progress of a run that is stopping for a pause is still true (its last cursor
                // was saved); reports of an older, replaced run, or of a run whose job was
                // cancelled meanwhile, are dropped.
                if self
                    .running
                    .get(&id)
                    .is_some_and(|r| r.generation == generation && !r.ended)
                {
                    self.emit(&id, kind).await;
                }
            }
            RunReport::Waiting(reason) => self.waiting(id, generation, reason).await,
            RunReport::Finished(result) => self.finished(id, generation, result).await,
        }
    }

    async fn waiting(&mut self, id: JobId, generation: u64, reason: Option<String>) {
        if self.is_current(&id, generation)
            && let Ok(job) = self.store.job(id.clone()).await
            && job.state.is_running()
            && job.reason != reason
            && let Err(e) = self.set_state(&id, job.state, reason, None).await
        {
            warn!(job = %id, error = %e, "cannot record what the job waits for");
        }
    }

    /// Jobs left running by a previous daemon go back to the queue, secret variables or not
    /// (they went with the previous daemon; a refusal will say if they are needed); a
    /// cancelled job whose release the previous daemon did not finish (it stopped first) is
    /// released now.
    async fn recover(&mut self) -> Result<(), StoreError> {
        for job in self.store.jobs().await? {
            if job.state == JobState::Cancelled {
                self.release(&job).await;
            }
            if job.state.is_running() {
                info!(job = %job.id, was = %job.state, "resuming job left unfinished");
                self.counters.add_resume();
                self.set_state(
                    &job.id,
                    JobState::Queued,
                    Some("resumed after a daemon restart".into()),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    fn is_current(&self, id: &JobId, generation: u64) -> bool {
        self.running
            .get(id)
            .is_some_and(|r| r.generation == generation && r.stop.reason().is_none())
    }

    /// Persists a state change with its event, then broadcasts the event.
    async fn set_state(
        &self,
        id: &JobId,
        state: JobState,
        reason: Option<String>,
        manifest_digest: Option<crate::digest::Digest>,
    ) -> Result<(), StoreError> {
        let reason = reason.map(|r| redacted(&r));
        let kind = EventKind::State {
            state,
            reason: reason.clone(),
            manifest_digest: manifest_digest.clone(),
        };
        let body = String::from_utf8(api::encode(&kind)).expect("JSON is UTF-8");
        let (seq, time_ms) = self
            .store
            .set_state(id.clone(), state, reason, manifest_digest, body)
            .await?;
        // No receivers is fine: nobody follows this job right now.
        let _ = self.events.send(api::Event {
            seq,
            job: id.clone(),
            time_ms,
            kind,
        });
        Ok(())
    }

    /// Persists and broadcasts a non-state event.
    async fn emit(&self, id: &JobId, kind: EventKind) {
        let kind = kind.map_text(redacted);
        let body = String::from_utf8(api::encode(&kind)).expect("JSON is UTF-8");
        match self.store.append_event(id.clone(), body).await {
            Ok((seq, time_ms)) => {
                let _ = self.events.send(api::Event {
                    seq,
                    job: id.clone(),
                    time_ms,
                    kind,
                });
            }
            Err(e) => warn!(job = %id, error = %e, "cannot record an event"),
        }
    }

    async fn submit(
        &mut self,
        spec: JobSpec,
        env: Option<CallerEnv>,
    ) -> Result<JobRecord, SchedError> {
        if self.shutdown.is_some() {
            return Err(SchedError::ShuttingDown);
        }
        let id = JobId::random();
        let kind = EventKind::State {
            state: JobState::Queued,
            reason: None,
            manifest_digest: None,
        };
        let body = String::from_utf8(api::encode(&kind)).expect("JSON is UTF-8");
        let kept = env.as_ref().map(api::JobEnv::of);
        let (job, seq) = self.store.insert_job(id.clone(), spec, kept, body).await?;
        self.keep_secrets(&id, env.as_ref());
        info!(job = %id, source = %job.spec.source, target = %job.spec.target, "job accepted");
        let _ = self.events.send(api::Event {
            seq,
            job: id,
            time_ms: job.created_ms,
            kind,
        });
        self.start_queued().await;
        Ok(job)
    }

    async fn control(
        &mut self,
        id: JobId,
        action: Control,
        env: Option<CallerEnv>,
    ) -> Result<Option<JobRecord>, SchedError> {
        let job = self.store.job(id.clone()).await?;
        let state = job.state;
        let refused = |what: &str| SchedError::Conflict(format!("job {id} is {state}: {what}"));
        match action {
            Control::Pause => {
                if !matches!(
                    state,
                    JobState::Queued
                        | JobState::Preparing
                        | JobState::Uploading
                        | JobState::Verifying
                ) {
                    return Err(refused(
                        "only a queued or running job can be paused, before it commits",
                    ));
                }
                // The spool stays: a pause is a break the user means to end (unlike a
                // failure, which may be the full disk itself), and its compressed chunks
                // spare compressing them again on resume.
                self.set_state(&id, JobState::Paused, None, None).await?;
                self.stop(&id, StopReason::Pause);
            }
            Control::Resume => {
                if state != JobState::Paused {
                    return Err(refused("only a paused job can be resumed"));
                }
                self.replace_env(&id, env).await?;
                self.counters.add_resume();
                self.set_state(&id, JobState::Queued, None, None).await?;
                self.start_queued().await;
            }
            Control::Cancel => self.cancel(job).await?,
            Control::Retry { deadline_unix_s } => {
                if !matches!(state, JobState::Failed | JobState::Cancelled) {
                    return Err(refused("only a failed or cancelled job can be retried"));
                }
                self.replace_env(&id, env).await?;
                if deadline_unix_s.is_some() {
                    self.store
                        .set_job_deadline(id.clone(), deadline_unix_s)
                        .await?;
                }
                self.set_state(&id, JobState::Queued, None, None).await?;
                self.start_queued().await;
            }
            Control::Delete => {
                self.delete(job).await?;
                return Ok(None);
            }
        }
        info!(job = %id, ?action, "job control applied");
        Ok(Some(self.store.job(id).await?))
    }

    /// Cancel, in any state before the commit: once the manifest PUT may have gone out, the
    /// tag may be written, and only `done` or `failed` tell the truth. A job without a run
    /// is released at once; a running one once its run has stopped ([`Scheduler::finished`]).
    async fn cancel(&mut self, job: JobRecord) -> Result<(), SchedError> {
        let (id, state) = (job.id.clone(), job.state);
        if matches!(
            state,
            JobState::Committing | JobState::Verified | JobState::Done | JobState::Cancelled
        ) {
            let why = if state.is_final() {
                "it has ended already; remove it with `hoist rm`"
            } else {
                "it is writing the tag and can no longer be cancelled; wait for it to end"
            };
            return Err(SchedError::Conflict(format!("job {id} is {state}: {why}")));
        }
        self.set_state(
            &id,
            JobState::Cancelled,
            Some("cancelled by the user".into()),
            None,
        )
        .await?;
        match self.running.get_mut(&id) {
            Some(run) => {
                run.stop.stop(StopReason::Cancel);
                run.ended = true;
            }
            None => self.release(&job).await,
        }
        Ok(())
    }

    /// Delete, in any state but running (cancel it first): the row and its log, the spool and
    /// the open upload sessions go. A run still stopping (after a pause or cancel) is told, so
    /// it deletes the session of a chunk in flight itself, and the stored sessions are deleted
    /// once it has ended.
    async fn delete(&mut self, job: JobRecord) -> Result<(), SchedError> {
        let (id, state) = (job.id.clone(), job.state);
        if state.is_running() {
            return Err(SchedError::Conflict(format!(
                "job {id} is {state}: cancel it first with `hoist cancel {id}`"
            )));
        }
        self.stop(&id, StopReason::Delete);
        let cursors = self.take_cursors(&id).await;
        self.store.delete_job(id.clone()).await?;
        self.remove_spool(&id);
        let env = self.env_of(&job);
        self.forget_secrets(&id);
        match self.running.get_mut(&id) {
            Some(run) => run.discard_after = Some((job.spec, env, cursors)),
            None => self.discard(job.spec, env, cursors),
        }
        self.announce_deleted(&id);
        info!(job = %id, "job deleted");
        Ok(())
    }

    /// A job that ended without a push leaves nothing behind: its cursors are forgotten, its
    /// spool removed, its sessions handed to the body to delete (with the job's environment,
    /// for the registry's credentials) and its secrets forgotten.
    async fn release(&mut self, job: &JobRecord) {
        let cursors = self.take_cursors(&job.id).await;
        self.remove_spool(&job.id);
        let env = self.env_of(job);
        self.forget_secrets(&job.id);
        self.discard(job.spec.clone(), env, cursors);
    }

    /// The environment a job's work uses: the caller's (stored public part and the secrets in
    /// memory), or the daemon's own for a job submitted without one.
    fn env_of(&self, job: &JobRecord) -> CallerEnv {
        match &job.env {
            None => CallerEnv::from_process(),
            Some(kept) => kept.with_secrets(&self.secrets_of(&job.id)),
        }
    }

    /// The secret variables the job was submitted with that this daemon does not hold (it
    /// restarted since), by name.
    fn missing_secrets(&self, job: &JobRecord) -> Vec<String> {
        job.env
            .as_ref()
            .map(|kept| kept.missing_secrets(&self.secrets_of(&job.id)))
            .unwrap_or_default()
    }

    fn secrets_of(&self, id: &JobId) -> CallerEnv {
        self.secrets.get(id).cloned().unwrap_or_default()
    }

    fn keep_secrets(&mut self, id: &JobId, env: Option<&CallerEnv>) {
        match env.map(CallerEnv::secrets).filter(|s| !s.is_empty()) {
            Some(secrets) => {
                SecretSet::global().set(id.as_str(), secrets.redactor());
                self.secrets.insert(id.clone(), secrets);
            }
            None => self.forget_secrets(id),
        };
    }

    /// The job's secrets are needed no more: gone from memory and from what the log hides
    /// (nothing can quote them any more).
    fn forget_secrets(&mut self, id: &JobId) {
        self.secrets.remove(id);
        SecretSet::global().set(id.as_str(), Default::default());
    }

    /// A resume or retry that sent the caller's environment: the job runs with it from now on
    /// (stored first, then its secrets kept in memory).
    async fn replace_env(&mut self, id: &JobId, env: Option<CallerEnv>) -> Result<(), StoreError> {
        let Some(env) = env else {
            return Ok(());
        };
        self.store
            .set_job_env(id.clone(), Some(api::JobEnv::of(&env)))
            .await?;
        self.keep_secrets(id, Some(&env));
        Ok(())
    }

    /// Pauses a job that the registry or a proxy refused (`why`) while it lacked the secret
    /// variables `missing` (lost with a daemon restart, or forgotten when the job ended before
    /// a retry without them), naming them and how to give them back.
    async fn wait_for_credentials(
        &self,
        id: &JobId,
        why: &str,
        missing: &[String],
    ) -> Result<(), StoreError> {
        let reason = format!(
            "waiting for credentials: {why}; the job no longer holds {} (kept in memory only, until the job ends or hoistd restarts): run hoist resume {id} from a shell that has them",
            missing.join(", ")
        );
        self.set_state(id, JobState::Paused, Some(reason), None)
            .await
    }

    /// The job's stored upload cursors, forgotten in the store.
    async fn take_cursors(&self, id: &JobId) -> Vec<CursorRecord> {
        let blobs = self.store.blobs(id.clone()).await.unwrap_or_default();
        let mut cursors = Vec::new();
        for b in blobs {
            if let Some(c) = b.cursor {
                cursors.push(c);
                if let Err(e) = self.store.clear_cursor(id.clone(), b.digest).await {
                    warn!(job = %id, error = %e, "cannot forget an upload cursor");
                }
            }
        }
        cursors
    }

    fn discard(&self, spec: JobSpec, env: CallerEnv, cursors: Vec<CursorRecord>) {
        if !cursors.is_empty() {
            // Off the loop: the registry may be slow or unreachable.
            tokio::spawn(self.config.body.discard(spec, env, cursors));
        }
    }

    fn stop(&self, id: &JobId, reason: StopReason) {
        if let Some(run) = self.running.get(id) {
            run.stop.stop(reason);
        }
    }

    async fn set_bandwidth(
        &mut self,
        id: JobId,
        bytes_per_s: Option<u64>,
    ) -> Result<JobRecord, SchedError> {
        let job = self.store.job(id.clone()).await?;
        // Allowed in every state but done: a queued, paused or running job runs (again) under
        // the new limit, and so does a failed or cancelled one once retried, which is when a
        // user wants to pick the rate (before the retry, not racing it). A done job never
        // uploads again: a limit on it could only be a mistake (e.g. the wrong job ID).
        if job.state == JobState::Done {
            return Err(SchedError::Conflict(format!(
                "job {id} is done: it uploads nothing any more; a limit applies only to jobs that have not finished"
            )));
        }
        let job = self
            .store
            .set_job_bandwidth(id.clone(), bytes_per_s)
            .await?;
        // Stored first, then applied: a run that starts later reads the stored limit.
        if let Some(run) = self.running.get(&id) {
            run.bandwidth.set_rate(bytes_per_s);
        }
        info!(job = %id, ?bytes_per_s, "job bandwidth limit changed");
        Ok(job)
    }

    /// Removes the jobs that ended [`SchedulerConfig::keep_jobs`] ago in a pruned state,
    /// with their rows, events and spool; followers of them end with `deleted`. A job with a
    /// run still stopping is left for the next prune.
    async fn prune(&self) {
        let Some(keep) = self.config.keep_jobs else {
            return;
        };
        let before = crate::store::now_ms().saturating_sub(keep.as_millis() as u64);
        let spare: Vec<JobId> = self.running.keys().cloned().collect();
        let pruned = match self
            .store
            .prune_jobs(PRUNED_STATES.to_vec(), before, spare)
            .await
        {
            Ok(ids) => ids,
            Err(e) => return warn!(error = %e, "cannot prune finished jobs"),
        };
        for id in pruned {
            self.remove_spool(&id);
            self.announce_deleted(&id);
            info!(job = %id, "finished job pruned after the retention period");
        }
    }

    /// Followers of a deleted job end here; nothing is persisted, the log went with the job.
    fn announce_deleted(&self, id: &JobId) {
        let _ = self.events.send(api::Event {
            seq: 0,
            job: id.clone(),
            time_ms: crate::store::now_ms(),
            kind: EventKind::Deleted {},
        });
    }

    fn remove_spool(&self, id: &JobId) {
        let spool = self.config.spool_root.join(id.as_str());
        if let Err(e) = std::fs::remove_dir_all(&spool)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(job = %id, error = %e, "cannot remove the job's spool directory");
        }
    }

    async fn phase(&mut self, id: JobId, generation: u64, state: JobState) -> Result<(), JobError> {
        if !self.is_current(&id, generation) {
            return Err(JobError::Stopped);
        }
        let current = match self.store.job(id.clone()).await {
            Ok(job) => job.state,
            Err(_) => return Err(JobError::Stopped),
        };
        let order = |s: JobState| {
            [
                JobState::Preparing,
                JobState::Uploading,
                JobState::Verifying,
                JobState::Committing,
                JobState::Verified,
            ]
            .iter()
            .position(|x| *x == s)
        };
        match (order(current), order(state)) {
            (Some(from), Some(to)) if to >= from => {}
            _ => {
                return Err(JobError::failed(format!(
                    "internal error: a job cannot go from {current} to {state}: report this as a bug"
                )));
            }
        }
        if current != state {
            self.set_state(&id, state, None, None)
                .await
                .map_err(|e| JobError::failed(format!("cannot record the job's state: {e}")))?;
        }
        Ok(())
    }

    async fn finished(&mut self, id: JobId, generation: u64, result: Result<JobOutput, JobError>) {
        if self
            .running
            .get(&id)
            .is_some_and(|r| r.generation == generation)
            && let Some(run) = self.running.remove(&id)
        {
            self.counters.set_jobs_running(self.running.len() as u64);
            if let Some((spec, env, cursors)) = run.discard_after {
                self.discard(spec, env, cursors);
            }
        }
        let job = match self.store.job(id.clone()).await {
            Ok(job) => job,
            // Deleted while it stopped: released by the delete.
            Err(_) => return self.start_queued().await,
        };
        let missing = self.missing_secrets(&job);
        if job.state == JobState::Cancelled && result.is_err() {
            self.release(&job).await;
        } else if let Err(JobError::Refused { reason }) = &result
            && job.state.is_running()
            && !missing.is_empty()
        {
            if let Err(e) = self.wait_for_credentials(&id, reason, &missing).await {
                warn!(job = %id, error = %e, "cannot record that the job waits for credentials");
            }
        } else if let Some((state, reason, digest)) = self.outcome(&result, job.state) {
            match &reason {
                Some(r) => warn!(job = %id, reason = %r, "job failed"),
                None => info!(job = %id, %state, "job finished"),
            }
            if state == JobState::Failed {
                // Removed before the state is written: a job that failed on a full disk
                // frees it, so the store can record the failure. The cursors stay: a retry
                // compresses the same bytes again and goes on from the registry's offsets.
                self.remove_spool(&id);
            }
            if let Err(e) = self.set_state(&id, state, reason, digest).await {
                warn!(job = %id, error = %e, "cannot record the job's end");
            } else if state == JobState::Done {
                // The registry has every blob now; the compressed chunks only take disk space.
                self.remove_spool(&id);
            }
            // Forgotten after the reason is recorded (it is redacted with them). A retry sends
            // them again.
            if state.is_final() {
                self.forget_secrets(&id);
            }
        }
        self.start_queued().await;
    }

    /// The state a run's end gives its job (`None`: the state stays).
    fn outcome(
        &self,
        result: &Result<JobOutput, JobError>,
        state: JobState,
    ) -> Option<(JobState, Option<String>, Option<crate::digest::Digest>)> {
        match (result, state) {
            // The tag is written: whatever raced with the push (a pause, a stop, a deadline),
            // `done` is the only state that agrees with the registry.
            (Ok(_), JobState::Done) => None,
            (Ok(out), _) => Some((JobState::Done, None, Some(out.manifest_digest.clone()))),
            (Err(JobError::Failed { reason } | JobError::Refused { reason }), s)
                if s.is_running() =>
            {
                Some((JobState::Failed, Some(reason.clone()), None))
            }
            // Stopped for shutdown: the state stays, and the next daemon resumes the job.
            (Err(JobError::Stopped), s) if s.is_running() && self.shutdown.is_none() => Some((
                JobState::Failed,
                Some("the job stopped without being asked to: retry it with `hoist retry`".into()),
                None,
            )),
            _ => None,
        }
    }

    /// Starts queued jobs, oldest first, up to `jobs_running_max` running at once.
    async fn start_queued(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let jobs = match self.store.jobs().await {
            Ok(jobs) => jobs,
            Err(e) => return warn!(error = %e, "cannot list jobs to start"),
        };
        for job in jobs {
            if self.running.len() >= self.config.jobs_running_max.max(1) {
                break;
            }
            // A job whose previous run is still stopping starts when that run has ended.
            if job.state != JobState::Queued || self.running.contains_key(&job.id) {
                continue;
            }
            if let Err(e) = self.launch(job).await {
                warn!(error = %e, "cannot start a job");
            }
        }
    }

    async fn launch(&mut self, job: JobRecord) -> Result<(), StoreError> {
        let id = job.id.clone();
        let env = self.env_of(&job);
        let spool_dir = self.config.spool_root.join(id.as_str());
        if let Err(e) = std::fs::create_dir_all(&spool_dir) {
            let reason = format!(
                "cannot create the spool directory {}: {e}: check the state directory",
                spool_dir.display()
            );
            return self
                .set_state(&id, JobState::Failed, Some(reason), None)
                .await;
        }
        self.set_state(&id, JobState::Preparing, None, None).await?;
        let generation = self.next_generation;
        self.next_generation += 1;
        let bandwidth = Bucket::new(job.spec.options.bandwidth_bytes_per_s);
        let (ctx, stop) = JobContext::new(
            &self.link,
            id.clone(),
            job.spec,
            generation,
            spool_dir,
            bandwidth.clone(),
            env,
        );
        let body = self.config.body.run(ctx);
        let link = self.link.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            // The body runs in its own task so that a panic becomes a failed job.
            let result = match tokio::spawn(body).await {
                Ok(result) => result,
                Err(e) => Err(JobError::failed(format!(
                    "internal error: the job task ended abnormally ({e}): retry it, and report this as a bug"
                ))),
            };
            link.finished(task_id, generation, result).await;
        });
        info!(job = %id, generation, "job started");
        self.running.insert(
            id,
            Running {
                generation,
                stop,
                ended: false,
                bandwidth,
                discard_after: None,
            },
        );
        self.counters.set_jobs_running(self.running.len() as u64);
        Ok(())
    }
}

/// `text` with every secret the daemon holds blanked out: what a job stores or shows may quote
/// a credential helper's output or a proxy's error, which may quote a secret.
fn redacted(text: &str) -> String {
    SecretSet::global().redact(text).into_owned()
}
