//! Media types hoist reads and writes, and what each one means for a push.

use serde::Serialize;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Annotation buildx puts on attestation manifests in an index.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// Annotation naming an image inside an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which family of media types a manifest and its blobs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Docker image manifest v2, schema 2.
    Docker2,
    /// OCI image manifest v1.
    Oci,
}

impl Family {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Family::Docker2 => DOCKER_MANIFEST,
            Family::Oci => OCI_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Family::Docker2 => DOCKER_CONFIG,
            Family::Oci => OCI_CONFIG,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Docker2 => "Docker schema 2",
            Family::Oci => "OCI",
        }
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Sniffs the compression of a blob from its first bytes. `None` means "not gzip or zstd";
    /// other compressions (xz, bzip2) are reported by [`sniff_unsupported`].
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&crate::compress::GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&crate::compress::ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Names a compression hoist recognises but cannot use, from a blob's first bytes.
pub fn sniff_unsupported(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some("xz")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// What a layer media type says about the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerType {
    pub family: Family,
    pub compression: Compression,
    /// Docker foreign / OCI non-distributable layer.
    pub foreign: bool,
}

/// Classifies a layer media type; `None` for a type hoist does not know.
pub fn classify_layer(media_type: &str) -> Option<LayerType> {
    use Compression::*;
    use Family::*;
    let (family, compression, foreign) = match media_type {
        DOCKER_LAYER_TAR => (Docker2, None, false),
        DOCKER_LAYER_GZIP => (Docker2, Gzip, false),
        DOCKER_LAYER_ZSTD => (Docker2, Zstd, false),
        DOCKER_FOREIGN_LAYER_GZIP => (Docker2, Gzip, true),
        OCI_LAYER_TAR => (Oci, None, false),
        OCI_LAYER_GZIP => (Oci, Gzip, false),
        OCI_LAYER_ZSTD => (Oci, Zstd, false),
        OCI_NONDIST_TAR => (Oci, None, true),
        OCI_NONDIST_GZIP => (Oci, Gzip, true),
        OCI_NONDIST_ZSTD => (Oci, Zstd, true),
        _ => return Option::None,
    };
    Some(LayerType {
        family,
        compression,
        foreign,
    })
}

/// The media type of a layer of `family` compressed with `compression`.
/// zstd has no Docker schema 2 media type: callers convert such images to OCI first.
pub fn layer_media_type(family: Family, compression: Compression, foreign: bool) -> &'static str {
    match (family, compression, foreign) {
        (Family::Docker2, Compression::None, false) => DOCKER_LAYER_TAR,
        (Family::Docker2, Compression::Gzip, false) => DOCKER_LAYER_GZIP,
        (Family::Docker2, Compression::Gzip, true) => DOCKER_FOREIGN_LAYER_GZIP,
        (Family::Docker2, _, _) | (Family::Oci, Compression::Zstd, false) => OCI_LAYER_ZSTD,
        (Family::Oci, Compression::None, false) => OCI_LAYER_TAR,
        (Family::Oci, Compression::Gzip, false) => OCI_LAYER_GZIP,
        (Family::Oci, Compression::None, true) => OCI_NONDIST_TAR,
        (Family::Oci, Compression::Gzip, true) => OCI_NONDIST_GZIP,
        (Family::Oci, Compression::Zstd, true) => OCI_NONDIST_ZSTD,
    }
}

/// What a manifest-level media type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Manifest(Family),
    Index(Family),
    /// Docker schema 1: obsolete and refused.
    Schema1,
    Unknown,
}

pub fn classify_document(media_type: &str) -> DocumentKind {
    match media_type {
        DOCKER_MANIFEST => DocumentKind::Manifest(Family::Docker2),
        OCI_MANIFEST => DocumentKind::Manifest(Family::Oci),
        DOCKER_MANIFEST_LIST => DocumentKind::Index(Family::Docker2),
        OCI_INDEX => DocumentKind::Index(Family::Oci),
        DOCKER_MANIFEST_V1 | DOCKER_MANIFEST_V1_SIGNED => DocumentKind::Schema1,
        _ => DocumentKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types_round_trip() {
        for mt in [
            DOCKER_LAYER_TAR,
            DOCKER_LAYER_GZIP,
            DOCKER_FOREIGN_LAYER_GZIP,
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_NONDIST_TAR,
            OCI_NONDIST_GZIP,
            OCI_NONDIST_ZSTD,
        ] {
            let t = classify_layer(mt).unwrap();
            assert_eq!(layer_media_type(t.family, t.compression, t.foreign), mt);
        }
        assert!(classify_layer("application/vnd.in-toto+json").is_none());
    }

    #[test]
    fn sniffs() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(sniff_unsupported(b"BZh9"), Some("bzip2"));
    }
}
