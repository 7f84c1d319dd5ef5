//! The end of a push: check every blob is in the registry, check the binaries match the
//! declared platform, then commit the manifest and read the tag back.
//!
//! **The tag is written only here**, after every blob answered a HEAD with the right digest
//! and size: a node can never resolve the tag to an image with a missing layer.

use crate::api::{BlobState, JobState};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::elf::{self, LayerCensus};
use crate::plan::{CompressedLayer, PushPlan};
use crate::registry::{ImageRef, RegistryClient, verify_tag};

/// `verifying`: HEAD every pushed blob (`key`, what was pushed).
pub async fn verify_blobs(
    ctx: &JobContext,
    client: &RegistryClient,
    repository: &str,
    blobs: &[(Digest, CompressedLayer)],
) -> Result<(), JobError> {
    ctx.enter(JobState::Verifying).await?;
    for (key, pushed) in blobs {
        let present = crate::registry::retry(
            &crate::registry::RetryPolicy::default(),
            "blob HEAD",
            || client.blob_present(repository, &pushed.digest, pushed.size),
        )
        .await
        .map_err(|e| JobError::failed(format!("checking blob {}: {e}", pushed.digest.short())))?;
        if !present {
            return Err(JobError::failed(format!(
                "blob {} ({} bytes) is not in the registry after its upload: run `hoist retry {}`",
                pushed.digest,
                pushed.size,
                ctx.id()
            )));
        }
        ctx.blob_state(key, BlobState::Verified).await?;
    }
    Ok(())
}

/// Fails unless the layers' binaries match the declared platform (issue 8).
pub fn check_census(plan: &PushPlan, census: &[LayerCensus]) -> Result<(), JobError> {
    elf::check_platform(&plan.platform, census).map_err(|m| JobError::failed(m.to_string()))
}

/// `committing` then `verified`: PUT the exact manifest bytes, read the tag back.
pub async fn commit(
    ctx: &JobContext,
    client: &RegistryClient,
    target: &ImageRef,
    plan: &PushPlan,
    compressed: &[CompressedLayer],
) -> Result<Digest, JobError> {
    let manifest = plan
        .manifest(compressed)
        .map_err(|e| JobError::failed(format!("cannot build the manifest: {e}")))?;
    ctx.enter(JobState::Committing).await?;
    let digest = match client
        .put_manifest(
            &target.repository,
            &target.reference.to_string(),
            &manifest.media_type,
            bytes::Bytes::from(manifest.bytes.clone()),
        )
        .await
    {
        Ok(d) => d,
        Err(e) => {
            // A rerun after a crash between the PUT and its answer meets its own tag, which
            // an immutable repository (ECR) refuses to write again: that is success.
            match client
                .get_manifest(&target.repository, &target.reference)
                .await
            {
                Ok((_, _, found)) if found == manifest.digest => found,
                _ => {
                    return Err(JobError::failed(format!(
                        "committing the manifest: {e}; fix the cause, then `hoist retry` the job"
                    )));
                }
            }
        }
    };
    if digest != manifest.digest {
        return Err(JobError::failed(format!(
            "the registry stored the manifest as {digest}, not {}: report this as a bug",
            manifest.digest
        )));
    }
    verify_tag(client, target, Some(&digest), &ctx.spec().platform)
        .await
        .map_err(|e| JobError::failed(format!("reading the tag back: {e}")))?;
    ctx.enter(JobState::Verified).await?;
    Ok(digest)
}
