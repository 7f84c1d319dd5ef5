//! The push's first step: open the job's source, apply the platform guard and plan the blobs
//! (`source` -> `plan`; a compressed layer to split is decompressed into the job's spool,
//! [`UNPACK_DIR`]), then record the plan through the job's context.

use crate::api::{BlobAction, Compression, JobSpec, SplitLayers};
use crate::environ::CallerEnv;
use crate::plan::{Codec, LayerAction, PlanError, PlanOptions, PushPlan, SplitPolicy, UnpackDir};
use crate::source::SourceRef;
use crate::split::{LayerSplit, SplitError};
use crate::store::{BlobRecord, NewBlob};

use super::job::{JobContext, JobError};

/// The compressor's codec for the API's compression choice.
fn codec(c: Compression) -> Codec {
    match c {
        Compression::Gzip => Codec::Gzip,
        Compression::Zstd => Codec::Zstd,
    }
}

/// The plan's split policy for the job's setting.
fn split_policy(s: SplitLayers) -> SplitPolicy {
    match s {
        SplitLayers::Off => SplitPolicy::Off,
        SplitLayers::Auto => SplitPolicy::Auto,
        SplitLayers::MaxBytes(b) => SplitPolicy::MaxBytes(b),
    }
}

/// The layer splits earlier runs recorded. One that does not read back is left out: the
/// layer is scanned again, which gives the same layout.
async fn known_splits(ctx: &JobContext) -> Result<Vec<LayerSplit>, JobError> {
    Ok(ctx
        .splits()
        .await?
        .into_iter()
        .filter_map(|(layer, json)| {
            serde_json::from_str::<LayerSplit>(&json)
                .ok()
                .filter(|s| s.layer == layer)
        })
        .collect())
}

/// How the job's push is planned: its platform, codec, the target registry's limits, the
/// caller's environment and the split policy (`known_splits` are the layouts earlier runs
/// recorded).
pub fn plan_options(spec: &JobSpec, env: CallerEnv, known_splits: Vec<LayerSplit>) -> PlanOptions {
    // A target that does not parse fails later with its own message; its limits are ECR's.
    let limits = crate::registry::ImageRef::parse(&spec.target)
        .map(|t| crate::registry::limits_for_host(&t.host))
        .unwrap_or_default();
    PlanOptions {
        platform: spec.platform.clone(),
        compression: codec(spec.compression),
        limits,
        env,
        split: split_policy(spec.split_layers),
        known_splits,
        unpack: None,
    }
}

/// The spool subdirectory where compressed layers to split are decompressed, each kept for
/// the job's later runs (the parts are ranges of it) and removed with the job's spool.
pub const UNPACK_DIR: &str = "unpacked";

/// Where the job's compressed layers to split are decompressed: its spool, never taking the
/// free space the spool leaves to the database.
fn unpack_dir(ctx: &JobContext) -> UnpackDir {
    UnpackDir {
        dir: ctx.spool_dir().join(UNPACK_DIR),
        reserve_bytes: super::push::disk::SPOOL_MARGIN_BYTES_MIN,
        keep: true,
    }
}

/// Opens the job's source and plans the push, off the async runtime; records nothing.
pub async fn build_plan(ctx: &JobContext) -> Result<PushPlan, JobError> {
    let spec: JobSpec = ctx.spec().clone();
    let env = ctx.env().clone();
    let known_splits = known_splits(ctx).await?;
    let unpack = unpack_dir(ctx);
    tokio::task::spawn_blocking(move || {
        let reference: SourceRef = spec.source.parse().map_err(|e| format!("{e}"))?;
        let opts = PlanOptions {
            unpack: Some(unpack),
            ..plan_options(&spec, env, known_splits)
        };
        PushPlan::new(&reference, &opts).map_err(|e| match e {
            PlanError::Split {
                source: SplitError::NoRoom { .. },
                ..
            } => format!(
                "{e}; `hoist retry` runs the job again (`hoistd --state-dir` moves the state directory)"
            ),
            e => format!("{e}"),
        })
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
/// earlier runs recorded for every blob. The blobs in `announced` were recorded and announced
/// already in this run ([`JobContext::plan_blob`]).
pub async fn record_plan(
    ctx: &JobContext,
    plan: &PushPlan,
    announced: &[crate::digest::Digest],
) -> Result<Vec<BlobRecord>, JobError> {
    for s in &plan.splits {
        let layout = serde_json::to_string(s).map_err(|e| {
            JobError::failed(format!(
                "internal error: a layer split does not serialise ({e}): report this as a bug"
            ))
        })?;
        ctx.record_split(&s.layer, layout).await?;
    }
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
    let records = ctx.plan_announced(blobs, announced).await?;
    for warning in &plan.warnings {
        ctx.warning(warning.clone()).await;
    }
    Ok(records)
}
