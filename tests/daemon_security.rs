//! Who may talk to the daemon: the socket is private, peers of another uid are refused, and
//! hoistd runs as root only where the socket admits root alone (or when told to).
use crate::daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use daemon_support::*;
use hoist_testkit::tools::run_ok;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Switching uid needs root and setpriv; CI has both (scripts/install-deps.sh), elsewhere the
/// test says it is skipped.
fn can_switch_uid() -> bool {
    if rustix::process::getuid().is_root() && have("setpriv") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this test as root with setpriv"
    );
    eprintln!("skipped: needs root and setpriv");
    false
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/hoist/hoist.sock");
    let _listener = hoist::daemon::paths::bind_socket(&socket).unwrap();
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    // A live socket is not stolen from a running daemon.
    let err = hoist::daemon::paths::bind_socket(&socket).unwrap_err();
    assert!(err.to_string().contains("already answers"), "{err}");
    // A regular file in the way is not deleted.
    let file = dir.path().join("run/hoist/not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(hoist::daemon::paths::bind_socket(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// `curl --unix-socket` as `uid`, printing `STATUS BODY`.
fn curl_as(uid: Option<u32>, socket: &std::path::Path) -> String {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let out = run_ok(
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            " %{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg("http://hoistd/v1/health"),
        "curl",
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    if !can_switch_uid() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(1, 1)));
    // For this test only: let uid 65534 reach the socket, so the daemon's own check decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    // Our own client, copied where uid 65534 can run it (the target dir may be private).
    let client = dir.path().join("hoist-client");
    std::fs::copy(hoist_bin(), &client).unwrap();
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&client)
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("ls")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "uid 65534 listed jobs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The client checks the socket's owner before it sends a byte (it would send its shell's
    // environment), and names the owner; the daemon's own check answers 403 below.
    assert!(
        err.contains("is served by uid 0 (root), not by you (uid 65534)")
            && err.lines().count() == 1,
        "{err}"
    );

    // The status code, seen with curl where it exists.
    if have("curl") {
        let other = curl_as(Some(65534), &daemon.socket);
        assert!(other.ends_with(" 403"), "uid 65534 got: {other}");
        let same = curl_as(None, &daemon.socket);
        assert!(same.ends_with(" 200"), "the daemon's own uid got: {same}");
    }
    // The daemon's own uid is served.
    let out = Command::new(&client)
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("ls")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
/// hoistd as root in `dir` on `dir/run/s.sock`, without `--allow-root`; `run` is made with `mode`.
fn root_hoistd(dir: &std::path::Path, run_mode: u32) -> Command {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(run_mode)).unwrap();
    let mut cmd = Command::new(hoistd_bin());
    cmd.arg("--socket")
        .arg(run.join("s.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env_remove("HOIST_ALLOW_ROOT");
    cmd
}

/// Root without `--allow-root` is refused where others could reach the socket: its directory
/// writable by others (they could swap the socket); the bound socket is removed again.
#[test]
fn hoistd_refuses_root_on_a_socket_others_could_reach() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = root_hoistd(dir.path(), 0o777).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refuses to run as root on a socket others could reach: its directory")
            && err.contains("mode 777")
            && err.contains("--allow-root"),
        "{err}"
    );
    assert!(!dir.path().join("run/s.sock").exists());
    // With the flag it runs there (the peer-uid check still admits root alone).
    let mut daemon = root_hoistd(dir.path(), 0o777)
        .arg("--allow-root")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answered = wait_listening(&dir.path().join("run/s.sock"));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(answered, "hoistd --allow-root did not listen");
}

/// Root runs without a flag when only root can reach the socket: mode 0600, owned by root, in
/// a root-owned directory nobody else can write (as the default socket is).
#[tokio::test]
async fn root_runs_without_a_flag_on_an_owner_only_socket() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = root_hoistd(dir.path(), 0o755)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = hoist::cli::client::Client::new(dir.path().join("run/s.sock"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(WAIT_MS_MAX);
    let health = loop {
        if let Ok(h) = client.health().await {
            break h;
        }
        if let Some(status) = daemon.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("root hoistd exited ({status}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "root hoistd does not answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(health.pid, daemon.id());
    assert_eq!(mode(&dir.path().join("run/s.sock")), 0o600);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&daemon),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
}

/// Whether a socket at `path` accepts a connection within [`WAIT_MS_MAX`].
fn wait_listening(path: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(WAIT_MS_MAX);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// The uid of `nobody`, and a group no account has: the daemon holds the group, the caller's
/// shell does not (as after `sg`, or before logging in again after joining a group).
const NOBODY: u32 = 65534;
const DAEMON_ONLY_GROUP: u32 = 47110;

/// `setpriv` running `program` as `nobody` with exactly `groups` as supplementary groups.
fn as_nobody(program: &std::path::Path, groups: &[u32]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(program);
    cmd
}

/// hoistd never lends a caller its own access: a daemon of the same uid that holds a group
/// the caller's shell lacks does not read, for that caller, a docker config only that group
/// may read; the job fails saying whose file and what to do. From a shell with the group, the
/// same push succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_opens_for_a_caller_only_what_the_callers_groups_allow() {
    if !can_switch_uid() {
        return;
    }
    use base64::Engine as _;
    let reg = crate::common::TestRegistry::start_with(crate::common::RegistryOptions {
        basic_auth: Some(("grouped".into(), "grouped-Secret-4711".into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, from) in [("hoist", hoist_bin()), ("hoistd", hoistd_bin())] {
        std::fs::copy(from, bin.join(name)).unwrap();
    }
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    // docker's config, readable by the daemon's extra group only.
    let docker = root.join("docker");
    std::fs::create_dir(&docker).unwrap();
    let config = docker.join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("grouped:grouped-Secret-4711");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(0), Some(DAEMON_ONLY_GROUP)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let source = sample_source(root);
    let socket = home.join("hoist.sock");

    let mut daemon = hoistd_as_nobody(&bin.join("hoistd"), &socket, &home.join("state"));
    let push = |groups: &[u32], tag: &str| {
        as_nobody(&bin.join("hoist"), groups)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .env("DOCKER_CONFIG", &docker)
            .arg("--socket")
            .arg(&socket)
            .args(["push", "--no-autostart", &source])
            .arg(format!("{}/grouped/app:{tag}", reg.host()))
            .output()
            .unwrap()
    };
    let refused = push(&[], "1");
    let err = text(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "(uid {NOBODY}, groups {NOBODY}) may not read {}",
            config.display()
        )) && err.contains(&format!("owner 0:{DAEMON_ONLY_GROUP}, mode 640")),
        "{err}"
    );
    let allowed = push(&[DAEMON_ONLY_GROUP], "2");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
}

/// hoistd as `nobody` holding [`DAEMON_ONLY_GROUP`]; returns once its socket exists (or
/// after 10 s).
fn hoistd_as_nobody(
    hoistd: &std::path::Path,
    socket: &std::path::Path,
    state: &std::path::Path,
) -> std::process::Child {
    let daemon = as_nobody(hoistd, &[DAEMON_ONLY_GROUP])
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .env_clear()
        .env("HOIST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon
}
