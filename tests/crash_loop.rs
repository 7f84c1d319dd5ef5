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
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hoist::api::{BlobState, Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::digest::Digest;
use hoist_testkit::tools::run_ok;
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
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
            .arg(db),
        "python3 for the integrity check",
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the tag watcher shares with the test: the index of the current push, the ids of the
/// pushes so far, whether a tag was seen before its blobs were verified, and when to stop.
#[derive(Default, Clone)]
struct Watch {
    current: Arc<AtomicUsize>,
    early: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    ids: Arc<std::sync::Mutex<Vec<JobId>>>,
}

impl Watch {
    fn current_id(&self) -> (usize, JobId) {
        let n = self.current.load(Ordering::SeqCst);
        (n, self.ids.lock().unwrap()[n].clone())
    }

    fn start_next(&self, n: usize, id: JobId) {
        self.ids.lock().unwrap().push(id);
        self.current.store(n, Ordering::SeqCst);
    }
}

/// Watches the tag of the current push: records it if it exists while a blob of the job is
/// not verified.
fn spawn_tag_watcher(
    socket: std::path::PathBuf,
    addr: std::net::SocketAddr,
    watch: Watch,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = Client::new(&socket);
        while !watch.stop.load(Ordering::SeqCst) {
            let n = watch.current.load(Ordering::SeqCst);
            let id = watch.ids.lock().unwrap().get(n).cloned();
            if let Some(id) = id
                && let Ok(job) = client.job(&id).await
            {
                let unverified = job.blobs.iter().any(|b| b.state != BlobState::Verified);
                let repo = format!("crash/img{n}");
                let exists = tokio::task::spawn_blocking(move || tag_exists(addr, &repo, "1"))
                    .await
                    .unwrap();
                if exists && unverified && job.state != JobState::Done {
                    watch.early.store(true, Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// The pushes that completed and the bytes each had to send once.
#[derive(Default)]
struct Tally {
    pushes_done: u64,
    blob_bytes: u64,
    manifest_bytes: u64,
}

impl Tally {
    /// Push `n` is done: it must have the uninterrupted push's manifest `want`.
    fn done(&mut self, n: usize, job: &hoist::api::Job, want: &Digest, registry_host: &str) {
        assert_eq!(job.manifest_digest.as_ref(), Some(want), "push {n}");
        self.pushes_done += 1;
        self.blob_bytes += job.bytes_total();
        let raw = common::skopeo_raw_manifest(registry_host, &format!("crash/img{n}:1"));
        self.manifest_bytes += raw.len() as u64;
    }
}

/// Where the pushes go and what they must end with.
struct Run<'a> {
    dir: &'a std::path::Path,
    client: &'a Client,
    source: &'a str,
    link_host: String,
    registry_host: String,
    want: Digest,
}

impl Run<'_> {
    async fn submit(&self, n: usize) -> JobId {
        let target = format!("{}/crash/img{n}:1", self.link_host);
        self.client
            .submit(&request(self.source, &target, Compression::Gzip))
            .await
            .unwrap()
            .id
    }

    /// Kills hoistd `kills` times at random moments, restarting it after each kill and starting
    /// the next push whenever the current one is done; returns the last daemon.
    async fn kill_loop(&self, seed: u64, kills: u64, watch: &Watch, tally: &mut Tally) -> Child {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut child = hoistd(self.dir);
        wait_answers(self.client, 5).await;
        watch.start_next(0, self.submit(0).await);
        for _ in 0..kills {
            // A random moment of this daemon's life.
            let life = Duration::from_millis(rng.random_range(100..1200));
            tokio::time::sleep(life).await;
            kill9(child);
            child = hoistd(self.dir);
            wait_answers(self.client, 5).await;
            // Follow the current push; when done, check it and start the next one.
            let (n, id) = watch.current_id();
            let job = self.client.job(&id).await.unwrap();
            assert!(
                !matches!(job.state, JobState::Failed | JobState::Cancelled),
                "push {n} ended {}: {:?}",
                job.state,
                job.reason
            );
            if job.state == JobState::Done {
                tally.done(n, &job, &self.want, &self.registry_host);
                watch.start_next(n + 1, self.submit(n + 1).await);
            }
        }
        child
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_kill_9_at_random_moments() {
    let seed = env_u64("HOIST_CRASH_SEED", 1);
    let kills = env_u64("HOIST_CRASH_KILLS", 20);
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
    let watch = Watch::default();
    let watcher = spawn_tag_watcher(d.join("hoist.sock"), registry.addr, watch.clone());

    let started = Instant::now();
    let run = Run {
        dir: &d,
        client: &client,
        source: &source,
        link_host: link.host(),
        registry_host: registry.host(),
        want: want.clone(),
    };
    let mut tally = Tally::default();
    let child = run.kill_loop(seed, kills, &watch, &mut tally).await;
    // The last push finishes without kills.
    let (n, id) = watch.current_id();
    let job = wait_done(&client, &id).await;
    tally.done(n, &job, &want, &registry.host());
    watch.stop.store(true, Ordering::SeqCst);
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
    let outcome = Outcome {
        seed,
        killed: kills,
        secs: started.elapsed().as_secs_f64(),
        received: ecr.bytes_in(),
        integrity,
    };
    outcome.record_and_check(&tally);
    assert!(
        !watch.early.load(Ordering::SeqCst),
        "a tag existed before its blobs were verified"
    );
}

/// What one run measured.
struct Outcome {
    seed: u64,
    killed: u64,
    secs: f64,
    /// Request-body bytes the ECR emulation received.
    received: u64,
    integrity: String,
}

impl Outcome {
    /// Records the figure, then checks the state's integrity and the bytes sent again against
    /// one part per upload connection per kill.
    fn record_and_check(&self, tally: &Tally) {
        let Outcome {
            seed,
            killed,
            secs,
            received,
            ref integrity,
        } = *self;
        let once = tally.blob_bytes + tally.manifest_bytes;
        let resent = received.saturating_sub(once);
        let budget = killed * UPLOADS_MAX * CHUNK;
        let pushes_done = tally.pushes_done;
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
        assert_eq!(integrity, "ok");
        assert!(
            resent <= budget,
            "{resent} bytes sent again over {killed} kills (budget {budget})"
        );
    }
}
