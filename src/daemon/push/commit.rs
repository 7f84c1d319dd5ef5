//! The end of a push: check every blob is in the registry, check the binaries match the
//! declared platform, then commit the manifest and read the tag back.
//!
//! **The tag is written only here**, after every blob answered a HEAD with the right digest
//! and size: a node can never resolve the tag to an image with a missing layer.
//!
//! Every request waits out network outages like the uploads do ([`Patience`]): an outage
//! between the last chunk and the read-back costs a wait, not the job.

use super::patience::Patience;
use crate::api::{BlobState, JobState};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::elf::{self, LayerCensus};
use crate::plan::{CompressedLayer, ManifestBytes, PushPlan};
use crate::registry::{ImageRef, Reference, RegistryClient, verify_tag};

/// `verifying`: HEAD every pushed blob (`key`, what was pushed); the present ones become
/// `verified`. Returns the ones the registry does not have (it lost them, e.g. to its garbage
/// collector while the job was paused or failed).
pub async fn verify_blobs(
    patience: &Patience,
    client: &RegistryClient,
    repository: &str,
    blobs: &[(Digest, CompressedLayer)],
) -> Result<Vec<(Digest, CompressedLayer)>, JobError> {
    let ctx = &patience.ctx;
    ctx.enter(JobState::Verifying).await?;
    let pushed: Vec<CompressedLayer> = blobs.iter().map(|(_, p)| p.clone()).collect();
    let present = blobs_present(patience, client, repository, &pushed).await?;
    let mut lost = Vec::new();
    for ((key, pushed), present) in blobs.iter().zip(present) {
        if present {
            ctx.blob_state(key, BlobState::Verified).await?;
        } else {
            lost.push((key.clone(), pushed.clone()));
        }
    }
    Ok(lost)
}

/// HEADs each blob: whether the registry has it with that digest and size, in order.
pub async fn blobs_present(
    patience: &Patience,
    client: &RegistryClient,
    repository: &str,
    blobs: &[CompressedLayer],
) -> Result<Vec<bool>, JobError> {
    let mut out = Vec::with_capacity(blobs.len());
    for blob in blobs {
        let what = format!("HEAD blob {}", blob.digest.short());
        let present = patience
            .call(&what, || {
                client.blob_present(repository, &blob.digest, blob.size)
            })
            .await?
            .map_err(|e| {
                let reason = format!("checking blob {}: {e}", blob.digest.short());
                JobError::from_registry(reason, &e)
            })?;
        out.push(present);
    }
    Ok(out)
}

/// The failure of a blob still missing after it was uploaded again.
pub fn missing(ctx: &JobContext, pushed: &CompressedLayer) -> JobError {
    JobError::failed(format!(
        "blob {} ({} bytes) is not in the registry after its upload: run `hoist retry {}`",
        pushed.digest,
        pushed.size,
        ctx.id()
    ))
}

/// Fails unless the layers' binaries match the declared platform.
pub fn check_census(plan: &PushPlan, census: &[LayerCensus]) -> Result<(), JobError> {
    elf::check_platform(&plan.platform, census).map_err(|m| JobError::failed(m.to_string()))
}

/// `committing` then `verified`: PUT the exact manifest bytes under the target's reference,
/// then under each extra tag, reading every one back. A rerun after a crash between two tags
/// writes every tag again: the same bytes, so the tags written before stay as they are.
pub async fn commit(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    plan: &PushPlan,
    compressed: &[CompressedLayer],
) -> Result<ManifestBytes, JobError> {
    let manifest = plan
        .manifest(compressed)
        .map_err(|e| JobError::failed(format!("cannot build the manifest: {e}")))?;
    commit_manifest(patience, client, target, &manifest, TagWrite::Always).await?;
    Ok(manifest)
}

/// Whether a tag that already resolves to the manifest is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagWrite {
    Always,
    /// Only a tag that does not resolve to the manifest yet is PUT (every tag is read back).
    IfDifferent,
}

