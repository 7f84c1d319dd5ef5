//! Verifying a pushed tag the way a Kubernetes node's containerd resolves it: tag -> (index ->
//! the entry for the node's platform, attestations ignored) -> image manifest -> config, whose
//! os/architecture must be the node's.

use crate::digest::Digest;
use crate::image::media;
use crate::platform::Platform;

use super::manifests::media_types;
use super::{ImageRef, Reference, RegistryClient, RegistryError};

/// Configs are small; a bigger one is not an image config (the bound on every JSON document).
pub const CONFIG_BYTES_MAX: usize = crate::image::JSON_BYTES_MAX as usize;

/// What the verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The digest the tag resolves to (what a pull by tag gets).
    pub tag_digest: Digest,
    pub tag_media_type: String,
    /// The image manifest a node of the wanted platform runs (= `tag_digest` unless an index).
    pub image_digest: Digest,
    /// From the image config.
    pub platform: Platform,
    /// The tag is an index (hoist itself never pushes one; someone else may have).
    pub via_index: bool,
    /// Layers checked present (digest and size).
    pub layers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "tag {tag} points at {found}, not at the pushed {expected}: something else pushed to it; push again or check who else writes this tag"
    )]
    TagMismatch {
        tag: String,
        expected: Digest,
        found: Digest,
    },
    #[error(
        "the tag is an index with only {} entries: {wanted} nodes fail with \"no match for platform in manifest\"",
        join_entries(entries)
    )]
    NoPlatformMatch {
        wanted: Platform,
        entries: Vec<String>,
    },
    #[error(
        "layer {layer} ({digest}, {size} bytes) of {image} is not in the registry: the push was incomplete, and nodes fail to pull it; push the image again"
    )]
    MissingLayer {
        image: String,
        layer: usize,
        digest: Digest,
        size: u64,
    },
    #[error("image is {found} but nodes ask for {wanted}: they fail with \"exec format error\"")]
    WrongPlatform { found: Platform, wanted: Platform },
    #[error("{what} of {reference} is malformed: {message}")]
    Malformed {
        what: String,
        reference: String,
        message: String,
    },
}

fn join_entries(entries: &[String]) -> String {
    match entries {
        [] => "no".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn malformed(what: &str, reference: &str, message: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        what: what.into(),
        reference: reference.into(),
        message: message.into(),
    }
}

fn platform_of(v: &serde_json::Value) -> Option<Platform> {
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    Some(Platform::new(
        os,
        arch,
        v.get("variant").and_then(|x| x.as_str()),
    ))
}

/// The valid `digest` of a descriptor, if it has one.
fn digest_field(descriptor: &serde_json::Value) -> Option<Digest> {
    let d = descriptor.get("digest")?.as_str()?;
    Digest::parse(d).ok()
}

fn is_attestation(entry: &serde_json::Value) -> bool {
    entry
        .get("annotations")
        .and_then(|a| a.get(media::ANNOTATION_REFERENCE_TYPE))
        .and_then(|t| t.as_str())
        == Some(media::ATTESTATION_MANIFEST)
}

/// Reads the tag back and checks it is `expected` (when given) and runs on `platform`.
pub async fn verify_tag(
    client: &RegistryClient,
    image: &ImageRef,
    expected: Option<&Digest>,
    platform: &Platform,
) -> Result<VerifyReport, VerifyError> {
    let repo = &image.repository;
    let (media_type, bytes, tag_digest) = client.get_manifest(repo, &image.reference).await?;
    if let Some(want) = expected
        && want != &tag_digest
    {
        return Err(VerifyError::TagMismatch {
            tag: image.to_string(),
            expected: want.clone(),
            found: tag_digest,
        });
    }
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| malformed("manifest", &image.to_string(), e.to_string()))?;
    let is_index = media_types::is_index(&media_type)
        || (media_type.is_empty() && doc.get("manifests").is_some_and(|m| m.is_array()));
    let (image_digest, manifest) = if is_index {
        let d = index_entry(&doc, image, platform)?;
        let (mt, b, got) = client
            .get_manifest(repo, &Reference::Digest(d.clone()))
            .await?;
        if media_types::is_index(&mt) {
            return Err(malformed("index", &image.to_string(), "nested index"));
        }
        let m: serde_json::Value = serde_json::from_slice(&b)
            .map_err(|e| malformed("manifest", &d.to_string(), e.to_string()))?;
        (got, m)
    } else {
        (tag_digest.clone(), doc)
    };
    let found = config_platform(client, repo, &manifest, &image_digest).await?;
    if !platform.matches(&found) {
        return Err(VerifyError::WrongPlatform {
            found,
            wanted: platform.clone(),
        });
    }
    let layers = check_layers(client, image, &manifest, &image_digest).await?;
    Ok(VerifyReport {
        tag_digest,
        tag_media_type: media_type,
        image_digest,
        platform: found,
        via_index: is_index,
        layers,
    })
}

