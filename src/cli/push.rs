//! `hoist push SOURCE TARGET`: submit a job, then follow it; with `--digestfile`, write the
//! manifest digest once it is done.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::client::Client;
use super::follow::{self, Mode, Outcome};
use super::{PushArgs, autostart, jobs};
use crate::api::{EnvVars, JobOptions, SubmitRequest};
use crate::digest::Digest;
use crate::environ::CallerEnv;

pub async fn run(
    client: &Client,
    state_dir: Option<PathBuf>,
    args: PushArgs,
    env: &CallerEnv,
) -> anyhow::Result<ExitCode> {
    check_digest_file(&args)?;
    autostart::ensure(client, state_dir, args.no_autostart).await?;
    let request = SubmitRequest {
        source: daemon_source(&args.source),
        target: args.target,
        platform: Some(args.platform),
        compression: Some(args.compression),
        chunk_size_bytes: args.chunk_size,
        split_layers: args.split_layers,
        extra_tags: args.tags,
        options: JobOptions {
            insecure: args.insecure,
            allow_arch_mismatch: args.allow_arch_mismatch,
            deadline_unix_s: args.deadline.map(deadline_from_now),
            bandwidth_bytes_per_s: args.bandwidth,
        },
        // The daemon works for this shell: its docker config, credential helpers, AWS
        // settings and proxies (secret values stay in the daemon's memory only).
        env: Some(EnvVars::of(env)),
    };
    let mut interrupt = follow::Interrupt::catch()?;
    let job = client.submit(&request).await?;
    if args.detach {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    let mode = Mode::detect(args.json);
    if mode != Mode::Json {
        eprintln!("job {} submitted", job.id);
    }
    let mut outcome = follow::follow(client, &job.id, mode, &mut interrupt).await?;
    if let (Outcome::Done(known), Some(path)) = (&outcome, args.digestfile) {
        let digest = jobs::done_digest(client, &job.id, known.clone()).await?;
        let written = digest.clone();
        tokio::task::spawn_blocking(move || write_digest_file(&path, &written)).await??;
        outcome = Outcome::Done(Some(digest));
    }
    jobs::finish(client, &job.id, mode, outcome).await
}

/// The source as the daemon reads it: a path made absolute (the daemon has another working
/// directory); a bare image name that is no file, the engine's image, said on stderr.
fn daemon_source(source: &str) -> String {
    if let Some(engine) = crate::source::bare_image_source(source) {
        eprintln!("{source} is not a file: pushing it from the Docker engine ({engine})");
        return engine.to_string();
    }
    crate::paths::map_source_path(source, |p| std::path::absolute(p))
        .unwrap_or_else(|| source.to_string())
}

/// Refuses, before anything is submitted, a digest file hoist could not write: with
/// `--detach` nobody is there when the push ends, and a missing directory would only show then.
fn check_digest_file(args: &PushArgs) -> anyhow::Result<()> {
    let Some(path) = &args.digestfile else {
        return Ok(());
    };
    if args.detach {
        anyhow::bail!(
            "--digestfile cannot go with --detach: the file is written when hoist follows the push to its end; drop --detach, or drop --digestfile and read the digest from `hoist ls` later"
        );
    }
    let dir = digest_file_dir(path);
    if !dir.is_dir() {
        anyhow::bail!(
            "--digestfile {}: directory {} does not exist: create it or choose another path",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

fn digest_file_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `digest` as skopeo's and podman's `--digestfile` do (`sha256:...`, no newline, mode
/// 0644 before the umask), through a temporary file beside `path` renamed over it: a reader
/// never sees a partial digest.
fn write_digest_file(path: &Path, digest: &Digest) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .with_context(|| format!("--digestfile {}: give a file name", path.display()))?;
    let tmp = digest_file_dir(path).join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(digest.to_string().as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| {
        format!(
            "the push is done ({digest}) but the digest file {} cannot be written: check the path is writable",
            path.display()
        )
    })
}

/// A deadline `within` from now, as the API takes it (Unix seconds).
pub fn deadline_from_now(within: std::time::Duration) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(within)
        .as_secs()
}