/// `committing` then `verified`: [`commit`] for manifest bytes known already (a manifest the
/// repository holds).
pub async fn commit_manifest(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    manifest: &ManifestBytes,
    write: TagWrite,
) -> Result<Digest, JobError> {
    let ctx = &patience.ctx;
    ctx.enter(JobState::Committing).await?;
    for image in references(target, &ctx.spec().extra_tags) {
        write_tag(patience, client, &image, manifest, write).await?;
    }
    // A stop now only means the phase is not recorded: every tag is written.
    let _ = ctx.enter(JobState::Verified).await;
    Ok(manifest.digest.clone())
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

/// PUTs the manifest under one reference and reads it back as a node would. Once the PUT
/// landed the tag is written: a read-back cut short (a stop, the deadline) is a warning.
async fn write_tag(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    manifest: &ManifestBytes,
    write: TagWrite,
) -> Result<(), JobError> {
    let ctx = &patience.ctx;
    let digest = match write == TagWrite::IfDifferent
        && resolves_to(patience, client, target, &manifest.digest).await?
    {
        true => manifest.digest.clone(),
        false => put_manifest(patience, client, target, manifest).await?,
    };
    if digest != manifest.digest {
        return Err(JobError::failed(format!(
            "the registry stored the manifest as {digest}, not {}: report this as a bug",
            manifest.digest
        )));
    }
    let read_back = patience
        .call(&format!("read {target} back"), || {
            verify_tag(client, target, Some(&digest), &ctx.spec().platform)
        })
        .await;
    match read_back {
        Ok(r) => {
            r.map_err(|e| JobError::failed(format!("reading {target} back: {e}")))?;
        }
        Err(e) => {
            ctx.warning(format!(
                "{target} is written, but reading it back was cut short ({e}): check it with `hoist verify`"
            ))
            .await;
        }
    }
    Ok(())
}

/// Whether `target` resolves to `digest` now (any error: it is written as if it did not).
async fn resolves_to(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    digest: &Digest,
) -> Result<bool, JobError> {
    let found = patience
        .call(&format!("read {target}"), || {
            client.get_manifest(&target.repository, &target.reference)
        })
        .await?;
    Ok(matches!(found, Ok((_, _, d)) if &d == digest))
}

/// The manifest PUT, with an upload slot like every body-carrying request, not sent after a
/// stop. A request in flight is not cut at the deadline; when the deadline ends the retries,
/// or the registry refuses the PUT, the tag is read: holding our manifest, it was written.
async fn put_manifest(
    patience: &Patience,
    client: &RegistryClient,
    target: &ImageRef,
    manifest: &ManifestBytes,
) -> Result<Digest, JobError> {
    let ctx = &patience.ctx;
    let body = bytes::Bytes::from(manifest.bytes.clone());
    let reference = target.reference.to_string();
    let slot = ctx.upload_slot().await?;
    // Retried on transient errors: the PUT of the same bytes to the same tag is idempotent.
    let put = patience
        .call_to_end(&format!("PUT the manifest to {target}"), || {
            client.put_manifest(
                &target.repository,
                &reference,
                &manifest.media_type,
                body.clone(),
            )
        })
        .await;
    drop(slot);
    // A rerun after a crash between the PUT and its answer meets its own tag, which an
    // immutable repository (ECR) refuses to write again: that is success. So is a PUT whose
    // answer was lost before the deadline ended the retries.
    let read = || client.get_manifest(&target.repository, &target.reference);
    let (why, found) = match put {
        Ok(Ok(d)) => return Ok(d),
        Err(JobError::Stopped) => return Err(JobError::Stopped),
        Ok(Err(e)) => (
            format!(
                "committing the manifest as {target}: {e}; fix the cause, then `hoist retry` the job"
            ),
            patience
                .call("read the tag after a refused PUT", read)
                .await?,
        ),
        Err(JobError::Failed { reason } | JobError::Refused { reason }) => (reason, read().await),
    };
    match found {
        Ok((_, _, found)) if found == manifest.digest => Ok(found),
        _ => Err(JobError::failed(why)),
    }
}
