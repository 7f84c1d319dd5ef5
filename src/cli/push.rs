//! `hoist push SOURCE TARGET`: submit a job, then follow it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::Client;
use super::follow::{self, Mode};
use super::{PushArgs, autostart, jobs};
use crate::api::{JobOptions, SubmitRequest};

pub async fn run(
    client: &Client,
    state_dir: Option<PathBuf>,
    args: PushArgs,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = client.health().await {
        if !e.is_no_daemon() {
            return Err(e.into());
        }
        if args.no_autostart {
            anyhow::bail!(
                "no daemon answers on {}: start one with hoistd, or drop --no-autostart",
                client.socket().display()
            );
        }
        autostart::start(client, state_dir).await?;
    }
    let request = SubmitRequest {
        // The daemon has another working directory: send an absolute path.
        source: crate::paths::map_source_path(&args.source, |p| std::path::absolute(p))
            .unwrap_or(args.source),
        target: args.target,
        platform: Some(args.platform),
        compression: Some(args.compression),
        chunk_size_bytes: args.chunk_size,
        options: JobOptions {
            insecure: args.insecure,
            allow_arch_mismatch: args.allow_arch_mismatch,
            deadline_unix_s: args.deadline.map(|d| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .saturating_add(d)
                    .as_secs()
            }),
            bandwidth_bytes_per_s: args.bandwidth,
        },
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
    let outcome = follow::follow(client, &job.id, mode, &mut interrupt).await?;
    jobs::finish(client, &job.id, mode, outcome).await
}
