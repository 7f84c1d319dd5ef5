//! Shared helpers for the daemon tests: an in-process daemon on its own thread and runtime
//! (so a test can kill it abruptly), a scripted job body, and polling helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hoist::api::{self, BlobAction, BlobState, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::job::{JobBody, JobContext, JobError, JobFuture, JobOutput};
use hoist::daemon::{self, Config, paths};
use hoist::digest::Digest;
use hoist::store::{CursorRecord, NewBlob};

/// The `hoist` binary under test.
pub fn hoist_bin() -> PathBuf {
    bin("hoist", env!("CARGO_BIN_EXE_hoist"))
}

/// The `hoist` binary run from a shell like a real user's ([`crate::common::shell_env`] over
/// the test's own environment).
pub fn hoist_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(hoist_bin());
    cmd.envs(crate::common::shell_env());
    cmd
}

/// Runs the `hoist` binary against the daemon on `socket` and waits for it to exit.
pub fn hoist(socket: &Path, args: &[&str]) -> std::process::Output {
    hoist_command()
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hoist")
}

/// Output of a command as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `hoistd` binary under test.
pub fn hoistd_bin() -> PathBuf {
    bin("hoistd", env!("CARGO_BIN_EXE_hoistd"))
}

/// `HOIST_TEST_BIN_DIR` overrides Cargo's path: where several checkouts share one target
/// directory, `target/debug/hoist` is whichever checkout linked last.
fn bin(name: &str, cargo_path: &str) -> PathBuf {
    match std::env::var_os("HOIST_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(cargo_path),
    }
}

/// Writes a small deterministic OCI layout (3 uncompressed layers) under `dir/image` and
/// returns its source reference.
pub fn sample_source(dir: &Path) -> String {
    let image = dir.join("image");
    hoist_testkit::sample::write_oci_layout(&image, &hoist_testkit::sample::SampleSpec::small(1))
        .expect("write the sample image");
    format!("oci:{}", image.display())
}

/// How long a test waits for a job to reach a state.
pub const WAIT_MS_MAX: u64 = 15_000;

/// Bytes per chunk the scripted body "uploads".
pub const CHUNK: u64 = 1024;

/// The manifest digest the scripted body reports.
pub fn manifest_digest() -> Digest {
    Digest::sha256_of(b"scripted manifest")
}

/// The digest the scripted body reports for its compressed layer.
pub fn compressed_digest() -> Digest {
    Digest::sha256_of(b"scripted layer, compressed")
}

pub fn layer_digest() -> Digest {
    Digest::sha256_of(b"scripted layer")
}

/// A job body that "uploads" one blob of `chunks` chunks, one every `chunk_delay_ms`,
/// following the seam's contract (cursor saved after each chunk, stop at chunk boundaries).
/// It records the offset each run started from, which shows whether a run resumed.
#[derive(Clone)]
pub struct Scripted {
    pub chunks: u64,
    pub chunk_delay_ms: u64,
    pub start_offsets: Arc<Mutex<Vec<u64>>>,
    /// When set, the first run fails with this reason; later runs work.
    pub fail_first: Option<String>,
    failed_once: Arc<AtomicBool>,
}

impl Scripted {
    pub fn new(chunks: u64, chunk_delay_ms: u64) -> Scripted {
        Scripted {
            chunks,
            chunk_delay_ms,
            start_offsets: Arc::default(),
            fail_first: None,
            failed_once: Arc::default(),
        }
    }

    pub fn failing_first(mut self, reason: &str) -> Scripted {
        self.fail_first = Some(reason.to_string());
        self
    }

    pub fn starts(&self) -> Vec<u64> {
        self.start_offsets.lock().unwrap().clone()
    }
}

