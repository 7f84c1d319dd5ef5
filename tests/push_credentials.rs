//! Credentials used for a real push never land in hoist's state or logs: the daemon is the
//! real `hoistd` binary, started with an empty environment, the registry requires htpasswd
//! Basic auth, and the credentials come from the CLI's environment: a docker `config.json` (as
//! `docker login` writes it) in the CLI's `DOCKER_CONFIG`, or a credential helper only on the
//! CLI's `PATH` that needs AWS-style secret variables. After the push, every byte the daemon
//! wrote (SQLite database and WAL, spool, its trace-level log) is searched for the secrets in
//! clear and in base64; the helper runs with `set -x`, so its failures quote the caller's AWS
//! secrets, which must be blanked out of everything stored or shown. A daemon restart mid-push
//! loses the secrets: a job goes on without them, and waits for `hoist resume` only when the
//! registry then refuses it.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoist::api::JobState;

use base64::Engine as _;
use hoist_testkit::sample::{SampleSpec, write_oci_layout};
use sha2::Digest as _;

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
    let mut daemon = start_hoistd(dir.path(), &socket, &state, "hoistd.log");
    let target = format!("{}/secret/app:1", reg.host());
    let out = Command::new(daemon_support::hoist_bin())
        .env("DOCKER_CONFIG", &docker_config)
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
    check_no_credential_written(dir.path(), &state, &[SECRET, &auth]);
    for output in [&stdout, &stderr] {
        assert!(!output.contains(SECRET) && !output.contains(&auth));
    }
}

/// The real hoistd with an empty environment (only its log level) and trace logging appended
/// to `dir/log`; returns once its socket exists (or after 10 s).
fn start_hoistd(dir: &Path, socket: &Path, state: &Path, log: &str) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    let _ = std::fs::remove_file(socket);
    let daemon = Command::new(daemon_support::hoistd_bin())
        .env_clear()
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .arg("--allow-root")
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

