//! OCI image layouts (`oci:DIR`) and OCI archives (`oci-archive:PATH`).

use super::{BlobLocation, Container, ResolvedImage, Source, SourceError, SourceLayer, blob_path};
use crate::digest::Digest;
use crate::image::ImageError;
use crate::image::doc::{self, Descriptor, Doc, Index};
use crate::image::media::{self, ANNOTATION_REF_NAME};
use crate::image::select::{self, Fetch};
use crate::platform::Platform;

/// Annotation containerd (`ctr export`, `nerdctl save`, docker's containerd store) puts on
/// `index.json` entries: the full image name, e.g. `docker.io/library/foo:latest`.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

struct LayoutFetch<'a>(&'a Container);

impl Fetch for LayoutFetch<'_> {
    type Error = SourceError;

    fn fetch_json(&self, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        self.0.read_json_blob(&desc.digest, desc.size)
    }

    fn what(&self, digest: &Digest) -> String {
        format!("{}: {}", self.0.display(), blob_path(digest))
    }
}

pub(super) fn resolve(
    source: &Source,
    reference: Option<&str>,
    wanted: &Platform,
) -> Result<ResolvedImage, SourceError> {
    let c = &source.container;
    let index_what = format!("{}: index.json", c.display());
    let bytes = c.read_json(
        "index.json",
        "not an OCI image layout; export the image with skopeo copy ... oci:DIR or docker save",
    )?;
    let index: Doc<Index> = doc::parse(bytes, &index_what, "OCI index.json")?;
    let entries = match reference {
        None => unnamed_entries(source, &index.parsed, &index_what)?,
        Some(r) => named_entries(&index.parsed, r, &index_what)?,
    };
    resolve_entries(source, &index_what, &entries, wanted)
}

/// The image for `wanted` among `entries` (of the index `index_what` names), read from the
/// OCI layout of `source`: the platform chosen as an index says, the others named in
/// `skipped`. Also how a `docker save` archive of a multi-platform image is read.
pub(super) fn resolve_entries(
    source: &Source,
    index_what: &str,
    entries: &[Descriptor],
    wanted: &Platform,
) -> Result<ResolvedImage, SourceError> {
    let c = &source.container;
    let fetch = LayoutFetch(c);
    let sel = select::select(&fetch, index_what, entries, wanted)?;
    let manifest_what = format!("{}: {}", c.display(), blob_path(&sel.manifest.digest));
    let m = &sel.manifest.parsed;
    let diff_ids = sel
        .config
        .parsed
        .diff_ids_for(&manifest_what, m.layers.len())?;
    let layers = m
        .layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (d, diff_id))| layer(c, &manifest_what, i, d, diff_id))
        .collect::<Result<Vec<_>, _>>()?;
    let config_desc = &m.config;
    let config_location = c.locate_blob(&config_desc.digest, config_desc.size)?;
    let config_media_type = if config_desc.media_type.is_empty() {
        sel.family.config_media_type().to_string()
    } else {
        config_desc.media_type.clone()
    };
    Ok(ResolvedImage {
        source: source.reference.to_string(),
        family: sel.family,
        platform: sel.platform.clone(),
        config_media_type,
        config_location,
        config: sel.config,
        manifest: Some((sel.manifest, sel.media_type)),
        layers,
        skipped: sel.skipped,
    })
}

/// The index entries to choose from when no name was given. Several differently named images
/// and no name: picking one by platform could push the wrong image, so ask for the name.
fn unnamed_entries(
    source: &Source,
    index: &Index,
    index_what: &str,
) -> Result<Vec<Descriptor>, SourceError> {
    let mut names: Vec<&str> = Vec::new();
    for d in &index.manifests {
        if let Some(n) = d.annotation(ANNOTATION_REF_NAME)
            && !names.contains(&n)
        {
            names.push(n);
        }
    }
    if names.len() > 1 {
        return Err(ImageError::Ambiguous {
            what: index_what.to_string(),
            count: names.len(),
            // Ref names come from the image: made fit for a one-line message.
            available: crate::text::detail(&names.join(", ")),
            example: format!(
                "{}:{}",
                source.reference,
                crate::text::detail(names.first().unwrap_or(&"REF"))
            ),
        }
        .into());
    }
    Ok(index.manifests.clone())
}

/// The index entries named `r`, by OCI ref name or by containerd's image name.
fn named_entries(index: &Index, r: &str, index_what: &str) -> Result<Vec<Descriptor>, SourceError> {
    let matching: Vec<Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.annotation(ANNOTATION_REF_NAME) == Some(r)
                || d.annotation(ANNOTATION_CONTAINERD_NAME)
                    .is_some_and(|n| super::docker::tag_matches(n, r))
        })
        .cloned()
        .collect();
    if !matching.is_empty() {
        return Ok(matching);
    }
    let names: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotation(ANNOTATION_REF_NAME))
        .collect();
    Err(ImageError::RefNotFound {
        what: index_what.to_string(),
        reference: r.to_string(),
        available: if names.is_empty() {
            "no named images".into()
        } else {
            crate::text::detail(&names.join(", "))
        },
    }
    .into())
}

/// Layer `i` of the manifest (`manifest_what`): its media type known, an uncompressed layer's
/// digest equal to its diff_id, its blob present with the declared size and compression.
fn layer(
    c: &Container,
    manifest_what: &str,
    i: usize,
    d: &Descriptor,
    diff_id: &Digest,
) -> Result<SourceLayer, SourceError> {
    let t =
        media::classify_layer(&d.media_type).ok_or_else(|| ImageError::UnknownLayerMediaType {
            what: manifest_what.to_string(),
            media_type: d.media_type.clone(),
        })?;
    if t.compression == media::Compression::None && &d.digest != diff_id {
        return Err(ImageError::DiffIdMismatch {
            what: manifest_what.to_string(),
            index: i,
            expected: diff_id.clone(),
            actual: d.digest.clone(),
        }
        .into());
    }
    let location = c.locate_blob(&d.digest, d.size)?;
    check_declared_compression(&location, d, t.compression)?;
    Ok(SourceLayer {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
        compression: t.compression,
        foreign: t.foreign,
        location,
        diff_id: diff_id.clone(),
        urls: d.urls.clone(),
        annotations: d.annotations.clone(),
    })
}

/// A layer whose bytes are not what its media type says would upload fine and fail on every
/// node that pulls it: catch it here (8 bytes read).
fn check_declared_compression(
    location: &BlobLocation,
    d: &Descriptor,
    declared: media::Compression,
) -> Result<(), SourceError> {
    if location.len == 0 {
        return Ok(());
    }
    let head = location.head(8)?;
    let actual =
        media::sniff_unsupported(&head).unwrap_or_else(|| media::Compression::sniff(&head).name());
    if actual != declared.name() {
        return Err(ImageError::CompressionMismatch {
            what: location.name.to_string(),
            media_type: d.media_type.clone(),
            declared: declared.name(),
            actual,
        }
        .into());
    }
    Ok(())
}
