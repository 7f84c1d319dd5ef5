//! The push plan: the one image manifest to push, and for every blob its digest, size, media
//! type, where its bytes are and what is done to them (pushed as is, or compressed first).
//!
//! The manifest is either the source's exact bytes (every layer pushed as is and the source
//! manifest has a top-level `mediaType`) or built once by [`PushPlan::build_manifest`] after the
//! compressor has produced the layers' digests. Nothing re-serialises the source manifest.
//!
//! ```no_run
//! use hoist::plan::{CompressedLayer, LayerAction, PlanOptions, PushPlan};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = "docker-archive:app.tar".parse()?; // or oci:DIR[:REF], oci-archive:, a path
//! let plan = PushPlan::new(&source, &PlanOptions::default())?; // linux/amd64, gzip
//! let mut compressed = Vec::new();
//! for layer in &plan.layers {
//!     match &layer.action {
//!         // upload layer.source.location's bytes as they are (reader_at(offset) to resume)
//!         LayerAction::AsIs => {}
//!         // compress layer.source.location (an uncompressed tar whose digest is diff_id)
//!         LayerAction::Compress { diff_id, codec, .. } => {
//!             let _ = (diff_id, codec);
//!             # let (digest, size) = (diff_id.clone(), 0);
//!             compressed.push(CompressedLayer { digest, size });
//!         }
//!     }
//! }
//! let manifest = plan.manifest(&compressed)?; // the source's bytes, or built once
//! println!("{} {}", manifest.media_type, manifest.digest);
//! # Ok(()) }
//! ```

use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::compress::compressed_bytes_bound;
use crate::digest::Digest;
use crate::environ::CallerEnv;
use crate::image::media::{self, Compression, Family};
use crate::image::{Doc, Manifest};
use crate::limits::{LimitError, RegistryLimits, SPLIT_LAYERS_PER_IMAGE_MAX};
use crate::platform::Platform;
use crate::source::{
    self, BlobLocation, BlobReader, Check, ResolvedImage, SourceError, SourceLayer, SourceRef,
    Splice, SplicePiece, VerifyingReader,
};
use crate::split::{self, Candidate, LayerSplit, SplitError};

pub use crate::compress::Codec;
pub use crate::split::SplitPolicy;
pub use crate::split::unpack::UnpackDir;

/// The layer compression a codec produces.
fn codec_compression(codec: Codec) -> Compression {
    match codec {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
    }
}

/// How to plan a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// The platform the pushed image must be (default linux/amd64).
    pub platform: Platform,
    /// Codec for uncompressed layers.
    pub compression: Codec,
    /// What the target registry accepts (ECR's limits unless the target is known to differ).
    pub limits: RegistryLimits,
    /// The environment the source is opened with: a job's caller's (the daemon passes the
    /// job's), by default this process's own.
    pub env: CallerEnv,
    /// Which layers to split into parts at file boundaries (`docs/SPLIT.md`).
    pub split: SplitPolicy,
    /// Splits made before for this push (recorded with the job): used instead of scanning and
    /// hashing the layer again, so a rerun rebuilds the same parts.
    pub known_splits: Vec<LayerSplit>,
    /// Where a compressed layer `split` asks to split is decompressed first (the daemon: the
    /// job's spool, kept for its later runs); `None` refuses such a layer.
    pub unpack: Option<UnpackDir>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            platform: Platform::linux_amd64(),
            compression: Codec::Gzip,
            limits: RegistryLimits::default(),
            env: CallerEnv::from_process(),
            split: SplitPolicy::Off,
            known_splits: Vec::new(),
            unpack: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Source(#[from] SourceError),

    #[error("{image}: {source}")]
    Limit { image: String, source: LimitError },

    #[error("{image}: {source}")]
    Split { image: String, source: SplitError },

    #[error(
        "{image}: build_manifest got {got} compressed layers for {expected} layers to compress: pass one result per layer whose action is compress, in order"
    )]
    CompressedCount {
        image: String,
        expected: usize,
        got: usize,
    },
}

/// One blob as it is in the source.
#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub location: BlobLocation,
}

impl PlannedBlob {
    /// A reader over the blob that fails at EOF unless digest and size match.
    pub fn verifying_reader(&self) -> VerifyingReader<BlobReader> {
        self.location.verifying_reader(&self.digest)
    }
}

