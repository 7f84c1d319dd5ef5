//! The platforms an engine holds of an image (the inspect's `Manifests`, given by engines with
//! the containerd image store) and which of them a push takes.

use serde::Deserialize;

use crate::image::ImageError;
use crate::image::doc::Descriptor;
use crate::platform::Platform;

/// The `Kind` of a manifest that is an image (others: attestations, unknown).
pub const KIND_IMAGE: &str = "image";

/// One entry of the inspect's `Manifests`.
#[derive(Debug, Clone, Deserialize)]
pub struct EngineManifest {
    #[serde(rename = "Kind", default)]
    pub kind: String,
    /// Whether the engine holds its content (a pull may have fetched one platform only).
    #[serde(rename = "Available", default)]
    pub available: bool,
    #[serde(rename = "ImageData", default)]
    pub image_data: Option<ImageData>,
    /// The manifest's descriptor in the image's index.
    #[serde(rename = "Descriptor", default)]
    pub descriptor: Option<Descriptor>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageData {
    #[serde(rename = "Platform", default)]
    pub platform: Option<Platform>,
}

/// The image platforms whose content the engine holds, in the engine's order.
pub fn held_platforms(manifests: &[EngineManifest]) -> Vec<Platform> {
    manifests
        .iter()
        .filter(|m| m.kind == KIND_IMAGE && m.available)
        .filter_map(|m| m.image_data.as_ref()?.platform.as_ref())
        .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()))
        .collect()
}

/// The held platform a push of `wanted` takes: `None` when the engine lists none (the classic
/// store, engines before API 1.48: the inspect's own platform is checked instead); an error
/// naming the platforms held when none is `wanted`.
pub fn choose(
    what: &str,
    manifests: &[EngineManifest],
    wanted: &Platform,
) -> Result<Option<Platform>, ImageError> {
    if manifests.is_empty() {
        return Ok(None);
    }
    let held = held_platforms(manifests);
    match held.iter().find(|p| wanted.matches(p)) {
        Some(p) => Ok(Some(p.clone())),
        None => Err(ImageError::NoMatchingPlatform {
            what: what.to_string(),
            wanted: wanted.to_string(),
            present: match held.is_empty() {
                true => "no image content".to_string(),
                false => held
                    .iter()
                    .map(Platform::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(json: &str) -> Vec<EngineManifest> {
        serde_json::from_str(json).expect("test json")
    }

    #[test]
    fn chooses_the_wanted_platform_and_names_the_held_ones_otherwise() {
        let list = manifests(
            r#"[{"Kind":"image","Available":true,"ImageData":{"Platform":{"os":"linux","architecture":"amd64"}}},
                {"Kind":"image","Available":true,"ImageData":{"Platform":{"os":"linux","architecture":"arm64","variant":"v8"}}},
                {"Kind":"attestation","Available":true},
                {"Kind":"image","Available":false,"ImageData":{"Platform":{"os":"linux","architecture":"s390x"}}}]"#,
        );
        let arm64: Platform = "linux/arm64".parse().expect("platform");
        assert_eq!(choose("x", &list, &arm64).ok().flatten(), Some(arm64));
        let amd64 = Platform::linux_amd64();
        assert_eq!(choose("x", &list, &amd64).ok().flatten(), Some(amd64));
        let s390x: Platform = "linux/s390x".parse().expect("platform");
        let err = choose("x", &list, &s390x)
            .expect_err("not held")
            .to_string();
        assert!(err.contains("has linux/amd64, linux/arm64)"), "{err}");
        assert_eq!(choose("x", &[], &s390x).ok().flatten(), None);
    }
}
