//! Where credentials come from: docker's `config.json` and credential helpers, with the docker
//! CLI's precedence (`credHelpers[host]`, then `credsStore`, then `auths`).
//!
//! Credentials are held in [`Credentials`], whose `Debug` redacts the secret; they are never
//! logged and never put in error messages (only the *source* is named, e.g. the helper).
//!
//! Both read the environment given to them (a job's: the caller's), never this process's:
//! `DOCKER_CONFIG` and `HOME` say where `config.json` is, the environment's `PATH` where a
//! helper is, and a helper runs with exactly that environment (so `AWS_*` and proxies reach
//! `docker-credential-ecr-login`), nothing of the daemon's own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use super::RegistryError;
use super::reference::DOCKER_HUB;
use crate::environ::{Access, CallerEnv, Redactor};

/// Of each of a failed helper's outputs, at most this much is quoted in the error.
const HELPER_ERROR_CHARS_MAX: usize = 500;

/// A username and a secret (password or ECR authorization token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where the credentials for a host come from; named in auth errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Given by the caller (`ClientOptions::credentials`).
    Explicit(Credentials),
    /// `docker-credential-NAME`, from `credHelpers[host]` or `credsStore` of `config`.
    Helper { name: String, config: PathBuf },
    /// The `auths` entry `key` of `config`.
    ConfigEntry { key: String, config: PathBuf },
    /// Nothing configured: anonymous.
    Anonymous,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Explicit(_) => f.write_str("the credentials given to hoist"),
            CredentialSource::Helper { name, config } => {
                write!(
                    f,
                    "credential helper docker-credential-{name} (from {})",
                    config.display()
                )
            }
            CredentialSource::ConfigEntry { key, config } => {
                write!(f, "auths[{key:?}] in {}", config.display())
            }
            CredentialSource::Anonymous => {
                f.write_str("no credentials (none configured in docker's config.json)")
            }
        }
    }
}

/// How credentials are looked up.
#[derive(Debug, Clone)]
pub struct CredentialLookup {
    /// Directory holding `config.json`; default the environment's `$DOCKER_CONFIG`, else
    /// `$HOME/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Searched for `docker-credential-NAME` before the environment's `$PATH` (tests put fake
    /// helpers here).
    pub helper_dirs: Vec<PathBuf>,
    /// How long a helper may run.
    pub helper_timeout: Duration,
}

impl Default for CredentialLookup {
    fn default() -> Self {
        CredentialLookup {
            docker_config_dir: None,
            helper_dirs: Vec::new(),
            helper_timeout: Duration::from_secs(HELPER_TIMEOUT_S_DEFAULT),
        }
    }
}

pub const HELPER_TIMEOUT_S_DEFAULT: u64 = 30;
/// A helper printing more than this is broken.
const HELPER_OUTPUT_BYTES_MAX: usize = 1 << 20;

impl CredentialLookup {
    fn config_path(&self, env: &CallerEnv) -> Option<PathBuf> {
        config_path_from(
            self.docker_config_dir.as_deref(),
            env.get("DOCKER_CONFIG").map(Into::into),
            env.get("HOME").map(Into::into),
        )
    }