/// What happens to a layer's bytes on the way to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerAction {
    /// Already compressed: pushed byte for byte.
    AsIs,
    /// An uncompressed tar: compressed by `hoist::compress` with `codec` first. The source
    /// bytes have digest `diff_id` and `uncompressed_size` bytes.
    Compress {
        diff_id: Digest,
        uncompressed_size: u64,
        codec: Codec,
    },
}

/// One layer of the plan.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    /// The layer's bytes in the source (for `Compress`, the uncompressed tar; digest = diff_id).
    pub source: PlannedBlob,
    /// The media type of the layer as pushed.
    pub media_type: String,
    pub action: LayerAction,
    pub diff_id: Digest,
    pub urls: Option<Vec<String>>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// Set when this layer is one part of a split source layer.
    pub part: Option<PartOf>,
}

/// Which part of which source layer a planned layer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartOf {
    /// The source layer's diff_id.
    pub layer: Digest,
    /// 1-based.
    pub index: usize,
    pub count: usize,
    /// The part's estimated compressed bytes ([`crate::split::PartLayout::weight`]).
    #[serde(skip)]
    pub weight: u64,
}

impl PlannedLayer {
    /// A reader over the source bytes that checks them at EOF: against the blob digest for
    /// `AsIs`, against the diff_id for `Compress`.
    pub fn verifying_reader(&self) -> VerifyingReader<BlobReader> {
        let check = match self.action {
            LayerAction::AsIs => Check::Digest,
            LayerAction::Compress { .. } => Check::DiffId,
        };
        VerifyingReader::new(
            self.source.location.reader(),
            self.source.digest.clone(),
            Some(self.source.size),
            self.source.location.name.to_string(),
            check,
        )
    }
}

/// The digest and size of a layer after compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedLayer {
    pub digest: Digest,
    pub size: u64,
}

/// A manifest ready to push: its exact bytes and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

/// Everything needed to push one image manifest.
#[derive(Debug, Clone)]
pub struct PushPlan {
    /// `transport:path[:ref]` of the source.
    pub source: String,
    /// The image's platform, from its config.
    pub platform: Platform,
    pub family: Family,
    pub manifest_media_type: String,
    /// The config, pushed as is.
    pub config: PlannedBlob,
    pub layers: Vec<PlannedLayer>,
    pub warnings: Vec<String>,
    /// The source manifest's exact bytes, when they can be pushed unchanged.
    pub source_manifest: Option<ManifestBytes>,
    manifest_annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// The layers split into parts (to record with the job).
    pub splits: Vec<LayerSplit>,
    /// The compressed layers decompressed to be split.
    pub unpacked: Vec<Unpacked>,
}

/// A compressed source layer decompressed to be split: its parts are read from `file`, and
/// `source` is the compressed layer the file was made from (what identifies the source).
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub file: Arc<std::fs::File>,
    pub source: BlobLocation,
}

/// What the user should know before pushing `image`: over the registry's limits (an error),
/// empty layers, other images of an index left behind.
fn image_warnings(image: &ResolvedImage, opts: &PlanOptions) -> Result<Vec<String>, PlanError> {
    check_limits(image, &opts.limits).map_err(|source| PlanError::Limit {
        image: image.source.clone(),
        source,
    })?;
    let mut warnings = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        if l.compression == Compression::None
            && compressed_bytes_bound(l.size) > opts.limits.layer_bytes_max
        {
            warnings.push(format!(
                "layer {i} ({}) is {} bytes before compression, near or over {}'s limit of {} bytes per layer: its upload waits until compression ends, and the push stops if the compressed layer is over the limit",
                l.digest.short(),
                l.size,
                opts.limits.registry,
                opts.limits.layer_bytes_max
            ));
        }
        if l.size == 0 {
            warnings.push(format!(
                "layer {i} ({}) is empty (0 bytes): ECR refuses zero-length blobs",
                l.digest.short()
            ));
        }
    }
    if !image.skipped.is_empty() {
        warnings.push(format!(
            "the source is an index that also holds {}: hoist pushes only the {} image manifest",
            image.skipped.join(", "),
            image.platform
        ));
    }
    Ok(warnings)
}

