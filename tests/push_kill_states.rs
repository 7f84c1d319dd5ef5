//! `kill -9` of the real hoistd while its job is in each state of a push (preparing,
//! compressing, uploading, verifying, committing), read through the socket just before the
//! kill; then a restart, and the job finishes by itself (no command) into the manifest digest
//! of an uninterrupted push, every blob checked by skopeo, having sent again at most the part
//! in flight per blob (through the ECR emulation, whose parts are atomic).
//!
//! The brief states are held open by the ECR emulation in front of the real registry, never by
//! the daemon: its repository check (a tag-list GET) for `preparing`, its HEADs of uploaded
//! blobs for `verifying`, its manifest PUT for `committing`, each part for `uploading`.
//! `compressing` is not a job state but a layer compressing while the job uploads; nothing
//! outside the daemon can hold it, so its layer is made large enough to be seen mid-way.
//!
//! Jobs are submitted with a real shell's environment (`common::shell_env`): proxies on a
//! closed port (the registry is reached through `NO_PROXY`) and AWS secrets, which the killed
//! daemon held in memory only; the restarted one goes on without them.
use crate::common;
use crate::push_support;

use std::path::Path;
use std::sync::atomic::Ordering;

use hoist::api::{self, BlobAction, BlobState, Compression, EventKind, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression};

use crate::daemon_support::{TestDaemon, spawn_hoistd};
use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use common::figures::record;
use push_support::*;

/// Parallel uploads of one daemon (its default): at most this many parts are in flight.
const IN_FLIGHT_MAX: u64 = hoist::daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT as u64;
/// How long the ECR emulation holds each part while the `uploading` case waits for one.
const PART_DELAY_MS: u64 = 300;
const EMULATION: &str = "ECR emulation on 127.0.0.1 (not ECR by name)";

/// Where the push is when hoistd is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// Planned, its repository check held.
    Preparing,
    /// Uploading, a layer compressed part-way (chunks recorded, digest not known yet).
    Compressing,
    /// Uploading, a part received whole by the registry and held before it is committed.
    Uploading,
    /// Every blob uploaded, a verifying HEAD held.
    Verifying,
    /// Every blob verified, the manifest PUT held.
    Committing,
}

impl KillPoint {
    fn name(self) -> &'static str {
        match self {
            KillPoint::Preparing => "preparing",
            KillPoint::Compressing => "compressing",
            KillPoint::Uploading => "uploading",
            KillPoint::Verifying => "verifying",
            KillPoint::Committing => "committing",
        }
    }

    /// Scripts the emulation to hold the requests of this point open.
    fn hold(self, proxy: &EcrProxy) {
        let st = &proxy.state;
        match self {
            KillPoint::Preparing => st.hold_tag_lists.store(true, Ordering::SeqCst),
            KillPoint::Compressing => {}
            KillPoint::Uploading => st.part_delay_ms.store(PART_DELAY_MS, Ordering::SeqCst),
            KillPoint::Verifying => st.hold_present_blob_heads.store(true, Ordering::SeqCst),
            KillPoint::Committing => st.hold_manifest_puts.store(true, Ordering::SeqCst),
        }
    }

    /// Lets every held request go (to a killed client) and new ones through.
    fn release(proxy: &EcrProxy) {
        let st = &proxy.state;
        st.hold_tag_lists.store(false, Ordering::SeqCst);
        st.part_delay_ms.store(0, Ordering::SeqCst);
        st.hold_present_blob_heads.store(false, Ordering::SeqCst);
        st.hold_manifest_puts.store(false, Ordering::SeqCst);
    }

    /// Whether `job`, as the socket shows it, is at this point, the emulation holding what
    /// keeps it there.
    fn reached(self, job: &api::Job, proxy: &EcrProxy) -> bool {
        let st = &proxy.state;
        match self {
            KillPoint::Preparing => {
                job.state == JobState::Preparing && st.tag_lists_held.load(Ordering::SeqCst) > 0
            }
            KillPoint::Compressing => job.state == JobState::Uploading && compressing(job),
            KillPoint::Uploading => {
                job.state == JobState::Uploading
                    && job.bytes_uploaded() >= CHUNK
                    && st.parts_held.load(Ordering::SeqCst) > 0
            }
            KillPoint::Verifying => {
                job.state == JobState::Verifying
                    && st.present_blob_heads_held.load(Ordering::SeqCst) > 0
            }
            KillPoint::Committing => {
                job.state == JobState::Committing
                    && job.blobs.iter().all(|b| b.state == BlobState::Verified)
                    && st.manifest_puts_held.load(Ordering::SeqCst)
            }
        }
    }

    /// Request-body bytes a kill at this point may cost: nothing before any upload and after
    /// every blob is in; a part per blob in flight (at most [`IN_FLIGHT_MAX`]) mid-upload; the
    /// held manifest when committing.
    fn resend_bytes_max(self, at_kill: &api::Job, manifest_bytes: u64) -> u64 {
        match self {
            KillPoint::Preparing | KillPoint::Verifying => 0,
            KillPoint::Compressing | KillPoint::Uploading => {
                let open = at_kill.blobs.iter().filter(|b| !b.state.is_finished());
                open.count().min(IN_FLIGHT_MAX as usize) as u64 * CHUNK
            }
            KillPoint::Committing => manifest_bytes,
        }
    }
}

