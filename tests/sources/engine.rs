//! `docker-daemon:` against a real engine: Debian's `dockerd` on a private socket (vfs storage,
//! no networking), started once for the whole test. A sample image is `docker load`ed, pushed
//! by a real hoistd (whose environment names the engine) to the real registry and pulled back
//! with skopeo: every layer's uncompressed digest must be one of the engine's diff_ids, in
//! order. A wrong platform fails before anything is exported; an unknown image, a missing
//! socket, a non-unix DOCKER_HOST give their one-line errors. The ELF census taken on the
//! export stream refuses arm64 binaries in an amd64 image; a layer's upload starts while the
//! export goes on, and a hoistd killed then resumes into the same image.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoist::api::{Compression, EventKind, JobState};
use hoist::cli::client::Client;
use hoist::digest::Digest;
use hoist::environ::CallerEnv;
use hoist::platform::Platform;
use hoist::source::engine::{Endpoint, Engine};
use hoist_testkit::sample::{SampleCompression, SampleSpec};

use crate::common::{self, TestRegistry};
use crate::daemon_support::{hoistd_command, kill9, wait_answers};
use crate::push_support::{
    PUSH_MS_MAX, arm64_binaries_spec, image_spec, pull_back, request, tag_exists, wait_for,
    write_docker_archive, write_oci,
};

/// How long dockerd may take to answer on its socket.
const DOCKERD_START_MS_MAX: u64 = 60_000;

