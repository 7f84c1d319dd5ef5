//! What a job leaves behind over time, driven through the socket: the start-up sweep of the
//! spool, the bounded event log, and event followers that fall behind a deleted job.
use crate::daemon_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use daemon_support::*;
use hoist::api::{self, EventKind, JobId, JobState};
use hoist::cli::client::{Client, EventStream};
use hoist::daemon::job::{JobBody, JobContext, JobError, JobFuture};
use hoist::store::EVENTS_PER_JOB_MAX;
use tokio::sync::Semaphore;

/// A job body that waits for a permit of `gate`, then reports `retries` retries (each with the
/// reason a waiting push shows, when `waits` is set) and fails, as a push does whose deadline
/// passes during a long outage.
struct Outage {
    gate: Arc<Semaphore>,
    retries: u64,
    reason_bytes: usize,
    waits: bool,
}

impl JobBody for Outage {
    fn run(&self, ctx: JobContext) -> JobFuture {
        let (gate, retries, waits) = (self.gate.clone(), self.retries, self.waits);
        let padding = "x".repeat(self.reason_bytes);
        Box::pin(async move {
            gate.acquire().await.expect("gate open").forget();
            for attempt in 0..retries {
                let reason = format!("attempt {attempt}: connection refused {padding}");
                ctx.retrying("PATCH chunk at 0", reason).await;
                if waits {
                    ctx.waiting(Some("waiting for network, retry in 1 s".into()))
                        .await;
                    ctx.waiting(None).await;
                }
            }
            Err(JobError::failed(
                "the job's deadline passed while waiting for the network",
            ))
        })
    }
}

async fn read_to_end(mut stream: EventStream) -> Vec<api::Event> {
    let collect = async {
        let mut events = Vec::new();
        while let Some(ev) = stream.next().await {
            events.push(ev.unwrap());
        }
        events
    };
    tokio::time::timeout(Duration::from_millis(WAIT_MS_MAX), collect)
        .await
        .expect("the event stream ended by itself")
}

