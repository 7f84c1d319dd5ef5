//! The crash loop: `kill -9` of the real `hoistd` binary at seeded random moments of real
//! pushes through the ECR emulation (behind a bandwidth-capped link), a restart after each
//! kill, and checks: the tag never exists before every blob of its job is verified, every push
//! ends with the manifest of an uninterrupted push, the bytes sent again stay within one part
//! per upload connection per kill, and the SQLite state passes `PRAGMA integrity_check`
//! (checked by python3's sqlite3 module, independently of hoist).
//!
//! `HOIST_CRASH_SEED` (default 1) and `HOIST_CRASH_KILLS` (default 20, about a minute) set
//! the run; `scripts/crash-loop.sh --seed N --kills N` runs this test with them (long mode:
//! many more kills). Pushes follow one another (the same image to new repositories) until the
//! kills are spent.
mod common;
mod daemon_support;
mod push_support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hoist::api::{BlobState, Compression, JobState};
use hoist::cli::client::Client;
use rand::{Rng, SeedableRng};

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use common::fault_proxy::{FaultProxy, Faults};
use common::figures::record;
use daemon_support::{hoistd_command, kill9, wait_answers};
use push_support::*;

const UPLOADS_MAX: u64 = hoist::daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT as u64;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hoistd(dir: &std::path::Path) -> Child {
    hoistd_command(dir, "warn")
        .arg("--stall-timeout")
        .arg("5s")
        .arg("--retry-max")
        .arg("2s")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hoistd")
}

fn integrity_check(db: &std::path::Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
        .arg(db)
        .output()
        .expect("run python3 for the integrity check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_kill_9_at_random_moments() {
    let seed = env_u64("HOIST_CRASH_SEED", 1);
    let kills = env_u64("HOIST_CRASH_KILLS", 20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();

    // A docker-archive: layers to compress (the spool) and blobs pushed as they are.
    let source = uncompressed_docker_archive(dir.path(), 61, 8 << 20, 12 << 20);

    // The uninterrupted push: the result every interrupted one must equal.
    let want = uninterrupted(&dir.path().join("base"), &registry.host(), &source).await;

    let ecr = EcrProxy::start(registry.addr).await;
    let link = FaultProxy::start(ecr.addr).await;
    ecr.serve_behind(link.addr);
    // A capped link, so that kills land in compression, mid-part, between parts and around
    // the commit.
    link.set(Faults {
        upstream_bytes_per_sec: Some(24 << 20),
        ..Faults::default()
    });
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));

    // Watches the tag of the current push: records it if it exists while a blob of the job is
    // not verified.
    let current = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ids: Arc<std::sync::Mutex<Vec<hoist::api::JobId>>> = Arc::default();
    let watcher = {
        let (current, early, stop, ids) =
            (current.clone(), early.clone(), stop.clone(), ids.clone());
        let socket = d.join("hoist.sock");
        let addr = registry.addr;
        tokio::spawn(async move {
            let client = Client::new(&socket);
            while !stop.load(Ordering::SeqCst) {
                let n = current.load(Ordering::SeqCst);
                let id = ids.lock().unwrap().get(n).cloned();
                if let Some(id) = id
                    && let Ok(job) = client.job(&id).await
                {
                    let unverified = job.blobs.iter().any(|b| b.state != BlobState::Verified);
                    let repo = format!("crash/img{n}");
                    let exists = tokio::task::spawn_blocking(move || tag_exists(addr, &repo, "1"))
                        .await
                        .unwrap();
                    if exists && unverified && job.state != JobState::Done {
                        early.store(true, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let started = Instant::now();
    let mut killed = 0u64;
    let mut pushes_done = 0u64;
    let mut blob_bytes = 0u64;
    let mut manifest_bytes = 0u64;
    let mut child = hoistd(&d);
    wait_answers(&client, 5).await;
    let submit = |n: usize| {
        let client = &client;
        let source = &source;
        let target = format!("{}/crash/img{n}:1", link.host());
        async move {
            client
                .submit(&request(source, &target, Compression::Gzip))
                .await
                .unwrap()
                .id
        }
    };
    let first = submit(0).await;
    ids.lock().unwrap().push(first);
    while killed < kills {
        // A random moment of this daemon's life.
        let life = Duration::from_millis(rng.random_range(100..1200));
        tokio::time::sleep(life).await;
        kill9(child);
        killed += 1;
        child = hoistd(&d);
        wait_answers(&client, 5).await;
        // Follow the current push; when done, check it and start the next one.
        let n = current.load(Ordering::SeqCst);
        let id = ids.lock().unwrap()[n].clone();
        let job = client.job(&id).await.unwrap();
        assert!(
            !matches!(job.state, JobState::Failed | JobState::Cancelled),
            "push {n} ended {}: {:?}",
            job.state,
            job.reason
        );
        if job.state == JobState::Done {
            assert_eq!(job.manifest_digest.as_ref(), Some(&want), "push {n}");
            pushes_done += 1;
            blob_bytes += job.bytes_total();
            manifest_bytes +=
                common::skopeo_raw_manifest(&registry.host(), &format!("crash/img{n}:1")).len()
                    as u64;
            let next = submit(n + 1).await;
            ids.lock().unwrap().push(next);
            current.store(n + 1, Ordering::SeqCst);
        }
    }
    // The last push finishes without kills.
    let n = current.load(Ordering::SeqCst);
    let id = ids.lock().unwrap()[n].clone();
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest.as_ref(), Some(&want), "push {n}");
    pushes_done += 1;
    blob_bytes += job.bytes_total();
    let raw = common::skopeo_raw_manifest(&registry.host(), &format!("crash/img{n}:1"));
    manifest_bytes += raw.len() as u64;
    stop.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    kill9(child);

    // Every pushed image pulls back whole (skopeo checks the digests).
    let last = dir.path().join("pulled");
    let host = registry.host();
    let reference = format!("crash/img{n}:1");
    let pulled = tokio::task::spawn_blocking(move || pull_back(&host, &reference, &last))
        .await
        .unwrap();
    assert_eq!(pulled, want);
    let integrity = integrity_check(&d.join("state/hoist.db"));
    let received = ecr.bytes_in();
    let once = blob_bytes + manifest_bytes;
    let resent = received.saturating_sub(once);
    let budget = killed * UPLOADS_MAX * CHUNK;
    let secs = started.elapsed().as_secs_f64();
    record(
        "crash_loop_kill_9_at_random_moments",
        &format!("kill -9 of hoistd at {killed} random moments (seed {seed})"),
        "ECR emulation (atomic parts)",
        "every push completes with the uninterrupted push's manifest; tag never early; integrity ok",
        &format!(
            "{pushes_done} pushes, {killed} kills in {secs:.0} s; {:.1} MB sent again ({:.2} MB per kill; budget {:.0} MB per kill); integrity_check: {integrity}",
            resent as f64 / 1e6,
            resent as f64 / 1e6 / killed as f64,
            (UPLOADS_MAX * CHUNK) as f64 / 1e6
        ),
        serde_json::json!({"seed": seed, "kills": killed, "pushes": pushes_done, "received_bytes": received, "once_bytes": once, "resent_bytes": resent, "seconds": secs, "integrity": integrity}),
    );
    assert!(
        !early.load(Ordering::SeqCst),
        "a tag existed before its blobs were verified"
    );
    assert_eq!(integrity, "ok");
    assert!(
        resent <= budget,
        "{resent} bytes sent again over {killed} kills (budget {budget})"
    );
}
