//! Credentials used for a real push never land in hoist's state or logs: the daemon is the
//! real `hoistd` binary, the registry requires htpasswd Basic auth, and the credentials come
//! from a docker `config.json` (as `docker login` writes it). After the push, every byte the
//! daemon wrote (SQLite database and WAL, spool, its trace-level log) is searched for the
//! secret in clear and in base64.
use crate::common;
use crate::daemon_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hoist_testkit::sample::{SampleSpec, write_oci_layout};

const USER: &str = "pusher";
const SECRET: &str = "s3cret-Pa55word-hoist";

fn all_bytes_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_bytes_under(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn credentials_never_reach_the_state_dir_or_the_log() {
    let reg = common::TestRegistry::start_with(common::RegistryOptions {
        basic_auth: Some((USER.into(), SECRET.into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    write_oci_layout(&dir.path().join("image"), &SampleSpec::small(11)).unwrap();

    let state = dir.path().join("state");
    let socket = dir.path().join("run/hoist.sock");
    let mut daemon = start_hoistd(dir.path(), &socket, &state, &docker_config);
    let target = format!("{}/secret/app:1", reg.host());
    let out = Command::new(daemon_support::hoist_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["push", "--no-autostart"])
        .arg(format!("oci:{}", dir.path().join("image").display()))
        .arg(&target)
        .output()
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "push failed: {stderr}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("sha256:")
    );
    check_no_credential_written(dir.path(), &state, &auth);
    for output in [&stdout, &stderr] {
        assert!(!output.contains(SECRET) && !output.contains(&auth));
    }
}

/// The real hoistd with trace logging into `dir/hoistd.log`, credentials from
/// `docker_config`; returns once its socket exists (or after 10 s).
fn start_hoistd(
    dir: &Path,
    socket: &Path,
    state: &Path,
    docker_config: &Path,
) -> std::process::Child {
    let log = std::fs::File::create(dir.join("hoistd.log")).unwrap();
    let daemon = Command::new(daemon_support::hoistd_bin())
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .arg("--allow-root")
        .env("DOCKER_CONFIG", docker_config)
        .env("HOIST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

/// Every file under `state` and the trace log in `dir` hold neither the secret nor its base64
/// form `auth`.
fn check_no_credential_written(dir: &Path, state: &Path, auth: &str) {
    let mut files = Vec::new();
    all_bytes_under(state, &mut files);
    files.push((
        "hoistd.log".into(),
        std::fs::read(dir.join("hoistd.log")).unwrap(),
    ));
    assert!(
        files.iter().any(|(p, _)| p.ends_with("hoist.db")),
        "{files:?}"
    );
    let log = String::from_utf8_lossy(&files.last().unwrap().1).to_string();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on: {log}"
    );
    for (path, bytes) in &files {
        for needle in [SECRET.as_bytes(), auth.as_bytes()] {
            assert!(
                !contains(bytes, needle),
                "{path} holds a credential ({})",
                String::from_utf8_lossy(needle)
            );
        }
    }
}
