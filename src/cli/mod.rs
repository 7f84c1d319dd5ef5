//! The `hoist` command: a thin client of `hoistd`.
//!
//! # Layout
//! - [`client`]: HTTP/1.1 over the Unix socket, typed with [`crate::api`].
//! - [`push`]: `hoist push` (submit, then follow), with `autostart` of a missing daemon.
//! - [`follow`]: rendering a job's events (bars on a TTY, lines otherwise, NDJSON).
//! - [`jobs`]: `ls`, `watch`, `pause`, `resume`, `cancel`, `retry`, `rm`.
//! - [`inspect`], [`verify`]: the commands that need no daemon: `inspect` reads the source
//!   itself, `verify` asks the registry itself.
//! - [`docs`]: `completions` and `man`, generated from these clap definitions.
//! - [`plugin`]: hoist as the Docker CLI plugin `docker-hoist`, and `install-docker-plugin`.

pub mod autostart;
pub mod client;
pub mod docs;
pub mod follow;
pub mod inspect;
pub mod jobs;
pub mod plugin;
pub mod push;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use crate::api::{Compression, JobId, SplitLayers};
use crate::environ::CallerEnv;
use crate::paths;
use crate::units::{parse_duration, parse_rate, parse_size};

/// Exit code when Ctrl-C detached from a job that goes on in the daemon (128 + SIGINT).
pub const EXIT_DETACHED: u8 = 130;

