//! `kill -9` of hoistd at chosen points of a real push, then a restart: the job completes by
//! itself, the result equals an uninterrupted push, the bytes sent again stay within a chunk
//! per in-flight blob per kill (ECR emulation, whose parts are atomic), and the tag never
//! exists before every blob is verified. On Debian's registry directly, a cut mid-PATCH costs
//! the blob's session, and the job still completes.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hoist::api::{self, BlobAction, BlobState, Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression};

use common::TestRegistry;
use common::cut_proxy::CutProxy;
use common::ecr_proxy::EcrProxy;
use daemon_support::{TestDaemon, kill9, wait_answers};
use push_support::*;

/// Parallel uploads of one daemon (its default).
const IN_FLIGHT_MAX: u64 = hoist::daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT as u64;

fn hoistd(dir: &std::path::Path) -> Child {
    daemon_support::hoistd_command(dir, "info")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hoistd")
}

/// A docker-archive of about 40 MB whose text layer takes several compressor chunks.
fn archive(dir: &std::path::Path) -> String {
    uncompressed_docker_archive(dir, 21, 24 << 20, 14 << 20)
}

/// Watches the tag while the push runs: records it if the tag exists while the job is not
/// past `verifying` (every blob verified).
fn watch_tag(
    addr: std::net::SocketAddr,
    socket: std::path::PathBuf,
    id: JobId,
    repo: &'static str,
) -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let early = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (e, s) = (early.clone(), stop.clone());
    tokio::spawn(async move {
        let client = Client::new(&socket);
        while !s.load(Ordering::SeqCst) {
            if let Ok(job) = client.job(&id).await {
                let unverified = job.blobs.iter().any(|b| b.state != BlobState::Verified);
                let exists = tokio::task::spawn_blocking(move || tag_exists(addr, repo, "1"))
                    .await
                    .unwrap();
                if exists && unverified && job.state != JobState::Done {
                    e.store(true, Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (early, stop)
}

fn compressing(job: &api::Job) -> bool {
    job.blobs.iter().any(|b| {
        b.action == BlobAction::Compress && b.compressed_chunks >= 1 && b.pushed_digest.is_none()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_three_points_through_the_ecr_proxy_then_the_job_completes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let source = archive(dir.path());
    let want = uninterrupted(&dir.path().join("base"), &registry.host(), &source).await;

    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.part_delay_ms.store(150, Ordering::SeqCst);
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));
    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let target = format!("{}/kill/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let (early, stop_watch) =
        watch_tag(registry.addr, d.join("hoist.sock"), id.clone(), "kill/img");

    // 1. During compression: a layer has compressed chunks but is not finished.
    wait_for(&client, &id, PUSH_MS_MAX, "compressing", compressing).await;
    kill9(child);
    assert!(!tag_exists(registry.addr, "kill/img", "1"));

    // 2. Mid-chunk: the proxy holds a part it received whole, not committed yet.
    kill_with_a_part_held(&d, &client, &id, &proxy, registry.addr).await;
    // 3. Between the last blob check and the manifest commit: the manifest PUT is held.
    kill_with_the_manifest_held(&d, &client, &id, &proxy, registry.addr).await;

    // The last daemon finishes the job by itself.
    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let job = wait_done(&client, &id).await;
    stop_watch.store(true, Ordering::SeqCst);
    assert!(
        !early.load(Ordering::SeqCst),
        "the tag existed before every blob was verified"
    );
    assert_eq!(
        job.manifest_digest,
        Some(want.clone()),
        "not the uninterrupted push's result"
    );
    let raw = common::skopeo_raw_manifest(&registry.host(), "kill/img:1");
    assert_eq!(Digest::sha256_of(&raw), want);

    check_resent(&proxy, &job, raw.len() as u64);

    kill9(child);
    let store = hoist::store::Store::open(&d.join("state")).unwrap();
    store.integrity_check().await.unwrap();
    let spool = d.join("state/spool").join(id.as_str());
    assert!(!spool.exists(), "the finished job's spool is left behind");
}

/// Starts hoistd in `d`, waits until the proxy holds a part it received whole (not committed
/// yet) of the uploading job `id`, and kills it.
async fn kill_with_a_part_held(
    d: &std::path::Path,
    client: &Client,
    id: &JobId,
    proxy: &EcrProxy,
    registry: std::net::SocketAddr,
) {
    let child = hoistd(d);
    wait_answers(client, 10).await;
    wait_for(client, id, PUSH_MS_MAX, "uploading with a part held", |j| {
        j.state == JobState::Uploading
            && j.bytes_uploaded() >= CHUNK
            && proxy.state.parts_held.load(Ordering::SeqCst) > 0
    })
    .await;
    kill9(child);
    assert!(!tag_exists(registry, "kill/img", "1"));
}

/// Starts hoistd in `d` with manifest PUTs held, waits until job `id` commits with every blob
/// verified and the tag not written yet, kills it, and lets manifest PUTs through again.
async fn kill_with_the_manifest_held(
    d: &std::path::Path,
    client: &Client,
    id: &JobId,
    proxy: &EcrProxy,
    registry: std::net::SocketAddr,
) {
    proxy.state.hold_manifest_puts.store(true, Ordering::SeqCst);
    let child = hoistd(d);
    wait_answers(client, 10).await;
    let job = wait_for(client, id, PUSH_MS_MAX, "committing", |j| {
        j.state == JobState::Committing && proxy.state.manifest_puts_held.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        job.blobs.iter().all(|b| b.state == BlobState::Verified),
        "{job:?}"
    );
    assert!(!tag_exists(registry, "kill/img", "1"));
    kill9(child);
    proxy
        .state
        .hold_manifest_puts
        .store(false, Ordering::SeqCst);
}

/// Bytes sent again: everything the proxy received, less one full push (blobs + a manifest of
/// `manifest_bytes`).
fn check_resent(proxy: &EcrProxy, job: &api::Job, manifest_bytes: u64) {
    let once: u64 = job.bytes_total() + manifest_bytes;
    let received = proxy.state.bytes_in.load(Ordering::SeqCst);
    let resent = received.saturating_sub(once);
    eprintln!(
        "ECR proxy: received {received} bytes for a {once}-byte push: {resent} bytes sent again over 3 kills (chunk {CHUNK})"
    );
    // Kill 3 costs only the held manifest; kills 1 and 2 at most one part per in-flight blob.
    assert!(
        resent <= 2 * IN_FLIGHT_MAX * CHUNK + manifest_bytes,
        "{resent} bytes sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_debians_registry_a_cut_mid_patch_costs_the_blob_session_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let cut = CutProxy::start(registry.addr).await;
    let mut spec = image_spec(22, 0, SampleCompression::Gzip);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Random(16 << 20),
        SampleCompression::Gzip,
    )];
    let (img, source) = write_oci(&dir.path().join("img"), &spec);
    let d = dir.path().join("d");
    let daemon = TestDaemon::start_with(&d, Config::default());
    let client = daemon.client();
    // Cut in the middle of the second chunk of the layer.
    cut.cut_after(CHUNK + CHUNK / 2 + img.config_size);
    let target = format!("{}/cut/img:1", cut.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    assert!(
        cut.state.cuts.load(Ordering::SeqCst) >= 1,
        "the cut did not happen"
    );
    let sent = cut.state.bytes_up.load(Ordering::SeqCst);
    let once = job.bytes_total();
    eprintln!(
        "Debian registry via cut proxy: {sent} bytes up (requests included) for {once} bytes of blobs: about {} bytes sent again after one cut mid-PATCH",
        sent.saturating_sub(once)
    );
    // The blob started over in a new session: about the cut prefix again, never more than
    // the whole blob again.
    assert!(sent.saturating_sub(once) <= job.bytes_total() + (1 << 20));
    common::skopeo_pull_oci(&registry.host(), "cut/img:1", &dir.path().join("pulled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_push_killed_mid_upload_resumes_into_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = push_support::split::crafted_archive(dir.path());
    split_push_killed_resumes(dir.path(), &source, |_| {}).await;
}

/// A gzip layer split on request, killed between the parts' uploads: the rerun reads the
/// parts from a decompressed copy of the layer in the job's spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_push_of_a_gzip_layer_killed_mid_upload_resumes_into_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (source, _) = push_support::split::crafted_oci_gzip(&src, false);
    // When the daemon is killed, the job's spool holds the whole decompressed layer (named
    // by its diff_id and length) for the rerun to read the parts from (reusing it is
    // `split::unpack`'s unit test). Lost, it is made again: the same parts, and the job's
    // source is still the same (the compressed layer's file).
    split_push_killed_resumes(dir.path(), &source, |spool| {
        let kept: Vec<_> = std::fs::read_dir(spool.join("unpacked"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            kept.len() == 1
                && name(&kept[0]).starts_with("sha256-")
                && name(&kept[0]).ends_with(".tar"),
            "{kept:?}"
        );
        std::fs::remove_file(&kept[0]).unwrap();
    })
    .await;
}

/// Pushes `source` split, then again in a hoistd killed with kill -9 between the parts'
/// uploads and started again: the resumed job ends at the first push's digest. `killed` sees
/// the job's spool directory while the daemon is down.
async fn split_push_killed_resumes(
    dir: &std::path::Path,
    source: &str,
    killed: impl Fn(&std::path::Path),
) {
    use push_support::split::{SPLIT_TEST_BYTES, split_request};
    let split = api::SplitLayers::MaxBytes(SPLIT_TEST_BYTES);
    let registry = TestRegistry::start();
    let source = source.to_string();
    let want = {
        let base = TestDaemon::start_with(&dir.join("base"), Config::default());
        let client = base.client();
        let target = format!("{}/base/split:1", registry.host());
        let id = client
            .submit(&split_request(&source, &target, split))
            .await
            .unwrap()
            .id;
        wait_done(&client, &id).await.manifest_digest.unwrap()
    };

    // Through an ECR emulation slow enough to kill between the parts' uploads.
    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.part_delay_ms.store(1_000, Ordering::SeqCst);
    let d = dir.join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));
    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let target = format!("{}/kill/split:1", proxy.host());
    let id = client
        .submit(&split_request(&source, &target, split))
        .await
        .unwrap()
        .id;
    let job = wait_for(
        &client,
        &id,
        PUSH_MS_MAX,
        "part-way through the parts",
        |j| {
            j.state == JobState::Uploading && j.blobs.iter().any(|b| b.state == BlobState::Uploaded)
        },
    )
    .await;
    kill9(child);
    assert!(
        job.blobs.iter().any(|b| b.state != BlobState::Uploaded),
        "{job:?}"
    );
    assert!(!tag_exists(registry.addr, "kill/split", "1"));
    killed(&d.join("state/spool").join(id.as_str()));

    proxy.state.part_delay_ms.store(0, Ordering::SeqCst);
    let child = hoistd(&d);
    wait_answers(&client, 10).await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest, Some(want.clone()));
    let raw = common::skopeo_raw_manifest(&registry.host(), "kill/split:1");
    assert_eq!(Digest::sha256_of(&raw), want);
    kill9(child);
}
