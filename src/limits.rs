//! What a registry accepts of one push: parts per blob upload, bytes per layer, layers per
//! image. Checked before any upload (or, for a layer whose compressed size is not known yet,
//! before its first part), so a push the registry would refuse fails at once with the reason
//! instead of after hours of sending.
//!
//! The limits are ECR's, hoist's main target, and they apply to every registry: ECR is also
//! reached through names no list knows (a proxy, a CNAME), and the price elsewhere is small
//! (the part-count floor changes part sizes only above about 20 GiB per blob; 127 layers and
//! 52,000 MiB per layer are far beyond what images usually need). A host recognised as ECR
//! Public gets its tighter limits (`registry::limits_for_host`).

/// One MiB, the unit ECR states its layer limits in.
const MIB: u64 = 1 << 20;

/// Upload connections a daemon keeps across all its jobs unless configured otherwise (docker
/// pushes 5 blobs at once, skopeo 6, crane 4): the parallelism that beats per-connection
/// shaping without crowding a home uplink.
pub const UPLOADS_IN_FLIGHT_MAX_DEFAULT: usize = 4;

/// Most layers hoist gives an image when it splits layers, whatever the registry allows:
/// ECR's 127 less room for about 30 layers that images built `FROM` the pushed one add on
/// top (each `RUN`, `COPY` and `ADD` is a layer), so a split base image never makes its
/// children unpushable. Parts beyond it are not made: the layers are split less.
pub const SPLIT_LAYERS_PER_IMAGE_MAX: usize = 96;

/// Smallest part size a split accepts: below it the per-layer overhead (a blob, a HEAD, a
/// manifest entry, a snapshot on every node) outweighs any parallelism.
pub const SPLIT_PART_BYTES_MIN: u64 = 1 << 20;

/// The limits of one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Whose limits these are, for messages ("ECR", "ECR Public").
    pub registry: &'static str,
    /// Parts (PATCH requests that store bytes) one blob upload may have.
    pub parts_per_upload_max: u64,
    /// Bytes of one layer blob as the registry receives it.
    pub layer_bytes_max: u64,
    /// Layers of one image manifest (`Limit on number of layers per image exceeded`).
    pub layers_per_image_max: usize,
}

/// Amazon ECR (private registries): the limits every registry gets unless recognised as
/// another.
pub const ECR_LIMITS: RegistryLimits = RegistryLimits {
    registry: "ECR",
    parts_per_upload_max: 4_200,
    layer_bytes_max: 52_000 * MIB,
    layers_per_image_max: 127,
};

/// Amazon ECR Public (`public.ecr.aws`).
pub const ECR_PUBLIC_LIMITS: RegistryLimits = RegistryLimits {
    registry: "ECR Public",
    parts_per_upload_max: 1_000,
    layer_bytes_max: 10_000 * MIB,
    layers_per_image_max: 127,
};

impl Default for RegistryLimits {
    fn default() -> Self {
        ECR_LIMITS
    }
}

/// A push the registry would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "image has {layers} layers, over {registry}'s limit of {max}: squash the image (fewer RUN steps, multi-stage build)"
    )]
    TooManyLayers {
        registry: &'static str,
        layers: usize,
        max: usize,
    },

    #[error(
        "{layer} is {bytes} bytes ({mib} MiB), over {registry}'s limit of {max_mib} MiB per layer: push it split (--split-layers SIZE, for an uncompressed layer) or rebuild the image with smaller layers"
    )]
    LayerTooLarge {
        registry: &'static str,
        /// Which layer, for the message ("layer 2 (sha256:...)").
        layer: String,
        bytes: u64,
        mib: u64,
        max_mib: u64,
    },

    #[error(
        "blob {digest} is empty (0 bytes) and the registry refuses to store an empty upload ({answer}); ECR cannot store zero-length blobs: rebuild the image without the empty layer"
    )]
    EmptyBlobRefused { digest: String, answer: String },
}

impl RegistryLimits {
    /// Refuses an image of more than [`Self::layers_per_image_max`] layers.
    pub fn check_layer_count(&self, layers: usize) -> Result<(), LimitError> {
        if layers > self.layers_per_image_max {
            return Err(LimitError::TooManyLayers {
                registry: self.registry,
                layers,
                max: self.layers_per_image_max,
            });
        }
        Ok(())
    }

    /// Refuses a layer (`layer` names it in the message) of `bytes` bytes as the registry
    /// receives it, when over [`Self::layer_bytes_max`].
    pub fn check_layer_bytes(&self, layer: &str, bytes: u64) -> Result<(), LimitError> {
        if bytes > self.layer_bytes_max {
            return Err(LimitError::LayerTooLarge {
                registry: self.registry,
                layer: layer.to_string(),
                bytes,
                mib: bytes.div_ceil(MIB),
                max_mib: self.layer_bytes_max / MIB,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_count_and_size_are_refused_with_the_numbers() {
        assert!(ECR_LIMITS.check_layer_count(127).is_ok());
        let e = ECR_LIMITS.check_layer_count(128).unwrap_err().to_string();
        assert!(
            e.contains("128 layers") && e.contains("limit of 127"),
            "{e}"
        );
        assert!(
            ECR_LIMITS
                .check_layer_bytes("layer 0", 52_000 * MIB)
                .is_ok()
        );
        let e = ECR_LIMITS
            .check_layer_bytes("layer 2 (sha256:ab)", 52_000 * MIB + 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer 2 (sha256:ab)") && e.contains("52001 MiB") && e.contains("52000 MiB"),
            "{e}"
        );
        assert!(e.contains("smaller layers") && e.contains("split"), "{e}");
        let e = ECR_PUBLIC_LIMITS
            .check_layer_bytes("layer 0", 10_000 * MIB + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ECR Public's limit of 10000 MiB"), "{e}");
    }
}
