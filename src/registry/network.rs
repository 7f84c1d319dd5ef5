//! The network path to a registry as the caller's environment describes it: proxies
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`) and extra CA roots (docker's
//! `certs.d/HOST/*.crt`, `SSL_CERT_FILE`, `SSL_CERT_DIR`). Everything is read from the
//! [`CallerEnv`] a client is given, never from the daemon's own environment: the daemon serves
//! shells with different settings, and under systemd has none of them. What each variable and
//! file means, and in which order: `docs/NETWORK.md`.

use std::path::{Path, PathBuf};

use url::Url;

use super::RegistryError;
use super::reference::host_without_port;
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
/// Always reached directly: a proxy elsewhere cannot reach this machine's loopback.
const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.0/8,::1";

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

/// The proxies in the order reqwest tries them: the scheme's own variable first, then
/// `ALL_PROXY` for any scheme left; each bypassed for `NO_PROXY` and loopback.
fn proxies(env: &CallerEnv) -> Result<Vec<reqwest::Proxy>, RegistryError> {
    let no_proxy = no_proxy_list(env.first(NO_PROXY_NAMES).unwrap_or(""));
    let mut out = Vec::new();
    type Make = fn(Url) -> reqwest::Result<reqwest::Proxy>;
    let kinds: [(&[&str], Make); 3] = [
        (HTTPS_PROXY_NAMES, reqwest::Proxy::https),
        (HTTP_PROXY_NAMES, reqwest::Proxy::http),
        (ALL_PROXY_NAMES, reqwest::Proxy::all),
    ];
    for (names, make) in kinds {
        let Some((name, value)) = first_named(env, names) else {
            continue;
        };
        let url = proxy_url(name, value)?;
        let shown = super::redact_url(&url);
        let proxy = make(url).map_err(|_| {
            RegistryError::Config(format!(
                "{name} ({shown}) is not a usable proxy: give http://HOST:PORT"
            ))
        })?;
        out.push(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
    }
    Ok(out)
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

/// `NO_PROXY` in the form reqwest matches, plus loopback. Entries are comma-separated host
/// names (matching the name and its subdomains; a leading dot is the same), IP addresses,
/// CIDR ranges, or `*`; a port on an entry is dropped, so the entry matches the host on
/// every port (reqwest matches host names only).
fn no_proxy_list(value: &str) -> String {
    let mut entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.parse::<std::net::IpAddr>().is_ok() {
                e
            } else {
                host_without_port(e)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
            }
        })
        .collect();
    entries.push(LOOPBACK_NO_PROXY);
    entries.join(",")
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
    fn no_proxy_entries_lose_their_ports_and_loopback_is_always_direct() {
        assert_eq!(
            no_proxy_list(" reg.example:5000, .corp ,10.0.0.0/8,[fd00::1]:443,::2,"),
            "reg.example,.corp,10.0.0.0/8,fd00::1,::2,localhost,127.0.0.0/8,::1"
        );
        assert_eq!(no_proxy_list(""), LOOPBACK_NO_PROXY);
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
        let p = proxies(&env(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
            ("ALL_PROXY", "http://all:1"),
        ]))
        .unwrap();
        assert_eq!(p.len(), 2);
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