fn is_failed(ev: &api::Event) -> bool {
    matches!(
        ev.kind,
        EventKind::State {
            state: JobState::Failed,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_keeps_the_event_log_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let body = Outage {
        gate: gate.clone(),
        // Three events a retry: the retry, the reason while waiting, its end.
        retries: EVENTS_PER_JOB_MAX / 2,
        reason_bytes: 0,
        waits: true,
    };
    let daemon = TestDaemon::start(dir.path(), Arc::new(body));
    let client = daemon.client();
    let id = client.submit(&submit_request("a.tar")).await.unwrap().id;
    let follower = tokio::spawn(read_to_end(client.events(&id, 0, true).await.unwrap()));
    gate.add_permits(1);
    let live = follower.await.unwrap();
    assert!(is_failed(live.last().unwrap()), "{:?}", live.last());

    let logged = read_to_end(client.events(&id, 0, false).await.unwrap()).await;
    assert!(
        logged.len() as u64 <= EVENTS_PER_JOB_MAX,
        "{} events logged",
        logged.len()
    );
    let states: Vec<JobState> = logged
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::State { state, reason, .. } if reason.is_none() => Some(*state),
            _ => None,
        })
        .collect();
    // Every change of state stays, in order; the oldest retries and waits went first.
    use JobState::*;
    assert_eq!(states[..2], [Queued, Preparing]);
    assert!(is_failed(logged.last().unwrap()), "{:?}", logged.last());
    let retry = |ev: &api::Event, attempt: u64| match &ev.kind {
        EventKind::Retry { reason, .. } => reason.starts_with(&format!("attempt {attempt}:")),
        _ => false,
    };
    assert!(logged.iter().any(|e| retry(e, EVENTS_PER_JOB_MAX / 2 - 1)));
    assert!(!logged.iter().any(|e| retry(e, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_fell_behind_a_deleted_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    // About 3 MB of event lines per job: far more than the follower's buffers and the socket
    // hold, so a follower nobody reads stops taking live events and falls behind.
    let body = Outage {
        gate: gate.clone(),
        retries: 3000,
        reason_bytes: 1000,
        waits: false,
    };
    let daemon = TestDaemon::start(dir.path(), Arc::new(body));
    let client = daemon.client();
    let first = client.submit(&submit_request("a.tar")).await.unwrap().id;
    let stream = client.events(&first, 0, true).await.unwrap();
    gate.add_permits(1);
    wait_state(&client, &first, JobState::Failed).await;
    client.delete(&first).await.unwrap();
    // Another job's events push the live `deleted` event out of the follower's reach.
    let second = client.submit(&submit_request("b.tar")).await.unwrap().id;
    gate.add_permits(1);
    wait_state(&client, &second, JobState::Failed).await;

    let events = read_to_end(stream).await;
    assert_eq!(events.last().map(|e| &e.kind), Some(&EventKind::Deleted {}));
    assert!(events.iter().all(|e| e.job == first));
    // It did fall behind: the job's failure was never sent, its log went with the job.
    assert!(!events.iter().any(is_failed));
}

/// A job directory in the spool as a run leaves it.
fn spool_dir(state_dir: &Path, id: &str) -> std::path::PathBuf {
    state_dir.join("spool").join(id)
}

async fn job_in(client: &Client, source: &str, state: JobState) -> JobId {
    let id = client.submit(&submit_request(source)).await.unwrap().id;
    wait_state(client, &id, JobState::Uploading).await;
    match state {
        JobState::Paused => drop(client.control(&id, "pause").await.unwrap()),
        JobState::Cancelled => drop(client.control(&id, "cancel").await.unwrap()),
        _ => {}
    }
    wait_state(client, &id, state).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_leftovers_are_swept_at_start_up_and_needed_spools_stay() {
    let dir = tempfile::tempdir().unwrap();
    let body = Scripted::new(40, 25).failing_first("the disk is full");
    let daemon = TestDaemon::start(dir.path(), Arc::new(body));
    let client = daemon.client();
    let failed = client.submit(&submit_request("f.tar")).await.unwrap().id;
    wait_state(&client, &failed, JobState::Failed).await;
    let paused = job_in(&client, "a.tar", JobState::Paused).await;
    let cancelled = job_in(&client, "b.tar", JobState::Cancelled).await;
    let done = job_in(&client, "c.tar", JobState::Done).await;
    let state_dir = daemon.state_dir.clone();
    daemon.stop().unwrap();

    // What a daemon that died between a job's row and its directory leaves behind.
    let gone = JobId::random();
    for id in [&gone, &done, &cancelled, &failed] {
        std::fs::create_dir_all(spool_dir(&state_dir, id.as_str())).unwrap();
        std::fs::write(spool_dir(&state_dir, id.as_str()).join("chunks"), b"x").unwrap();
    }
    std::fs::write(state_dir.join("spool/stray.tmp"), b"x").unwrap();
    // The daemon-wide compression index and cache are not a job's.
    for shared in ["index", "cache"] {
        std::fs::create_dir_all(state_dir.join("spool").join(shared)).unwrap();
        std::fs::write(state_dir.join("spool").join(shared).join("entry"), b"x").unwrap();
    }

    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(40, 25)));
    let client = daemon.client();
    // The socket is bound before the daemon starts; it answers once start-up is over.
    wait_answers(&client, 20).await;
    // A failed job compresses again if it is retried: its spool goes too.
    for id in [&gone, &done, &cancelled, &failed] {
        assert!(!spool_dir(&state_dir, id.as_str()).exists(), "{id} kept");
    }
    assert!(!state_dir.join("spool/stray.tmp").exists());
    assert!(
        spool_dir(&state_dir, paused.as_str())
            .join("chunks")
            .exists()
    );
    assert!(state_dir.join("spool/index/entry").exists());
    assert!(state_dir.join("spool/cache/entry").exists());
    // The paused job resumes from its spool.
    client.control(&paused, "resume").await.unwrap();
    wait_state(&client, &paused, JobState::Done).await;
}
