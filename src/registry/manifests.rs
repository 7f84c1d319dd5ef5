//! Manifests: PUT exact bytes with their media type, GET them back with their digest.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header;

use super::error::{RegistryErrorBody, redact_url};
use super::transport::Resp;
use super::{
    Reference, RegistryClient, RegistryError, pull_scope, push_scope, retry, transport::Req,
};
use crate::digest::Digest;
use crate::image::media;

/// The registries' manifest size limit (ECR and distribution: 4 MiB): the same bound hoist
/// puts on every JSON document it reads.
pub const MANIFEST_BYTES_MAX: usize = crate::image::JSON_BYTES_MAX as usize;

/// The four manifest media types registries accept.
pub mod media_types {
    use crate::image::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

    pub const ALL: [&str; 4] = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_MANIFEST_LIST
    }
    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }
}

impl RegistryClient {
    /// PUTs `bytes` unchanged under `tag` with `media_type`; returns their digest (checked
    /// against `Docker-Content-Digest` when sent).
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(RegistryError::ManifestTooLarge {
                size: bytes.len(),
                max: MANIFEST_BYTES_MAX,
            });
        }
        let digest = Digest::sha256_of(&bytes);
        let url = self
            .inner
            .repo_url(repository, &format!("manifests/{tag}"))?;
        let req = Req::new(Method::PUT, url)
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes)
            .scope(push_scope(repository));
        // PUT of the same bytes is idempotent: safe to retry on any retryable error.
        let resp = retry(&self.inner.opts.retry, "manifest PUT", || {
            self.inner.send_ok(&req)
        })
        .await?;
        if !resp.status.is_success() {
            return Err(self.manifest_error(&resp, repository, tag, media_type));
        }
        resp.check_digest("PUT", &digest)?;
        Ok(digest)
    }

    fn manifest_error(
        &self,
        resp: &Resp,
        repository: &str,
        tag: &str,
        media_type: &str,
    ) -> RegistryError {
        let b = RegistryErrorBody::parse(&resp.body);
        let status = resp.status.as_u16();
        let code = b.code.clone().unwrap_or_default();
        let msg = b.message.clone().unwrap_or_default();
        let lower = msg.to_ascii_lowercase();
        let rejected = |reason: String| RegistryError::ManifestRejected {
            media_type: media_type.to_string(),
            status,
            code: b.code.clone(),
            reason,
        };
        if code == "TAG_INVALID"
            && (lower.contains("immutable") || lower.contains("cannot be overwritten"))
        {
            return RegistryError::ImmutableTag {
                repository: repository.to_string(),
                tag: tag.to_string(),
                message: b.message,
            };
        }
        if status == 404 && code == "NAME_UNKNOWN" {
            return RegistryError::RepositoryMissing {
                repository: repository.to_string(),
                registry: self.inner.host.clone(),
            };
        }
        if lower.contains("number of layers") {
            return rejected(format!(
                "too many layers ({msg}): squash the image to fewer layers"
            ));
        }
        if status == 413 || lower.contains("too large") || lower.contains("exceeds") {
            return rejected(format!("manifest too large ({msg})"));
        }
        if code == "UNSUPPORTED" || status == 415 || status == 405 {
            let hint = if media_type == media::OCI_MANIFEST || media_type == media::OCI_INDEX {
                ": ECR needs a top-level \"mediaType\" in OCI manifests and indexes"
            } else {
                ""
            };
            return rejected(format!(
                "media type or manifest not supported ({code} {msg}){hint}"
            ));
        }
        if code == "MANIFEST_BLOB_UNKNOWN" || code == "BLOB_UNKNOWN" {
            return rejected(format!(
                "a blob it references is missing ({msg}): push the blobs first"
            ));
        }
        resp.error(&Method::PUT)
    }

    /// GETs a manifest with an Accept for all four types. Returns its media type, exact bytes
    /// and digest (computed from the bytes; a differing `Docker-Content-Digest` is an error).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<(String, Bytes, Digest), RegistryError> {
        let url = self
            .inner
            .repo_url(repository, &format!("manifests/{reference}"))?;
        let req = Req::new(Method::GET, url)
            .header(header::ACCEPT, &media_types::ALL.join(", "))
            .scope(pull_scope(repository));
        let resp = retry(&self.inner.opts.retry, "manifest GET", || {
            self.inner.send_ok(&req)
        })
        .await?;
        if !resp.status.is_success() {
            if resp.status.as_u16() == 404
                && RegistryErrorBody::parse(&resp.body).code.as_deref() == Some("NAME_UNKNOWN")
            {
                return Err(RegistryError::RepositoryMissing {
                    repository: repository.to_string(),
                    registry: self.inner.host.clone(),
                });
            }
            return Err(resp.error(&Method::GET));
        }
        let computed = Digest::sha256_of(&resp.body);
        let mismatch = |got: String| RegistryError::DigestMismatch {
            method: "GET".into(),
            url: redact_url(&resp.url),
            expected: got,
            got: computed.to_string(),
        };
        if let Some(d) = resp.header("docker-content-digest")
            && d.starts_with("sha256:")
            && d != computed.to_string()
        {
            return Err(mismatch(d.to_string()));
        }
        if let Reference::Digest(want) = reference
            && want.algorithm() == computed.algorithm()
            && want != &computed
        {
            return Err(mismatch(want.to_string()));
        }
        let media_type = resp
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| media_types::ALL.contains(&c.as_str()))
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()?
                    .get("mediaType")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Ok((media_type, resp.body, computed))
    }
}