/// The largest layer, text, has recorded compressed chunks and its compression has not ended
/// (the random layer's compression is over in a few milliseconds, too soon to be seen).
fn compressing(job: &api::Job) -> bool {
    let largest = job.blobs.iter().max_by_key(|b| b.size_bytes);
    largest.is_some_and(|b| {
        b.action == BlobAction::Compress && b.compressed_chunks >= 1 && b.pushed_digest.is_none()
    })
}

/// An OCI layout under `dir` of three uncompressed layers (about 30 MB): small files, text
/// that takes several compressor chunks (so compression is seen mid-way), and random bytes
/// that take several 5 MiB parts.
fn source(dir: &Path) -> String {
    let none = SampleCompression::None;
    let mut spec = image_spec(31, 0, none);
    spec.layers = vec![
        LayerSpec::new(LayerContent::SmallFiles(16), none),
        LayerSpec::new(LayerContent::Text(64 << 20), none),
        LayerSpec::new(LayerContent::Random(12 << 20), none),
    ];
    write_oci(&dir.join("img"), &spec).1
}

/// Waits for the job to end by itself and asserts it is done. A job paused for its secrets
/// (lost with the killed daemon) is named as such: it did not go on by itself.
async fn wait_done_by_itself(client: &Client, id: &JobId) -> api::Job {
    let job = wait_for(client, id, PUSH_MS_MAX, "finished or paused", |j| {
        j.state.is_final() || j.state == JobState::Paused
    })
    .await;
    assert_ne!(
        job.state,
        JobState::Paused,
        "after the restart the job paused instead of going on by itself: {:?}",
        job.reason
    );
    assert_eq!(
        job.state,
        JobState::Done,
        "the push did not finish: {job:?}"
    );
    job
}

/// Pushes the image uninterrupted, then again with hoistd killed at `point` and started
/// again; checks the second push against the first and records what the kill cost.
async fn killed_at(point: KillPoint) {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let source = source(dir.path());
    let want = {
        let base = TestDaemon::start_with(&dir.path().join("base"), Config::default());
        let client = base.client();
        let target = format!("{}/base/img:1", registry.host());
        let id = submit(&client, &source, &target, Compression::Gzip).await;
        wait_done(&client, &id).await.manifest_digest.unwrap()
    };

    let proxy = EcrProxy::start(registry.addr).await;
    point.hold(&proxy);
    let d = dir.path().join("d");
    let (client, child) = spawn_hoistd(&d).await;
    let repo = format!("kill/{}", point.name());
    let target = format!("{}/{repo}:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let at_kill = wait_for(&client, &id, PUSH_MS_MAX, point.name(), |j| {
        point.reached(j, &proxy)
    })
    .await;
    child.kill9();
    assert!(
        !tag_exists(registry.addr, &repo, "1"),
        "the tag exists after a kill while {}",
        point.name()
    );
    KillPoint::release(&proxy);

    let (client, child) = spawn_hoistd(&d).await;
    let job = wait_done_by_itself(&client, &id).await;
    assert_eq!(
        job.manifest_digest,
        Some(want.clone()),
        "not the uninterrupted push's result"
    );
    let reference = format!("{repo}:1");
    let pulled = pull_back(&registry.host(), &reference, &dir.path().join("pulled"));
    assert_eq!(pulled, want, "the registry serves another manifest");
    let manifest_bytes = common::skopeo_raw_manifest(&registry.host(), &reference).len() as u64;
    check_resent(point, &proxy, &at_kill, &job, manifest_bytes);
    check_went_on(point, &at_kill, &client, &id).await;
    child.kill9();
}

