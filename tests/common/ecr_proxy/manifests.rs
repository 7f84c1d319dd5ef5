//! Manifests as ECR handles them: top-level mediaType required for OCI, layer and size
//! limits, immutable tags, no Docker-Content-Digest on reads.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::Method;
use hyper::body::Incoming;

use super::{ECR_MANIFEST_BYTES_MAX, ProxyState, forward, header, pass, read_body};
use crate::common::serve::{Cut, Resp, oci_error};

pub(super) async fn handle_manifest(
    st: &ProxyState,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    repo: &str,
    reference: &str,
) -> Result<Resp, Cut> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    match parts.method {
        Method::GET | Method::HEAD => {
            // Every Accept header the client sent (skopeo sends one per media type): with only
            // the first, the registry may convert a Docker schema 2 manifest to schema 1, which
            // ECR never does.
            let accept = parts
                .headers
                .get_all("accept")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let up = forward(
                st,
                parts.method.clone(),
                &path,
                &[("accept", accept)],
                Bytes::new(),
            )
            .await?;
            // ECR may omit the digest header: clients must compute it.
            Ok(pass(up, &["docker-content-digest", "etag"]))
        }
        Method::PUT => put_manifest(st, parts, body, repo, reference, &path).await,
        _ => {
            let _ = read_body(st, body).await;
            Ok(oci_error(405, "UNSUPPORTED", "method not allowed"))
        }
    }
}

/// A manifest PUT: held while the test holds them, then ECR's checks, then forwarded.
async fn put_manifest(
    st: &ProxyState,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    repo: &str,
    reference: &str,
    path: &str,
) -> Result<Resp, Cut> {
    let data = read_body(st, body).await?;
    let let_through = || {
        st.manifest_puts_before_hold
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    while st.hold_manifest_puts.load(Ordering::SeqCst) && !let_through() {
        st.manifest_puts_held.store(true, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let content_type = header(&parts.headers, "content-type").unwrap_or_default();
    if let Some(refused) = refused_manifest(st, &data, &content_type) {
        return Ok(refused);
    }
    if st.immutable_tags.load(Ordering::SeqCst) && !reference.contains(':') {
        let exists = forward(
            st,
            Method::HEAD,
            path,
            &[("accept", content_type.clone())],
            Bytes::new(),
        )
        .await?;
        if exists.status == 200 {
            return Ok(oci_error(
                400,
                "TAG_INVALID",
                &format!(
                    "The image tag '{reference}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
                ),
            ));
        }
    }
    let up = forward(
        st,
        Method::PUT,
        path,
        &[("content-type", content_type)],
        data,
    )
    .await?;
    Ok(pass(up, &["location"]))
}

/// ECR's answer to a manifest it refuses for its own content: too large, an OCI document
/// without a top-level mediaType, too many layers.
fn refused_manifest(st: &ProxyState, data: &[u8], content_type: &str) -> Option<Resp> {
    if data.len() > ECR_MANIFEST_BYTES_MAX {
        return Some(oci_error(
            400,
            "MANIFEST_INVALID",
            "Manifest too large: exceeds the 4194304-byte limit",
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(data).unwrap_or(serde_json::Value::Null);
    let oci = content_type == "application/vnd.oci.image.manifest.v1+json"
        || content_type == "application/vnd.oci.image.index.v1+json";
    if oci && doc.get("mediaType").is_none() {
        return Some(oci_error(
            405,
            "UNSUPPORTED",
            "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'",
        ));
    }
    let layers = doc
        .get("layers")
        .and_then(|l| l.as_array())
        .map_or(0, |l| l.len());
    if layers > st.layers_max.load(Ordering::SeqCst) {
        return Some(oci_error(
            405,
            "UNSUPPORTED",
            "Limit on number of layers per image exceeded",
        ));
    }
    None
}
