//! `docker-daemon:` against a real engine: Debian's `dockerd` on a private socket (vfs storage,
//! no networking), started once for the whole test. A sample image is `docker load`ed, pushed
//! by a real hoistd (whose environment names the engine) to the real registry and pulled back
//! with skopeo: every layer's uncompressed digest must be one of the engine's diff_ids, in
//! order. A wrong platform fails before anything is exported; an unknown image, a missing
//! socket, a non-unix DOCKER_HOST give their one-line errors.

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
use hoist_testkit::sample::SampleCompression;

use crate::common::{self, TestRegistry};
use crate::daemon_support::{hoistd_command, kill9, wait_answers};
use crate::push_support::{
    image_spec, pull_back, request, wait_for, write_docker_archive, write_oci,
};

/// How long dockerd may take to answer on its socket.
const DOCKERD_START_MS_MAX: u64 = 60_000;

/// A private dockerd; stopped with SIGTERM (it stops its own containerd) when dropped.
struct Dockerd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
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

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> String {
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
    fn load(&self, dir: &Path, seed: u64, platform: Platform, name: &str) {
        let mut spec = image_spec(seed, 4, SampleCompression::None);
        spec.platform = platform;
        let oci = dir.join(format!("oci{seed}"));
        write_oci(&oci, &spec);
        let tar = dir.join(format!("img{seed}.tar"));
        write_docker_archive(&oci, &tar);
        self.docker(&["load", "-i", tar.to_str().unwrap()]);
        self.docker(&["tag", "hoist/test:1", name]);
    }

    fn diff_ids(&self, name: &str) -> Vec<Digest> {
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
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uncompressed digest of each layer of the OCI layout at `dir` (pulled by skopeo).
fn pulled_diff_ids(dir: &Path) -> Vec<Digest> {
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
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let hoistd = hoistd_command(&d, "warn")
        .env("DOCKER_HOST", engine.host())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(d.join("hoist.sock"));
    wait_answers(&client, 20).await;

    // A wrong platform fails before the export: no export event at all.
    let req = request(
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
    let req = request(
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
    kill9(hoistd);
}