/// The registry's limits that the plan can check before any upload: the layer count, and the
/// size of every layer pushed as it is (a layer to compress is checked once its compressed
/// size is known, before its first part is sent).
fn check_limits(image: &ResolvedImage, limits: &RegistryLimits) -> Result<(), LimitError> {
    limits.check_layer_count(image.layers.len())?;
    for (i, l) in image.layers.iter().enumerate() {
        if l.compression != Compression::None {
            limits.check_layer_bytes(&format!("layer {i} ({})", l.digest), l.size)?;
        }
    }
    Ok(())
}

/// The media type family pushed: a Docker schema 2 image with a zstd layer (as it is or
/// compressed with `codec`) becomes OCI, as zstd has no Docker media type.
fn pushed_family(image: &ResolvedImage, codec: Codec, warnings: &mut Vec<String>) -> Family {
    let needs_oci = image.layers.iter().any(|l| match l.compression {
        Compression::None => codec_compression(codec) == Compression::Zstd,
        other => other == Compression::Zstd,
    });
    if image.family == Family::Docker2 && needs_oci {
        warnings.push(
            "converting the Docker schema 2 image to OCI media types: zstd layers have no Docker media type (docker before 23 cannot pull them)".to_string(),
        );
        return Family::Oci;
    }
    image.family
}

/// What is done to layer `l`: compressed with `codec` when uncompressed, else pushed as is
/// (under the `family` media type when the image is `converted`).
fn plan_layer(l: SourceLayer, family: Family, converted: bool, codec: Codec) -> PlannedLayer {
    let (action, media_type) = match l.compression {
        Compression::None => (
            LayerAction::Compress {
                diff_id: l.diff_id.clone(),
                uncompressed_size: l.size,
                codec,
            },
            media::layer_media_type(family, codec_compression(codec), l.foreign).to_string(),
        ),
        c if converted => (
            LayerAction::AsIs,
            media::layer_media_type(family, c, l.foreign).to_string(),
        ),
        _ => (LayerAction::AsIs, l.media_type.clone()),
    };
    PlannedLayer {
        source: PlannedBlob {
            digest: l.digest,
            size: l.size,
            media_type: l.media_type,
            location: l.location,
        },
        media_type,
        action,
        diff_id: l.diff_id,
        urls: l.urls,
        annotations: l.annotations,
        part: None,
    }
}

/// A layer's split as planned: its layout and, for a compressed layer, the uncompressed layer
/// it was cut from (decompressed by [`split::unpack`]), which takes its place in the plan.
struct LayerCut {
    layout: LayerSplit,
    unpacked: Option<SourceLayer>,
}

