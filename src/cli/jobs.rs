//! `hoist ls`, `watch`, `pause`, `resume`, `cancel`, `retry`, `rm`.

use std::io::Write;
use std::process::ExitCode;

use super::client::Client;
use super::follow::{self, Mode, Outcome};
use crate::api::{self, JobId, JobState};
use crate::digest::Digest;
use crate::environ::CallerEnv;

/// `hoist ls`: one line per job, or the job list as JSON.
pub async fn ls(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let jobs = client.jobs().await?;
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(&api::encode(&api::JobList { jobs }))?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<17}  {:<10}  {:>6}  {:<40}  NOTE",
        "JOB", "STATE", "DONE", "TARGET"
    )?;
    for job in jobs {
        let total = job.bytes_total();
        let pct = (job.bytes_uploaded() * 100)
            .checked_div(total)
            .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
        let note = match (&job.manifest_digest, &job.reason) {
            (Some(d), _) => d.to_string(),
            (None, Some(r)) => r.clone(),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "{:<17}  {:<10}  {:>6}  {:<40}  {note}",
            job.id,
            job.state,
            pct,
            target_text(&job.spec)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The target as `ls` shows it: the reference, then each extra tag (`REPO:1 +2 +latest`).
fn target_text(spec: &api::JobSpec) -> String {
    let mut out = spec.target.clone();
    for tag in &spec.extra_tags {
        out.push_str(" +");
        out.push_str(tag);
    }
    out
}

/// `hoist watch JOB`: follows the job; exit 0 iff it ends done.
pub async fn watch(client: &Client, id: &JobId, mode: Mode) -> anyhow::Result<ExitCode> {
    let mut interrupt = follow::Interrupt::catch()?;
    let outcome = follow::follow(client, id, mode, &mut interrupt).await?;
    finish(client, id, mode, outcome).await
}

/// Turns how following ended into output and an exit code, for `push` and `watch`.
pub async fn finish(
    client: &Client,
    id: &JobId,
    mode: Mode,
    outcome: Outcome,
) -> anyhow::Result<ExitCode> {
    match outcome {
        Outcome::Done(digest) => {
            if mode != Mode::Json {
                println!("{}", done_digest(client, id, digest).await?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Ended(state, reason) => {
            let reason = reason.unwrap_or_else(|| "no reason given".into());
            match state {
                JobState::Failed => eprintln!(
                    "hoist: job {id} failed: {reason}; after fixing it, `hoist retry {id}`"
                ),
                _ => eprintln!("hoist: job {id} ended {state}: {reason}"),
            }
            Ok(ExitCode::FAILURE)
        }
        Outcome::Detached => {
            eprintln!("job {id} continues in the daemon: hoist watch {id}");
            Ok(ExitCode::from(super::EXIT_DETACHED))
        }
        Outcome::Deleted => {
            eprintln!("hoist: job {id} was deleted while it was followed");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Lost => {
            eprintln!(
                "hoist: hoistd closed the event stream before job {id} ended: it may be restarting; `hoist watch {id}` follows it again"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The manifest digest of a job that ended done: the one its last event reported (`known`),
/// else the job's.
pub async fn done_digest(
    client: &Client,
    id: &JobId,
    known: Option<Digest>,
) -> anyhow::Result<Digest> {
    if let Some(d) = known {
        return Ok(d);
    }
    client.job(id).await?.manifest_digest.ok_or_else(|| {
        anyhow::anyhow!(
            "job {id} is done but hoistd reports no manifest digest: check with `hoist ls`"
        )
    })
}

/// `hoist pause|resume|cancel JOB`: prints the job's new state.
/// A resume sends this shell's environment again: the job runs with it from then on (after a
/// daemon restart, that is how a job gets its secret variables back).
pub async fn control(
    client: &Client,
    id: &JobId,
    action: &str,
    env: &CallerEnv,
) -> anyhow::Result<ExitCode> {
    let body = (action == "resume").then(|| api::ControlRequest {
        env: Some(api::EnvVars::of(env)),
    });
    let job = client.control_with(id, action, body.as_ref()).await?;
    println!("{} {}", job.id, job.state);
    Ok(ExitCode::SUCCESS)
}

/// `hoist retry JOB [--deadline D]`: prints the job's new state. Like resume, it sends this
/// shell's environment again.
pub async fn retry(
    client: &Client,
    id: &JobId,
    deadline: Option<std::time::Duration>,
    env: &CallerEnv,
) -> anyhow::Result<ExitCode> {
    let request = api::RetryRequest {
        env: Some(api::EnvVars::of(env)),
        deadline_unix_s: deadline.map(super::push::deadline_from_now),
    };
    let job = client.retry(id, &request).await?;
    println!("{} {}", job.id, job.state);
    Ok(ExitCode::SUCCESS)
}

/// `hoist rm JOB`.
pub async fn rm(client: &Client, id: &JobId) -> anyhow::Result<ExitCode> {
    client.delete(id).await?;
    println!("{id} deleted");
    Ok(ExitCode::SUCCESS)
}

/// `hoist limit [RATE]`: prints the daemon-wide upload limit, or changes it first.
pub async fn limit(client: &Client, rate: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let now = match rate {
        Some(r) => {
            let parsed = crate::units::parse_rate(r).map_err(anyhow::Error::msg)?;
            client.set_bandwidth(parsed).await?
        }
        None => client.bandwidth().await?,
    };
    if json {
        println!("{}", String::from_utf8_lossy(&api::encode(&now)));
        return Ok(ExitCode::SUCCESS);
    }
    match now.bytes_per_s {
        Some(b) => println!("upload limit: {}, shared by all jobs", rate_text(b)),
        None => println!("upload limit: none"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `hoist limit --job JOB [RATE]`: prints the job's own upload limit, or changes it first
/// (`off` removes it); a running job's uploads follow a change at once.
pub async fn job_limit(
    client: &Client,
    id: &JobId,
    rate: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = match rate {
        Some(r) => {
            let parsed = crate::units::parse_rate(r).map_err(anyhow::Error::msg)?;
            client.set_job_bandwidth(id, parsed).await?
        }
        None => client.job(id).await?,
    };
    let bytes_per_s = job.spec.options.bandwidth_bytes_per_s;
    if json {
        let body = api::JobBandwidth { bytes_per_s };
        println!("{}", String::from_utf8_lossy(&api::encode(&body)));
        return Ok(ExitCode::SUCCESS);
    }
    match bytes_per_s {
        Some(b) => println!(
            "job {id} upload limit: {}, under the daemon-wide limit",
            rate_text(b)
        ),
        None => println!("job {id} upload limit: none (the daemon-wide limit applies)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn rate_text(bytes_per_s: u64) -> String {
    format!(
        "{bytes_per_s} bytes/s ({:.1} MiB/s)",
        bytes_per_s as f64 / f64::from(1 << 20)
    )
}
