//! Small images for registry tests: deterministic bytes, configs, manifests, indexes, and a
//! reference upload loop that drives the registry client the way the daemon does (one cursor
//! to the next, resuming after failures).

use bytes::Bytes;
use hoist::digest::Digest;
use hoist::registry::{MountOutcome, RegistryClient, RegistryError, UploadCursor};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Uploads the config of `os_arch` (`os/arch`) and puts under `tag` the manifest of it and
/// `layers` (already in `repo`); returns the manifest bytes.
pub async fn put_image(
    c: &RegistryClient,
    repo: &str,
    tag: &str,
    os_arch: &str,
    layers: &[&Blob],
) -> Bytes {
    let (os, arch) = os_arch.split_once('/').unwrap();
    let cfg = config(os, arch);
    upload(c, repo, &cfg, 0).await.unwrap();
    let m = manifest(&cfg, layers, true);
    c.put_manifest(repo, tag, OCI_MANIFEST, m.clone())
        .await
        .unwrap();
    m
}

/// `n` pseudo-random bytes from `seed` (xorshift: fast, deterministic, incompressible enough).
pub fn random_bytes(seed: u64, n: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    Bytes::from(out)
}

/// A blob with its digest.
#[derive(Clone)]
pub struct Blob {
    pub bytes: Bytes,
    pub digest: Digest,
}

impl Blob {
    pub fn new(bytes: Bytes) -> Blob {
        let digest = Digest::sha256_of(&bytes);
        Blob { bytes, digest }
    }
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

pub fn config(os: &str, arch: &str) -> Blob {
    Blob::new(Bytes::from(
        serde_json::json!({
            "architecture": arch,
            "os": os,
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {}
        })
        .to_string(),
    ))
}

/// An OCI image manifest (with top-level mediaType unless `with_media_type` is false).
pub fn manifest(config: &Blob, layers: &[&Blob], with_media_type: bool) -> Bytes {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": OCI_LAYER, "digest": l.digest.to_string(), "size": l.len()
        })).collect::<Vec<_>>(),
    });
    if with_media_type {
        m.as_object_mut()
            .unwrap()
            .insert("mediaType".into(), OCI_MANIFEST.into());
    }
    Bytes::from(serde_json::to_vec(&m).unwrap())
}

/// An OCI index over `(manifest bytes, platform "os/arch", is_attestation)`.
pub fn index(entries: &[(&Bytes, &str, bool)]) -> Bytes {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(bytes, platform, att)| {
            let (os, arch) = platform.split_once('/').unwrap();
            let mut e = serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": Digest::sha256_of(bytes).to_string(),
                "size": bytes.len(),
                "platform": {"os": os, "architecture": arch},
            });
            if *att {
                e.as_object_mut().unwrap().insert(
                    "annotations".into(),
                    serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"}),
                );
            }
            e
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests
        }))
        .unwrap(),
    )
}

/// What happened during [`upload`].
#[derive(Debug, Default)]
pub struct UploadStats {
    pub chunks: u32,
    pub resumes: u32,
    pub restarts: u32,
    pub skipped: bool,
}

/// Uploads `blob` to `repo` the way the daemon does: HEAD, POST, PATCH chunks of
/// `client.chunk_bytes()` from the cursor's offset, `resume` after a retryable failure (at most
/// `failures_max` times), a new session when a PATCH or PUT finds the session gone
/// (`is_upload_gone`), final PUT with the last chunk.
pub async fn upload(
    client: &RegistryClient,
    repo: &str,
    blob: &Blob,
    failures_max: u32,
) -> Result<UploadStats, RegistryError> {
    let mut stats = UploadStats::default();
    if client.blob_present(repo, &blob.digest, blob.len()).await? {
        stats.skipped = true;
        return Ok(stats);
    }
    let mut cursor = client.start_upload(repo).await?;
    let chunk = client.chunk_bytes();
    let mut failures = 0;
    loop {
        // Round trip through JSON, as the daemon persists the cursor in SQLite.
        cursor =
            serde_json::from_str::<UploadCursor>(&serde_json::to_string(&cursor).unwrap()).unwrap();
        let off = cursor.offset as usize;
        let end = (off + chunk as usize).min(blob.bytes.len());
        let step = if end == blob.bytes.len() {
            client
                .finish_upload(&cursor, &blob.digest, blob.bytes.slice(off..end))
                .await
                .map(|()| None)
        } else {
            client
                .upload_chunk_from(&cursor, super::body(blob.bytes.slice(off..end)))
                .await
                .map(Some)
        };
        match step {
            Ok(None) => return Ok(stats),
            Ok(Some(next)) => {
                stats.chunks += 1;
                cursor = next;
            }
            Err(e) if e.is_upload_gone() && failures < failures_max => {
                failures += 1;
                // A lost answer to the final PUT: the blob may be complete.
                if client.blob_present(repo, &blob.digest, blob.len()).await? {
                    return Ok(stats);
                }
                stats.restarts += 1;
                cursor = client.start_upload(repo).await?;
            }
            Err(e) if e.is_retryable() && failures < failures_max => {
                failures += 1;
                stats.resumes += 1;
                // Unconfirmed or not, the next PATCH tells where the session stands.
                cursor = client.resume(repo, &cursor).await?.cursor();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Mount or upload.
pub async fn mount_or_upload(
    client: &RegistryClient,
    repo: &str,
    from: &str,
    blob: &Blob,
) -> Result<bool, RegistryError> {
    match client.mount_blob(repo, from, &blob.digest).await? {
        MountOutcome::Mounted => Ok(true),
        MountOutcome::Upload(cursor) => {
            client
                .finish_upload(&cursor, &blob.digest, blob.bytes.clone())
                .await?;
            Ok(false)
        }
    }
}

/// PATCHes `blob`'s bytes `range` to the session at `cursor` and returns the next cursor
/// (panics if the registry refuses).
pub async fn send_chunk(
    client: &RegistryClient,
    cursor: &UploadCursor,
    blob: &Blob,
    range: std::ops::Range<usize>,
) -> UploadCursor {
    client
        .upload_chunk_from(cursor, super::body(blob.bytes.slice(range)))
        .await
        .unwrap()
}

/// Completes the upload at `cursor` with `blob`'s bytes from `from` to the end, under the
/// blob's digest (panics if the registry refuses).
pub async fn send_last(client: &RegistryClient, cursor: &UploadCursor, blob: &Blob, from: usize) {
    client
        .finish_upload(cursor, &blob.digest, blob.bytes.slice(from..))
        .await
        .unwrap()
}

/// Whether `repo` has `blob` (HEAD, digest and size checked).
pub async fn present(client: &RegistryClient, repo: &str, blob: &Blob) -> bool {
    client
        .blob_present(repo, &blob.digest, blob.len())
        .await
        .unwrap()
}

/// `verify_tag` of `host/reference` on linux/amd64, expecting the digest of `manifest`.
pub async fn verify_amd64(
    client: &RegistryClient,
    host: &str,
    reference: &str,
    manifest: &Bytes,
) -> Result<hoist::registry::VerifyReport, hoist::registry::VerifyError> {
    let image: hoist::registry::ImageRef = format!("{host}/{reference}").parse().unwrap();
    hoist::registry::verify_tag(
        client,
        &image,
        Some(&Digest::sha256_of(manifest)),
        &hoist::platform::Platform::linux_amd64(),
    )
    .await
}
