//! The network a laptop meets: a private CA (made with `openssl`) and a real HTTP proxy
//! (Debian's `squid`) that alone resolves the registry's name.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testkit::tools::run_ok;

/// A name only the test proxy resolves (`.test` is reserved, so no resolver knows it).
pub const PROXIED_NAME: &str = "registry.hoist.test";
/// How long squid may take to accept connections after it is spawned.
const PROXY_START_MS_MAX: u64 = 20_000;

/// A test CA and a server certificate it signed for some names: `ca.crt`, `server.crt`,
/// `server.key` in `dir`.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, names: &[&str]) -> TestCa {
        super::require_tool("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            run_ok(
                Command::new("openssl").current_dir(dir).args(args),
                "openssl",
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509", "-subj", "/CN=hoist-test-ca", "-days", "2"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
        );
        let sans: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        std::fs::write(
            dir.join("san.ext"),
            format!("subjectAltName={}\n", sans.join(",")),
        )
        .unwrap();
        openssl(
            &[
                &["req", "-subj", "/CN=hoist-test-server"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        TestCa {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The registry's `http.tls` lines for this server certificate.
    pub fn registry_tls(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.crt"), self.dir.join("server.key"))
    }

    /// Puts the CA where docker looks for `host`'s: `HOME/.docker/certs.d/HOST/ca.crt`.
    pub fn install_for(&self, home: &Path, host: &str) {
        let dir = home.join(".docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.ca(), dir.join("ca.crt")).unwrap();
    }
}

/// This machine's name and an address it resolves to by the system's resolver: a name that
/// reaches this machine without being loopback by name.
pub fn own_name() -> (String, IpAddr) {
    let name = String::from_utf8(run_ok(&mut Command::new("hostname"), "hostname").stdout)
        .unwrap()
        .trim()
        .to_string();
    let ip = (name.as_str(), 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("this machine's name {name:?} does not resolve: {e}"))
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .unwrap_or_else(|| panic!("this machine's name {name:?} has no IPv4 address"));
    (name, ip)
}

/// A running `squid` on a free loopback port, with its config, logs and pid file in its own
/// directory, resolving [`PROXIED_NAME`] to 127.0.0.1 from its `hosts_file`. Killed on drop.
pub struct Squid {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Squid {
    pub fn start() -> Squid {
        let bin = squid_bin();
        let dir = tempfile::tempdir().unwrap();
        // squid started by root drops to its own user: it must be able to write here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("hosts"),
            format!("127.0.0.1 {PROXIED_NAME}\n"),
        )
        .unwrap();
        for _attempt in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
            let config = dir.path().join("squid.conf");
            std::fs::write(&config, squid_config(dir.path(), addr)).unwrap();
            let log = std::fs::File::create(dir.path().join("squid.out")).unwrap();
            let mut child = Command::new(&bin)
                .args(["-N", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn squid");
            if wait_listening(&mut child, addr) {
                return Squid { addr, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "squid did not start: {}{}",
            std::fs::read_to_string(dir.path().join("squid.out")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("cache.log")).unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:PORT`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access log's requests as `(method, URL)`. squid writes a CONNECT tunnel's line when
    /// the tunnel closes: close the client's connections first. Connections that sent no
    /// request (method `-`, such as the readiness probe's) are left out.
    pub fn requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.get(5)?.to_string(), f.get(6)?.to_string()))
            })
            .filter(|(method, _)| method != "-")
            .collect()
    }

    /// Waits up to `ms` for the access log to hold at least `n` lines.
    pub fn wait_requests(&self, n: usize, ms: u64) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// squid lives in /usr/sbin, which a user's PATH may lack.
fn squid_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/squid");
    if sbin.exists() {
        return sbin.to_path_buf();
    }
    super::require_tool("squid");
    PathBuf::from("squid")
}

fn squid_config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "http_port {addr}\n\
         pid_filename {d}/squid.pid\n\
         access_log stdio:{d}/access.log\n\
         cache_log {d}/cache.log\n\
         cache_store_log none\n\
         logfile_rotate 0\n\
         coredump_dir {d}\n\
         netdb_filename none\n\
         pinger_enable off\n\
         cache deny all\n\
         cache_mem 8 MB\n\
         hosts_file {d}/hosts\n\
         dns_nameservers 127.0.0.1\n\
         shutdown_lifetime 0 seconds\n\
         acl localnet src 127.0.0.0/8\n\
         http_access allow localnet\n\
         http_access deny all\n"
    )
}

fn wait_listening(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_millis(PROXY_START_MS_MAX);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
