//! systemd integration: the units verify, hoistd serves a socket passed by
//! `systemd-socket-activate`, and it sends READY=1 to `$NOTIFY_SOCKET` (path and abstract).

use crate::daemon_support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{assert_lines, hoistd_bin};
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
        "PrivateTmp=yes",
    ];
    assert_lines(&service, &lines, "hoist.service");
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
