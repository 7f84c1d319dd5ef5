//! `hoist inspect SOURCE`: what would be pushed, with no network.

use std::process::ExitCode;

use anyhow::Context;

use crate::inspect::{InspectOptions, inspect};
use crate::plan::PlanOptions;
use crate::platform::Platform;
use crate::source::SourceRef;

/// Prints the plan for `source` (text, or JSON with `json`); reading is blocking file I/O, so
/// it runs off the async runtime.
pub async fn run(
    source: &str,
    platform: &str,
    compression: &str,
    elf_census: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let platform: Platform = platform.parse()?;
    let source_ref: SourceRef = source.parse()?;
    let opts = InspectOptions {
        plan: PlanOptions {
            platform,
            compression: compression.parse()?,
            ..PlanOptions::default()
        },
        elf_census,
    };
    let report = tokio::task::spawn_blocking(move || inspect(&source_ref, &opts))
        .await
        .context("the inspect task ended unexpectedly")??;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
