//! Jobs survive the daemon: killed or stopped mid-upload, the next daemon lists the job and
//! resumes it from its last saved cursor by itself.
use crate::daemon_support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_support::*;
use hoist::api::JobState;
use hoist::cli::client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_resumes_the_job_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let first = Scripted::new(60, 20);
    let daemon = TestDaemon::start(dir.path(), Arc::new(first.clone()));
    let client = daemon.client();
    let id = submit_uploading(&client, "docker-archive:/big.tar", 3).await;
    daemon.kill();

    let second = Scripted::new(60, 1);
    let daemon = TestDaemon::start(dir.path(), Arc::new(second.clone()));
    let client = daemon.client();
    let listed = client.jobs().await.unwrap();
    assert_eq!(listed.iter().map(|j| &j.id).collect::<Vec<_>>(), vec![&id]);
    let job = wait_state(&client, &id, JobState::Done).await;
    assert_eq!(job.manifest_digest, Some(manifest_digest()));
    let resumed_at = second.starts();
    assert_eq!(resumed_at.len(), 1);
    assert!(
        resumed_at[0] >= 3 * CHUNK,
        "the second daemon started at {resumed_at:?}, not from the saved cursor"
    );
    // The log tells what happened, across both daemons.
    let mut stream = client.events(&id, 0, false).await.unwrap();
    let mut reasons = Vec::new();
    while let Some(ev) = stream.next().await {
        if let hoist::api::EventKind::State {
            reason: Some(r), ..
        } = ev.unwrap().kind
        {
            reasons.push(r);
        }
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("resumed after a daemon restart")),
        "{reasons:?}"
    );
    let metrics = client.metrics().await.unwrap();
    assert_lines(&metrics, &["hoist_resumes_total 1"], "metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_persists_and_the_next_daemon_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let first = Scripted::new(1000, 10);
    let daemon = TestDaemon::start(dir.path(), Arc::new(first.clone()));
    let client = daemon.client();
    let id = submit_uploading(&client, "oci:/dir", 2).await;
    let mut stream = client.events(&id, 0, true).await.unwrap();
    let follower = tokio::spawn(async move { while stream.next().await.is_some() {} });
    let started = Instant::now();
    tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap()
        .expect("daemon::run returns Ok on shutdown");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "shutdown took {:?}",
        started.elapsed()
    );
    // Followers are told the stream ended: shutdown does not wait out the drain timeout (2 s).
    tokio::time::timeout(Duration::from_millis(500), follower)
        .await
        .expect("the follower's stream ended with the daemon")
        .unwrap();

    let second = Scripted::new(1000, 0);
    let daemon = TestDaemon::start(dir.path(), Arc::new(second.clone()));
    let client = daemon.client();
    wait_state(&client, &id, JobState::Done).await;
    let first_progress = first.starts();
    assert_eq!(first_progress, vec![0]);
    assert!(second.starts()[0] >= 2 * CHUNK, "{:?}", second.starts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_jobs_stay_paused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(500, 20)));
    let client = daemon.client();
    let id = submit_paused(&client, "a.tar").await;
    daemon.stop().unwrap();
    let body = Scripted::new(500, 1);
    let daemon = TestDaemon::start(dir.path(), Arc::new(body.clone()));
    let client = daemon.client();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.job(&id).await.unwrap().state, JobState::Paused);
    assert!(body.starts().is_empty());
}

fn hoistd(dir: &std::path::Path) -> std::process::Child {
    hoistd_command(dir, "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoistd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_jobs_across_sigkill_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(dir.path().join("hoist.sock"));
    let child = hoistd(dir.path());
    wait_answers(&client, 20).await;
    let id = client
        .submit(&bad_target(&sample_source(dir.path())))
        .await
        .unwrap()
        .id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    assert!(
        job.reason.as_deref().unwrap().contains("Not-Valid"),
        "{job:?}"
    );
    assert_eq!(job.blobs.len(), 4);
    kill9(child);

    // The stale socket of the killed daemon is replaced; the job is still there.
    let child = hoistd(dir.path());
    wait_answers(&client, 20).await;
    let jobs = client.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].id.clone(), jobs[0].state), (id, JobState::Failed));
    assert_eq!(jobs[0].blobs.len(), 4, "the plan survived the kill");

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hoistd exited {:?} on SIGTERM: {log}",
        out.status
    );
    assert!(log.contains("hoistd stopped"), "{log}");
}

#[test]
// Damages the database behind the store's back on purpose: the one test allowed raw SQL.
#[allow(clippy::disallowed_methods)]
fn hoistd_refuses_a_damaged_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = hoist::store::Store::open(&state).unwrap();
        store.integrity_check().await.unwrap();
    });
    // A row that points at no job, written behind the store's back.
    let conn = rusqlite::Connection::open(state.join("hoist.db")).unwrap();
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.execute(
        "INSERT INTO events (job_id, time_ms, body) VALUES ('j0000000000000000', 0, '{}')",
        [],
    )
    .unwrap();
    drop(conn);
    let out = hoistd(dir.path()).wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("failed its integrity check") && log.contains("move hoist.db aside"),
        "{log}"
    );
}