/// The restarted run went on where the killed one stopped, as the job's events tell: no blob
/// started over, each blob mid-upload resumed at (or past) its acknowledged offset, and a
/// layer compressing went on from its recorded chunks.
async fn check_went_on(point: KillPoint, at_kill: &api::Job, client: &Client, id: &JobId) {
    let events = last_run_events(client, id).await;
    let restarted: Vec<&EventKind> = events
        .iter()
        .filter(|k| matches!(k, EventKind::Restarted { .. }))
        .collect();
    assert!(restarted.is_empty(), "blobs started over: {restarted:?}");
    for b in at_kill.blobs.iter().filter(|b| !b.state.is_finished()) {
        assert!(
            b.uploaded_bytes == 0 || went_on_with(&events, b),
            "blob {} neither resumed at its {} acknowledged bytes, nor was found whole, nor was left alone: {events:?}",
            b.digest,
            b.uploaded_bytes
        );
    }
    if point == KillPoint::Compressing {
        let text = at_kill.blobs.iter().max_by_key(|b| b.size_bytes).unwrap();
        let first = events.iter().find_map(|k| match k {
            EventKind::Compress {
                digest,
                chunks_done,
                ..
            } if *digest == text.digest => Some(*chunks_done),
            _ => None,
        });
        // None: its compression ended between the read and the kill, and was not redone.
        assert!(
            first.is_none_or(|n| n > text.compressed_chunks),
            "the text layer's compression started over ({first:?} chunks first, {} recorded at the kill)",
            text.compressed_chunks
        );
    }
}

/// Whether the last run's `events` show blob `b` (mid-upload at the read before the kill)
/// resumed at or past its acknowledged bytes, found whole by the HEAD before its upload (its
/// final PUT landed, unanswered), or not sent at all (it finished between that read and the
/// kill).
fn went_on_with(events: &[EventKind], b: &api::BlobStatus) -> bool {
    let mut sent = false;
    for k in events {
        match k {
            EventKind::Resumed {
                digest,
                offset_bytes,
                ..
            } if *digest == b.digest => return *offset_bytes >= b.uploaded_bytes,
            EventKind::BlobDone {
                digest,
                state: BlobState::Existed,
            } if *digest == b.digest => return true,
            EventKind::Progress { digest, .. } if *digest == b.digest => sent = true,
            _ => {}
        }
    }
    !sent
}

/// The events of the job's last run: those after its last entry into `preparing`.
async fn last_run_events(client: &Client, id: &JobId) -> Vec<EventKind> {
    let mut stream = client.events(id, 0, false).await.unwrap();
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        let kind = ev.unwrap().kind;
        if matches!(
            kind,
            EventKind::State {
                state: JobState::Preparing,
                ..
            }
        ) {
            events.clear();
        }
        events.push(kind);
    }
    events
}

/// Bytes sent again: everything the emulation received, less one whole push (blobs and a
/// manifest of `manifest_bytes`); recorded, and within what a kill at `point` may cost.
fn check_resent(
    point: KillPoint,
    proxy: &EcrProxy,
    at_kill: &api::Job,
    job: &api::Job,
    manifest_bytes: u64,
) {
    let once = job.bytes_total() + manifest_bytes;
    let received = proxy.state.bytes_in.load(Ordering::SeqCst);
    let resent = received.saturating_sub(once);
    let budget = point.resend_bytes_max(at_kill, manifest_bytes);
    record(
        &format!(
            "kill_9_while_{}_then_the_job_completes_by_itself",
            point.name()
        ),
        &format!("kill -9 of hoistd while the job is {}", point.name()),
        EMULATION,
        "resumes by itself after the restart; same manifest digest as an uninterrupted push",
        &format!(
            "{resent} bytes sent again for a {once}-byte push (budget {budget}: {})",
            match point {
                KillPoint::Preparing | KillPoint::Verifying => "nothing".to_string(),
                KillPoint::Compressing | KillPoint::Uploading =>
                    format!("a {} MiB part per blob in flight", CHUNK >> 20),
                KillPoint::Committing => "the manifest".to_string(),
            }
        ),
        serde_json::json!({"resent_bytes": resent, "push_bytes": once, "budget_bytes": budget, "state_at_kill": at_kill.state.as_str()}),
    );
    assert!(
        resent <= budget,
        "a kill while {} sent {resent} bytes again (budget {budget})",
        point.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_preparing_then_the_job_completes_by_itself() {
    killed_at(KillPoint::Preparing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_compressing_then_the_job_completes_by_itself() {
    killed_at(KillPoint::Compressing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_uploading_then_the_job_completes_by_itself() {
    killed_at(KillPoint::Uploading).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_verifying_then_the_job_completes_by_itself() {
    killed_at(KillPoint::Verifying).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_committing_then_the_job_completes_by_itself() {
    killed_at(KillPoint::Committing).await;
}