/// Resumable, platform-checked pushes of container images to ECR and OCI registries.
#[derive(Debug, Parser)]
#[command(name = "hoist", version)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/hoist/hoist.sock].
    #[arg(long, global = true, env = "HOIST_SOCKET")]
    pub socket: Option<PathBuf>,
    /// State directory for a daemon started automatically [default: $XDG_STATE_HOME/hoist].
    #[arg(long, global = true, env = "HOIST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
    /// What docker's global options said of the engine, when run as `docker hoist`.
    #[arg(skip)]
    pub docker: plugin::DockerOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push SOURCE to TARGET through the daemon, resumably; prints the manifest digest.
    Push(PushArgs),
    /// List jobs.
    Ls {
        /// Print the job list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job's progress; exits 0 only when it ends done.
    Watch {
        job: JobId,
        /// Print events as NDJSON.
        #[arg(long)]
        json: bool,
    },
    /// Pause a job at the next chunk boundary.
    Pause { job: JobId },
    /// Resume a paused job, with this shell's environment (how a job waiting for credentials
    /// after a daemon restart gets its secret variables back).
    Resume { job: JobId },
    /// Cancel a job.
    Cancel { job: JobId },
    /// Retry a failed or cancelled job, with this shell's environment; it resumes from what
    /// was uploaded.
    Retry {
        job: JobId,
        /// A new deadline from now (e.g. 2h), replacing the job's own, for a job that failed
        /// because its deadline passed [default: keep the job's deadline].
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<std::time::Duration>,
    },
    /// Delete a finished, failed, cancelled or paused job and its spool.
    Rm { job: JobId },
    /// Show what would be pushed from SOURCE (no network): platform, manifest type, every blob
    /// with size and compression plan, the ELF census of each layer, warnings.
    Inspect {
        /// docker-archive:PATH, oci:DIR[:REF], oci-archive:PATH[:REF], or a bare path.
        source: String,
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
        /// Compression planned for uncompressed layers.
        #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
        compression: String,
        /// Skip the ELF census (it reads, and decompresses, every layer).
        #[arg(long)]
        no_elf: bool,
        /// Layer splitting as `hoist push --split-layers` would do it: SIZE, auto or off
        /// [default: auto]. With SIZE, a compressed layer over it is decompressed (into an
        /// unlinked file of the temporary directory) to show its parts.
        #[arg(long, value_parser = clap::builder::ValueParser::new(str::parse::<SplitLayers>))]
        split_layers: Option<SplitLayers>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or change the daemon-wide upload limit shared by every job (e.g. 10MiB/s, 8Mbit/s,
    /// off), or with --job one job's own limit; running uploads follow a change at once.
    Limit {
        /// The new limit; without it, print the current one.
        rate: Option<String>,
        /// Show or change this job's own limit (under the daemon-wide one) instead.
        #[arg(long)]
        job: Option<JobId>,
        /// Print the limit as JSON (`{"bytes_per_s": N}`, null when there is none).
        #[arg(long)]
        json: bool,
    },
    /// Check that TARGET in the registry is a complete, single-platform image.
    Verify {
        /// REGISTRY/REPOSITORY:TAG (or @sha256:...).
        target: String,
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
        /// Use plain HTTP for a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Make hoist a Docker CLI plugin (`docker hoist push IMAGE TARGET`): a symlink
    /// docker-hoist to this binary in the docker CLI's plugin directory.
    InstallDockerPlugin {
        /// The plugin directory [default: $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace an existing docker-hoist that is not a link to this binary.
        #[arg(long)]
        force: bool,
    },
    /// Print the shell completion script (e.g. `hoist completions bash >
    /// ~/.local/share/bash-completion/completions/hoist`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page hoist(1) as roff (`hoist man | man -l -`), or write it and one page
    /// per subcommand into a directory.
    Man {
        /// Write hoist.1 and hoist-COMMAND.1 for every subcommand into DIR.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Platform to push from a multi-platform source.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Compression for layers that are pushed compressed.
    #[arg(
        long,
        default_value = "gzip",
        value_parser = clap::builder::PossibleValuesParser::new(["gzip", "zstd"])
            .map(|s| s.parse::<Compression>().expect("a listed value")),
    )]
    pub compression: Compression,
    /// Upload chunk size (e.g. 16MiB, 8M, 5242880); at least 5 MiB [default: 16MiB].
    #[arg(long, value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Split layers into parts at file boundaries, uploaded in parallel: SIZE (e.g. 128MiB;
    /// every layer above it: a gzip or zstd layer is decompressed into the state directory
    /// first, costing its uncompressed size there, and its own blob is not pushed), auto
    /// (uncompressed layers above 1 GiB, in 256 MiB parts) or off. Splitting changes the
    /// image's config and manifest digests (its image ID) [default: auto].
    #[arg(long, value_parser = clap::builder::ValueParser::new(str::parse::<SplitLayers>))]
    pub split_layers: Option<SplitLayers>,
    /// Submit and print the job ID, without following.
    #[arg(long)]
    pub detach: bool,
    /// Print events as NDJSON.
    #[arg(long)]
    pub json: bool,
    /// Fail when no daemon answers instead of starting one.
    #[arg(long)]
    pub no_autostart: bool,
    /// Talk plain HTTP to the registry (local test registries).
    #[arg(long)]
    pub insecure: bool,
    /// Push even when the binaries in the layers are for another architecture than the
    /// image's config declares.
    #[arg(long)]
    pub allow_arch_mismatch: bool,
    /// Give up when the push is not done within this time (e.g. 2h, 30m, 1d); until then the
    /// job waits out network outages [default: no deadline].
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<std::time::Duration>,
    /// This job's upload limit (e.g. 5MiB/s, 20Mbit/s), under the daemon's (`hoist limit`).
    #[arg(long, value_parser = parse_job_rate)]
    pub bandwidth: Option<u64>,
    /// Also tag the image as TAG in the target's repository (repeatable): the blobs are
    /// uploaded once, and every tag is written after all of them are verified.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Write the manifest digest (`sha256:...`, no newline, as skopeo does) to FILE when the
    /// push is done; hoist must follow the job to its end, so not with --detach.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// The image: docker-archive:PATH, oci:DIR (or oci:DIR:REF), oci-archive:PATH,
    /// docker-daemon:NAME[:TAG] (an image in the Docker engine of this shell's DOCKER_HOST or
    /// docker context), or a path; an image name that is no path (app:1) is the engine's image.
    pub source: String,
    /// Where to push: REGISTRY/REPOSITORY:TAG (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1).
    pub target: String,
}

/// A job's own limit: a rate, not `off` (a job without `--bandwidth` has no limit of its own).
fn parse_job_rate(s: &str) -> Result<u64, String> {
    parse_rate(s)?
        .ok_or_else(|| format!("{s:?}: give a job limit such as 5MiB/s, or leave --bandwidth out"))
}

/// Runs the command; the caller prints the error chain.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The shell's variables a job carries, as docker's options (plugin) say.
    let env = cli.docker.apply(CallerEnv::from_process());
    // Commands that need no daemon run before a socket path is worked out.
    match cli.command {
        Command::Inspect {
            source,
            platform,
            compression,
            no_elf,
            split_layers,
            json,
        } => {
            let opts = inspect::Options {
                platform,
                compression,
                elf_census: !no_elf,
                split_layers: split_layers.unwrap_or(crate::api::SPLIT_LAYERS_DEFAULT),
                json,
            };
            return inspect::run(&source, opts).await;
        }
        Command::Verify {
            target,
            platform,
            insecure,
        } => return verify::run(&target, &platform, insecure, env).await,
        Command::InstallDockerPlugin { dir, force } => {
            plugin::install(dir, force, &env)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            docs::completions(shell)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { out_dir } => {
            docs::man(out_dir.as_deref())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let socket = match cli.socket {
        Some(s) => s,
        None => paths::default_socket_path().map_err(anyhow::Error::msg)?,
    };
    let client = client::Client::new(socket);
    match cli.command {
        Command::Push(args) => push::run(&client, cli.state_dir, args, &env).await,
        Command::Ls { json } => jobs::ls(&client, json).await,
        Command::Watch { job, json } => {
            let mode = follow::Mode::detect(json);
            jobs::watch(&client, &job, mode).await
        }
        Command::Pause { job } => jobs::control(&client, &job, "pause", &env).await,
        Command::Resume { job } => jobs::control(&client, &job, "resume", &env).await,
        Command::Cancel { job } => jobs::control(&client, &job, "cancel", &env).await,
        Command::Retry { job, deadline } => jobs::retry(&client, &job, deadline, &env).await,
        Command::Rm { job } => jobs::rm(&client, &job).await,
        Command::Limit { rate, job, json } => match job {
            Some(id) => jobs::job_limit(&client, &id, rate.as_deref(), json).await,
            None => jobs::limit(&client, rate.as_deref(), json).await,
        },
        Command::Inspect { .. }
        | Command::Verify { .. }
        | Command::Completions { .. }
        | Command::InstallDockerPlugin { .. }
        | Command::Man { .. } => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_limits_parse() {
        let cli = Cli::try_parse_from([
            "hoist",
            "push",
            "--bandwidth",
            "5MiB/s",
            "--deadline",
            "2h",
            "a.tar",
            "r/x:1",
        ])
        .unwrap();
        let Command::Push(args) = cli.command else {
            panic!("not a push")
        };
        assert_eq!(args.bandwidth, Some(5 << 20));
        assert_eq!(args.deadline, Some(std::time::Duration::from_secs(7200)));
        assert!(Cli::try_parse_from(["hoist", "push", "--bandwidth", "off", "a", "b"]).is_err());
        let cli = Cli::try_parse_from([
            "hoist",
            "push",
            "--tag",
            "2",
            "--digestfile",
            "d",
            "--tag",
            "3",
            "a.tar",
            "r/x:1",
        ])
        .unwrap();
        let Command::Push(args) = cli.command else {
            panic!("not a push")
        };
        assert_eq!(args.tags, ["2", "3"]);
        assert_eq!(args.digestfile, Some(PathBuf::from("d")));
        let cli = Cli::try_parse_from(["hoist", "limit", "10MiB/s"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Limit {
                rate: Some(_),
                job: None,
                json: false
            }
        ));
        let id = JobId::random();
        let cli = Cli::try_parse_from(["hoist", "limit", "--job", id.as_str(), "off"]).unwrap();
        assert!(
            matches!(cli.command, Command::Limit { rate: Some(r), job: Some(j), .. } if r == "off" && j == id)
        );
        assert!(Cli::try_parse_from(["hoist", "limit", "--job", "nope"]).is_err());
        let cli = Cli::try_parse_from(["hoist", "retry", id.as_str(), "--deadline", "2h"]).unwrap();
        assert!(
            matches!(cli.command, Command::Retry { job, deadline: Some(d) } if job == id && d.as_secs() == 7200)
        );
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