/// How each layer of `image` is split (`None`: pushed whole) and the warnings to show. Parts
/// are handed out in layer order while the image stays within the layer-count limit.
fn plan_splits(
    image: &ResolvedImage,
    opts: &PlanOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<Option<LayerCut>>, SplitError> {
    let total_max = opts
        .limits
        .layers_per_image_max
        .min(SPLIT_LAYERS_PER_IMAGE_MAX);
    let mut extra_parts = total_max.saturating_sub(image.layers.len());
    let mut out = Vec::with_capacity(image.layers.len());
    for (i, l) in image.layers.iter().enumerate() {
        let room = PartsRoom {
            extra_parts,
            total_max,
        };
        let cut = split_one(i, l, image.family, opts, room, warnings)?;
        if let Some(c) = &cut {
            extra_parts = extra_parts.saturating_sub(c.layout.parts.len() - 1);
        }
        out.push(cut);
    }
    Ok(out)
}

/// The parts the layer-count limit still allows: `extra_parts` beyond one per layer, of a
/// `total_max` layers at most.
#[derive(Clone, Copy)]
struct PartsRoom {
    extra_parts: usize,
    total_max: usize,
}

/// How layer `i` is split, if it is (a compressed one is decompressed first, unless the
/// layer-count limit leaves no room for its parts).
fn split_one(
    i: usize,
    l: &SourceLayer,
    family: Family,
    opts: &PlanOptions,
    room: PartsRoom,
    warnings: &mut Vec<String>,
) -> Result<Option<LayerCut>, SplitError> {
    let compression = (l.compression != Compression::None).then(|| l.compression.name());
    let candidate = Candidate {
        location: &l.location,
        diff_id: &l.diff_id,
        compression,
        foreign: l.foreign,
    };
    let Some(part_bytes) = opts.split.part_bytes(&candidate)? else {
        return Ok(None);
    };
    let known = opts
        .known_splits
        .iter()
        .find(|k| k.layer == l.diff_id && k.part_bytes == part_bytes)
        .cloned();
    let at_limit = format!(
        "layer {i} is pushed whole: the image is at hoist's limit of {} layers for split images",
        room.total_max
    );
    if known.is_none() && room.extra_parts == 0 && compression.is_some() {
        warnings.push(at_limit);
        return Ok(None);
    }
    let unpacked = match compression {
        Some(_) => Some(unpacked_layer(l, family, &candidate, part_bytes, opts)?),
        None => None,
    };
    let candidate = match &unpacked {
        Some(u) => Candidate {
            location: &u.location,
            diff_id: &u.diff_id,
            compression: None,
            foreign: false,
        },
        None => candidate,
    };
    let made = match known {
        Some(k) => Some(k),
        None => match split::split_layer(&candidate, part_bytes, room.extra_parts + 1) {
            Ok(s) => s,
            Err(e @ (SplitError::NotProven { .. } | SplitError::Unsplittable { .. })) => {
                warnings.push(format!("layer {i} is pushed whole: {e}"));
                None
            }
            Err(e) => return Err(e),
        },
    };
    let Some(layout) = made else {
        if room.extra_parts == 0 {
            warnings.push(at_limit);
        }
        return Ok(None);
    };
    warnings.push(split_warning(i, l, &layout, opts.compression));
    Ok(Some(LayerCut { layout, unpacked }))
}

/// What splitting layer `i` changes: the config and manifest digests, and for a compressed
/// layer its own blob, which is not pushed (its parts are compressed again with `codec`).
fn split_warning(i: usize, l: &SourceLayer, layout: &LayerSplit, codec: Codec) -> String {
    let recompressed = match l.compression {
        Compression::None => String::new(),
        c => format!(
            ", and the layer's {} blob ({}) is not pushed: its parts are compressed again with {codec}",
            c.name(),
            l.digest.short(),
        ),
    };
    format!(
        "layer {i} ({}) is split into {} parts of about {} bytes at most, proven to give the same files as the whole layer under both appliers' rules (docs/SPLIT.md): the pushed image's config and manifest digests (its image ID) differ from the unsplit image's{recompressed}; pass --split-layers off to keep them",
        l.diff_id.short(),
        layout.parts.len(),
        layout.part_bytes
    )
}

/// Compressed layer `l` as an uncompressed one to split: decompressed into `opts.unpack` (a
/// file kept there is reused), checked against its diff_id.
fn unpacked_layer(
    l: &SourceLayer,
    family: Family,
    candidate: &Candidate<'_>,
    part_bytes: u64,
    opts: &PlanOptions,
) -> Result<SourceLayer, SplitError> {
    let Some(to) = &opts.unpack else {
        return Err(SplitError::Compressed {
            layer: l.location.name.to_string(),
            compression: l.compression.name().to_string(),
            bytes: l.size,
            part_bytes,
        });
    };
    let location = split::unpack::unpack(candidate, to)?;
    Ok(SourceLayer {
        digest: l.diff_id.clone(),
        size: location.len,
        media_type: media::layer_media_type(family, Compression::None, false).to_string(),
        compression: Compression::None,
        foreign: false,
        location,
        diff_id: l.diff_id.clone(),
        urls: None,
        // A compressed layer's annotations describe its blob (a table of contents, the
        // digest of what it decompresses to), not the parts compressed again.
        annotations: None,
    })
}

/// Puts each decompressed layer in place of its compressed source layer; returns the layouts
/// and what was decompressed.
fn take_unpacked(
    image: &mut ResolvedImage,
    cuts: Vec<Option<LayerCut>>,
) -> (Vec<Option<LayerSplit>>, Vec<Unpacked>) {
    let mut unpacked = Vec::new();
    let layouts = cuts
        .into_iter()
        .enumerate()
        .map(|(i, cut)| {
            let cut = cut?;
            if let Some(u) = cut.unpacked {
                let compressed = std::mem::replace(&mut image.layers[i], u);
                unpacked.push(Unpacked {
                    file: image.layers[i].location.file.clone(),
                    source: compressed.location,
                });
            }
            Some(cut.layout)
        })
        .collect();
    (layouts, unpacked)
}

/// The source's layers as pushed: each planned, and a split one replaced by its parts.
fn planned_layers(
    layers: Vec<SourceLayer>,
    splits: &[Option<LayerSplit>],
    family: Family,
    converted: bool,
    codec: Codec,
) -> Vec<PlannedLayer> {
    layers
        .into_iter()
        .zip(splits)
        .flat_map(|(l, s)| {
            let planned = plan_layer(l, family, converted, codec);
            match s {
                Some(s) => split_planned(planned, s, codec),
                None => vec![planned],
            }
        })
        .collect()
}

/// The parts of `layer` as planned layers (each compressed like any layer).
fn split_planned(layer: PlannedLayer, split: &LayerSplit, codec: Codec) -> Vec<PlannedLayer> {
    let locations = split.locations(&layer.source.location);
    let count = split.parts.len();
    split
        .parts
        .iter()
        .zip(locations)
        .enumerate()
        .map(|(k, (part, location))| PlannedLayer {
            source: PlannedBlob {
                digest: part.diff_id.clone(),
                size: part.size,
                media_type: layer.source.media_type.clone(),
                location,
            },
            media_type: layer.media_type.clone(),
            action: LayerAction::Compress {
                diff_id: part.diff_id.clone(),
                uncompressed_size: part.size,
                codec,
            },
            diff_id: part.diff_id.clone(),
            urls: None,
            annotations: layer.annotations.clone(),
            part: Some(PartOf {
                layer: split.layer.clone(),
                index: k + 1,
                count,
                weight: part.weight,
            }),
        })
        .collect()
}

/// The config of a split image: rewritten once, read from memory like a source blob.
/// `None` when no layer is split (the source's config is pushed).
fn split_config(
    image: &ResolvedImage,
    splits: &[Option<LayerSplit>],
) -> Result<Option<(Digest, BlobLocation)>, SplitError> {
    if splits.iter().all(Option::is_none) {
        return Ok(None);
    }
    let parts: Vec<Vec<Digest>> = image
        .layers
        .iter()
        .zip(splits)
        .map(|(l, s)| match s {
            Some(s) => s.parts.iter().map(|p| p.diff_id.clone()).collect(),
            None => vec![l.diff_id.clone()],
        })
        .collect();
    let bytes = split::config::rewrite(&image.config.bytes, &parts)?;
    let digest = Digest::sha256_of(&bytes);
    let name = format!(
        "{} (rewritten for the split layers)",
        image.config_location.name
    );
    let location = BlobLocation::spliced(
        image.config_location.file.clone(),
        name.into(),
        Splice::new(vec![SplicePiece::Bytes(bytes.into())]),
    );
    Ok(Some((digest, location)))
}

/// The source manifest's bytes, to push unchanged, when it names its own media type (ECR
/// requires the top-level mediaType; without it the manifest is written again).
fn unchanged_manifest(
    doc: &Doc<Manifest>,
    media_type: &str,
    warnings: &mut Vec<String>,
) -> Option<ManifestBytes> {
    if doc.parsed.media_type.is_none() {
        warnings.push(
            "the source manifest has no top-level mediaType (ECR requires it): hoist writes the manifest again with it, so its digest differs from the source's".to_string(),
        );
        return None;
    }
    Some(ManifestBytes {
        media_type: media_type.to_string(),
        bytes: doc.bytes.clone(),
        digest: doc.digest.clone(),
    })
}

impl PushPlan {
    /// Opens `reference`, applies the platform guard and plans the push.
    pub fn new(reference: &SourceRef, opts: &PlanOptions) -> Result<PushPlan, PlanError> {
        let image = source::resolve_in(reference, &opts.platform, &opts.env)?;
        PushPlan::from_resolved(image, opts)
    }

    /// Plans the push of an already resolved image.
    pub fn from_resolved(
        mut image: ResolvedImage,
        opts: &PlanOptions,
    ) -> Result<PushPlan, PlanError> {
        let mut warnings = image_warnings(&image, opts)?;
        let family = pushed_family(&image, opts.compression, &mut warnings);
        let converted = family != image.family;
        let name = image.source.clone();
        let split_failed = |source| PlanError::Split {
            image: name.clone(),
            source,
        };
        let cuts = plan_splits(&image, opts, &mut warnings).map_err(split_failed)?;
        let (splits, unpacked) = take_unpacked(&mut image, cuts);
        let config = split_config(&image, &splits).map_err(split_failed)?;
        let layers = planned_layers(image.layers, &splits, family, converted, opts.compression);
        let splits: Vec<LayerSplit> = splits.into_iter().flatten().collect();
        let all_as_is = layers.iter().all(|l| l.action == LayerAction::AsIs);
        let manifest_annotations = image
            .manifest
            .as_ref()
            .and_then(|(doc, _)| doc.parsed.annotations.clone());
        let source_manifest = match &image.manifest {
            Some((doc, media_type)) if all_as_is && !converted => {
                unchanged_manifest(doc, media_type, &mut warnings)
            }
            _ => None,
        };
        let manifest_media_type = match &source_manifest {
            Some(m) => m.media_type.clone(),
            None => family.manifest_media_type().to_string(),
        };
        let config_media_type = if converted {
            family.config_media_type().to_string()
        } else {
            image.config_media_type
        };
        Ok(PushPlan {
            source: image.source,
            platform: image.platform,
            family,
            manifest_media_type,
            config: match config {
                Some((digest, location)) => PlannedBlob {
                    digest,
                    size: location.len,
                    media_type: config_media_type,
                    location,
                },
                None => PlannedBlob {
                    digest: image.config.digest,
                    size: image.config_location.len,
                    media_type: config_media_type,
                    location: image.config_location,
                },
            },
            layers,
            warnings,
            source_manifest,
            manifest_annotations,
            splits,
            unpacked,
        })
    }

    /// The layers in the order their compression and upload start: plan order, except that
    /// the parts of a split layer go heaviest first (estimated compressed bytes, ties in plan
    /// order). On a capped path a part's upload takes its compressed size over one
    /// connection, so the longest start first (longest-processing-time first), and the parts
    /// left for the end are the light ones, mostly text: slow to compress for their size, so
    /// their uploads keep pace with their compression. In tar order, a part of incompressible
    /// data could come last and go on uploading alone for seconds after the compression ended.
    pub fn upload_order(&self) -> Vec<&PlannedLayer> {
        let mut group = 0;
        let mut order: Vec<(usize, &PlannedLayer)> = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            if l.part.as_ref().is_none_or(|p| p.index == 1) {
                group = i;
            }
            order.push((group, l));
        }
        order.sort_by_key(|&(g, l)| {
            (
                g,
                std::cmp::Reverse(l.part.as_ref().map_or(0, |p| p.weight)),
            )
        });
        order.into_iter().map(|(_, l)| l).collect()
    }

    /// Layers that must be compressed before upload, in order.
    pub fn layers_to_compress(&self) -> impl Iterator<Item = (usize, &PlannedLayer)> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.action, LayerAction::Compress { .. }))
    }

    /// The manifest to push: the source's bytes when possible, else one built from
    /// `compressed` (see [`PushPlan::build_manifest`]).
    pub fn manifest(&self, compressed: &[CompressedLayer]) -> Result<ManifestBytes, PlanError> {
        match &self.source_manifest {
            Some(m) => Ok(m.clone()),
            None => self.build_manifest(compressed),
        }
    }

    /// Serialises a new manifest once (stable key order, compact). `compressed` holds one
    /// entry per layer whose action is `Compress`, in layer order.
    pub fn build_manifest(
        &self,
        compressed: &[CompressedLayer],
    ) -> Result<ManifestBytes, PlanError> {
        let expected = self.layers_to_compress().count();
        if compressed.len() != expected {
            return Err(PlanError::CompressedCount {
                image: self.source.clone(),
                expected,
                got: compressed.len(),
            });
        }
        let mut results = compressed.iter();
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let (digest, size) = match &l.action {
                LayerAction::AsIs => (&l.source.digest, l.source.size),
                LayerAction::Compress { .. } => match results.next() {
                    Some(c) => (&c.digest, c.size),
                    None => {
                        return Err(PlanError::CompressedCount {
                            image: self.source.clone(),
                            expected,
                            got: compressed.len(),
                        });
                    }
                },
            };
            layers.push(OutDescriptor {
                media_type: &l.media_type,
                digest,
                size,
                urls: l.urls.as_ref(),
                annotations: l.annotations.as_ref(),
            });
        }
        let media_type = self.family.manifest_media_type();
        let out = OutManifest {
            schema_version: 2,
            media_type,
            config: OutDescriptor {
                media_type: &self.config.media_type,
                digest: &self.config.digest,
                size: self.config.size,
                urls: None,
                annotations: None,
            },
            layers,
            annotations: self.manifest_annotations.as_ref(),
        };
        let bytes = serde_json::to_vec(&out).map_err(|e| {
            PlanError::Source(SourceError::Io {
                what: self.source.clone(),
                source: io::Error::other(e),
            })
        })?;
        let digest = Digest::sha256_of(&bytes);
        Ok(ManifestBytes {
            media_type: media_type.to_string(),
            bytes,
            digest,
        })
    }

    /// Streams every source blob and checks it (config and as-is layers against their
    /// digests, layers to compress against their diff_ids).
    pub fn verify_sources(&self) -> Result<(), SourceError> {
        self.config.location.verify(&self.config.digest)?;
        for l in &self.layers {
            let mut r = l.verifying_reader();
            io::copy(&mut r, &mut io::sink())
                .map_err(|e| SourceError::from_io(&l.source.location.name, e))?;
        }
        Ok(())
    }

    /// What `hoist inspect` prints.
    pub fn view(&self) -> PlanView {
        let blob = |b: &PlannedBlob, media_type: &str, action: ActionView| BlobView {
            digest: b.digest.clone(),
            size: b.size,
            media_type: media_type.to_string(),
            source_media_type: b.media_type.clone(),
            action,
            part: None,
        };
        PlanView {
            source: self.source.clone(),
            platform: self.platform.to_string(),
            family: self.family,
            manifest_media_type: self.manifest_media_type.clone(),
            manifest_digest: self.source_manifest.as_ref().map(|m| m.digest.clone()),
            config: blob(&self.config, &self.config.media_type, ActionView::AsIs),
            layers: self
                .layers
                .iter()
                .map(|l| {
                    let action = match &l.action {
                        LayerAction::AsIs => ActionView::AsIs,
                        LayerAction::Compress { codec, .. } => {
                            ActionView::Compress { codec: *codec }
                        }
                    };
                    BlobView {
                        part: l.part.clone(),
                        ..blob(&l.source, &l.media_type, action)
                    }
                })
                .collect(),
            total_size: self.config.size + self.layers.iter().map(|l| l.source.size).sum::<u64>(),
            warnings: self.warnings.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: OutDescriptor<'a>,
    layers: Vec<OutDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutDescriptor<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    urls: Option<&'a Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// The plan as `hoist inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    pub source: String,
    pub platform: String,
    pub family: Family,
    pub manifest_media_type: String,
    /// Known now only when the source manifest is pushed unchanged.
    pub manifest_digest: Option<Digest>,
    pub config: BlobView,
    pub layers: Vec<BlobView>,
    /// Bytes read from the source (config + layers, before compression).
    pub total_size: u64,
    pub warnings: Vec<String>,
}

/// One blob in [`PlanView`]. `digest`/`size` are the source's (for a layer to compress: the
/// uncompressed tar, whose digest is the diff_id); `media_type` is the type as pushed.
#[derive(Debug, Clone, Serialize)]
pub struct BlobView {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub source_media_type: String,
    pub action: ActionView,
    /// For a part of a split layer: which part of which layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<PartOf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ActionView {
    AsIs,
    Compress { codec: Codec },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names() {
        for c in [Codec::Gzip, Codec::Zstd] {
            assert_eq!(c.to_string().parse::<Codec>().unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert!("xz".parse::<Codec>().is_err());
        assert_eq!(PlanOptions::default().compression, Codec::Gzip);
    }

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PushPlan>();
    }
}
