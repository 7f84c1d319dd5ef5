//! The end of a push: check every blob is in the registry, check the binaries match the
//! declared platform, then commit the manifest and read the tag back.
//!
//! **The tags are written only here**, after every blob answered a HEAD with the right digest
//! and size: a node can never resolve a tag to an image with a missing layer. The blobs are
//! uploaded once for all of a job's tags.
//!
//! Every request waits out network outages like the uploads do ([`Patience`]): an outage
//! between the last chunk and the read-back costs a wait, not the job.

use super::patience::Patience;
use crate::api::{BlobState, JobState};
use crate::daemon::job::JobError;
use crate::digest::Digest;
use crate::elf::{self, LayerCensus};
use crate::plan::{CompressedLayer, ManifestBytes, PushPlan};
use crate::registry::{ImageRef, Reference, RegistryClient, verify_tag};

/// `verifying`: HEAD every pushed blob (`key`, what was pushed).
pub async fn verify_blobs(
    patience: &Patience,
    client: &RegistryClient,
    repository: &str,
    blobs: &[(Digest, CompressedLayer)],
) -> Result<(), JobError> {
    let ctx = &patience.ctx;
    ctx.enter(JobState::Verifying).await?;
    for (key, pushed) in blobs {
        let what = format!("HEAD blob {}", pushed.digest.short());
        let present = patience
            .call(&what, || {
                client.blob_present(repository, &pushed.digest, pushed.size)
            })
            .await?
            .map_err(|e| {
                JobError::failed(format!("checking blob {}: {e}", pushed.digest.short()))
            })?;
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

/// `committing` then `verified`: PUT the exact manifest bytes under the target's reference,
/// then under each extra tag, reading every one back.
pub async fn commit(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    plan: &PushPlan,
    compressed: &[CompressedLayer],
) -> Result<Digest, JobError> {
    let ctx = &patience.ctx;
    let manifest = plan
        .manifest(compressed)
        .map_err(|e| JobError::failed(format!("cannot build the manifest: {e}")))?;
    ctx.enter(JobState::Committing).await?;
    // A rerun after a crash between two tags writes every tag again: the same bytes, so the
    // tags written before the crash stay as they are.
    for image in references(target, &ctx.spec().extra_tags) {
        write_tag(patience, client, &image, &manifest).await?;
    }
    ctx.enter(JobState::Verified).await?;
    Ok(manifest.digest)
}

/// The target, then each extra tag of its repository that is not the target's own.
fn references(target: &ImageRef, extra_tags: &[String]) -> Vec<ImageRef> {
    let mut out = vec![target.clone()];
    for tag in extra_tags {
        let reference = Reference::Tag(tag.clone());
        if out.iter().all(|r| r.reference != reference) {
            out.push(ImageRef {
                reference,
                ..target.clone()
            });
        }
    }
    out
}

/// PUTs the manifest under one reference and reads it back as a node would.
async fn write_tag(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    manifest: &ManifestBytes,
) -> Result<(), JobError> {
    let ctx = &patience.ctx;
    let body = bytes::Bytes::from(manifest.bytes.clone());
    let reference = target.reference.to_string();
    // Retried on transient errors: the PUT of the same bytes to the same tag is idempotent.
    let put = patience
        .call(&format!("PUT the manifest to {target}"), || {
            client.put_manifest(
                &target.repository,
                &reference,
                &manifest.media_type,
                body.clone(),
            )
        })
        .await?;
    let digest = match put {
        Ok(d) => d,
        Err(e) => {
            // A rerun after a crash between the PUT and its answer meets its own tag, which
            // an immutable repository (ECR) refuses to write again: that is success.
            let found = patience
                .call("read the tag after a refused PUT", || {
                    client.get_manifest(&target.repository, &target.reference)
                })
                .await?;
            match found {
                Ok((_, _, found)) if found == manifest.digest => found,
                _ => {
                    return Err(JobError::failed(format!(
                        "committing the manifest as {target}: {e}; fix the cause, then `hoist retry` the job"
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
    patience
        .call(&format!("read {target} back"), || {
            verify_tag(client, target, Some(&digest), &ctx.spec().platform)
        })
        .await?
        .map_err(|e| JobError::failed(format!("reading {target} back: {e}")))?;
    Ok(())
}
