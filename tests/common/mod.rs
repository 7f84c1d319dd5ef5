//! Test harness: real parts only. Starts Debian's `docker-registry` (CNCF distribution) on a
//! free loopback port in a temporary directory, and wraps `skopeo` for checking results.
#![allow(dead_code)]

pub mod fault_proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::tools::run_ok;

/// How long a registry may take to answer `/v2/` after it is spawned.
const REGISTRY_START_MS_MAX: u64 = 15_000;

/// Options for a test registry.
#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// `(user, password)`: turn on htpasswd Basic auth (needs `htpasswd` from apache2-utils).
    pub basic_auth: Option<(String, String)>,
    /// Extra top-level YAML appended to the config (e.g. a `auth: token:` section).
    pub extra_yaml: Option<String>,
    /// `(certificate, key)`: serve HTTPS with them (`http.tls`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Listen on this address instead of 127.0.0.1.
    pub ip: Option<std::net::IpAddr>,
}

/// A running `docker-registry serve` on 127.0.0.1. Killed on drop.
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

/// A port that was free a moment ago on 127.0.0.1.
/// The variables of a real user's shell that a job carries, as every test that submits a job
/// sends them (unless it is about the environment itself): a home and a PATH, a corporate
/// proxy for both schemes (a closed loopback port: a request that went to it would fail) with
/// `NO_PROXY` covering the test registries, an AWS profile, and AWS session secrets the test
/// registries do not need. A daemon restart loses the secrets; the job must go on without them.
pub fn shell_env() -> Vec<(String, String)> {
    // A loopback port nothing listens on (bound, then released).
    let proxy = format!("http://127.0.0.1:{}", free_port());
    [
        (
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        ),
        (
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        ("HTTPS_PROXY", proxy.clone()),
        ("http_proxy", proxy),
        ("NO_PROXY", "127.0.0.1,localhost,::1,.hoist.test".into()),
        ("AWS_PROFILE", "hoist-test".into()),
        ("AWS_REGION", "eu-west-1".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "shell-Secret-Access-Key-hoist-7f3a".into(),
        ),
        ("AWS_SESSION_TOKEN", "shell-Session-Token-hoist-91c2".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// [`shell_env`] as a submit request carries it.
pub fn shell_env_vars() -> hoist::api::EnvVars {
    hoist::api::EnvVars(shell_env().into_iter().collect())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run `scripts/install-deps.sh` (the README's test command does)"
    );
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> TestRegistry {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        // Retry on the (rare) race where another process takes the port between probe and bind.
        for _attempt in 0..5 {
            let port = free_port();
            let ip = opts.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
            let addr = SocketAddr::new(ip, port);
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\nhttp:\n  addr: {addr}\n  secret: hoist-test-secret\n",
                storage.display()
            );
            if let Some((cert, key)) = &opts.tls {
                yaml.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            if let Some((user, pass)) = &opts.basic_auth {
                require_tool("htpasswd");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("run htpasswd");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("write htpasswd");
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
                    file.display()
                ));
            }
            if let Some(extra) = &opts.extra_yaml {
                yaml.push_str(extra);
            }
            let config = dir.path().join("config.yml");
            std::fs::write(&config, yaml).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            if wait_ready(&mut child, addr) {
                return TestRegistry { addr, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:PORT`, the registry host as clients name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Kills the registry (as a crash would); `start_again` brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again on the same address, config and storage. Uploads in flight
    /// survive because the config fixes `http.secret`.
    pub fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("log file");
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        assert!(
            wait_ready(&mut self.child, self.addr),
            "docker-registry did not start again: {}",
            self.log()
        );
    }
}

fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_millis(REGISTRY_START_MS_MAX);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        // 400: a TLS registry answering a plain-HTTP request.
        if let Some((status, _)) = http_get(addr, "/v2/")
            && matches!(status, 200 | 401 | 400)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 GET for harness checks: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, buf[body_at..].to_vec()))
}

/// Stops a daemon the tests started: SIGTERM, then SIGKILL when it has not exited after
/// `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `skopeo` with `args`, panicking with its stderr when it fails.
pub fn skopeo(args: &[&str]) -> Output {
    require_tool("skopeo");
    run_ok(
        Command::new("skopeo").args(args),
        &format!("skopeo {args:?}"),
    )
}

/// `skopeo inspect --raw` of `docker://HOST/REPO:TAG` on a plain-HTTP test registry.
pub fn skopeo_raw_manifest(host: &str, reference: &str) -> Vec<u8> {
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/{reference}"),
    ])
    .stdout
}

/// Copies an image from the test registry to a local OCI layout with skopeo, for byte checks.
pub fn skopeo_pull_oci(host: &str, reference: &str, dest: &Path) {
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        &format!("docker://{host}/{reference}"),
        &format!("oci:{}", dest.display()),
    ]);
}

pub mod cut_proxy;
pub mod ecr_proxy;
pub mod figures;
pub mod hostile;
pub mod images;
pub mod modern_engine;
pub mod netcfg;
pub mod serve;
pub mod token_service;

/// Bytes in memory as an upload body, sent the way the daemon sends every PATCH: as a region
/// read by position ([`hoist::registry::ReadAt`]), through `upload_chunk_from`.
pub fn body(bytes: bytes::Bytes) -> hoist::registry::FileRange {
    struct Memory(bytes::Bytes);
    impl hoist::registry::ReadAt for Memory {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
            let rest = self.0.get(pos as usize..).unwrap_or_default();
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            Ok(n)
        }
    }
    let len = bytes.len() as u64;
    hoist::registry::FileRange {
        file: std::sync::Arc::new(Memory(bytes)),
        offset: 0,
        len,
    }
}

/// A test registry behind the ECR emulation (`ecr_proxy`), whose minimum part is
/// `part_min_bytes` (ECR's 5 MiB scaled down, to keep test data small).
pub async fn start_behind_ecr(part_min_bytes: u64) -> (TestRegistry, ecr_proxy::EcrProxy) {
    let reg = TestRegistry::start();
    let proxy = ecr_proxy::EcrProxy::start(reg.addr).await;
    proxy
        .state
        .part_min_bytes
        .store(part_min_bytes, std::sync::atomic::Ordering::SeqCst);
    (reg, proxy)
}

/// Client retries for tests through the ECR emulation: up to 5, backing off from 10 ms to
/// 200 ms, so throttling bursts and lost answers cost milliseconds.
pub fn brisk_retries() -> hoist::registry::RetryPolicy {
    hoist::registry::RetryPolicy {
        retries_max: 5,
        delay_min: Duration::from_millis(10),
        delay_max: Duration::from_millis(200),
    }
}

/// `base` with the static credentials `username` / `secret`.
pub fn with_credentials(
    base: hoist::registry::ClientOptions,
    username: &str,
    secret: &str,
) -> hoist::registry::ClientOptions {
    hoist::registry::ClientOptions {
        credentials: Some(hoist::registry::Credentials {
            username: username.into(),
            secret: secret.into(),
        }),
        ..base
    }
}
