//! Which Unix socket the engine answers on, chosen as the docker CLI does, from the caller's
//! environment: `DOCKER_HOST`, else the current docker context (`DOCKER_CONTEXT`, else
//! `currentContext` in the docker config directory), else the default socket
//! (`/var/run/docker.sock`; on macOS Docker Desktop's `~/.docker/run/docker.sock` too).

use std::path::{Path, PathBuf};

use super::EngineError;
use crate::digest::Digest;
use crate::environ::CallerEnv;

/// The engine's socket when nothing else names one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Docker Desktop's per-user socket on macOS, under the home directory.
#[cfg(target_os = "macos")]
pub const DESKTOP_SOCKET_UNDER_HOME: &str = ".docker/run/docker.sock";

/// The docker context that means "no context": the default socket (or `DOCKER_HOST`).
const DEFAULT_CONTEXT: &str = "default";

/// A socket and how it was chosen (every error about it says both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub socket: PathBuf,
    /// e.g. `from DOCKER_HOST`, `docker context "colima"`, `the default socket`.
    pub chosen: String,
}

impl Endpoint {
    /// The engine's socket for a caller with environment `env`, refused when that caller could
    /// not connect to it (the daemon may hold a group, such as `docker`, the caller lacks).
    pub fn from_env(env: &CallerEnv) -> Result<Endpoint, EngineError> {
        let endpoint = Self::chosen_for(env)?;
        env.check_access(&endpoint.socket, crate::environ::Access::ReadWrite)
            .map_err(|detail| EngineError::CallerDenied {
                chosen: endpoint.chosen.clone(),
                detail,
            })?;
        Ok(endpoint)
    }

    fn chosen_for(env: &CallerEnv) -> Result<Endpoint, EngineError> {
        if let Some(host) = env.get("DOCKER_HOST").filter(|h| !h.is_empty()) {
            return Ok(Endpoint {
                socket: unix_path("DOCKER_HOST", host)?,
                chosen: "from DOCKER_HOST".into(),
            });
        }
        let config_dir = docker_config_dir(env);
        let context = match env.get("DOCKER_CONTEXT").filter(|c| !c.is_empty()) {
            Some(c) => Some(c.to_string()),
            None => config_dir.as_deref().and_then(current_context),
        };
        if let Some(context) = context.filter(|c| c != DEFAULT_CONTEXT) {
            let Some(dir) = config_dir else {
                return Err(EngineError::Context {
                    context,
                    detail:
                        "neither DOCKER_CONFIG nor HOME is set, so its settings cannot be found"
                            .into(),
                });
            };
            return context_endpoint(&dir, &context);
        }
        Ok(default_endpoint(env))
    }
}

/// The path of a `unix://PATH` address; anything else is refused, naming where it came from.
fn unix_path(variable: &str, value: &str) -> Result<PathBuf, EngineError> {
    match value.strip_prefix("unix://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(EngineError::NotUnix {
            variable: variable.to_string(),
            value: crate::text::detail(value),
        }),
    }
}

/// `$DOCKER_CONFIG`, else `$HOME/.docker`.
fn docker_config_dir(env: &CallerEnv) -> Option<PathBuf> {
    match env.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => env
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".docker")),
    }
}

/// `currentContext` of `config.json` in `dir`; a missing or unreadable file means none.
fn current_context(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get("currentContext")?
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// The docker endpoint of context `name`: `contexts/meta/<sha256 of the name>/meta.json`.
fn context_endpoint(dir: &Path, name: &str) -> Result<Endpoint, EngineError> {
    let hex = Digest::sha256_of(name.as_bytes()).hex().to_string();
    let path = dir.join("contexts/meta").join(hex).join("meta.json");
    let failed = |detail: String| EngineError::Context {
        context: name.to_string(),
        detail,
    };
    let bytes =
        std::fs::read(&path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("{} is not JSON: {e}", path.display())))?;
    let host = json
        .pointer("/Endpoints/docker/Host")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| failed(format!("{} names no docker endpoint", path.display())))?;
    Ok(Endpoint {
        socket: unix_path(&format!("docker context {name:?}'s endpoint"), host)?,
        chosen: format!("docker context {name:?}"),
    })
}

/// The default socket; on macOS, Docker Desktop's own socket when the default one is absent.
fn default_endpoint(env: &CallerEnv) -> Endpoint {
    let default = Endpoint {
        socket: PathBuf::from(DEFAULT_SOCKET),
        chosen: "the default socket: DOCKER_HOST is unset and no docker context is in use".into(),
    };
    #[cfg(target_os = "macos")]
    if !default.socket.exists()
        && let Some(home) = env.get("HOME").filter(|h| !h.is_empty())
    {
        return Endpoint {
            socket: Path::new(home).join(DESKTOP_SOCKET_UNDER_HOME),
            chosen: format!("Docker Desktop's socket: {DEFAULT_SOCKET} is absent"),
        };
    }
    let _ = env;
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> CallerEnv {
        CallerEnv::from_vars(vars.iter().copied())
    }

    #[test]
    fn docker_host_first_and_unix_only() {
        let e = Endpoint::from_env(&env(&[("DOCKER_HOST", "unix:///tmp/d.sock")])).unwrap();
        assert_eq!(e.socket, PathBuf::from("/tmp/d.sock"));
        assert_eq!(e.chosen, "from DOCKER_HOST");
        let err = Endpoint::from_env(&env(&[("DOCKER_HOST", "tcp://1.2.3.4:2375")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DOCKER_HOST=tcp://1.2.3.4:2375: hoist reaches")
        );
    }

    #[test]
    fn context_from_config_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"lab"}"#,
        )
        .unwrap();
        let hex = Digest::sha256_of(b"lab").hex().to_string();
        let meta = dir.path().join("contexts/meta").join(hex);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"lab","Endpoints":{"docker":{"Host":"unix:///run/lab.sock"}}}"#,
        )
        .unwrap();
        let config = dir.path().to_str().unwrap();
        let e = Endpoint::from_env(&env(&[("DOCKER_CONFIG", config)])).unwrap();
        assert_eq!(e.socket, PathBuf::from("/run/lab.sock"));
        assert_eq!(e.chosen, "docker context \"lab\"");
        // DOCKER_CONTEXT wins over the config's current context.
        let e = Endpoint::from_env(&env(&[
            ("DOCKER_CONFIG", config),
            ("DOCKER_CONTEXT", "default"),
        ]))
        .unwrap();
        assert_eq!(e.socket, PathBuf::from(DEFAULT_SOCKET));
        let err = Endpoint::from_env(&env(&[
            ("DOCKER_CONFIG", config),
            ("DOCKER_CONTEXT", "gone"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("docker context \"gone\": cannot read"),
            "{err}"
        );
    }

    #[test]
    fn default_socket_without_settings() {
        let dir = tempfile::tempdir().unwrap();
        let e = Endpoint::from_env(&env(&[("HOME", dir.path().to_str().unwrap())])).unwrap();
        if Path::new(DEFAULT_SOCKET).exists() || !cfg!(target_os = "macos") {
            assert_eq!(e.socket, PathBuf::from(DEFAULT_SOCKET));
        }
    }
}
