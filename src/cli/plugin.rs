//! hoist as a Docker CLI plugin: `docker hoist push app:1 REGISTRY/app:1`.
//!
//! The docker CLI finds `docker-hoist` in its `cli-plugins` directory (a symlink to this
//! binary: `hoist install-docker-plugin`), asks it `docker-hoist docker-cli-plugin-metadata`
//! for a JSON description, and runs a command as `docker-hoist [DOCKER GLOBAL OPTIONS] hoist
//! ARGS...`: every argument the user gave docker, its own global options first. The engine a
//! plugin must use is the one those options and the environment name (`--host`, `--context`,
//! `--config`, else `DOCKER_HOST`, `DOCKER_CONTEXT`, the config's current context): the
//! options become the variables of the caller's environment that a job carries, so the
//! daemon reaches the engine the docker CLI would.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::environ::CallerEnv;

/// The plugin's name: the docker subcommand, and the binary's `docker-NAME`.
pub const PLUGIN_NAME: &str = "hoist";
/// The file name the docker CLI looks for.
pub const PLUGIN_FILE: &str = "docker-hoist";
/// How the docker CLI asks a plugin to describe itself.
pub const METADATA_COMMAND: &str = "docker-cli-plugin-metadata";
/// The version of the metadata's schema, the only one the docker CLI accepts.
const SCHEMA_VERSION: &str = "0.1.0";

/// Docker's global options that take a value (`--host X`, `-H X`, `--host=X`, `-HX`).
const VALUED: [&str; 10] = [
    "--config",
    "--context",
    "-c",
    "--host",
    "-H",
    "--log-level",
    "-l",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// How the binary was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `docker-hoist docker-cli-plugin-metadata`: print [`metadata`].
    Metadata,
    /// A hoist command line (`argv[0]` first), with what docker's options said of the engine.
    Hoist {
        args: Vec<OsString>,
        docker: DockerOptions,
    },
}

/// What docker's global options given before `hoist` say of the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerOptions {
    host: Option<String>,
    context: Option<String>,
    config: Option<PathBuf>,
}

impl DockerOptions {
    /// `env` as the docker CLI sees it with these options: `--host` is `DOCKER_HOST`;
    /// `--context` names the context and overrides `DOCKER_HOST` (but `default` keeps it, as
    /// docker does); `--config` is `DOCKER_CONFIG`, made absolute for the daemon.
    pub fn apply(&self, mut env: CallerEnv) -> CallerEnv {
        if let Some(config) = &self.config {
            let absolute = std::path::absolute(config).unwrap_or_else(|_| config.clone());
            env = env.with_var("DOCKER_CONFIG", Some(&absolute.to_string_lossy()));
        }
        if let Some(context) = &self.context {
            if context != "default" {
                env = env.with_var("DOCKER_HOST", None);
            }
            env = env.with_var("DOCKER_CONTEXT", Some(context));
        }
        if let Some(host) = &self.host {
            env = env.with_var("DOCKER_HOST", Some(host));
        }
        env
    }
}

/// Reads how the binary was invoked: as the plugin (named `docker-hoist`, or asked for its
/// metadata) or as `hoist`.
pub fn invocation(args: Vec<OsString>) -> Result<Invocation, String> {
    if args.get(1).map(OsString::as_os_str) == Some(OsStr::new(METADATA_COMMAND)) {
        return Ok(Invocation::Metadata);
    }
    let as_plugin = args
        .first()
        .and_then(|a| Path::new(a).file_stem())
        .is_some_and(|n| n == PLUGIN_FILE);
    if !as_plugin {
        return Ok(Invocation::Hoist {
            args,
            docker: DockerOptions::default(),
        });
    }
    let (docker, rest) = docker_options(args.get(1..).unwrap_or_default())?;
    match rest.split_first() {
        Some((name, hoist_args)) if name == PLUGIN_NAME => {
            let mut args = vec![OsString::from(PLUGIN_NAME)];
            args.extend(hoist_args.iter().cloned());
            Ok(Invocation::Hoist { args, docker })
        }
        // Run by hand as `docker-hoist push ...`: a hoist command line.
        _ => Ok(Invocation::Hoist {
            args,
            docker: DockerOptions::default(),
        }),
    }
}

