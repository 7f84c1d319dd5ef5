//! Problems with the documents of an image (manifests, indexes, configs) and with its platform.
//!
//! Every message is one line: the file (and entry) first, then the problem, then what to do.
//! `what` is already formatted as `FILE: ENTRY` by the caller.

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error(
        "{what}: JSON document of {size} bytes is over the {max}-byte limit: this is not an image manifest, index or config hoist can push"
    )]
    TooLarge { what: String, size: u64, max: u64 },

    #[error("{what}: not a valid {kind} ({detail}): re-export the image")]
    Json {
        what: String,
        kind: &'static str,
        detail: String,
    },

    #[error(
        "{what}: Docker schema 1 manifests are obsolete and not supported: pull and re-save the image with a current docker or skopeo"
    )]
    Schema1 { what: String },

    #[error(
        "{what}: unsupported manifest media type {media_type:?}: expected a Docker schema 2 or OCI image manifest or index"
    )]
    UnsupportedDocument { what: String, media_type: String },

    #[error("{what}: no {wanted} image in index (has {present}): rebuild with --platform {wanted}")]
    NoMatchingPlatform {
        what: String,
        wanted: String,
        present: String,
    },

    #[error("{what}: image is {have}, not {wanted}: rebuild with --platform {wanted}")]
    WrongPlatform {
        what: String,
        have: String,
        wanted: String,
    },

    #[error(
        "{what}: index entry says {entry} but the image config says {config}: the image is mislabelled; rebuild with --platform {entry}"
    )]
    Mislabelled {
        what: String,
        entry: String,
        config: String,
    },

    #[error(
        "{what}: unknown layer media type {media_type:?}: hoist pushes only tar layers (uncompressed, gzip or zstd)"
    )]
    UnknownLayerMediaType { what: String, media_type: String },

    #[error(
        "{what}: manifest lists {layers} layers but the config has {diff_ids} diff_ids: the image is inconsistent; re-export it"
    )]
    LayerCountMismatch {
        what: String,
        layers: usize,
        diff_ids: usize,
    },

    #[error(
        "{what}: uncompressed layer {index} is {actual} but the config's diff_id is {expected}: the image is inconsistent; re-export it"
    )]
    DiffIdMismatch {
        what: String,
        index: usize,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{what}: media type {media_type:?} says {declared} but the bytes are {actual}: the image is broken; export it again"
    )]
    CompressionMismatch {
        what: String,
        media_type: String,
        declared: &'static str,
        actual: &'static str,
    },

    #[error("{what}: indexes nested more than {max} deep: refusing a cyclic or malicious layout")]
    TooDeep { what: String, max: usize },

    #[error("{what}: no image found (the index is empty): export the image again")]
    Empty { what: String },

    #[error("{what}: no image named {reference:?} (has {available}): name one of those")]
    RefNotFound {
        what: String,
        reference: String,
        available: String,
    },

    #[error("{what}: holds {count} images ({available}): name one, e.g. {example}")]
    Ambiguous {
        what: String,
        count: usize,
        available: String,
        example: String,
    },
}
