//! Platforms (`os/arch[/variant]`) and how hoist matches them, the way containerd does.

use std::fmt;
use std::str::FromStr;

/// A single target platform, normalised (`x86_64` -> `amd64`, `aarch64` -> `arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0:?} is not OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformError(pub String);

impl Platform {
    pub fn linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// Builds a platform from the fields of a config or index entry, normalising names.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let architecture = normalize_arch(architecture);
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string())
            // arm64's only variant is v8; containerd treats "arm64" and "arm64/v8" as equal.
            .filter(|v| !(architecture == "arm64" && v == "v8"));
        Platform {
            os: os.to_string(),
            architecture,
            variant,
        }
    }

    /// Whether an image of platform `other` runs on a node asking for `self`.
    /// A wanted variant must match exactly; no wanted variant accepts any.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }

    /// `unknown/unknown`: what buildx gives attestation manifests.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }
}

fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "armhf" => "arm".into(),
        other => other.to_string(),
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

/// Writes a platform field from an image document; control characters (which an image can
/// put there, and which would break a one-line message) print as `?`.
fn write_field(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.chars().any(char::is_control) {
        return f.write_str(s);
    }
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    f.write_str(&clean)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_field(f, &self.os)?;
        f.write_str("/")?;
        write_field(f, &self.architecture)?;
        if let Some(v) = &self.variant {
            f.write_str("/")?;
            write_field(f, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(amd, Platform::linux_amd64());
        assert_eq!("linux/x86_64".parse::<Platform>().unwrap(), amd);
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm64");
        assert!(!amd.matches(&arm));
        assert!(
            "linux/arm/v7"
                .parse::<Platform>()
                .unwrap()
                .matches(&Platform::new("linux", "arm", Some("v7")))
        );
        assert!(
            !"linux/arm/v7"
                .parse::<Platform>()
                .unwrap()
                .matches(&Platform::new("linux", "arm", Some("v6")))
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
        assert!("linux/".parse::<Platform>().is_err());
    }

    #[test]
    fn control_characters_from_documents_do_not_print() {
        let p = Platform::new("linux\n", "amd\u{1b}[2J64", Some("v\r1"));
        assert_eq!(p.to_string(), "linux?/amd?[2J64/v?1");
        assert!(!Platform::linux_amd64().matches(&p));
    }
}
