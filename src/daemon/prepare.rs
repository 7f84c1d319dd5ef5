//! The part of the push that is wired so far: open the source, apply the platform guard and
//! plan the blobs (`source` -> `plan`). Compression and uploads are not wired yet, so
//! [`NotWired`] records the real plan and then fails the job, saying so. It never pretends to
//! push. The integration replaces [`NotWired`] with the full body and reuses [`plan_job`].

use crate::api::{BlobAction, Compression, JobSpec};
use crate::plan::{Codec, LayerAction, PlanOptions, PushPlan};
use crate::source::SourceRef;
use crate::store::{BlobRecord, NewBlob};

use super::job::{JobBody, JobContext, JobError, JobFuture};

/// The reason [`NotWired`] gives after planning.
pub const NOT_WIRED_REASON: &str = "uploading is not wired into this hoistd build yet: the source was read and planned (see `hoist ls`) but nothing was pushed; use a newer build";

/// The production body until compression and uploads are wired: plans for real, then fails.
pub struct NotWired;

impl JobBody for NotWired {
    fn run(&self, ctx: JobContext) -> JobFuture {
        Box::pin(async move {
            plan_job(&ctx).await?;
            Err(JobError::failed(NOT_WIRED_REASON))
        })
    }
}

/// The compressor's codec for the API's compression choice.
pub fn codec(c: Compression) -> Codec {
    match c {
        Compression::Gzip => Codec::Gzip,
        Compression::Zstd => Codec::Zstd,
    }
}

/// Opens the job's source, plans the push (off the async runtime: it reads the archive),
/// records the blobs through the context and reports the plan's warnings. Blobs are keyed by
/// their digest in the source (a layer to compress by its diff_id).
pub async fn plan_job(ctx: &JobContext) -> Result<PushPlan, JobError> {
    plan_job_records(ctx).await.map(|(plan, _)| plan)
}

/// [`plan_job`], also returning what earlier runs recorded for every blob (plan order:
/// config first, then the layers).
pub async fn plan_job_records(ctx: &JobContext) -> Result<(PushPlan, Vec<BlobRecord>), JobError> {
    let plan = build_plan(ctx).await?;
    let records = record_plan(ctx, &plan).await?;
    Ok((plan, records))
}

/// Opens the job's source and plans the push, off the async runtime; records nothing.
pub async fn build_plan(ctx: &JobContext) -> Result<PushPlan, JobError> {
    let spec: JobSpec = ctx.spec().clone();
    tokio::task::spawn_blocking(move || {
        let reference: SourceRef = spec.source.parse().map_err(|e| format!("{e}"))?;
        let opts = PlanOptions {
            platform: spec.platform.clone(),
            compression: codec(spec.compression),
            ..PlanOptions::default()
        };
        PushPlan::new(&reference, &opts).map_err(|e| format!("{e}"))
    })
    .await
    .map_err(|e| {
        JobError::failed(format!(
            "internal error: planning stopped abnormally ({e}): report this as a bug"
        ))
    })?
    .map_err(JobError::failed)
}

/// Records the plan's blobs through the context, reports its warnings, and returns what
/// earlier runs recorded for every blob.
pub async fn record_plan(ctx: &JobContext, plan: &PushPlan) -> Result<Vec<BlobRecord>, JobError> {
    let mut blobs = vec![NewBlob {
        digest: plan.config.digest.clone(),
        size_bytes: plan.config.size,
        media_type: plan.config.media_type.clone(),
        action: BlobAction::AsIs,
    }];
    blobs.extend(plan.layers.iter().map(|layer| NewBlob {
        digest: layer.source.digest.clone(),
        size_bytes: layer.source.size,
        media_type: layer.media_type.clone(),
        action: match layer.action {
            LayerAction::AsIs => BlobAction::AsIs,
            LayerAction::Compress { .. } => BlobAction::Compress,
        },
    }));
    let records = ctx.plan(blobs).await?;
    for warning in &plan.warnings {
        ctx.warning(warning.clone()).await;
    }
    Ok(records)
}