impl JobBody for Scripted {
    fn run(&self, ctx: JobContext) -> JobFuture {
        let me = self.clone();
        Box::pin(async move {
            let digest = layer_digest();
            let size = me.chunks * CHUNK;
            let plan = ctx
                .plan(vec![NewBlob {
                    digest: digest.clone(),
                    size_bytes: size,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    action: BlobAction::Compress,
                }])
                .await?;
            let start = plan[0].cursor.as_ref().map_or(0, |c| c.offset_bytes);
            me.start_offsets.lock().unwrap().push(start);
            if let Some(reason) = &me.fail_first
                && !me.failed_once.swap(true, Ordering::SeqCst)
            {
                return Err(JobError::failed(reason.clone()));
            }
            // Stands for the compressed chunks a real body keeps in the spool.
            std::fs::write(ctx.spool_dir().join("chunks"), b"compressed")
                .map_err(|e| JobError::failed(e.to_string()))?;
            ctx.compress_progress(&digest, me.chunks, size).await?;
            ctx.blob_compressed(&digest, compressed_digest(), size)
                .await?;
            ctx.enter(JobState::Uploading).await?;
            let _slot = ctx.upload_slot().await?;
            let session_url = "http://registry.invalid/v2/x/blobs/uploads/1".to_string();
            if start == 0 {
                ctx.save_cursor(
                    &digest,
                    CursorRecord {
                        session_url: session_url.clone(),
                        offset_bytes: 0,
                    },
                    0,
                )
                .await?;
            }
            let mut offset = start;
            while offset < size {
                if ctx.is_stop_requested() {
                    return Err(JobError::Stopped);
                }
                tokio::time::sleep(Duration::from_millis(me.chunk_delay_ms)).await;
                offset += CHUNK;
                ctx.save_cursor(
                    &digest,
                    CursorRecord {
                        session_url: session_url.clone(),
                        offset_bytes: offset,
                    },
                    CHUNK,
                )
                .await?;
            }
            ctx.blob_state(&digest, BlobState::Uploaded).await?;
            ctx.enter(JobState::Verifying).await?;
            ctx.blob_state(&digest, BlobState::Verified).await?;
            ctx.enter(JobState::Committing).await?;
            ctx.enter(JobState::Verified).await?;
            Ok(JobOutput {
                manifest_digest: manifest_digest(),
            })
        })
    }
}

/// A daemon running `daemon::run` on its own thread and runtime.
pub struct TestDaemon {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl TestDaemon {
    /// Starts a daemon with `body` on `dir/hoist.sock`, state in `dir/state`.
    pub fn start(dir: &Path, body: Arc<dyn JobBody>) -> TestDaemon {
        Self::start_with(
            dir,
            Config {
                job_body: body,
                ..Config::default()
            },
        )
    }

    pub fn start_with(dir: &Path, config: Config) -> TestDaemon {
        let socket = dir.join("hoist.sock");
        let state_dir = dir.join("state");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (s, st) = (socket.clone(), state_dir.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let result = rt.block_on(async move {
                let std_listener = paths::bind_socket(&s).map_err(|e| e.to_string())?;
                std_listener
                    .set_nonblocking(true)
                    .map_err(|e| e.to_string())?;
                let listener =
                    tokio::net::UnixListener::from_std(std_listener).map_err(|e| e.to_string())?;
                let run = tokio::spawn(async move {
                    daemon::run(listener, &st, config, async {
                        let _ = stop_rx.await;
                    })
                    .await
                });
                tokio::select! {
                    r = run => r.map_err(|e| e.to_string())?.map_err(|e| e.to_string()),
                    _ = kill_rx => Err("killed".to_string()),
                }
            });
            // A kill drops every task where it stands, as a SIGKILL would (minus the process).
            // Waiting for the drop closes the listener before the test goes on, as the kernel
            // would at once for a killed process.
            rt.shutdown_timeout(Duration::from_secs(5));
            match result {
                Err(e) if e == "killed" => Ok(()),
                other => other,
            }
        });
        let daemon = TestDaemon {
            socket,
            state_dir,
            stop: Some(stop),
            kill: Some(kill),
            thread: Some(thread),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the test daemon did not listen on {}",
            self.socket.display()
        );
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Graceful stop (what SIGTERM does); returns what `daemon::run` returned.
    pub fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }

