//! Service managers: the systemd units verify and boot under a real `systemd --user`, where
//! hoistd starts with the user's manager and resumes unfinished jobs; hoistd serves a socket
//! passed by `systemd-socket-activate` and sends READY=1 to `$NOTIFY_SOCKET` (path and
//! abstract); the launchd agent's plist parses with the keys launchd needs.

use crate::daemon_support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{WAIT_MS_MAX, assert_lines, hoistd_bin, sample_source};
use hoist::api::{self, JobState};
use hoist::cli::client::Client;

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/install-deps.sh (package systemd)"
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    require("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");
    for name in ["hoist.socket", "hoist.service"] {
        let text = std::fs::read_to_string(Path::new(units).join(name)).unwrap();
        // verify checks that ExecStart exists: point it at the binary under test.
        let text = text.replace("%h/.cargo/bin/hoistd", hoistd_bin().to_str().unwrap());
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user", "hoist.socket", "hoist.service"])
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown or malformed directives and only warns: any line is a failure.
    let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains("hoist.")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
    let service = std::fs::read_to_string(Path::new(units).join("hoist.service")).unwrap();
    let lines = [
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "WantedBy=default.target",
    ];
    assert_lines(&service, &lines, "hoist.service");
    // A private /tmp would hide `hoist push /tmp/app.tar` from hoistd.
    assert!(
        !service.lines().any(|l| l.starts_with("PrivateTmp=")),
        "hoist.service must not set PrivateTmp"
    );
    let socket = std::fs::read_to_string(Path::new(units).join("hoist.socket")).unwrap();
    let lines = [
        "ListenStream=%t/hoist/hoist.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
    ];
    assert_lines(&socket, &lines, "hoist.socket");
}

