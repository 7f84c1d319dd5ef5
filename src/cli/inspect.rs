//! `hoist inspect SOURCE`: what would be pushed, with no network.

use std::process::ExitCode;

use anyhow::Context;

use crate::api::SplitLayers;
use crate::inspect::{InspectOptions, inspect};
use crate::plan::{PlanOptions, SplitPolicy, UnpackDir};
use crate::platform::Platform;
use crate::source::SourceRef;

/// What `hoist inspect` was asked.
pub struct Options {
    pub platform: String,
    pub compression: String,
    pub elf_census: bool,
    pub split_layers: SplitLayers,
    pub json: bool,
}

/// The plan's split policy for the API's setting.
pub fn split_policy(s: SplitLayers) -> SplitPolicy {
    match s {
        SplitLayers::Off => SplitPolicy::Off,
        SplitLayers::Auto => SplitPolicy::Auto,
        SplitLayers::MaxBytes(b) => SplitPolicy::MaxBytes(b),
    }
}

/// Prints the plan for `source` (text, or JSON with `json`); reading is blocking file I/O, so
/// it runs off the async runtime.
pub async fn run(source: &str, o: Options) -> anyhow::Result<ExitCode> {
    let platform: Platform = o.platform.parse()?;
    // A bare image name is the engine's image, which inspect cannot read: its error says so.
    let source_ref: SourceRef = match crate::source::bare_image_source(source) {
        Some(engine) => engine,
        None => source.parse()?,
    };
    let json = o.json;
    let opts = InspectOptions {
        plan: PlanOptions {
            platform,
            compression: o.compression.parse()?,
            split: split_policy(o.split_layers),
            // A compressed layer to split is decompressed to show its parts: into a file of
            // the temporary directory unlinked at once, so nothing outlives this command.
            unpack: Some(UnpackDir {
                dir: std::env::temp_dir(),
                reserve_bytes: 0,
                keep: false,
            }),
            ..PlanOptions::default()
        },
        elf_census: o.elf_census,
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