/// A private dockerd; stopped with SIGTERM (it stops its own containerd) when dropped.
pub(super) struct Dockerd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Dockerd {
    pub(super) fn start(dir: &Path) -> Dockerd {
        common::require_tool("dockerd");
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--storage-driver=vfs")
            .arg("--iptables=false")
            .arg("--bridge=none")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd {
            child,
            socket,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_millis(DOCKERD_START_MS_MAX);
        while Command::new("docker")
            .args(["-H", &d.host(), "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            assert!(
                Instant::now() < deadline,
                "dockerd does not answer: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub(super) fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    pub(super) fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `docker load`s a sample docker-archive of `platform` as `name`.
    pub(super) fn load(&self, dir: &Path, seed: u64, platform: Platform, name: &str) {
        let mut spec = image_spec(seed, 4, SampleCompression::None);
        spec.platform = platform;
        self.load_spec(dir, &spec, name);
    }

    /// `docker load`s the sample image `spec` (layers uncompressed) as `name`.
    fn load_spec(&self, dir: &Path, spec: &SampleSpec, name: &str) {
        let oci = dir.join(format!("oci{}", spec.seed));
        write_oci(&oci, spec);
        let tar = dir.join(format!("img{}.tar", spec.seed));
        write_docker_archive(&oci, &tar);
        self.docker(&["load", "-i", tar.to_str().unwrap()]);
        self.docker(&["tag", "hoist/test:1", name]);
    }

    pub(super) fn diff_ids(&self, name: &str) -> Vec<Digest> {
        let text = self.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            name,
        ]);
        serde_json::from_str(text.trim()).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        common::terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// The uncompressed digest of each layer of the OCI layout at `dir` (pulled by skopeo).
pub(super) fn pulled_diff_ids(dir: &Path) -> Vec<Digest> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let f = std::fs::File::open(blob(l["digest"].as_str().unwrap())).unwrap();
            let mut bytes = Vec::new();
            flate2::read::MultiGzDecoder::new(f)
                .read_to_end(&mut bytes)
                .unwrap();
            Digest::sha256_of(&bytes)
        })
        .collect()
}

/// Every event of a finished job.
async fn events(client: &Client, id: &hoist::api::JobId) -> Vec<EventKind> {
    let mut stream = client.events(id, 0, false).await.unwrap();
    let mut out = Vec::new();
    while let Some(e) = stream.next().await {
        out.push(e.unwrap().kind);
    }
    out
}

async fn engine_error(endpoint: Endpoint, image: &str) -> String {
    let result = match Engine::connect(endpoint).await {
        Ok(engine) => engine
            .inspect(image, &Platform::linux_amd64())
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    let msg = result.expect_err("an error").to_string();
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

/// The errors a user meets, in one line each.
async fn engine_errors(engine: &Dockerd, dir: &Path) {
    let endpoint =
        Endpoint::from_env(&CallerEnv::from_vars([("DOCKER_HOST", engine.host())])).unwrap();
    let msg = engine_error(endpoint.clone(), "nosuch:1").await;
    assert!(msg.contains("has no image \"nosuch:1\""), "{msg}");
    let gone = Endpoint::from_env(&CallerEnv::from_vars([(
        "DOCKER_HOST",
        format!("unix://{}/none.sock", dir.display()),
    )]))
    .unwrap();
    let msg = engine_error(gone, "app:amd64").await;
    assert!(
        msg.starts_with("no Docker engine at ") && msg.contains("(from DOCKER_HOST)"),
        "{msg}"
    );
    let tcp = Endpoint::from_env(&CallerEnv::from_vars([(
        "DOCKER_HOST",
        "tcp://127.0.0.1:2375",
    )]));
    assert!(
        tcp.unwrap_err()
            .to_string()
            .contains("over a Unix socket only")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_a_real_engine_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Dockerd::start(&dir.path().join("e"));
    engine.load(dir.path(), 41, Platform::linux_amd64(), "app:amd64");
    engine.load(dir.path(), 42, "linux/arm64".parse().unwrap(), "app:arm64");

    engine_errors(&engine, dir.path()).await;

    // hoistd reads the engine's socket from its environment.
    let registry = TestRegistry::start();
    let host = registry.host();
    let (hoistd, client) = engine_hoistd(&engine, &dir.path().join("d")).await;

    // A wrong platform fails before the export: no export event at all.
    let req = engine_request(
        &engine,
        "docker-daemon:app:arm64",
        &format!("{host}/engine/app:arm"),
        Compression::Gzip,
    );
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, 30_000, "failed", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.clone().unwrap_or_default();
    assert!(
        reason
            .contains("image is linux/arm64, not linux/amd64: rebuild with --platform linux/amd64"),
        "{reason}"
    );
    let kinds = events(&client, &id).await;
    assert!(
        !kinds.iter().any(|e| matches!(e, EventKind::Export { .. })),
        "{kinds:?}"
    );

    // The push: every pulled layer is the engine's layer.
    let req = engine_request(
        &engine,
        "docker-daemon:app:amd64",
        &format!("{host}/engine/app:1"),
        Compression::Gzip,
    );
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, 60_000, "finished", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let pulled = dir.path().join("pulled");
    let digest = pull_back(&host, "engine/app:1", &pulled);
    assert_eq!(Some(digest), job.manifest_digest);
    assert_eq!(pulled_diff_ids(&pulled), engine.diff_ids("app:amd64"));
    let kinds = events(&client, &id).await;
    let exported = |e: &EventKind| matches!(e, EventKind::Export { layers_done: 3, .. });
    assert!(kinds.iter().any(exported), "{kinds:?}");
    let past_total = |e: &EventKind| matches!(e, EventKind::Export { bytes_done, size_bytes, .. } if bytes_done > size_bytes);
    assert!(!kinds.iter().any(past_total), "{kinds:?}");
    kill9(hoistd);
}

/// A push request from a shell whose `DOCKER_HOST` names `engine`.
fn engine_request(
    engine: &Dockerd,
    source: &str,
    target: &str,
    compression: Compression,
) -> hoist::api::SubmitRequest {
    crate::push_support::with_vars(
        request(source, target, compression),
        &[("DOCKER_HOST", &engine.host())],
    )
}

/// A hoistd in `dir` whose environment names `engine`, and its client once it answers.
async fn engine_hoistd(engine: &Dockerd, dir: &Path) -> (Child, Client) {
    hoistd_naming(dir, Some(&engine.host())).await
}

/// A hoistd in `dir` whose own environment has `DOCKER_HOST=docker_host`, or names no engine
/// at all with `None`, and its client once it answers.
pub(super) async fn hoistd_naming(dir: &Path, docker_host: Option<&str>) -> (Child, Client) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = hoistd_command(dir, "warn");
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_CONFIG"),
    };
    let hoistd = cmd.stderr(Stdio::null()).spawn().unwrap();
    let client = Client::new(dir.join("hoist.sock"));
    wait_answers(&client, 20).await;
    (hoistd, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_census_on_the_stream_refuses_arm64_binaries_before_the_commit_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Dockerd::start(&dir.path().join("e"));
    // Declared linux/amd64; its second layer holds arm64 executables only.
    let spec = arm64_binaries_spec(45, SampleCompression::None);
    engine.load_spec(dir.path(), &spec, "armbins:1");
    let registry = TestRegistry::start();
    let host = registry.host();
    let (hoistd, client) = engine_hoistd(&engine, &dir.path().join("d")).await;

    let target = format!("{host}/census/img:1");
    let req = engine_request(
        &engine,
        "docker-daemon:armbins:1",
        &target,
        Compression::Gzip,
    );
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("12 of 12 ELF files in layer 2 are aarch64")
            && reason.contains("--allow-arch-mismatch"),
        "{reason}"
    );
    assert!(!tag_exists(registry.addr, "census/img", "1"));

    let mut req = engine_request(
        &engine,
        "docker-daemon:armbins:1",
        &target,
        Compression::Gzip,
    );
    req.options.allow_arch_mismatch = true;
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(tag_exists(registry.addr, "census/img", "1"));
    kill9(hoistd);
}

/// Index of the export event that reports every layer compressed.
fn export_end(kinds: &[EventKind]) -> usize {
    kinds
        .iter()
        .position(|e| {
            matches!(e, EventKind::Export { layers_done, layers_total, .. } if layers_done == layers_total)
        })
        .unwrap_or_else(|| panic!("no export event with every layer: {kinds:?}"))
}

/// Follows the job's events until a layer's upload has moved bytes (a `progress` event).
async fn wait_upload_moved(client: &Client, id: &hoist::api::JobId) -> Vec<EventKind> {
    let mut stream = client.events(id, 0, true).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = stream.next().await {
        let kind = e.unwrap().kind;
        let moved = matches!(kind, EventKind::Progress { .. });
        seen.push(kind);
        if moved {
            return seen;
        }
    }
    panic!("the job ended before any upload moved: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_uploads_start_while_the_export_goes_on_and_a_kill_then_resumes_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Dockerd::start(&dir.path().join("e"));
    // Two 24 MiB layers: whichever the export streams first is uploaded while the other is
    // compressed.
    engine.load_spec(
        dir.path(),
        &image_spec(46, 48, SampleCompression::None),
        "big:1",
    );
    let registry = TestRegistry::start();
    let host = registry.host();
    let d = dir.path().join("d");
    let (hoistd, client) = engine_hoistd(&engine, &d).await;

    let req = engine_request(
        &engine,
        "docker-daemon:big:1",
        &format!("{host}/pipe/a:1"),
        Compression::Gzip,
    );
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let kinds = events(&client, &id).await;
    let end = export_end(&kinds);
    let uploading = |e: &EventKind| {
        matches!(
            e,
            EventKind::State {
                state: JobState::Uploading,
                ..
            }
        )
    };
    let moved = |e: &EventKind| matches!(e, EventKind::Progress { .. });
    assert!(
        kinds[..end].iter().any(uploading) && kinds[..end].iter().any(moved),
        "no upload before the export's end: {kinds:?}"
    );
    let blobs = kinds.iter().filter(|e| matches!(e, EventKind::Blob { .. }));
    assert_eq!(blobs.count(), 4, "every blob announced once: {kinds:?}");

    // Killed once an upload moved (the export may still run), restarted: the same image. A
    // registry of its own, which has none of the blobs.
    let registry = TestRegistry::start();
    let host = registry.host();
    let req = engine_request(
        &engine,
        "docker-daemon:big:1",
        &format!("{host}/pipe/b:1"),
        Compression::Gzip,
    );
    let id2 = client.submit(&req).await.unwrap().id;
    let before = wait_upload_moved(&client, &id2).await;
    kill9(hoistd);
    eprintln!(
        "killed with the export {}",
        if before.iter().any(|e| matches!(e, EventKind::Export { layers_done, layers_total, .. } if layers_done == layers_total)) {
            "ended"
        } else {
            "still running"
        }
    );
    let (hoistd, client) = engine_hoistd(&engine, &d).await;
    let again = wait_for(&client, &id2, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(again.state, JobState::Done, "{again:?}");
    assert_eq!(again.manifest_digest, job.manifest_digest);
    let pulled = dir.path().join("pulled");
    pull_back(&host, "pipe/b:1", &pulled);
    assert_eq!(pulled_diff_ids(&pulled), engine.diff_ids("big:1"));
    kill9(hoistd);
}
