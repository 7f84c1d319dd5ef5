//! `hoist verify TARGET`: reads the tag back from the registry and resolves it the way a
//! Kubernetes node's containerd does (index -> platform entry, attestations ignored, then the
//! config's platform), and checks every layer is there.

use std::process::ExitCode;

use anyhow::Context;

use crate::environ::CallerEnv;
use crate::platform::Platform;
use crate::registry::{ClientOptions, ImageRef, RegistryClient, verify_tag};

pub async fn run(
    target: &str,
    platform: &str,
    insecure: bool,
    env: CallerEnv,
) -> anyhow::Result<ExitCode> {
    let platform: Platform = platform.parse()?;
    let image = ImageRef::parse(target)?;
    let client = RegistryClient::new(
        &image.host,
        ClientOptions {
            insecure,
            env,
            ..ClientOptions::default()
        },
    )
    .with_context(|| format!("cannot reach {}", image.host))?;
    let report = verify_tag(&client, &image, None, &platform)
        .await
        .with_context(|| format!("{image} fails verification"))?;
    let via = if report.via_index {
        format!(" via an index ({})", report.tag_digest)
    } else {
        String::new()
    };
    println!(
        "ok: {image} resolves for {platform} to {} ({}, {} layers present){via}",
        report.image_digest, report.platform, report.layers
    );
    println!("{}", report.image_digest);
    Ok(ExitCode::SUCCESS)
}
