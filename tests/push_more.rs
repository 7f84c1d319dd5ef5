//! The production body's other promises, end to end through the socket against the real
//! registry: cancel and delete leave nothing behind, a lost session costs only that blob, two
//! jobs sharing a blob send it once, a re-push sends no blob bytes, binaries of the wrong
//! architecture stop the job before the commit, and a source swapped under a job fails it.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use hoist::api::{Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression};

use common::TestRegistry;
use common::cut_proxy::CutProxy;
use common::ecr_proxy::EcrProxy;
use daemon_support::TestDaemon;
use push_support::*;

/// Every open upload session in the registry's storage: `_uploads/<uuid>` directories that
/// still hold their `data` file (a cancelled session leaves only an empty `hashstates`).
fn open_sessions(storage: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![storage.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|n| n == "_uploads") {
                out.extend(
                    std::fs::read_dir(&p)
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|s| s.join("data").exists()),
                );
            } else {
                stack.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_open_sessions_and_the_spool_and_delete_removes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let source = archive(dir.path(), 31, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/cancel/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.bytes_uploaded() >= CHUNK
    })
    .await;
    assert!(!open_sessions(&registry.storage()).is_empty());
    client.control(&id, "cancel").await.unwrap();
    let spool = daemon.state_dir.join("spool").join(id.as_str());
    // The body cleans up once it stopped: sessions deleted, spool emptied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sessions = open_sessions(&registry.storage());
        let left: Vec<_> = std::fs::read_dir(&spool)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if sessions.is_empty() && left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: sessions {sessions:?}, spool {left:?}; proxy log {:?}",
            proxy.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(client.job(&id).await.unwrap().state, JobState::Cancelled);
    assert!(!tag_exists(registry.addr, "cancel/img", "1"));
    client.delete(&id).await.unwrap();
    assert!(!spool.exists(), "{} is left behind", spool.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_restarts_only_that_blob_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.part_delay_ms.store(200, Ordering::SeqCst);
    let source = archive(dir.path(), 32, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/lost/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    wait_for(&client, &id, PUSH_MS_MAX, "a part held", |j| {
        j.bytes_uploaded() >= CHUNK && proxy.state.parts_held.load(Ordering::SeqCst) > 0
    })
    .await;
    // The registry forgets every open session (as an expired ECR upload would).
    let sessions = open_sessions(&registry.storage());
    assert!(!sessions.is_empty());
    for s in sessions {
        // The registry may be writing into (or finishing) another session meanwhile: one that
        // is gone already counts as forgotten, one that changed under us is removed again.
        let mut attempts = 0;
        while let Err(e) = std::fs::remove_dir_all(&s) {
            if e.kind() == std::io::ErrorKind::NotFound {
                break;
            }
            attempts += 1;
            assert!(attempts < 100, "cannot remove {}: {e}", s.display());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let job = wait_done(&client, &id).await;
    let digest = job.manifest_digest.unwrap();
    assert_eq!(
        pull_back(&registry.host(), "lost/img:1", &dir.path().join("pulled")),
        digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_sharing_blobs_send_them_once_and_a_repush_sends_no_blob_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let cut = CutProxy::start(registry.addr).await;
    let source = archive(dir.path(), 33, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let a = submit(
        &client,
        &source,
        &format!("{}/share/a:1", cut.host()),
        Compression::Gzip,
    )
    .await;
    let b = submit(
        &client,
        &source,
        &format!("{}/share/b:1", cut.host()),
        Compression::Gzip,
    )
    .await;
    let ja = wait_done(&client, &a).await;
    let jb = wait_done(&client, &b).await;
    assert_eq!(ja.manifest_digest, jb.manifest_digest);
    let once = ja.bytes_total();
    let sent = cut.state.bytes_up.load(Ordering::SeqCst);
    eprintln!("two jobs, one image: {sent} bytes up for a {once}-byte image");
    assert!(
        sent < once + once / 4,
        "{sent} bytes sent for two pushes of a {once}-byte image"
    );
    // The same image to a new tag: HEADs only, no blob bytes.
    let before = cut.state.bytes_up.load(Ordering::SeqCst);
    let c = submit(
        &client,
        &source,
        &format!("{}/share/a:2", cut.host()),
        Compression::Gzip,
    )
    .await;
    let jc = wait_done(&client, &c).await;
    assert_eq!(jc.manifest_digest, ja.manifest_digest);
    let repush = cut.state.bytes_up.load(Ordering::SeqCst) - before;
    eprintln!("re-push to a new tag: {repush} bytes up");
    assert!(repush < 64 << 10, "the re-push sent {repush} bytes");
    verify(
        &registry.host(),
        "share/b:1",
        jb.manifest_digest.as_ref().unwrap(),
    )
    .await;
}

fn arm64_image(dir: &Path) -> String {
    write_oci(
        &dir.join("arm"),
        &arm64_binaries_spec(34, SampleCompression::Gzip),
    )
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_binaries_in_an_amd64_image_fail_before_the_commit_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let source = arm64_image(dir.path());
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let id = submit(
        &client,
        &source,
        &format!("{host}/arch/img:1"),
        Compression::Gzip,
    )
    .await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed);
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("aarch64") && reason.contains("--allow-arch-mismatch"),
        "{reason}"
    );
    assert!(!tag_exists(registry.addr, "arch/img", "1"));

    let mut req = request(&source, &format!("{host}/arch/img:1"), Compression::Gzip);
    req.options.allow_arch_mismatch = true;
    let id = client.submit(&req).await.unwrap().id;
    wait_done(&client, &id).await;
    assert!(tag_exists(registry.addr, "arch/img", "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_is_resolved_at_submission_and_a_replaced_file_fails_the_job_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let real = archive(dir.path(), 35, 16);
    let real = PathBuf::from(real.strip_prefix("docker-archive:").unwrap());
    // Same bytes, another file: what a swap to a look-alike would give.
    let copy = dir.path().join("copy.tar");
    std::fs::copy(&real, &copy).unwrap();
    let link = dir.path().join("current.tar");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let source = format!("docker-archive:{}", link.display());
    let id = submit(
        &client,
        &source,
        &format!("{}/swap/img:1", proxy.host()),
        Compression::Gzip,
    )
    .await;
    // The job names the file the link pointed at when it was submitted.
    let job = client.job(&id).await.unwrap();
    let canonical = format!("docker-archive:{}", real.canonicalize().unwrap().display());
    assert_eq!(job.spec.source, canonical);
    wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.state == JobState::Uploading
    })
    .await;
    client.control(&id, "pause").await.unwrap();
    wait_for(&client, &id, PUSH_MS_MAX, "paused", |j| {
        j.state == JobState::Paused
    })
    .await;
    // The file itself is replaced (a new inode at the same path).
    std::fs::rename(&copy, &real).unwrap();
    client.control(&id, "resume").await.unwrap();
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    assert!(reason.contains("source changed"), "{reason}");
    assert!(!tag_exists(registry.addr, "swap/img", "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restart_mid_push_is_waited_for_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = TestRegistry::start();
    let source = archive(dir.path(), 36, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/restart/img:1", registry.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.state == JobState::Uploading && j.bytes_uploaded() > 0
    })
    .await;
    registry.stop();
    // The job says what it waits for.
    let job = wait_for(&client, &id, PUSH_MS_MAX, "waiting for network", |j| {
        j.state.is_final()
            || j.reason
                .as_deref()
                .is_some_and(|r| r.contains("waiting for network"))
    })
    .await;
    assert_eq!(job.state, JobState::Uploading, "{job:?}");
    registry.start_again();
    let job = wait_done(&client, &id).await;
    assert_eq!(
        pull_back(
            &registry.host(),
            "restart/img:1",
            &dir.path().join("pulled")
        ),
        job.manifest_digest.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_push_of_the_same_layers_to_another_registry_takes_them_from_the_spool_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestRegistry::start();
    let second = TestRegistry::start();
    let source = archive(dir.path(), 37, 16);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let a = submit(
        &client,
        &source,
        &format!("{}/cache/img:1", first.host()),
        Compression::Zstd,
    )
    .await;
    let ja = wait_done(&client, &a).await;
    assert!(ja.blobs.iter().any(|b| b.compressed_chunks > 0));
    let b = submit(
        &client,
        &source,
        &format!("{}/cache/img:1", second.host()),
        Compression::Zstd,
    )
    .await;
    let jb = wait_done(&client, &b).await;
    assert_eq!(jb.manifest_digest, ja.manifest_digest);
    // Nothing was compressed again: every layer came from the cache.
    assert!(
        jb.blobs.iter().all(|b| b.compressed_chunks == 0),
        "{:?}",
        jb.blobs
    );
    assert_eq!(
        pull_back(&second.host(), "cache/img:1", &dir.path().join("pulled")),
        jb.manifest_digest.unwrap()
    );
}

/// Incompressible chunks are stored (framed, not compressed), and their bytes are not copied
/// into the spool: the spool (kept in the cache after the push) holds only the compressed
/// chunks, its map describes the whole stream, and the registry got every byte right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompressible_chunks_are_sent_from_the_source_not_copied_into_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    // Text and random layers of 16 MiB each.
    let source = archive(dir.path(), 40, 32);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let id = submit(
        &client,
        &source,
        &format!("{}/stored/img:1", registry.host()),
        Compression::Gzip,
    )
    .await;
    let job = wait_done(&client, &id).await;
    assert_eq!(
        pull_back(&registry.host(), "stored/img:1", &dir.path().join("pulled")),
        job.manifest_digest.clone().unwrap()
    );
    let pushed: Vec<u64> = job
        .blobs
        .iter()
        .filter(|b| b.compressed_chunks > 0)
        .map(|b| b.pushed_size_bytes.unwrap())
        .collect();
    let cache = daemon.state_dir.join("spool").join("cache");
    let mut spooled_total = 0;
    let mut described = Vec::new();
    for e in std::fs::read_dir(&cache).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "map") {
            continue;
        }
        let lengths = hoist::daemon::push::spool_view::map_lengths(
            &hoist::daemon::push::spool_view::map_path(&path),
        )
        .unwrap();
        assert_eq!(
            lengths.spooled,
            e.metadata().unwrap().len(),
            "{}",
            path.display()
        );
        spooled_total += lengths.spooled;
        described.push(lengths.len);
    }
    described.sort();
    let mut want = pushed.clone();
    want.sort();
    assert_eq!(
        described, want,
        "the maps describe every compressed layer whole"
    );
    // The random layer's first 4 MiB chunk starts with the tar header (zeros, so the probe
    // compresses it); its other three are stored.
    let stored_at_least = 3 * (4u64 << 20);
    assert!(
        spooled_total + stored_at_least <= pushed.iter().sum::<u64>(),
        "the spool holds {spooled_total} bytes of {pushed:?}: the random layer was copied into it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_paused_job_deletes_the_sessions_it_kept_open() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = slow_ecr(registry.addr).await;
    let source = archive(dir.path(), 38, 24);
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/paused/img:1", proxy.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.bytes_uploaded() >= CHUNK
    })
    .await;
    client.control(&id, "pause").await.unwrap();
    wait_for(&client, &id, PUSH_MS_MAX, "paused", |j| {
        j.state == JobState::Paused
    })
    .await;
    // Paused at a chunk boundary: its sessions stay open for the resume.
    assert!(!open_sessions(&registry.storage()).is_empty());
    client.delete(&id).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !open_sessions(&registry.storage()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions left open: {:?}",
            open_sessions(&registry.storage())
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!daemon.state_dir.join("spool").join(id.as_str()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_that_already_holds_the_same_manifest_counts_as_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.immutable_tags.store(true, Ordering::SeqCst);
    let (img, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(39, 8, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/immutable/img:1", proxy.host());
    for _ in 0..2 {
        // The second push meets its own tag, as a rerun after a crash right after the PUT.
        let id = submit(&client, &source, &target, Compression::Gzip).await;
        let job = wait_done(&client, &id).await;
        assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    }
    let log = proxy.log();
    let puts = log
        .iter()
        .filter(|l| l.starts_with("PUT /v2/immutable/img/manifests/"))
        .count();
    assert_eq!(puts, 2, "{log:?}");
    // Another image is still refused on that tag.
    let (_, other) = write_oci(
        &dir.path().join("other"),
        &image_spec(40, 8, SampleCompression::Gzip),
    );
    let id = submit(&client, &other, &target, Compression::Gzip).await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed);
    let reason = job.reason.unwrap();
    assert!(reason.contains("immutable"), "{reason}");
}

/// A tmpfs of `mib` MiB mounted at a directory (the tests run as root), lazily unmounted when
/// dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {}: the disk tests run as root",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Grows or shrinks `filler` (written bytes: a sparse file takes no room on a tmpfs) until
/// about `mib` MiB are free beside it.
fn leave_free(filler: &Path, mib: u64) {
    use std::io::Write;
    let dir = filler.parent().unwrap();
    let free = hoist::daemon::push::disk::free_bytes(dir).unwrap();
    let want = mib << 20;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    if free >= want {
        let block = vec![0u8; 1 << 20];
        let mut rest = free - want;
        while rest > 0 {
            let n = rest.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            rest -= n as u64;
        }
        f.sync_all().unwrap();
    } else {
        f.set_len(len.saturating_sub(want - free)).unwrap();
    }
}

/// A file of `chunks` compressor chunks less 4 KiB (so its layer's tar stays within them):
/// zeros in the chunks the free-space check samples, 7-bit random bytes (which compress to
/// about 7/8) in the others, so the check's estimate is far below what the spool takes.
fn unevenly_compressible_file(path: &Path, chunks: u64) {
    let chunk = hoist::daemon::push::spool::SPOOL_CHUNK_BYTES;
    let sampled = hoist::daemon::push::disk::sample_chunks(0, chunks);
    let mut data = vec![0u8; chunks as usize * chunk - 4096];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (k, piece) in data.chunks_mut(chunk).enumerate() {
        if sampled.contains(&(k as u64)) {
            continue;
        }
        for word in piece.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = (x & 0x7f7f_7f7f_7f7f_7f7f).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
    std::fs::write(path, data).unwrap();
}

/// An OCI layout holding one uncompressed layer: an [`unevenly_compressible_file`] of 16
/// chunks.
fn uneven_image(dir: &Path) -> String {
    let file = dir.join("uneven");
    unevenly_compressible_file(&file, 16);
    let mut spec = hoist_testkit::sample::SampleSpec::small(71);
    spec.layers = vec![LayerSpec::new(
        LayerContent::HostFiles(vec![file]),
        SampleCompression::None,
    )];
    write_oci(&dir.join("img"), &spec).1
}

/// Where the job's last run went on with blob `digest` (its last `resumed` event); panics on
/// a `restarted` event (bytes the registry had, sent again).
async fn resumed_at(client: &Client, id: &JobId, digest: &hoist::digest::Digest) -> Option<u64> {
    let mut stream = client.events(id, 0, false).await.unwrap();
    let mut at = None;
    while let Some(ev) = stream.next().await {
        match ev.unwrap().kind {
            hoist::api::EventKind::Restarted { digest, reason, .. } => {
                panic!("blob {digest} started over after the full disk: {reason}")
            }
            hoist::api::EventKind::Resumed {
                digest: d,
                offset_bytes,
                ..
            } if &d == digest => at = Some(offset_bytes),
            _ => {}
        }
    }
    at
}

/// The state directory on a 100 MiB tmpfs. With 8 MiB free, the push fails before anything
/// is spooled or sent, with the figures. With 36 MiB free, the check's estimate fits (its
/// sampled chunks are zeros) but the layer's spool does not: the disk fills mid-spool and the
/// job fails with a clear error (the spool leaves the database its reserve), its spool
/// released. Once the space is freed, `retry`
/// recompresses the same bytes, resumes the upload from the registry's offset (no restart),
/// the image reads back with skopeo, and the database is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_push_early_or_mid_spool_and_a_retry_completes_once_freed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let source = uneven_image(dir.path());
    let home = dir.path().join("d");
    let state = home.join("state");
    let tmpfs = Tmpfs::mount(&state, 100);
    let daemon = TestDaemon::start_with(&home, Config::default());
    let client = daemon.client();
    let filler = state.join("filler");
    let target = format!("{}/disk/img:1", registry.host());

    leave_free(&filler, 8);
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    let reason = job.reason.clone().unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(
        reason.contains("needs ~") && reason.contains("MiB free") && !reason.contains('\n'),
        "{reason}"
    );
    assert!(job.blobs.iter().all(|b| b.uploaded_bytes == 0), "{job:?}");
    assert!(open_sessions(&registry.storage()).is_empty());
    eprintln!("early: {reason}");

    leave_free(&filler, 36);
    client.control(&id, "retry").await.unwrap();
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    let reason = job.reason.clone().unwrap_or_default();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(
        reason.contains("while spooling") && !reason.contains('\n'),
        "{reason}"
    );
    assert!(
        !state.join("spool").join(id.as_str()).exists(),
        "a failed job releases its spool"
    );
    let layer = job
        .blobs
        .iter()
        .find(|b| b.action == hoist::api::BlobAction::Compress)
        .unwrap()
        .clone();
    eprintln!(
        "mid-spool: {reason}; {} bytes of the layer acknowledged",
        layer.uploaded_bytes
    );

    std::fs::remove_file(&filler).unwrap();
    client.control(&id, "retry").await.unwrap();
    let job = wait_done(&client, &id).await;
    assert_eq!(
        pull_back(&registry.host(), "disk/img:1", &dir.path().join("pulled")),
        job.manifest_digest.clone().unwrap()
    );
    let resumed_at = resumed_at(&client, &id, &layer.digest).await;
    if layer.uploaded_bytes > 0 {
        assert!(
            resumed_at.is_some_and(|at| at >= layer.uploaded_bytes),
            "the retry did not go on from {} (resumed at {resumed_at:?})",
            layer.uploaded_bytes
        );
    }
    daemon.stop().unwrap();
    let store = hoist::store::Store::open(&state).unwrap();
    store.integrity_check().await.unwrap();
    drop(store);
    drop(tmpfs);
}

/// A push through a real HTTP proxy (squid) to a TLS registry named `registry.hoist.test`,
/// which only the proxy resolves: the CA is in the caller's `~/.docker/certs.d/HOST:PORT/`,
/// the proxy in `HTTPS_PROXY`. The push succeeds, skopeo reads the tag back through the same
/// proxy, and the proxy's log holds every connection the push made: CONNECTs to that host
/// only (a request that went around the proxy could not have resolved the name). The daemon
/// and the `hoist` command both get the caller's variables, so this holds whether the daemon
/// reads its own environment or the job's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_squid_reaches_a_tls_registry_only_the_proxy_resolves() {
    use common::netcfg::{PROXIED_NAME, Squid, TestCa};
    let dir = tempfile::tempdir().unwrap();
    let squid = Squid::start();
    let ca = TestCa::new(&dir.path().join("ca"), &[PROXIED_NAME]);
    let registry = TestRegistry::start_with(common::RegistryOptions {
        tls: Some(ca.registry_tls()),
        ..Default::default()
    });
    let host = format!("{PROXIED_NAME}:{}", registry.addr.port());
    let home = dir.path().join("home");
    ca.install_for(&home, &host);
    let env = [
        ("HTTPS_PROXY", squid.url()),
        ("HOME", home.display().to_string()),
    ];
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let daemon = daemon_support::hoistd_command(&d, "warn")
        .envs(env.clone())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stderr(std::fs::File::create(d.join("hoistd.log")).unwrap())
        .spawn()
        .expect("spawn hoistd");
    daemon_support::wait_answers(&hoist::cli::client::Client::new(d.join("hoist.sock")), 20).await;
    let source = archive(dir.path(), 43, 3);
    let target = format!("{host}/proxied/app:1");
    let out = daemon_support::hoist_command()
        .arg("--socket")
        .arg(d.join("hoist.sock"))
        // A client that went around the proxy would wait for a name it cannot resolve: fail.
        .args(["push", "--deadline", "1m", &source, &target])
        .envs(env.clone())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let printed = daemon_support::text(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}{}",
        daemon_support::text(&out.stderr),
        std::fs::read_to_string(d.join("hoistd.log")).unwrap_or_default()
    );
    // The daemon's pooled connections close with it: squid logs a tunnel when it ends.
    daemon_support::kill9(daemon);
    let by_hoist = squid.wait_requests(1, 10_000).len();
    assert!(by_hoist > 0, "squid logged nothing for the push");
    let certs = home.join(".docker/certs.d").join(&host);
    let read_back = hoist_testkit::tools::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&certs)
            .arg(format!("docker://{target}"))
            .envs(env.clone())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
        "skopeo inspect through the proxy",
    );
    let digest = hoist::digest::Digest::sha256_of(&read_back.stdout);
    assert!(
        printed.contains(&digest.to_string()),
        "{printed} vs {digest}"
    );
    let logged = squid.wait_requests(by_hoist + 1, 10_000);
    assert!(
        logged.len() > by_hoist,
        "skopeo's request is not in squid's log"
    );
    let connect = ("CONNECT".to_string(), host.clone());
    assert!(logged.iter().all(|r| *r == connect), "{logged:?}");
}

