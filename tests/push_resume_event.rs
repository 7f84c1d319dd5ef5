//! What a kill -9 mid-blob looks like to the user, through the ECR emulation (atomic parts, on
//! a loopback address, so not ECR by name): after the restart the daemon reports `resumed` for
//! the interrupted blob at the offset the killed daemon had acknowledged, never `restarted`,
//! and `hoist watch` says so in a line (and carries the event in its JSON output). On Debian's
//! registry, which cancels an upload whose PATCH was cut, the blob says `restarted` instead.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;

use hoist::api::{self, Compression, EventKind, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression};

use common::TestRegistry;
use common::cut_proxy::CutProxy;
use common::ecr_proxy::EcrProxy;
use daemon_support::{TestDaemon, kill9, wait_answers};
use push_support::*;

/// Size of the one layer: several parts of `CHUNK`.
const LAYER_BYTES: u64 = 32 << 20;
/// How long the emulation holds each part before committing it: a kill meanwhile loses it.
const PART_HOLD_MS: u64 = 300;

fn hoistd(dir: &std::path::Path) -> Child {
    daemon_support::hoistd_command(dir, "info")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hoistd")
}

/// The blobs of job `id` whose stored cursor is past byte 0, read from the killed daemon's
/// store: what it had acknowledged when it died.
async fn stored_offsets(state: &std::path::Path, id: &JobId) -> Vec<(Digest, u64)> {
    let store = hoist::store::Store::open(state).unwrap();
    let blobs = store.blobs(id.clone()).await.unwrap();
    blobs
        .into_iter()
        .filter_map(|b| Some((b.digest, b.cursor?.offset_bytes)))
        .filter(|(_, offset)| *offset > 0)
        .collect()
}

async fn all_events(client: &Client, id: &JobId) -> Vec<api::Event> {
    let mut stream = client.events(id, 0, false).await.unwrap();
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        events.push(ev.unwrap());
    }
    events
}

/// `hoist watch` (and `--json` when `json`) of the finished job: its output on stderr and
/// stdout.
fn watch(d: &std::path::Path, id: &JobId, json: bool) -> (String, String) {
    let mut cmd = daemon_support::hoist_command();
    cmd.arg("--socket").arg(d.join("hoist.sock")).arg("watch");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg(id.as_str()).output().expect("run hoist watch");
    assert!(out.status.success(), "hoist watch failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_blob_is_followed_by_resumed_at_the_acknowledged_offset() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    proxy
        .state
        .part_delay_ms
        .store(PART_HOLD_MS, Ordering::SeqCst);
    let mut spec = image_spec(31, 0, SampleCompression::Gzip);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Random(LAYER_BYTES),
        SampleCompression::Gzip,
    )];
    let (img, source) = write_oci(&dir.path().join("img"), &spec);
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));
    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let target = format!("{}/resumed/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;

    // Mid-blob: two parts acknowledged, the next one received whole and held.
    wait_for(
        &client,
        &id,
        PUSH_MS_MAX,
        "uploading with a part held",
        |j| {
            j.state == JobState::Uploading
                && j.bytes_uploaded() >= 2 * CHUNK
                && proxy.state.parts_held.load(Ordering::SeqCst) > 0
        },
    )
    .await;
    kill9(child);
    let stored = stored_offsets(&d.join("state"), &id).await;
    let [(blob, offset)] = stored.as_slice() else {
        panic!("not one blob mid-upload at the kill: {stored:?}");
    };

    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    let events = all_events(&client, &id).await;
    let resumed: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::Resumed { .. } | EventKind::Restarted { .. }))
        .collect();
    let want = EventKind::Resumed {
        digest: blob.clone(),
        offset_bytes: *offset,
        size_bytes: job
            .blobs
            .iter()
            .find(|b| &b.digest == blob)
            .map(api::BlobStatus::upload_size_bytes)
            .unwrap(),
    };
    assert_eq!(resumed, vec![&want], "after a kill at offset {offset}");

    let (lines, _) = watch(&d, &id, false);
    let line = format!("resumed {} at {} MiB of ", blob.short(), offset >> 20);
    assert!(lines.contains(&line), "no {line:?} in:\n{lines}");
    let (_, json) = watch(&d, &id, true);
    assert!(
        json.lines().any(|l| l.contains("\"type\":\"resumed\"")),
        "no resumed event in:\n{json}"
    );
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_debians_registry_a_cut_mid_patch_says_restarted_with_the_bytes_lost() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let cut = CutProxy::start(registry.addr).await;
    let mut spec = image_spec(32, 0, SampleCompression::Gzip);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Random(16 << 20),
        SampleCompression::Gzip,
    )];
    let (img, source) = write_oci(&dir.path().join("img"), &spec);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    // In the middle of the layer's second chunk: its first chunk is acknowledged.
    cut.cut_after(CHUNK + CHUNK / 2 + img.config_size);
    let target = format!("{}/restarted/img:1", cut.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    let said: Vec<EventKind> = all_events(&client, &id)
        .await
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::Resumed { .. } | EventKind::Restarted { .. }))
        .collect();
    assert!(
        matches!(said.as_slice(), [EventKind::Restarted { offset_bytes, reason, .. }]
            if *offset_bytes >= CHUNK && reason == "the registry lost the session"),
        "{said:?}"
    );
}
