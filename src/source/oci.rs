//! OCI image layouts (`oci:DIR`) and OCI archives (`oci-archive:PATH`).

use super::{Container, ResolvedImage, Source, SourceError, SourceLayer, blob_path};
use crate::digest::Digest;
use crate::image::doc::{self, Descriptor, Doc, Index};
use crate::image::media::{self, ANNOTATION_REF_NAME};
use crate::image::select::{self, Fetch};
use crate::image::{Family, ImageError};
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
    let entries: Vec<Descriptor> = match reference {
        None => {
            // Several differently named images and no name given: picking one by platform
            // could push the wrong image, so ask for the name.
            let mut names: Vec<&str> = Vec::new();
            for d in &index.parsed.manifests {
                if let Some(n) = d.annotation(ANNOTATION_REF_NAME)
                    && !names.contains(&n)
                {
                    names.push(n);
                }
            }
            if names.len() > 1 {
                return Err(ImageError::Ambiguous {
                    what: index_what,
                    count: names.len(),
                    // Ref names come from the image: made fit for a one-line message.
                    available: super::one_line(&names.join(", ")),
                    example: format!(
                        "{}:{}",
                        source.reference,
                        super::one_line(names.first().unwrap_or(&"REF"))
                    ),
                }
                .into());
            }
            index.parsed.manifests.clone()
        }
        Some(r) => {
            let matching: Vec<Descriptor> = index
                .parsed
                .manifests
                .iter()
                .filter(|d| {
                    d.annotation(ANNOTATION_REF_NAME) == Some(r)
                        || d.annotation(ANNOTATION_CONTAINERD_NAME)
                            .is_some_and(|n| super::docker::tag_matches(n, r))
                })
                .cloned()
                .collect();
            if matching.is_empty() {
                let names: Vec<&str> = index
                    .parsed
                    .manifests
                    .iter()
                    .filter_map(|d| d.annotation(ANNOTATION_REF_NAME))
                    .collect();
                return Err(ImageError::RefNotFound {
                    what: index_what,
                    reference: r.to_string(),
                    available: if names.is_empty() {
                        "no named images".into()
                    } else {
                        super::one_line(&names.join(", "))
                    },
                }
                .into());
            }
            matching
        }
    };
    let fetch = LayoutFetch(c);
    let sel = select::select(&fetch, &index_what, &entries, wanted)?;
    let manifest_what = format!("{}: {}", c.display(), blob_path(&sel.manifest.digest));
    let m = &sel.manifest.parsed;
    let diff_ids = &sel.config.parsed.rootfs.diff_ids;
    if m.layers.len() != diff_ids.len() {
        return Err(ImageError::LayerCountMismatch {
            what: manifest_what,
            layers: m.layers.len(),
            diff_ids: diff_ids.len(),
        }
        .into());
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    for (i, (d, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        let t = media::classify_layer(&d.media_type).ok_or_else(|| {
            ImageError::UnknownLayerMediaType {
                what: manifest_what.clone(),
                media_type: d.media_type.clone(),
            }
        })?;
        if t.compression == media::Compression::None && &d.digest != diff_id {
            return Err(ImageError::DiffIdMismatch {
                what: manifest_what,
                index: i,
                expected: diff_id.clone(),
                actual: d.digest.clone(),
            }
            .into());
        }
        let location = c.locate_blob(&d.digest, d.size)?;
        // A layer whose bytes are not what its media type says would upload fine and fail
        // on every node that pulls it: catch it here (8 bytes read).
        if location.len > 0 {
            let head = location.head(8)?;
            let actual = media::sniff_unsupported(&head)
                .unwrap_or_else(|| media::Compression::sniff(&head).name());
            if actual != t.compression.name() {
                return Err(ImageError::CompressionMismatch {
                    what: location.name.to_string(),
                    media_type: d.media_type.clone(),
                    declared: t.compression.name(),
                    actual,
                }
                .into());
            }
        }
        layers.push(SourceLayer {
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
            compression: t.compression,
            foreign: t.foreign,
            location,
            diff_id: diff_id.clone(),
            urls: d.urls.clone(),
            annotations: d.annotations.clone(),
        });
    }
    let config_desc = &m.config;
    let config_location = c.locate_blob(&config_desc.digest, config_desc.size)?;
    let config_media_type = if config_desc.media_type.is_empty() {
        match sel.family {
            Family::Docker2 => media::DOCKER_CONFIG.to_string(),
            Family::Oci => media::OCI_CONFIG.to_string(),
        }
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