    /// Abrupt stop: the runtime is dropped with every task where it stands.
    pub fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls the job until `pred` holds; panics with the last job seen after [`WAIT_MS_MAX`].
pub async fn wait_job(
    client: &Client,
    id: &JobId,
    what: &str,
    pred: impl Fn(&api::Job) -> bool,
) -> api::Job {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    let mut last = None;
    while Instant::now() < deadline {
        match client.job(id).await {
            Ok(job) if pred(&job) => return job,
            Ok(job) => last = Some(job),
            Err(e) => panic!("cannot read job {id}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never became {what}; last seen: {last:?}");
}

pub async fn wait_state(client: &Client, id: &JobId, state: JobState) -> api::Job {
    wait_job(client, id, state.as_str(), |j| j.state == state).await
}

/// Acknowledged bytes of the job's only blob.
pub fn uploaded(job: &api::Job) -> u64 {
    job.blobs.first().map_or(0, |b| b.uploaded_bytes)
}

/// Submits `source` and waits until its job has uploaded `chunks` chunks.
pub async fn submit_uploading(client: &Client, source: &str, chunks: u64) -> JobId {
    let id = client.submit(&submit_request(source)).await.unwrap().id;
    wait_job(client, &id, &format!("{chunks} chunks uploaded"), |j| {
        uploaded(j) >= chunks * CHUNK
    })
    .await;
    id
}

/// Submits `source` and pauses its job once it is uploading.
pub async fn submit_paused(client: &Client, source: &str) -> JobId {
    let id = client.submit(&submit_request(source)).await.unwrap().id;
    wait_state(client, &id, JobState::Uploading).await;
    client.control(&id, "pause").await.unwrap();
    id
}

/// Asserts that each of `lines` is a whole line of `text` (metrics, unit files), quoting
/// `text` under `what` when one is missing.
pub fn assert_lines(text: &str, lines: &[&str], what: &str) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{what} lacks {line:?}:\n{text}"
        );
    }
}

pub fn submit_request(source: &str) -> api::SubmitRequest {
    api::SubmitRequest {
        source: source.into(),
        target: "127.0.0.1:5000/test/image:1".into(),
        platform: None,
        compression: None,
        chunk_size_bytes: None,
        split_layers: None,
        extra_tags: Vec::new(),
        options: api::JobOptions::default(),
        env: Some(crate::common::shell_env_vars()),
    }
}

/// A request whose target is not a valid reference (uppercase repository): the production
/// body plans the source, then fails at once, without touching a network.
pub fn bad_target(source: &str) -> api::SubmitRequest {
    api::SubmitRequest {
        target: "127.0.0.1:1/test/Not-Valid:1".into(),
        ..submit_request(source)
    }
}

/// A command for the `hoistd` binary serving `dir/hoist.sock` with its state in `dir/state`,
/// logging at `log` (`HOIST_LOG`), stdout discarded; the caller adds flags, says where stderr
/// goes, and spawns it.
pub fn hoistd_command(dir: &Path, log: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(hoistd_bin());
    cmd.arg("--socket")
        .arg(dir.join("hoist.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--allow-root")
        .env("HOIST_LOG", log)
        .stdout(std::process::Stdio::null());
    cmd
}

/// Polls the daemon's health every `poll_ms` until it answers; fails after [`WAIT_MS_MAX`].
pub async fn wait_answers(client: &Client, poll_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "hoistd does not answer");
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
    }
}

/// `kill -9` of a spawned `hoistd`, and its exit reaped.
pub fn kill9(mut child: std::process::Child) {
    child.kill().expect("SIGKILL hoistd");
    child.wait().unwrap();
}

/// Spawns the `hoistd` binary serving `dir` (created if missing), logging at `info` to
/// nowhere, and waits until it answers; returns a client of it and the process.
pub async fn spawn_hoistd(dir: &Path) -> (Client, Hoistd) {
    std::fs::create_dir_all(dir).expect("create the daemon's directory");
    let child = hoistd_command(dir, "info")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hoistd");
    let hoistd = Hoistd(Some(child));
    let client = Client::new(dir.join("hoist.sock"));
    wait_answers(&client, 10).await;
    (client, hoistd)
}

/// A spawned `hoistd`, killed with `kill -9` when dropped: a failing test leaves no daemon
/// running.
pub struct Hoistd(Option<std::process::Child>);

impl Hoistd {
    /// `kill -9`, and the exit reaped.
    pub fn kill9(mut self) {
        if let Some(child) = self.0.take() {
            kill9(child);
        }
    }
}

impl Drop for Hoistd {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