/// Every file under `state` and the trace log `dir/hoistd.log` hold none of `secrets`.
fn check_no_credential_written(dir: &Path, state: &Path, secrets: &[&str]) {
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
        for needle in secrets.iter().map(|s| s.as_bytes()) {
            assert!(
                !contains(bytes, needle),
                "{path} holds a credential ({})",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

const AWS_SECRET: &str = "aws-Secret-Access-Key-4711-hoist";
const AWS_TOKEN: &str = "aws-Session-Token-0815-hoist";
const HELPER: &str = "hoisttest";

/// The shell a user pushes from, which the daemon does not have: a `DOCKER_CONFIG` whose
/// `credHelpers` send `host` to `docker-credential-hoisttest`, a helper only on this `PATH`
/// that answers with the registry's credentials only when it sees the AWS-style secrets.
/// Returns the shell's variables (the helper's directory first on `PATH`).
fn callers_shell(dir: &Path, host: &str) -> Vec<(String, String)> {
    let docker_config = dir.join("callers-docker");
    let bin = dir.join("callers-bin");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"credHelpers":{{"{host}":"{HELPER}"}}}}"#),
    )
    .unwrap();
    let helper = bin.join(format!("docker-credential-{HELPER}"));
    // Run with `set -x`, as a helper being debugged is: its trace on stderr quotes the AWS
    // variables it reads. It compares digests, so the trace holds no secret the caller did
    // not send.
    let digest = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let (want_key, want_token) = (digest(AWS_SECRET), digest(AWS_TOKEN));
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nset -x\nread server\n\
             key=$(printf %s \"$AWS_SECRET_ACCESS_KEY\" | sha256sum | cut -d' ' -f1)\n\
             token=$(printf %s \"$AWS_SESSION_TOKEN\" | sha256sum | cut -d' ' -f1)\n\
             if [ \"$key\" != '{want_key}' ] || [ \"$token\" != '{want_token}' ]; then\n\
               echo \"no AWS session in the environment (key $AWS_SECRET_ACCESS_KEY)\" >&2; exit 1\nfi\n\
             set +x\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    [
        ("PATH", path),
        ("HOME", dir.join("callers-home").display().to_string()),
        ("DOCKER_CONFIG", docker_config.display().to_string()),
        ("AWS_REGION", "eu-west-1".to_string()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_string()),
        ("AWS_SESSION_TOKEN", AWS_TOKEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `hoist --socket SOCKET ARGS...` run with exactly the environment `env`.
fn hoist_in(env: &[(String, String)], socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(daemon_support::hoist_bin())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The registry's Basic credentials as they may appear in bytes: clear, and base64.
fn every_secret() -> Vec<String> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    [SECRET, AWS_SECRET, AWS_TOKEN, &auth]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

struct EnvPush {
    dir: tempfile::TempDir,
    reg: common::TestRegistry,
    state: PathBuf,
    socket: PathBuf,
    source: String,
    shell: Vec<(String, String)>,
}

impl EnvPush {
    fn new(image_mb: u64) -> EnvPush {
        let reg = common::TestRegistry::start_with(common::RegistryOptions {
            basic_auth: Some((USER.into(), SECRET.into())),
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let spec =
            push_support::image_spec(31, image_mb, hoist_testkit::sample::SampleCompression::None);
        let (_, source) = push_support::write_oci(&dir.path().join("image"), &spec);
        let shell = callers_shell(dir.path(), &reg.host());
        EnvPush {
            state: dir.path().join("state"),
            socket: dir.path().join("run/hoist.sock"),
            dir,
            reg,
            source,
            shell,
        }
    }

    fn hoistd(&self) -> std::process::Child {
        start_hoistd(self.dir.path(), &self.socket, &self.state, "hoistd.log")
    }

    fn target(&self) -> String {
        format!("{}/callers/app:1", self.reg.host())
    }

    fn check_nothing_written(&self) {
        let secrets = every_secret();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        check_no_credential_written(self.dir.path(), &self.state, &secrets);
    }
}

#[test]
fn the_callers_environment_reaches_the_helper_and_its_secrets_stay_in_memory() {
    let t = EnvPush::new(2);
    let mut daemon = t.hoistd();
    let target = t.target();
    let push = |env: &[(String, String)]| {
        hoist_in(
            env,
            &t.socket,
            &["push", "--no-autostart", "--json", &t.source, &target],
        )
    };
    // Without the session token the helper refuses: the daemon's own (empty) environment or
    // a default credential cannot have made the push below work.
    let partial: Vec<_> = t
        .shell
        .iter()
        .filter(|(k, _)| k != "AWS_SESSION_TOKEN")
        .cloned()
        .collect();
    let refused = push(&partial);
    let said = daemon_support::text(&refused.stderr) + &daemon_support::text(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    // The helper's trace quoted the key it was given: blanked out, named.
    assert!(
        said.contains("docker-credential-hoisttest: exited with")
            && said.contains("<AWS_SECRET_ACCESS_KEY redacted>"),
        "{said}"
    );
    let out = push(&t.shell);
    let events = daemon_support::text(&out.stdout);
    assert!(
        out.status.success(),
        "push failed: {}",
        daemon_support::text(&out.stderr)
    );
    let listed = hoist_in(&t.shell, &t.socket, &["ls", "--json"]);
    let listed = daemon_support::text(&listed.stdout);
    let _ = daemon.kill();
    let _ = daemon.wait();
    // The job shows the public variables and the secrets' names, never their values.
    assert!(
        listed.contains("eu-west-1") && listed.contains("AWS_SESSION_TOKEN"),
        "{listed}"
    );
    for secret in every_secret() {
        for (what, text) in [
            ("events", &events),
            ("job list", &listed),
            ("errors", &said),
        ] {
            assert!(!text.contains(&secret), "the {what} hold a secret: {text}");
        }
    }
    t.check_nothing_written();
}

/// `hoist push --detach` from `shell`, slow enough to be killed mid-push; returns once the
/// job has uploaded a first chunk.
async fn push_detached_slowly(
    client: &hoist::cli::client::Client,
    shell: &[(String, String)],
    socket: &Path,
    source: &str,
    target: &str,
) -> hoist::api::JobId {
    let push = [
        "push",
        "--no-autostart",
        "--detach",
        "--bandwidth",
        "256KiB/s",
    ];
    let out = hoist_in(shell, socket, &[&push[..], &[source, target]].concat());
    assert!(
        out.status.success(),
        "{}",
        daemon_support::text(&out.stderr)
    );
    let id: hoist::api::JobId = daemon_support::text(&out.stdout).trim().parse().unwrap();
    push_support::wait_for(client, &id, 30_000, "uploading", |j| {
        j.state == JobState::Uploading && j.blobs.iter().any(|b| b.uploaded_bytes > 0)
    })
    .await;
    id
}

/// After a restart a job goes on with what it has; it waits only once the registry refuses it
/// without the secrets it lost (here the helper, which needs them), naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_waits_for_the_secrets_only_when_refused_without_them() {
    let t = EnvPush::new(4);
    let daemon = t.hoistd();
    let client = hoist::cli::client::Client::new(&t.socket);
    daemon_support::wait_answers(&client, 10).await;
    let target = t.target();
    let id = push_detached_slowly(&client, &t.shell, &t.socket, &t.source, &target).await;
    daemon_support::kill9(daemon);

    let daemon = t.hoistd();
    daemon_support::wait_answers(&client, 10).await;
    let waiting = push_support::wait_for(&client, &id, 10_000, "waiting", |j| {
        j.state == JobState::Paused
    })
    .await;
    let reason = waiting.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("waiting for credentials: ")
            && reason.contains("docker-credential-hoisttest: exited with")
            && reason.contains("AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN")
            && reason.contains(&format!("run hoist resume {id} from a shell")),
        "{reason}"
    );
    client.set_job_bandwidth(&id, None).await.unwrap();
    let resumed = hoist_in(&t.shell, &t.socket, &["resume", id.as_str()]);
    assert!(
        resumed.status.success(),
        "{}",
        daemon_support::text(&resumed.stderr)
    );
    let done = push_support::wait_done(&client, &id).await;
    assert!(done.manifest_digest.is_some());
    daemon_support::kill9(daemon);
    t.check_nothing_written();
}

/// A push from a shell like a real user's (a proxy without a password, `NO_PROXY` covering the
/// registry, an AWS profile, AWS session secrets) to a registry that needs no credentials:
/// `kill -9` of hoistd mid-upload, and the restarted daemon finishes the job by itself,
/// although the secrets went with the first daemon. What it keeps shows the proxy and the
/// profile, and only the secrets' names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_finishes_a_push_from_a_real_shell_with_no_command() {
    let reg = common::TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = push_support::image_spec(33, 4, hoist_testkit::sample::SampleCompression::None);
    let (_, source) = push_support::write_oci(&dir.path().join("image"), &spec);
    let (state, socket) = (dir.path().join("state"), dir.path().join("run/hoist.sock"));
    let shell = common::shell_env();
    let daemon = start_hoistd(dir.path(), &socket, &state, "hoistd.log");
    let client = hoist::cli::client::Client::new(&socket);
    daemon_support::wait_answers(&client, 10).await;
    let target = format!("{}/shell/app:1", reg.host());
    let id = push_detached_slowly(&client, &shell, &socket, &source, &target).await;
    daemon_support::kill9(daemon);

    let daemon = start_hoistd(dir.path(), &socket, &state, "hoistd.log");
    daemon_support::wait_answers(&client, 10).await;
    client.set_job_bandwidth(&id, None).await.unwrap();
    let done = push_support::wait_done(&client, &id).await;
    assert!(done.manifest_digest.is_some(), "{done:?}");
    let kept = done.env.clone().expect("the job keeps its environment");
    let var = |k: &str| kept.vars.get(k).map(String::as_str);
    assert_eq!(var("AWS_PROFILE"), Some("hoist-test"));
    assert_eq!(var("NO_PROXY"), Some("127.0.0.1,localhost,::1,.hoist.test"));
    assert!(var("HTTPS_PROXY").is_some_and(|p| p.starts_with("http://127.0.0.1:")));
    assert_eq!(
        kept.secret_names,
        ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    );
    daemon_support::kill9(daemon);
    let secrets: Vec<String> = shell
        .iter()
        .filter(|(k, v)| hoist::environ::is_secret(k, v))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(secrets.len(), 2);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    check_no_credential_written(dir.path(), &state, &secrets);
    // skopeo fails the test unless the tag resolves.
    common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
}