    /// Decides where the credentials of `host` come from (reads `config.json`, runs nothing),
    /// with the docker config directory `env` names.
    pub fn source_for(
        &self,
        host: &str,
        env: &CallerEnv,
    ) -> Result<CredentialSource, RegistryError> {
        let Some(path) = self.config_path(env) else {
            return Ok(CredentialSource::Anonymous);
        };
        env.check_access(&path, Access::Read)
            .map_err(|message| RegistryError::Credentials {
                registry: host.into(),
                message,
            })?;
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialSource::Anonymous);
            }
            Err(e) => {
                return Err(RegistryError::Credentials {
                    registry: host.into(),
                    message: format!("cannot read {}: {e}", path.display()),
                });
            }
        };
        let cfg: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| RegistryError::Credentials {
                registry: host.into(),
                message: format!(
                    "{} is not valid JSON: {e}: fix or remove it",
                    path.display()
                ),
            })?;
        let server = server_key(host);
        if let Some(name) = cfg
            .get("credHelpers")
            .and_then(|h| h.get(host).or_else(|| h.get(server.as_str())))
            .and_then(|v| v.as_str())
        {
            return Ok(CredentialSource::Helper {
                name: name.to_string(),
                config: path,
            });
        }
        if let Some(name) = cfg
            .get("credsStore")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
            return Ok(CredentialSource::Helper {
                name: name.to_string(),
                config: path,
            });
        }
        if let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) {
            for (key, _) in auths {
                if normalize_key(key) == normalize_key(&server) || normalize_key(key) == host {
                    return Ok(CredentialSource::ConfigEntry {
                        key: key.clone(),
                        config: path,
                    });
                }
            }
        }
        Ok(CredentialSource::Anonymous)
    }

    /// Fetches the credentials from `source` (runs the helper if it is one, found on `env`'s
    /// `PATH` and run with `env` only).
    pub async fn fetch(
        &self,
        host: &str,
        source: &CredentialSource,
        env: &CallerEnv,
    ) -> Result<Option<Credentials>, RegistryError> {
        match source {
            CredentialSource::Explicit(c) => Ok(Some(c.clone())),
            CredentialSource::Anonymous => Ok(None),
            CredentialSource::ConfigEntry { key, config } => {
                read_auth_entry(host, key, config).map(Some)
            }
            CredentialSource::Helper { name, .. } => self.run_helper(host, name, env).await,
        }
    }

    /// `docker-credential-NAME` in the helper directories, else in the absolute directories
    /// of `env`'s `PATH` (the caller's: the daemon's own `PATH` may not have it).
    fn helper_path(&self, name: &str, env: &CallerEnv) -> Option<PathBuf> {
        let file = format!("docker-credential-{name}");
        let path_dirs: Vec<PathBuf> = env
            .get("PATH")
            .map(|p| {
                std::env::split_paths(p)
                    .filter(|d| d.is_absolute())
                    .collect()
            })
            .unwrap_or_default();
        self.helper_dirs
            .iter()
            .chain(&path_dirs)
            .map(|d| d.join(&file))
            .find(|p| is_executable(p))
    }

    async fn run_helper(
        &self,
        host: &str,
        name: &str,
        env: &CallerEnv,
    ) -> Result<Option<Credentials>, RegistryError> {
        let fail = |message: String| RegistryError::Credentials {
            registry: host.into(),
            message: format!("credential helper docker-credential-{name}: {message}"),
        };
        let program = self.helper_path(name, env).ok_or_else(|| {
            fail("is not on the PATH of the shell that started the push: install it there, or fix credHelpers/credsStore in docker's config.json".into())
        })?;
        env.check_access(&program, Access::Execute).map_err(fail)?;
        // Its own process group: a helper that is a shell script may leave children (an
        // `aws` call) behind; on timeout the whole group is killed, not only the script.
        let mut child = tokio::process::Command::new(program)
            .arg("get")
            .env_clear()
            .envs(env.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run it ({e}): install it or fix credHelpers/credsStore in docker's config.json")))?;
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let server = server_key(host);
        let run = async move {
            // A helper that exits without reading stdin gives EPIPE: not our failure.
            let _ = stdin.write_all(server.as_bytes()).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(self.helper_timeout, run).await {
            Err(_) => {
                // Dropping `run` killed the helper itself (kill_on_drop); its children too:
                if let Some(g) = group {
                    let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
                }
                return Err(fail(format!(
                    "no answer within {} s: killed it; check that it works (run docker-credential-{name} get) and does not wait for input",
                    self.helper_timeout.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(fail(format!("failed: {e}"))),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            let msg = helper_error_text(&out, &env.redactor());
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!("exited with {}: {msg}", out.status)));
        }
        parse_helper_output(&out.stdout)
            .map(Some)
            .map_err(|m| fail(m.into()))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a failed helper said, on one line. Helpers print their errors on stdout
/// (docker-credential-helpers do), but a helper that printed credentials and then failed must
/// not put them in our message: JSON on stdout is never quoted. Its words may also quote the
/// caller's secrets (a script run with `set -x`): they are blanked out before the text is cut
/// to length, so no part of one survives a cut.
fn helper_error_text(out: &std::process::Output, redactor: &Redactor) -> String {
    let said = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = redactor.redact(&text);
        text.chars()
            .take(HELPER_ERROR_CHARS_MAX)
            .collect::<String>()
    };
    let stdout = if serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok() {
        String::new()
    } else {
        said(&out.stdout)
    };
    let msg = [stdout.trim(), said(&out.stderr).trim()]
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    msg.trim().to_string()
}

/// The credentials a helper printed (`{"Username","Secret"}`), or what is wrong with them.
fn parse_helper_output(stdout: &[u8]) -> Result<Credentials, &'static str> {
    if stdout.len() > HELPER_OUTPUT_BYTES_MAX {
        return Err("printed too much");
    }
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|_| "did not print JSON {\"Username\",\"Secret\"}")?;
    let username = v
        .get("Username")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(|u| u.as_str()).unwrap_or_default();
    if secret.is_empty() || username == "<token>" {
        // "<token>" is an OAuth2 identity token, which needs a refresh-token flow we lack.
        return Err("gave no usable username and secret");
    }
    Ok(Credentials {
        username: username.into(),
        secret: secret.into(),
    })
}

/// `config.json`'s path: the explicit directory, else `$DOCKER_CONFIG`, else `~/.docker`.
fn config_path_from(
    explicit: Option<&Path>,
    docker_config: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let dir = match (explicit, docker_config) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(home?).join(".docker"),
    };
    Some(dir.join("config.json"))
}

/// The server URL docker uses as the key for `host`.
fn server_key(host: &str) -> String {
    if host == DOCKER_HUB || host == "index.docker.io" || host == "registry-1.docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// `https://host/v1/` -> `host`, as docker compares `auths` keys.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_string()
}

fn read_auth_entry(host: &str, key: &str, config: &Path) -> Result<Credentials, RegistryError> {
    let fail = |m: &str| RegistryError::Credentials {
        registry: host.into(),
        message: format!("auths[{key:?}] in {}: {m}", config.display()),
    };
    let text = std::fs::read(config).map_err(|e| fail(&e.to_string()))?;
    let cfg: serde_json::Value = serde_json::from_slice(&text).map_err(|_| fail("invalid JSON"))?;
    let entry = cfg
        .get("auths")
        .and_then(|a| a.get(key))
        .ok_or_else(|| fail("entry vanished"))?;
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| fail("`auth` is not base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| fail("`auth` is not UTF-8"))?;
        let (u, p) = raw
            .split_once(':')
            .ok_or_else(|| fail("`auth` is not user:password"))?;
        return Ok(Credentials {
            username: u.into(),
            secret: p.into(),
        });
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|u| u.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(Credentials {
            username: u.into(),
            secret: p.into(),
        }),
        _ => Err(fail(
            "has neither `auth` nor username and password: run docker login again",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(dir: &Path) -> CredentialLookup {
        CredentialLookup {
            docker_config_dir: Some(dir.to_path_buf()),
            helper_dirs: vec![dir.to_path_buf()],
            helper_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn config_location() {
        let p = |e: Option<&str>, d: Option<&str>, h: Option<&str>| {
            config_path_from(e.map(Path::new), d.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            p(Some("/x"), Some("/d"), Some("/h")),
            Some("/x/config.json".into())
        );
        assert_eq!(
            p(None, Some("/d"), Some("/h")),
            Some("/d/config.json".into())
        );
        assert_eq!(
            p(None, Some(""), Some("/h")),
            Some("/h/.docker/config.json".into())
        );
        assert_eq!(
            p(None, None, Some("/h")),
            Some("/h/.docker/config.json".into())
        );
        assert_eq!(p(None, None, None), None);
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials {
            username: "AWS".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", CredentialSource::Explicit(c)).contains("hunter2"));
    }

    #[tokio::test]
    async fn precedence_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("u1:p1");
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({
                "auths": {
                    "https://a.example.com/v1/": {"auth": auth},
                    "b.example.com": {"username": "u2", "password": "p2"},
                    "h.example.com": {"auth": auth},
                },
                "credHelpers": {"h.example.com": "fake"}
            })
            .to_string(),
        )
        .unwrap();
        let l = lookup(dir.path());
        let env = CallerEnv::from_process();
        let s = l.source_for("a.example.com", &env).unwrap();
        assert!(
            matches!(&s, CredentialSource::ConfigEntry { key, .. } if key == "https://a.example.com/v1/")
        );
        let c = l.fetch("a.example.com", &s, &env).await.unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("u1", "p1"));
        let s = l.source_for("b.example.com", &env).unwrap();
        let c = l.fetch("b.example.com", &s, &env).await.unwrap().unwrap();
        assert_eq!(c.secret, "p2");
        assert_eq!(
            l.source_for("c.example.com", &env).unwrap(),
            CredentialSource::Anonymous
        );
        // credHelpers wins over auths.
        let s = l.source_for("h.example.com", &env).unwrap();
        assert!(matches!(&s, CredentialSource::Helper { name, .. } if name == "fake"));
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"AWS\",\"Secret\":\"tok-%s\"}' \"$server\" \"$server\"\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&helper)
            .status()
            .unwrap();
        let c = l.fetch("h.example.com", &s, &env).await.unwrap().unwrap();
        assert_eq!(c.secret, "tok-h.example.com");
        // A failing helper names itself, not the secret.
        std::fs::write(&helper, "#!/bin/sh\necho 'no creds here' >&2\nexit 1\n").unwrap();
        let e = l
            .fetch("h.example.com", &s, &env)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-fake") && e.contains("no creds here"),
            "{e}"
        );
        // A hanging helper is killed after the timeout.
        std::fs::write(&helper, "#!/bin/sh\nsleep 30\n").unwrap();
        let l2 = CredentialLookup {
            helper_timeout: Duration::from_millis(300),
            ..l.clone()
        };
        let e = l2
            .fetch("h.example.com", &s, &env)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no answer"), "{e}");
    }
}