/// A gzip layer to split whose decompressed tar does not fit beside the spool's reserve (the
/// state directory on a 100 MiB tmpfs, 40 MiB free, a 48 MiB tar): the job fails in one line,
/// with the figures and what to do, before anything is uploaded; the partial copy goes with
/// the job's spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_layer_too_big_to_decompress_for_splitting_fails_the_job_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let mut spec = hoist_testkit::sample::SampleSpec::small(72);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Text(48 << 20),
        SampleCompression::Gzip,
    )];
    let source = write_oci(&dir.path().join("img"), &spec).1;
    let home = dir.path().join("d");
    let state = home.join("state");
    let _tmpfs = Tmpfs::mount(&state, 100);
    let daemon = TestDaemon::start_with(&home, Config::default());
    let client = daemon.client();
    leave_free(&state.join("filler"), 40);
    let target = format!("{}/disk/gz:1", registry.host());
    let split = hoist::api::SplitLayers::MaxBytes(1 << 20);
    let request = push_support::split::split_request(&source, &target, split);
    let id = client.submit(&request).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("no room to decompress")
            && reason.contains("hoist retry")
            && !reason.contains('\n'),
        "{reason}"
    );
    let blobs = registry.storage().join("docker/registry/v2/blobs");
    assert!(!blobs.exists(), "a blob was uploaded");
    assert!(!state.join("spool").join(id.as_str()).exists());
}