#[tokio::test]
async fn hoistd_serves_a_socket_activated_listener() {
    require("systemd-socket-activate");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("activated.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(hoistd_bin())
        .arg("--allow-root")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        // Proves the passed fd is used: this path is never bound.
        .arg("--socket")
        .arg(dir.path().join("unused.sock"))
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = Client::new(&sock);
    let deadline = Instant::now() + Duration::from_secs(15);
    let health = loop {
        match client.health().await {
            Ok(h) => break h,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no answer on the activated socket: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(health.status, "ok");
    assert!(client.jobs().await.unwrap().is_empty());
    assert!(!dir.path().join("unused.sock").exists());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(health.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("using the socket passed by systemd"), "{log}");
    assert!(status.success(), "{status:?}: {log}");
}

fn expect_ready(notify_socket: &str, receiver: &UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(hoistd_bin())
        .arg("--allow-root")
        .arg("--socket")
        .arg(dir.path().join("h.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", notify_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 256];
    let got = receiver.recv(&mut buf);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    let n = got.expect("hoistd sent nothing to NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"READY=1");
    // The socket is served by the time READY=1 is sent... and shutdown says STOPPING=1.
    let n = receiver.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(status.success());
}

#[test]
fn ready_is_sent_to_a_path_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let receiver = UnixDatagram::bind(&path).unwrap();
    expect_ready(path.to_str().unwrap(), &receiver);
}

#[test]
fn ready_is_sent_to_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("hoist-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let receiver = UnixDatagram::bind_addr(&addr).unwrap();
    expect_ready(&format!("@{name}"), &receiver);
}

/// Directives that make systemd set up a mount namespace for the service. Inside this
/// container systemd cannot (hoistd exits with 226/NAMESPACE before it runs), so the booted
/// copy of hoist.service leaves them out; `units_pass_systemd_analyze_verify` checks them.
const MOUNT_NAMESPACE_DIRECTIVES: &[&str] = &[
    "ProtectSystem=",
    "ReadWritePaths=",
    "PrivateDevices=",
    "ProtectKernelTunables=",
    "ProtectKernelModules=",
    "ProtectKernelLogs=",
    "ProtectControlGroups=",
    "ProtectClock=",
    "ProtectHostname=",
    "RestrictNamespaces=",
];

/// Installs the units under `dir/config/systemd/user` as `systemctl --user enable` would:
/// hoistd under test, its stderr appended to `log`, each unit linked into the `.wants` of
/// the target its `[Install]` section names.
fn install_units(dir: &Path, log: &Path) {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let user = dir.join("config/systemd/user");
    for name in ["hoist.socket", "hoist.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            if MOUNT_NAMESPACE_DIRECTIVES
                .iter()
                .any(|d| line.starts_with(d))
            {
                continue;
            }
            out.push_str(&line.replace("%h/.cargo/bin/hoistd", hoistd_bin().to_str().unwrap()));
            out.push('\n');
            if line == "[Service]" {
                out.push_str(&format!("StandardError=append:{}\n", log.display()));
            }
        }
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join(name), &out).unwrap();
        for target in out.lines().filter_map(|l| l.strip_prefix("WantedBy=")) {
            let wants = user.join(format!("{target}.wants"));
            std::fs::create_dir_all(&wants).unwrap();
            std::os::unix::fs::symlink(user.join(name), wants.join(name)).unwrap();
        }
    }
}

/// Boots a user manager over the units of `dir`: `systemd --user` in its own mount and pid
/// namespace (killing the returned child kills everything it started, like a power cut).
/// systemd runs a user instance only on a machine booted with systemd (`/run/systemd/system`
/// exists); this container's pid 1 is not systemd, so that directory is made on a private
/// tmpfs over /run inside the namespace.
fn boot(dir: &Path) -> std::process::Child {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--pid", "--fork"])
        .args(["--mount-proc", "--kill-child=SIGKILL", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && systemd --user")
        .env("XDG_RUNTIME_DIR", dir.join("rt"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("HOME", dir)
        .env_remove("HOIST_ALLOW_ROOT")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `log` has a line containing `what` after byte `from`, with no connection to
/// hoistd meanwhile; fails with the log after [`WAIT_MS_MAX`].
fn wait_log(log: &Path, from: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.get(from..).is_some_and(|t| t.contains(what)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in hoistd's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reboot: the units boot under a real `systemd --user`; hoistd starts with the manager
/// (`WantedBy=default.target`), not on a connection; a job that waits for its registry is
/// killed with everything else, and on the next boot hoistd resumes it before any command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_boot_under_systemd_user_and_resume_unfinished_jobs() {
    require("systemd");
    let can_unshare = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !can_unshare {
        // A user manager needs its own namespace here (see `boot`), which needs root.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with unshare"
        );
        eprintln!("skipped: unshare cannot create mount and pid namespaces (not root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rt")).unwrap();
    let log = dir.path().join("hoistd.log");
    install_units(dir.path(), &log);

    let mut first = boot(dir.path());
    wait_log(&log, 0, "hoistd ready");
    let client = Client::new(dir.path().join("rt/hoist/hoist.sock"));
    let request = api::SubmitRequest {
        // Port 1 refuses: the job waits for the registry, unfinished.
        target: "127.0.0.1:1/r/a:1".into(),
        ..daemon_support::submit_request(&sample_source(dir.path()))
    };
    let id = client.submit(&request).await.unwrap().id;
    daemon_support::wait_job(&client, &id, "running", |j| {
        matches!(j.state, JobState::Preparing | JobState::Uploading)
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();

    let from = std::fs::metadata(&log).unwrap().len() as usize;
    let mut second = boot(dir.path());
    wait_log(&log, from, "resuming job left unfinished");
    let job = client.job(&id).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let job = job.unwrap();
    assert!(
        !matches!(
            job.state,
            JobState::Failed | JobState::Done | JobState::Cancelled
        ),
        "{job:?}"
    );
}

/// The launchd agent (macOS) parses as a property list (python3's plistlib, as launchd's
/// parser is not here) and has what launchd needs: label, absolute program path, started at
/// load, restarted after a crash, log paths.
#[test]
fn launchd_agent_plist_parses_with_its_keys() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/launchd/dev.hoist.hoistd.plist"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        )
        .arg(path)
        .output()
        .expect("python3 is installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "plistlib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plist: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plist["Label"], "dev.hoist.hoistd");
    let args = plist["ProgramArguments"]
        .as_array()
        .expect("ProgramArguments");
    let program = args[0].as_str().unwrap();
    assert!(
        program.starts_with('/') && program.ends_with("/hoistd"),
        "{program}"
    );
    assert_eq!(plist["RunAtLoad"], true);
    assert_eq!(plist["KeepAlive"]["SuccessfulExit"], false);
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert!(
            plist[key].as_str().is_some_and(|p| p.starts_with('/')),
            "{key}"
        );
    }
    // hoistd must accept the arguments the agent passes.
    let flags: Vec<&str> = args[1..].iter().filter_map(|a| a.as_str()).collect();
    let out = Command::new(hoistd_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in flags.iter().filter(|f| f.starts_with("--")) {
        assert!(help.contains(flag), "hoistd has no {flag}");
    }
}
