//! One owner of a job's life, end to end through the socket against the real registry: cancel
//! and delete in every state a job can be in leave no upload session and no spool; cancel is
//! refused once the tag may be written, and a deadline that passes during the manifest PUT
//! does not fail a job whose tag is written; a blob the registry lost while the job was
//! paused is uploaded again; a job waiting for compression threads stops at once; and a
//! SIGTERM does not wait for the ELF census of a large layer.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hoist::api::{self, BlobState, Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression};

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use daemon_support::TestDaemon;
use push_support::*;

/// How long a stop may take to show in the job's state.
const STOP_MS_MAX: u64 = 3_000;

/// Open upload sessions of `repo` in the registry's storage: entries of its `_uploads`
/// directory that still hold their `data` file (a deleted session leaves at most an empty
/// `hashstates`).
fn sessions_of(storage: &Path, repo: &str) -> Vec<PathBuf> {
    let dir = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|s| s.join("data").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn spool_of(daemon: &TestDaemon, id: &JobId) -> PathBuf {
    daemon.state_dir.join("spool").join(id.as_str())
}

/// Polls until `repo` has no open session and the job's spool is gone.
async fn wait_released(daemon: &TestDaemon, registry: &TestRegistry, repo: &str, id: &JobId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = sessions_of(&registry.storage(), repo);
        let spool = spool_of(daemon, id);
        if sessions.is_empty() && !spool.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} left behind: sessions {sessions:?}, spool {} exists: {}",
            spool.display(),
            spool.exists()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a push of `source` to `repo` behind the proxy and waits until a chunk is
/// acknowledged (an upload session is open on the registry).
async fn uploading(
    client: &Client,
    proxy: &EcrProxy,
    registry: &TestRegistry,
    source: &str,
    repo: &str,
) -> JobId {
    let target = format!("{}/{repo}:1", proxy.host());
    let id = submit(client, source, &target, Compression::Gzip).await;
    wait_for(client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.bytes_uploaded() >= CHUNK
    })
    .await;
    assert!(!sessions_of(&registry.storage(), repo).is_empty());
    id
}

