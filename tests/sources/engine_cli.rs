//! The engine as people name it on the command line, against a private `dockerd` (the harness
//! of `engine.rs`) and a hoistd whose own environment names no engine: a bare image name
//! (`hoist push app:1 ...`) is the engine's image and the output says so, while an existing
//! file of that name wins; and hoist as a Docker CLI plugin, run by Debian's real `docker` CLI
//! (`docker hoist push ...`), reaching the engine that `--host`, `--context` or the current
//! context names.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use hoist::api::{JobId, JobState};
use hoist::platform::Platform;

use super::engine::{Dockerd, hoistd_naming, pulled_diff_ids};
use crate::common::{self, TestRegistry};
use crate::daemon_support::{hoist_command, kill9, text};
use crate::push_support::{PUSH_MS_MAX, pull_back, wait_for};

/// `hoist --socket SOCKET ARGS` in `cwd` from a shell whose `DOCKER_HOST` is `docker_host`.
fn hoist_in(cwd: &Path, socket: &Path, docker_host: &str, args: &[&str]) -> Output {
    hoist_command()
        .current_dir(cwd)
        .env("DOCKER_HOST", docker_host)
        .env_remove("DOCKER_CONTEXT")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn last_line(out: &Output) -> String {
    text(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The image at `reference` pulled back: its digest is `digest` and its layers the engine's.
fn check_pushed(host: &str, reference: &str, digest: &str, engine: &Dockerd, dir: &Path) {
    let pulled = dir.join(format!("pulled-{}", reference.replace(['/', ':'], "-")));
    let got = pull_back(host, reference, &pulled);
    assert_eq!(got.to_string(), digest, "{reference}");
    assert_eq!(pulled_diff_ids(&pulled), engine.diff_ids("app:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_image_name_is_pushed_from_the_engine_unless_a_file_has_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Dockerd::start(&dir.path().join("e"));
    engine.load(dir.path(), 51, Platform::linux_amd64(), "app:1");
    let registry = TestRegistry::start();
    let host = registry.host();
    let (hoistd, client) = hoistd_naming(&dir.path().join("d"), None).await;
    let socket = dir.path().join("d/hoist.sock");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    let target = format!("{host}/bare/app:1");
    let out = hoist_in(
        &cwd,
        &socket,
        &engine.host(),
        &["push", "--no-autostart", "app:1", &target],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "app:1 is not a file: pushing it from the Docker engine (docker-daemon:app:1)"
        ),
        "{err}"
    );
    check_pushed(&host, "bare/app:1", &last_line(&out), &engine, dir.path());

    // A file named like the image is the source: the engine is not asked.
    std::fs::copy(dir.path().join("img51.tar"), cwd.join("app:1")).unwrap();
    let out = hoist_in(
        &cwd,
        &socket,
        "unix:///nonexistent/docker.sock",
        &[
            "push",
            "--no-autostart",
            "--detach",
            "app:1",
            &format!("{host}/bare/file:1"),
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("is not a file"), "{err}");
    let id: JobId = last_line(&out).parse().unwrap();
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(
        job.spec.source.ends_with("/cwd/app:1") && !job.spec.source.contains("docker-daemon"),
        "{}",
        job.spec.source
    );

    // inspect reads files only: the engine's image is named in its error.
    let out = hoist_in(&cwd, &socket, &engine.host(), &["inspect", "app:2"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("docker-daemon:app:2 is an image in a Docker engine"),
        "{err}"
    );
    kill9(hoistd);
}

/// The real `docker` CLI with its configuration in `config`, from a shell like a user's.
fn docker(config: &Path, docker_host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.envs(common::shell_env())
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("HOIST_SOCKET")
        .args(args)
        .stdin(Stdio::null());
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().unwrap()
}

/// `docker [OPTIONS] hoist push app:1 TARGET`: succeeds and prints the manifest digest.
fn docker_hoist_push(
    config: &Path,
    socket: &Path,
    docker_host: Option<&str>,
    options: &[&str],
    target: &str,
) -> String {
    let socket = socket.display().to_string();
    let mut args = options.to_vec();
    args.extend([
        "hoist",
        "--socket",
        &socket,
        "push",
        "--no-autostart",
        "app:1",
        target,
    ]);
    let out = docker(config, docker_host, &args);
    let err = text(&out.stderr);
    assert!(out.status.success(), "docker {args:?}: {err}");
    assert!(err.contains("pushing it from the Docker engine"), "{err}");
    last_line(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hoist_push_uses_the_engine_the_docker_cli_names() {
    common::require_tool("docker");
    let dir = tempfile::tempdir().unwrap();
    let engine = Dockerd::start(&dir.path().join("e"));
    engine.load(dir.path(), 52, Platform::linux_amd64(), "app:1");
    let registry = TestRegistry::start();
    let host = registry.host();
    let (hoistd, _client) = hoistd_naming(&dir.path().join("d"), None).await;
    let socket = dir.path().join("d/hoist.sock");
    let config = dir.path().join("docker-config");

    // Installed as the docker CLI's plugin; a second install finds it there.
    let install = |force: bool| {
        let mut cmd = hoist_command();
        cmd.env("DOCKER_CONFIG", &config)
            .arg("install-docker-plugin");
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let out = install(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = config.join("cli-plugins/docker-hoist");
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(crate::daemon_support::hoist_bin()).unwrap()
    );
    assert!(text(&install(false).stdout).contains("already runs"));

    let help = docker(&config, None, &["help"]);
    let listed = text(&help.stdout);
    assert!(
        listed.contains("hoist*") && listed.contains("Push an image resumably"),
        "{listed}{}",
        text(&help.stderr)
    );

    // --host: the engine, whatever DOCKER_HOST the shell has.
    let bogus = Some("unix:///nonexistent/docker.sock");
    let d1 = docker_hoist_push(
        &config,
        &socket,
        bogus,
        &["--host", &engine.host()],
        &format!("{host}/plugin/app:1"),
    );
    check_pushed(&host, "plugin/app:1", &d1, &engine, dir.path());

    // --context overrides DOCKER_HOST; the current context is used with no option at all.
    let endpoint = format!("host={}", engine.host());
    let out = docker(
        &config,
        None,
        &["context", "create", "eng", "--docker", &endpoint],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d2 = docker_hoist_push(
        &config,
        &socket,
        bogus,
        &["--context", "eng"],
        &format!("{host}/plugin/app:2"),
    );
    assert_eq!(d2, d1, "the same image");
    let out = docker(&config, None, &["context", "use", "eng"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d3 = docker_hoist_push(&config, &socket, None, &[], &format!("{host}/plugin/app:3"));
    assert_eq!(d3, d1, "the same image");
    check_pushed(&host, "plugin/app:3", &d3, &engine, dir.path());

    // What the docker CLI itself runs first.
    let meta = Command::new(&link)
        .arg("docker-cli-plugin-metadata")
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    assert_eq!(meta["SchemaVersion"], "0.1.0");
    assert!(install(true).status.success());
    kill9(hoistd);
}