/// The digest of the entry of `index` a node of `platform` pulls, the way containerd picks
/// it: entries without a platform and attestation manifests are skipped.
fn index_entry(
    index: &serde_json::Value,
    image: &ImageRef,
    platform: &Platform,
) -> Result<Digest, VerifyError> {
    let entries = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| malformed("index", &image.to_string(), "no manifests array"))?;
    let mut seen = Vec::new();
    let mut chosen = None;
    for e in entries {
        let p = e.get("platform").and_then(platform_of);
        seen.push(
            p.as_ref()
                .map_or("unknown/unknown".to_string(), |p| p.to_string()),
        );
        let Some(p) = p else { continue };
        if is_attestation(e) || p.is_unknown() {
            continue;
        }
        if chosen.is_none() && platform.matches(&p) {
            chosen = Some(e);
        }
    }
    let Some(entry) = chosen else {
        seen.dedup();
        return Err(VerifyError::NoPlatformMatch {
            wanted: platform.clone(),
            entries: seen,
        });
    };
    digest_field(entry)
        .ok_or_else(|| malformed("index", &image.to_string(), "entry without a valid digest"))
}

/// The platform the image manifest's config (fetched from `repo`) declares.
async fn config_platform(
    client: &RegistryClient,
    repo: &str,
    manifest: &serde_json::Value,
    image_digest: &Digest,
) -> Result<Platform, VerifyError> {
    let config_digest = manifest
        .get("config")
        .and_then(digest_field)
        .ok_or_else(|| {
            malformed(
                "manifest",
                &image_digest.to_string(),
                "no valid config digest",
            )
        })?;
    let config = client
        .get_blob(repo, &config_digest, CONFIG_BYTES_MAX)
        .await?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| malformed("config", &config_digest.to_string(), e.to_string()))?;
    platform_of(&config)
        .ok_or_else(|| malformed("config", &config_digest.to_string(), "no os/architecture"))
}

/// Checks every layer of `manifest` is in the registry with its size: a node pulls every
/// layer, and a partial push leaves a manifest whose layers 404. Returns how many there are.
async fn check_layers(
    client: &RegistryClient,
    image: &ImageRef,
    manifest: &serde_json::Value,
    image_digest: &Digest,
) -> Result<usize, VerifyError> {
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| malformed("manifest", &image_digest.to_string(), "no layers array"))?;
    for (i, layer) in layers.iter().enumerate() {
        let digest = digest_field(layer);
        let size = layer.get("size").and_then(|s| s.as_u64());
        let (Some(digest), Some(size)) = (digest, size) else {
            return Err(malformed(
                "manifest",
                &image_digest.to_string(),
                format!("layer {} has no valid digest and size", i + 1),
            ));
        };
        if !client
            .blob_present(&image.repository, &digest, size)
            .await?
        {
            return Err(VerifyError::MissingLayer {
                image: image.to_string(),
                layer: i + 1,
                digest,
                size,
            });
        }
    }
    Ok(layers.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = VerifyError::NoPlatformMatch {
            wanted: Platform::linux_amd64(),
            entries: vec!["linux/arm64".into(), "unknown/unknown".into()],
        };
        assert_eq!(
            e.to_string(),
            "the tag is an index with only linux/arm64 and unknown/unknown entries: linux/amd64 nodes fail with \"no match for platform in manifest\""
        );
        let e = VerifyError::WrongPlatform {
            found: "linux/arm64".parse().unwrap(),
            wanted: Platform::linux_amd64(),
        };
        assert_eq!(
            e.to_string(),
            "image is linux/arm64 but nodes ask for linux/amd64: they fail with \"exec format error\""
        );
    }
}
