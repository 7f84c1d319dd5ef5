//! `hoist inspect SOURCE`: what would be pushed. Filled in with the image pipeline.

use std::process::ExitCode;

/// Shows the platform's manifest, config and blobs of `source`.
pub async fn run(source: &str, platform: &str, json: bool) -> anyhow::Result<ExitCode> {
    let _ = (source, platform, json);
    anyhow::bail!(
        "`hoist inspect` is not available in this build yet: use `skopeo inspect` meanwhile"
    )
}