/// Docker's global options at the front of `args`, and what follows them.
fn docker_options(args: &[OsString]) -> Result<(DockerOptions, &[OsString]), String> {
    let mut o = DockerOptions::default();
    let mut i = 0;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let (name, inline) = split_option(arg);
        let value = match (VALUED.contains(&name), inline) {
            (true, Some(v)) => Some(v.to_string()),
            (true, None) => {
                i += 1;
                let v = args.get(i).and_then(|a| a.to_str());
                Some(
                    v.ok_or(format!("docker option {name} needs a value"))?
                        .to_string(),
                )
            }
            (false, _) => None,
        };
        match (name, value) {
            ("--host" | "-H", Some(v)) => o.host = Some(v),
            ("--context" | "-c", Some(v)) => o.context = Some(v),
            ("--config", Some(v)) => o.config = Some(PathBuf::from(v)),
            // Logging and TLS options: hoist reaches the engine over a Unix socket only.
            _ => {}
        }
        i += 1;
    }
    if o.host.is_some() && o.context.is_some() {
        return Err(
            "conflicting docker options: either specify --host or --context, not both".into(),
        );
    }
    Ok((o, args.get(i..).unwrap_or_default()))
}

/// `--name=value` and `-Xvalue` / `-X=value` split into name and value.
fn split_option(arg: &str) -> (&str, Option<&str>) {
    if arg.starts_with("--") {
        return match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
    }
    match (arg.get(..2), arg.get(2..)) {
        (Some(n), Some(v)) if !v.is_empty() => (n, Some(v.strip_prefix('=').unwrap_or(v))),
        _ => (arg, None),
    }
}

/// The JSON object the docker CLI reads from `docker-hoist docker-cli-plugin-metadata`.
pub fn metadata() -> serde_json::Value {
    serde_json::json!({
        "SchemaVersion": SCHEMA_VERSION,
        "Vendor": "hoist",
        "Version": env!("CARGO_PKG_VERSION"),
        "ShortDescription": "Push an image resumably to ECR or another OCI registry",
    })
}

/// The directory the docker CLI reads plugins from for this user: `$DOCKER_CONFIG/cli-plugins`,
/// else `~/.docker/cli-plugins`.
fn plugins_dir(env: &CallerEnv) -> anyhow::Result<PathBuf> {
    let config = match (env.get("DOCKER_CONFIG"), env.get("HOME")) {
        (Some(c), _) if !c.is_empty() => PathBuf::from(c),
        (_, Some(home)) if !home.is_empty() => Path::new(home).join(".docker"),
        _ => anyhow::bail!(
            "neither DOCKER_CONFIG nor HOME is set: give the docker CLI's plugin directory with --dir"
        ),
    };
    Ok(config.join("cli-plugins"))
}

