//! The network path to a registry as the caller's environment describes it: proxies
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`) and extra CA roots (docker's
//! `certs.d/HOST/*.crt`, `SSL_CERT_FILE`, `SSL_CERT_DIR`). Everything is read from the
//! [`CallerEnv`] a client is given, never from the daemon's own environment: the daemon serves
//! shells with different settings, and under systemd has none of them. What each variable and
//! file means, and in which order: `docs/NETWORK.md`.

use std::path::{Path, PathBuf};

use url::Url;

use super::RegistryError;
use crate::environ::CallerEnv;

/// Docker's system-wide per-registry CA directory: `certs.d/HOST[:PORT]/*.crt`.
pub const SYSTEM_CERTS_D: &str = "/etc/docker/certs.d";
/// The user's per-registry CA directory, under `$HOME`.
pub const USER_CERTS_D: &str = ".docker/certs.d";

/// Proxy variables by scheme they serve, each with its lowercase spelling after it (the
/// uppercase one wins when both are set).
const HTTPS_PROXY_NAMES: &[&str] = &["HTTPS_PROXY", "https_proxy"];
const HTTP_PROXY_NAMES: &[&str] = &["HTTP_PROXY", "http_proxy"];
const ALL_PROXY_NAMES: &[&str] = &["ALL_PROXY", "all_proxy"];
const NO_PROXY_NAMES: &[&str] = &["NO_PROXY", "no_proxy"];

/// Applies the caller's proxies and extra CA roots for `host` to `builder`. The automatic
/// proxy of reqwest (read from the process environment) is turned off first.
pub(crate) fn configure(
    builder: reqwest::ClientBuilder,
    host: &str,
    env: &CallerEnv,
) -> Result<reqwest::ClientBuilder, RegistryError> {
    let mut builder = builder.no_proxy();
    for proxy in proxies(env)? {
        builder = builder.proxy(proxy);
    }
    let roots = extra_roots(host, env)?;
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    Ok(builder)
}

/// The caller's proxies as one reqwest proxy that decides per request URL: the scheme's own
/// variable first (`HTTPS_PROXY` for https, `HTTP_PROXY` for http), then `ALL_PROXY`; none for
/// a host `NO_PROXY` covers or on loopback. Every value is checked here, so a bad one fails
/// the client's creation with its name, not a request later.
fn proxies(env: &CallerEnv) -> Result<Vec<reqwest::Proxy>, RegistryError> {
    let Some(choice) = ProxyChoice::of(env)? else {
        return Ok(Vec::new());
    };
    Ok(vec![reqwest::Proxy::custom(move |url: &Url| {
        choice.proxy_for(url)
    })])
}

/// Which proxy, if any, a request URL goes through.
struct ProxyChoice {
    by_scheme: Vec<(&'static str, Url)>,
    no_proxy: NoProxy,
}

impl ProxyChoice {
    /// `None` when the caller set no proxy.
    fn of(env: &CallerEnv) -> Result<Option<ProxyChoice>, RegistryError> {
        let mut by_scheme: Vec<(&'static str, Url)> = Vec::new();
        let kinds: [(&[&str], &[&'static str]); 3] = [
            (HTTPS_PROXY_NAMES, &["https"]),
            (HTTP_PROXY_NAMES, &["http"]),
            (ALL_PROXY_NAMES, &["https", "http"]),
        ];
        for (names, schemes) in kinds {
            let Some((name, value)) = first_named(env, names) else {
                continue;
            };
            let url = proxy_url(name, value)?;
            for scheme in schemes {
                if !by_scheme.iter().any(|(s, _)| s == scheme) {
                    by_scheme.push((scheme, url.clone()));
                }
            }
        }
        let no_proxy = NoProxy::parse(env.first(NO_PROXY_NAMES).unwrap_or(""));
        Ok((!by_scheme.is_empty()).then_some(ProxyChoice {
            by_scheme,
            no_proxy,
        }))
    }

    fn proxy_for(&self, url: &Url) -> Option<Url> {
        let (_, proxy) = self.by_scheme.iter().find(|(s, _)| *s == url.scheme())?;
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        (!self.no_proxy.covers(host, port)).then(|| proxy.clone())
    }
}

/// `NO_PROXY` as Go's `net/http` and curl read it: comma-separated entries, each `*` (every
/// host), an IP address or CIDR range, or a host name; a name matches itself and its
/// subdomains, `.example.com` and `*.example.com` its subdomains only; an entry with a port
/// (`host:5000`, `[fd00::1]:443`) matches that port only. Case and a trailing dot are
/// ignored. Loopback is always direct: a proxy elsewhere cannot reach this machine's.
#[derive(Debug, Clone, Default)]
struct NoProxy {
    all: bool,
    ips: Vec<(std::net::IpAddr, Option<u16>)>,
    nets: Vec<(std::net::IpAddr, u8)>,
    /// (suffix with its leading dot, whether the bare name matches too, port).
    names: Vec<(String, bool, Option<u16>)>,
}

impl NoProxy {
    fn parse(value: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for entry in value.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                out.all = true;
            } else if let Some(net) = parse_cidr(&entry) {
                out.nets.push(net);
            } else {
                out.add_host(&entry);
            }
        }
        out
    }

    fn add_host(&mut self, entry: &str) {
        let (host, port) = split_port(entry);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return self.ips.push((ip, port));
        }
        let host = host.trim_end_matches('.');
        let (suffix, bare) = match host.strip_prefix("*.").or_else(|| host.strip_prefix('.')) {
            Some(rest) => (format!(".{rest}"), false),
            None => (format!(".{host}"), true),
        };
        if suffix.len() > 1 {
            self.names.push((suffix, bare, port));
        }
    }

    /// Whether a request to `host` on `port` goes direct.
    fn covers(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        if self.all || host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return ip.is_loopback()
                || self.ips.iter().any(|(i, p)| *i == ip && port_ok(p))
                || self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        self.names.iter().any(|(suffix, bare, p)| {
            (host.ends_with(suffix.as_str()) || (*bare && host == suffix[1..])) && port_ok(p)
        })
    }
}

/// `host:port` or `[v6]:port` into host and port; anything else is a host alone (a bare IPv6
/// address has colons but no port).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn parse_cidr(entry: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, bits) = entry.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn in_net(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    let (a, b, width) = match (ip, net) {
        (V4(a), V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (V6(a), V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
}

/// The first of `names` set and not empty, with its name (for messages).
fn first_named<'a>(env: &'a CallerEnv, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    names
        .iter()
        .find_map(|n| env.get(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
}

/// A proxy variable's value as a URL: `HOST:PORT` means `http://HOST:PORT`, as curl and Go
/// read it. Only http and https proxies are supported. The value may carry a password, so
/// messages show it without its user info, or not at all when it does not parse.
fn proxy_url(name: &str, value: &str) -> Result<Url, RegistryError> {
    let full = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&full).map_err(|_| {
        RegistryError::Config(format!(
            "{name} is not a proxy URL: give http://HOST:PORT (or http://USER:PASSWORD@HOST:PORT)"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(RegistryError::Config(format!(
            "{name} ({}) is not supported: give an http:// or https:// proxy",
            super::redact_url(&url)
        )));
    }
    Ok(url)
}

/// The CA certificates the caller adds for `host`, on top of the system's: docker's
/// `certs.d/HOST/*.crt` (system-wide, then the user's), `SSL_CERT_FILE`, every certificate
/// file in the `SSL_CERT_DIR` directories.
fn extra_roots(host: &str, env: &CallerEnv) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let mut files = Vec::new();
    for dir in certs_d_dirs(host, env) {
        files.extend(listed(&dir, |name| name.ends_with(".crt"))?);
    }
    if let Some(file) = env.get("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        files.push(PathBuf::from(file));
    }
    for dir in env.get("SSL_CERT_DIR").unwrap_or("").split(':') {
        if !dir.is_empty() {
            files.extend(listed(Path::new(dir), is_cert_dir_entry)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let mut roots = Vec::new();
    for file in &files {
        roots.extend(load_roots(file)?);
    }
    Ok(roots)
}

/// `/etc/docker/certs.d/HOST` and `$HOME/.docker/certs.d/HOST`, `HOST` as the image
/// reference writes it (with its port, if any).
fn certs_d_dirs(host: &str, env: &CallerEnv) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(SYSTEM_CERTS_D).join(host)];
    if let Some(home) = env.get("HOME").filter(|h| !h.is_empty()) {
        dirs.push(Path::new(home).join(USER_CERTS_D).join(host));
    }
    dirs
}

/// OpenSSL's certificate directory layout: `*.pem`, `*.crt`, and hash links (`1a2b3c4d.0`).
fn is_cert_dir_entry(name: &str) -> bool {
    let hash_link = name.split_once('.').is_some_and(|(h, n)| {
        h.len() == 8
            && h.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    hash_link || name.ends_with(".pem") || name.ends_with(".crt")
}

/// The files of `dir` whose names `keep` accepts, sorted; none when `dir` does not exist.
fn listed(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, RegistryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RegistryError::Config(format!(
                "CA directory {}: {e}: make it readable or remove it",
                dir.display()
            )));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Every PEM certificate of `file`, each checked to be usable as a trust anchor.
fn load_roots(file: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let bad = |why: String| {
        RegistryError::Config(format!(
            "CA file {} {why}: replace it with the PEM certificate of the registry's CA, or remove it",
            file.display()
        ))
    };
    let bytes = std::fs::read(file).map_err(|e| bad(format!("cannot be read ({e})")))?;
    let mut roots = Vec::new();
    for der in CertificateDer::pem_slice_iter(&bytes) {
        let der = der.map_err(|e| bad(format!("is not valid PEM ({e})")))?;
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| bad(format!("holds a certificate that cannot be used ({e})")))?;
        roots.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| bad(format!("holds a bad certificate ({e})")))?,
        );
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> CallerEnv {
        CallerEnv::from_vars(vars.iter().copied())
    }

    #[test]
    fn no_proxy_matches_as_curl_and_go_do() {
        let np = NoProxy::parse(
            " Reg.Example:5000, .corp ,*.internal.example,10.0.0.0/8,[fd00::1]:443,::2,192.0.2.7,",
        );
        let direct = [
            ("reg.example", 5000),
            ("a.reg.example", 5000),
            ("REG.EXAMPLE.", 5000),
            ("x.corp", 443),
            ("a.b.internal.example", 443),
            ("10.1.2.3", 443),
            ("[fd00::1]", 443),
            ("::2", 80),
            ("192.0.2.7", 8443),
            ("localhost", 80),
            ("127.0.0.5", 80),
            ("[::1]", 5000),
        ];
        for (host, port) in direct {
            assert!(np.covers(host, port), "{host}:{port} goes direct");
        }
        let proxied = [
            ("reg.example", 443),
            ("corp", 443),
            ("internal.example", 443),
            ("notcorp", 443),
            ("11.0.0.1", 443),
            ("[fd00::1]", 80),
            ("xreg.example", 5000),
        ];
        for (host, port) in proxied {
            assert!(
                !np.covers(host, port),
                "{host}:{port} goes through the proxy"
            );
        }
        assert!(NoProxy::parse("*").covers("anything.example", 1));
        assert!(!NoProxy::parse("").covers("anything.example", 1));
    }

    #[test]
    fn proxy_values_are_checked_and_never_shown_with_their_password() {
        assert_eq!(
            proxy_url("HTTPS_PROXY", "proxy:3128").unwrap().as_str(),
            "http://proxy:3128/"
        );
        let e = proxy_url("ALL_PROXY", "socks5://u:hunter2@p:1080")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ALL_PROXY") && !e.contains("hunter2"), "{e}");
        let e = proxy_url("HTTPS_PROXY", "http://u:hunter2@[bad")
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTPS_PROXY") && !e.contains("hunter2"), "{e}");
        let choice = ProxyChoice::of(&env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("ALL_PROXY", "http://all:1"),
            ("NO_PROXY", "reg.example:5000"),
        ]))
        .unwrap()
        .unwrap();
        let via = |u: &str| {
            choice
                .proxy_for(&Url::parse(u).unwrap())
                .map(|p| p.to_string())
        };
        assert_eq!(
            via("https://r.example/v2/").as_deref(),
            Some("http://upper:1/")
        );
        assert_eq!(
            via("http://r.example/v2/").as_deref(),
            Some("http://all:1/")
        );
        assert_eq!(via("https://reg.example:5000/v2/"), None);
        assert_eq!(
            via("https://reg.example/v2/").as_deref(),
            Some("http://upper:1/")
        );
        assert_eq!(via("http://127.0.0.1:5000/v2/"), None);
        assert!(proxies(&env(&[("HTTPS_PROXY", "")])).unwrap().is_empty());
    }

    #[test]
    fn cert_dirs_follow_docker_and_openssl_layouts() {
        let dirs = certs_d_dirs("reg.example:5000", &env(&[("HOME", "/home/u")]));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/etc/docker/certs.d/reg.example:5000"),
                PathBuf::from("/home/u/.docker/certs.d/reg.example:5000"),
            ]
        );
        for name in ["1a2b3c4d.0", "ca.pem", "ca.crt"] {
            assert!(is_cert_dir_entry(name), "{name}");
        }
        for name in ["client.key", "README", "1a2b3c4d.r", "ca.cert"] {
            assert!(!is_cert_dir_entry(name), "{name}");
        }
    }

    #[test]
    fn a_bad_ca_file_is_named_in_a_one_line_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = load_roots(&file).unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string()) && !e.contains('\n'),
            "{e}"
        );
        let missing = env(&[("SSL_CERT_FILE", "/nonexistent/ca.pem")]);
        let e = extra_roots("h", &missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
