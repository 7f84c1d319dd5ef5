//! Manifests, indexes and configs: parsed for typed reads, kept as their original bytes.
//!
//! Nothing here re-serialises a parsed document: the bytes in [`Doc::bytes`] are what was read,
//! and [`Doc::digest`] is computed over them. serde_json is built with `preserve_order`, so maps
//! kept as [`serde_json::Map`] (annotations) keep the author's key order when a new manifest is
//! built from them.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ImageError;
use crate::digest::Digest;
use crate::platform::Platform;

/// JSON documents (manifests, indexes, configs, `manifest.json`) larger than this are refused
/// before parsing. It is also ECR's manifest size limit.
pub const JSON_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// A parsed document together with the exact bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Doc<T> {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub parsed: T,
}

/// Parses `bytes` as a `kind` document; `what` names the file for messages.
pub fn parse<T: DeserializeOwned>(
    bytes: Vec<u8>,
    what: &str,
    kind: &'static str,
) -> Result<Doc<T>, ImageError> {
    let size = bytes.len() as u64;
    if size > JSON_BYTES_MAX {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            size,
            max: JSON_BYTES_MAX,
        });
    }
    let parsed = serde_json::from_slice(&bytes).map_err(|e| ImageError::Json {
        what: what.to_string(),
        kind,
        detail: crate::text::detail(&e.to_string()),
    })?;
    let digest = Digest::sha256_of(&bytes);
    Ok(Doc {
        bytes,
        digest,
        parsed,
    })
}

/// A content descriptor, as found in manifests and indexes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key)?.as_str()
    }

    /// Whether buildx marked this entry as an attestation (provenance/SBOM) manifest.
    pub fn is_attestation(&self) -> bool {
        self.annotation(super::media::ANNOTATION_REFERENCE_TYPE)
            == Some(super::media::ATTESTATION_MANIFEST)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl DescriptorPlatform {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// An image manifest (Docker schema 2 or OCI).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An image index (OCI index or Docker manifest list), also `index.json` of a layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Just enough of a document to learn what it is before parsing it fully.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub schema_version: Option<u32>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<serde_json::Value>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// The fields of an image config hoist checks.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
}

impl Config {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// The config's diff_ids, one per layer of the manifest (`what`) that lists `layers`
    /// layers: a count that differs means the image is inconsistent.
    pub fn diff_ids_for(&self, what: &str, layers: usize) -> Result<&[Digest], ImageError> {
        let diff_ids = &self.rootfs.diff_ids;
        if layers != diff_ids.len() {
            return Err(ImageError::LayerCountMismatch {
                what: what.to_string(),
                layers,
                diff_ids: diff_ids.len(),
            });
        }
        Ok(diff_ids)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_and_refuses_big() {
        let raw = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[],"zzz":1}"#;
        let d: Doc<Manifest> = parse(raw.to_vec(), "f", "manifest").unwrap();
        assert_eq!(d.bytes, raw.to_vec());
        assert_eq!(d.digest, Digest::sha256_of(raw));
        let big = vec![b' '; (JSON_BYTES_MAX + 1) as usize];
        let e = parse::<Manifest>(big, "f: m", "manifest").unwrap_err();
        assert!(e.to_string().contains("over the 4194304-byte limit"), "{e}");
    }

    #[test]
    fn bad_digest_is_reported() {
        let raw = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"md5:abc","size":0}}"#;
        let e = parse::<Manifest>(raw.to_vec(), "f", "manifest").unwrap_err();
        assert!(e.to_string().contains("unsupported algorithm"), "{e}");
    }
}