/// `hoist install-docker-plugin`: `DIR/docker-hoist`, a symlink to this binary (an upgrade
/// of hoist upgrades the plugin). An existing file of that name is replaced only with `force`.
pub fn install(dir: Option<PathBuf>, force: bool, env: &CallerEnv) -> anyhow::Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => plugins_dir(env)?,
    };
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the hoist binary to install")?;
    let link = dir.join(PLUGIN_FILE);
    match std::fs::read_link(&link) {
        Ok(target) if target == exe => {
            println!("{} already runs {}", link.display(), exe.display());
            return Ok(());
        }
        Ok(_) if force => std::fs::remove_file(&link)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) if force && link.is_file() => std::fs::remove_file(&link)?,
        _ => anyhow::bail!(
            "{} exists and is not a link to this hoist ({}): remove it, or install with --force",
            link.display(),
            exe.display()
        ),
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the plugin directory {}", dir.display()))?;
    std::os::unix::fs::symlink(&exe, &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    println!(
        "installed {} -> {}: `docker hoist push IMAGE REGISTRY/REPOSITORY:TAG` pushes from the docker CLI's engine",
        link.display(),
        exe.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn hoist(args: &[&str]) -> (Vec<OsString>, DockerOptions) {
        match invocation(os(args)) {
            Ok(Invocation::Hoist { args, docker }) => (args, docker),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn metadata_is_asked_by_its_argument() {
        for argv0 in ["/home/me/.docker/cli-plugins/docker-hoist", "hoist"] {
            assert_eq!(
                invocation(os(&[argv0, METADATA_COMMAND])),
                Ok(Invocation::Metadata)
            );
        }
        let m = metadata();
        assert_eq!(m["SchemaVersion"], "0.1.0");
        assert!(m["Vendor"].is_string() && m["Version"].is_string());
    }

    #[test]
    fn docker_options_before_the_plugin_name_name_the_engine() {
        let plugin = "/root/.docker/cli-plugins/docker-hoist";
        let (args, docker) = hoist(&[plugin, "hoist", "push", "app:1", "r/app:1"]);
        assert_eq!(args, os(&["hoist", "push", "app:1", "r/app:1"]));
        assert_eq!(docker, DockerOptions::default());

        let (args, docker) = hoist(&[
            plugin,
            "-D",
            "--host",
            "unix:///run/a.sock",
            "--log-level=debug",
            "--tls",
            "hoist",
            "push",
            "-H",
            "x",
        ]);
        assert_eq!(args, os(&["hoist", "push", "-H", "x"]));
        assert_eq!(docker.host.as_deref(), Some("unix:///run/a.sock"));
        let (_, docker) = hoist(&[plugin, "-Hunix:///b.sock", "hoist", "ls"]);
        assert_eq!(docker.host.as_deref(), Some("unix:///b.sock"));
        let (_, docker) = hoist(&[plugin, "-c", "colima", "--config=/c", "hoist", "ls"]);
        assert_eq!(docker.context.as_deref(), Some("colima"));
        assert_eq!(docker.config, Some(PathBuf::from("/c")));

        let e = invocation(os(&[plugin, "-H", "unix:///a", "-c", "x", "hoist"])).unwrap_err();
        assert!(e.contains("--host or --context"), "{e}");
        assert!(invocation(os(&[plugin, "--host"])).is_err());
        // Run by hand, or as hoist: the arguments are hoist's.
        let (args, _) = hoist(&[plugin, "ls"]);
        assert_eq!(args, os(&[plugin, "ls"]));
        let (args, _) = hoist(&["hoist", "-H", "x", "hoist"]);
        assert_eq!(args, os(&["hoist", "-H", "x", "hoist"]));
    }

    #[test]
    fn options_become_the_callers_variables() {
        let shell = CallerEnv::from_vars([
            ("DOCKER_HOST", "unix:///shell.sock"),
            ("DOCKER_CONTEXT", "old"),
        ]);
        let with = |o: DockerOptions| o.apply(shell.clone());

        let env = with(DockerOptions {
            host: Some("unix:///h.sock".into()),
            ..DockerOptions::default()
        });
        assert_eq!(env.get("DOCKER_HOST"), Some("unix:///h.sock"));

        let env = with(DockerOptions {
            context: Some("colima".into()),
            config: Some("/cfg".into()),
            ..DockerOptions::default()
        });
        assert_eq!(env.get("DOCKER_HOST"), None);
        assert_eq!(env.get("DOCKER_CONTEXT"), Some("colima"));
        assert_eq!(env.get("DOCKER_CONFIG"), Some("/cfg"));

        let env = with(DockerOptions {
            context: Some("default".into()),
            ..DockerOptions::default()
        });
        assert_eq!(env.get("DOCKER_HOST"), Some("unix:///shell.sock"));
        assert_eq!(with(DockerOptions::default()), shell);
    }
}