async fn pause(client: &Client, id: &JobId) {
    client.control(id, "pause").await.unwrap();
    wait_for(client, id, PUSH_MS_MAX, "paused", |j| {
        j.state == JobState::Paused
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_in_every_state_leave_no_session_and_no_spool() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let source = archive(dir.path(), 51, 24);
    // One job runs at a time: a resumed job waits in `queued` behind another.
    let daemon = TestDaemon::start_with(
        &dir.path().join("d"),
        Config {
            jobs_running_max: 1,
            ..Config::default()
        },
    );
    let client = daemon.client();

    // Uploading: cancel (delete is refused until then), then delete.
    let id = uploading(&client, &proxy, &registry, &source, "st/uploading").await;
    assert!(
        client.delete(&id).await.is_err(),
        "a running job is deleted"
    );
    client.control(&id, "cancel").await.unwrap();
    wait_released(&daemon, &registry, "st/uploading", &id).await;
    assert_eq!(client.job(&id).await.unwrap().state, JobState::Cancelled);
    client.delete(&id).await.unwrap();

    // Paused, with its sessions kept for the resume: cancel, and delete.
    for (repo, action) in [("st/paused-cancel", "cancel"), ("st/paused-delete", "rm")] {
        let id = uploading(&client, &proxy, &registry, &source, repo).await;
        pause(&client, &id).await;
        assert!(!sessions_of(&registry.storage(), repo).is_empty());
        end(&client, &id, action).await;
        wait_released(&daemon, &registry, repo, &id).await;
    }

    // Queued with open sessions (paused, then resumed behind a running job): cancel and delete.
    for (repo, action) in [("st/queued-cancel", "cancel"), ("st/queued-delete", "rm")] {
        let id = uploading(&client, &proxy, &registry, &source, repo).await;
        pause(&client, &id).await;
        let other = uploading(&client, &proxy, &registry, &source, "st/other").await;
        client.control(&id, "resume").await.unwrap();
        assert_eq!(client.job(&id).await.unwrap().state, JobState::Queued);
        end(&client, &id, action).await;
        wait_released(&daemon, &registry, repo, &id).await;
        client.control(&other, "cancel").await.unwrap();
        wait_released(&daemon, &registry, "st/other", &other).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_of_a_failed_job_leave_no_session_and_no_spool() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    for (seed, repo, action) in [
        (57, "st/failed-cancel", "cancel"),
        (58, "st/failed-delete", "rm"),
    ] {
        // Failed with its sessions kept for a retry: paused at a chunk boundary, then its
        // source replaced by another file, which the resumed run refuses to push.
        let source = archive(dir.path(), seed, 24);
        let id = uploading(&client, &proxy, &registry, &source, repo).await;
        pause(&client, &id).await;
        let tar = PathBuf::from(source.strip_prefix("docker-archive:").unwrap());
        let copy = tar.with_extension("copy");
        std::fs::copy(&tar, &copy).unwrap();
        std::fs::rename(&copy, &tar).unwrap();
        client.control(&id, "resume").await.unwrap();
        let job = wait_for(&client, &id, PUSH_MS_MAX, "failed", |j| j.state.is_final()).await;
        assert_eq!(job.state, JobState::Failed, "{job:?}");
        assert!(!sessions_of(&registry.storage(), repo).is_empty());
        end(&client, &id, action).await;
        wait_released(&daemon, &registry, repo, &id).await;
    }
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Cancels (`cancel`) or deletes (`rm`) the job and checks what it became.
async fn end(client: &Client, id: &JobId, action: &str) {
    if action == "rm" {
        client.delete(id).await.unwrap();
        assert!(client.job(id).await.is_err(), "job {id} is still listed");
    } else {
        let job = client.control(id, action).await.unwrap();
        assert_eq!(job.state, JobState::Cancelled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_refused_while_the_tag_is_written_and_a_deadline_mid_put_still_ends_done() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.hold_manifest_puts.store(true, Ordering::SeqCst);
    let (_, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(52, 4, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let mut req = request(
        &source,
        &format!("{}/commit/img:1", proxy.host()),
        Compression::Gzip,
    );
    let deadline_s = unix_s() + 20;
    req.options.deadline_unix_s = Some(deadline_s);
    let id = client.submit(&req).await.unwrap().id;
    wait_for(&client, &id, PUSH_MS_MAX, "committing", |j| {
        proxy.state.manifest_puts_held.load(Ordering::SeqCst) || j.state.is_final()
    })
    .await;
    // Read again: the snapshot the wait matched may predate the PUT it saw held.
    let job = client.job(&id).await.unwrap();
    assert_eq!(job.state, JobState::Committing, "{job:?}");
    for action in ["cancel", "pause"] {
        let refused = client.control(&id, action).await.unwrap_err().to_string();
        assert!(
            refused.contains("committing"),
            "{action} while committing: {refused}"
        );
    }
    // The deadline passes while the PUT is held; then the registry writes the tag.
    while unix_s() <= deadline_s {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy
        .state
        .hold_manifest_puts
        .store(false, Ordering::SeqCst);
    let job = wait_for(&client, &id, PUSH_MS_MAX, "finished", |j| {
        j.state.is_final()
    })
    .await;
    let tagged = tag_exists(registry.addr, "commit/img", "1");
    assert!(tagged, "the held PUT never reached the registry");
    assert_eq!(
        job.state,
        JobState::Done,
        "the tag is written but the job says otherwise: {job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_the_registry_lost_while_the_job_was_paused_is_uploaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let source = archive(dir.path(), 53, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/lost/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "a blob uploaded", |j| {
        j.blobs.iter().any(|b| b.state == BlobState::Uploaded) || j.state.is_final()
    })
    .await;
    assert!(!job.state.is_final(), "{job:?}");
    pause(&client, &id).await;
    let job = client.job(&id).await.unwrap();
    let lost: Vec<Digest> = job
        .blobs
        .iter()
        .filter(|b| b.state == BlobState::Uploaded)
        .map(|b| b.pushed_digest.clone().unwrap_or_else(|| b.digest.clone()))
        .collect();
    assert!(!lost.is_empty(), "{job:?}");
    // What the registry's garbage collector does to a blob no manifest references.
    for d in &lost {
        let data = registry
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex());
        std::fs::remove_dir_all(&data).expect("remove the blob from the registry");
    }
    client.control(&id, "resume").await.unwrap();
    let job = wait_done(&client, &id).await;
    let digest = job.manifest_digest.unwrap();
    assert_eq!(
        pull_back(&registry.host(), "lost/img:1", &dir.path().join("pulled")),
        digest
    );
}

/// An OCI layout of one uncompressed layer of `mb` MB of text, seed `seed`.
fn text_image(dir: &Path, seed: u64, mb: u64) -> String {
    let mut spec = image_spec(seed, 0, SampleCompression::None);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Text(mb << 20),
        SampleCompression::None,
    )];
    write_oci(&dir.join(format!("text{seed}")), &spec).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_compression_threads_pauses_and_cancels_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let big = text_image(dir.path(), 54, 256);
    let small = [text_image(dir.path(), 55, 4), text_image(dir.path(), 56, 4)];
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let host = registry.host();
    // The large layer takes every compression thread of the daemon.
    let holder = submit(
        &client,
        &big,
        &format!("{host}/big/img:1"),
        Compression::Gzip,
    )
    .await;
    wait_for(&client, &holder, PUSH_MS_MAX, "compressing", |j| {
        j.blobs.iter().any(|b| b.compressed_chunks > 0)
    })
    .await;
    let mut waiting = Vec::new();
    for (i, src) in small.iter().enumerate() {
        let id = submit(
            &client,
            src,
            &format!("{host}/small{i}/img:1"),
            Compression::Gzip,
        )
        .await;
        wait_for(&client, &id, PUSH_MS_MAX, "waiting for compression", |j| {
            j.reason
                .as_deref()
                .is_some_and(|r| r.contains("compression threads"))
        })
        .await;
        waiting.push(id);
    }
    for (id, action, state, left) in [
        (&waiting[0], "pause", JobState::Paused, 2),
        (&waiting[1], "cancel", JobState::Cancelled, 1),
    ] {
        let asked = Instant::now();
        client.control(id, action).await.unwrap();
        // Stopped means its run ended: a retry or resume could start it again.
        wait_for(&client, id, STOP_MS_MAX, "stopped", |j| {
            j.state == state
                && j.reason
                    .as_deref()
                    .is_none_or(|r| !r.contains("compression"))
        })
        .await;
        wait_running(&daemon, id, left, asked).await;
    }
    let holder_job = client.job(&holder).await.unwrap();
    assert!(
        !holder_job.state.is_final()
            && holder_job
                .blobs
                .iter()
                .any(|b| b.action == api::BlobAction::Compress && b.pushed_digest.is_none()),
        "the large layer finished compressing before the stops were measured: {holder_job:?}"
    );
    client.control(&holder, "cancel").await.unwrap();
}

/// Waits until `left` runs are left (job `id`'s ended), within [`STOP_MS_MAX`] of `asked`.
async fn wait_running(daemon: &TestDaemon, id: &JobId, left: u64, asked: Instant) {
    let client = daemon.client();
    let want = format!("hoist_jobs_running {left}");
    loop {
        let metrics = client.metrics().await.unwrap();
        if metrics.lines().any(|l| l == want) {
            return;
        }
        assert!(
            asked.elapsed() < Duration::from_millis(STOP_MS_MAX),
            "job {id}'s run is still going {} ms after it was asked to stop: {metrics}",
            asked.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes an OCI layout whose only layer is a gzip of a tar holding one file of `gib` GiB of
/// zeros: a few MB to upload, but the ELF census inflates all of it.
fn zeros_image(dir: &Path, gib: u64) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let member = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    let block = 64u64 << 20;
    let size = gib << 30;
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    // Gzip members concatenate to the concatenation of their contents.
    let zeros = member(&vec![0u8; block as usize]);
    let mut layer = member(header.as_bytes());
    for _ in 0..size / block {
        layer.extend_from_slice(&zeros);
    }
    layer.extend_from_slice(&member(&[0u8; 1024]));
    let (layer_digest, layer_size) = put(&layer);
    // The census does not hash the uncompressed tar; hoist pushes the layer as it is.
    let diff_id = Digest::sha256_of(b"not checked for a layer pushed as it is");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size}}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_the_elf_census() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let source = zeros_image(&dir.path().join("img"), 32);
    let mut cmd = daemon_support::hoistd_command(dir.path(), "info");
    let child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let client = Client::new(dir.path().join("hoist.sock"));
    daemon_support::wait_answers(&client, 20).await;
    let target = format!("{}/census/img:1", registry.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    // The uploads are done; the census of 32 GiB of zeros (seconds of inflating) is not.
    let job = wait_for(&client, &id, PUSH_MS_MAX, "waiting for the census", |j| {
        j.reason
            .as_deref()
            .is_some_and(|r| r.contains("ELF census"))
            || j.state.is_final()
    })
    .await;
    assert!(!job.state.is_final(), "{job:?}");
    let asked = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hoistd exited {:?}: {log}",
        out.status
    );
    assert!(
        took < Duration::from_secs(5),
        "hoistd took {took:?} to stop on SIGTERM: {log}"
    );
}

/// Polls the job list until `id` is gone (pruned); panics after [`PUSH_MS_MAX`].
async fn wait_pruned(client: &Client, id: &JobId) {
    let deadline = Instant::now() + Duration::from_millis(PUSH_MS_MAX);
    while client.jobs().await.unwrap().iter().any(|j| &j.id == id) {
        assert!(Instant::now() < deadline, "job {id} was never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `hoistd --keep-jobs 1s`: a done job, then a cancelled one, disappear from the list and the
/// database (rows, blobs, events) and leave no spool, while a running job (slowed by its own
/// upload limit) and a failed one outlive the retention period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_pruned_after_the_retention_period_and_failed_or_running_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let (_, small) = write_oci(
        &dir.path().join("small"),
        &hoist_testkit::sample::SampleSpec::small(61),
    );
    let big = archive(dir.path(), 62, 16);
    let home = dir.path().join("d");
    std::fs::create_dir_all(&home).unwrap();
    let daemon = daemon_support::hoistd_command(&home, "info")
        .args(["--keep-jobs", "1s"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hoistd");
    let client = Client::new(home.join("hoist.sock"));
    daemon_support::wait_answers(&client, 20).await;

    let mut slow = request(
        &big,
        &format!("{}/keep/running:1", registry.host()),
        Compression::Gzip,
    );
    slow.options.bandwidth_bytes_per_s = Some(1 << 20);
    let running = client.submit(&slow).await.unwrap().id;
    let failed = client
        .submit(&daemon_support::bad_target(&small))
        .await
        .unwrap()
        .id;
    let done = submit(
        &client,
        &small,
        &format!("{}/keep/done:1", registry.host()),
        Compression::Gzip,
    )
    .await;
    wait_done(&client, &done).await;
    let failed_job = wait_for(&client, &failed, PUSH_MS_MAX, "failed", |j| {
        j.state.is_final()
    })
    .await;
    assert_eq!(failed_job.state, JobState::Failed, "{failed_job:?}");
    wait_pruned(&client, &done).await;
    assert!(!home.join("state/spool").join(done.as_str()).exists());
    // Both ended more than the retention period ago by now, or are still running.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        client.job(&failed).await.unwrap().state,
        JobState::Failed,
        "a failed job is kept for a retry"
    );
    assert!(
        client.job(&running).await.unwrap().state.is_running(),
        "the running job is pruned or ended"
    );
    client.control(&running, "cancel").await.unwrap();
    wait_pruned(&client, &running).await;

    daemon_support::kill9(daemon);
    assert_only_left(&home.join("state"), failed, [done, running]).await;
}

/// The database in `state` holds job `kept` (with its events) and nothing of the `gone` ones.
async fn assert_only_left(state: &Path, kept: JobId, gone: [JobId; 2]) {
    let store = hoist::store::Store::open(state).unwrap();
    let left: Vec<JobId> = store
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(left, vec![kept.clone()]);
    for id in gone {
        assert!(store.blobs(id.clone()).await.unwrap().is_empty());
        assert!(store.events_after(id, 0, 100).await.unwrap().is_empty());
    }
    assert!(!store.events_after(kept, 0, 100).await.unwrap().is_empty());
    store.integrity_check().await.unwrap();
}
