//! Blob upload sessions as ECR handles them: parts committed whole, 201, one UUID, stale
//! Range, 416 on out-of-order parts, part minimum at the final PUT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::Method;
use hyper::body::Incoming;

use super::{ProxyState, ProxyUpload, Upstream, forward, header, pass, path_and_query, read_body};
use crate::common::serve::{Cut, Resp, oci_error, respond};

/// ECR's absolute Location, pointed at the proxy; the same for every step of a session.
pub(super) fn upload_location(proxy: SocketAddr, repo: &str, uuid: &str) -> String {
    format!("http://{proxy}/v2/{repo}/blobs/uploads/{uuid}")
}

fn content_range_start(headers: &hyper::HeaderMap) -> Option<u64> {
    let v = header(headers, "content-range")?;
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches('=')
        .trim();
    v.split('-').next()?.trim().parse().ok()
}

pub(super) async fn handle_upload(
    st: &std::sync::Arc<ProxyState>,
    proxy: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    repo: &str,
    uuid: &str,
    query: Option<String>,
) -> Result<Resp, Cut> {
    if parts.method == Method::GET {
        // ECR has no working upload-status endpoint, for live sessions or gone ones: its 404
        // says nothing, whatever code it carries.
        st.status_gets.fetch_add(1, Ordering::SeqCst);
        if st.status_404_without_code.load(Ordering::SeqCst) {
            return Ok(respond(404, &[], Bytes::new()));
        }
        return Ok(oci_error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        ));
    }
    let Some(up) = st.uploads.lock().unwrap().get(uuid).cloned() else {
        let _ = read_body(st, body).await;
        return Ok(oci_error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        ));
    };
    match parts.method {
        Method::DELETE => {
            let r = forward(
                st,
                Method::DELETE,
                &path_and_query(&up.upstream_url),
                &[],
                Bytes::new(),
            )
            .await?;
            st.uploads.lock().unwrap().remove(uuid);
            Ok(pass(r, &["location"]))
        }
        Method::PATCH | Method::PUT => {
            let data = read_body(st, body).await?;
            hold_part(st, &data).await;
            // One part at a time, checked against the upload as the previous part left it.
            let serial = up.serial.clone().lock_owned().await;
            let up = match checked_session(st, parts, uuid, &data) {
                Ok(up) => up,
                Err(refused) => return Ok(*refused),
            };
            if parts.method == Method::PUT {
                return finish(st, proxy, &up, uuid, repo, data, query).await;
            }
            if data.is_empty() {
                return Ok(oci_error(400, "BLOB_UPLOAD_INVALID", "empty layer part"));
            }
            patch_part(st, proxy, serial, &up, repo, uuid, data).await
        }
        _ => Ok(oci_error(405, "UNSUPPORTED", "method not allowed")),
    }
}

/// Holds a part received whole as the test scripts it (`part_delay_ms`).
async fn hold_part(st: &ProxyState, data: &Bytes) {
    if !data.is_empty() {
        // A part received whole but not committed yet: a kill now costs this part.
        st.parts_held.fetch_add(1, Ordering::SeqCst);
        let ms = st.part_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        st.parts_held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The session as the previous part left it, or ECR's answer when it is gone or the part does
/// not start where the session ends (416).
fn checked_session(
    st: &ProxyState,
    parts: &hyper::http::request::Parts,
    uuid: &str,
    data: &Bytes,
) -> Result<ProxyUpload, Box<Resp>> {
    let Some(up) = st.uploads.lock().unwrap().get(uuid).cloned() else {
        return Err(Box::new(oci_error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        )));
    };
    let start = content_range_start(&parts.headers).unwrap_or(up.committed);
    if !data.is_empty() && start != up.committed {
        st.out_of_order.fetch_add(1, Ordering::SeqCst);
        return Err(Box::new(oci_error(
            416,
            "BLOB_UPLOAD_INVALID",
            &format!(
                "First byte of the layer part is {start} instead of {}",
                up.committed
            ),
        )));
    }
    Ok(up)
}

/// A PATCH part checked against the session: committed upstream, answered with ECR's 201 and
/// its stale Range. `serial` is released once the commit is done.
async fn patch_part(
    st: &std::sync::Arc<ProxyState>,
    proxy: SocketAddr,
    serial: tokio::sync::OwnedMutexGuard<()>,
    up: &ProxyUpload,
    repo: &str,
    uuid: &str,
    data: Bytes,
) -> Result<Resp, Cut> {
    // ECR commits a part it received whole even if the client is gone by then: the
    // upstream PATCH runs on a task of its own, so a client that disconnects (or is
    // killed) cannot cut it midway, which would make Debian's registry cancel the upload.
    let commit = commit_part(
        st.clone(),
        uuid.to_string(),
        up.upstream_url.clone(),
        up.committed,
        data,
    );
    let first_end = match tokio::spawn(async move {
        let committed = commit.await;
        drop(serial);
        committed
    })
    .await
    {
        Ok(Ok(Ok(first_end))) => first_end,
        Ok(Ok(Err(resp))) => return Ok(resp),
        Ok(Err(cut)) => return Err(cut),
        Err(_) => return Err(Cut("the part's commit task failed")),
    };
    if st.drop_next_patch_response.swap(false, Ordering::SeqCst) {
        return Err(Cut("scripted lost acknowledgement"));
    }
    Ok(respond(
        201,
        &[
            ("location", upload_location(proxy, repo, uuid)),
            ("docker-upload-uuid", uuid.to_string()),
            // Stale: stuck at the end of the first part.
            ("range", format!("0-{first_end}")),
        ],
        Bytes::new(),
    ))
}

/// Forwards a part received whole to the registry and records it: the part's end offset of
/// the session's first part, or the response to give instead.
async fn commit_part(
    st: std::sync::Arc<ProxyState>,
    uuid: String,
    upstream_url_before: String,
    committed: u64,
    data: Bytes,
) -> Result<Result<u64, Resp>, Cut> {
    let end = committed + data.len() as u64 - 1;
    let r = forward(
        &st,
        Method::PATCH,
        &path_and_query(&upstream_url_before),
        &[
            ("content-range", format!("{}-{end}", committed)),
            ("content-type", "application/octet-stream".into()),
        ],
        data.clone(),
    )
    .await?;
    if r.status != 202 {
        return Ok(Err(pass(r, &["location"])));
    }
    let loc = header(&r.headers, "location").unwrap_or_default();
    let upstream_url = url::Url::parse(&upstream_url_before)
        .and_then(|b| b.join(&loc))
        .map(|u| u.to_string())
        .unwrap_or(loc);
    let first_end = {
        let mut uploads = st.uploads.lock().unwrap();
        match uploads.get_mut(&uuid) {
            Some(u) => {
                u.upstream_url = upstream_url.clone();
                u.committed = end + 1;
                u.parts.push(data.len() as u64);
                Some(*u.first_part_end.get_or_insert(end))
            }
            None => None,
        }
    };
    let Some(first_end) = first_end else {
        // Deleted while this part was in flight: ECR's session is gone, so the
        // upstream session (whose location just moved on) goes too.
        forward(
            &st,
            Method::DELETE,
            &path_and_query(&upstream_url),
            &[],
            Bytes::new(),
        )
        .await?;
        return Ok(Err(oci_error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        )));
    };
    st.bytes_committed
        .fetch_add(data.len() as u64, Ordering::SeqCst);
    st.part_sizes.lock().unwrap().push(data.len() as u64);
    Ok(Ok(first_end))
}

async fn finish(
    st: &ProxyState,
    proxy: SocketAddr,
    up: &ProxyUpload,
    uuid: &str,
    repo: &str,
    data: Bytes,
    query: Option<String>,
) -> Result<Resp, Cut> {
    if let Some(refused) = refused_parts(st, up, uuid, &data) {
        return Ok(refused);
    }
    let digest = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "digest")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let mut target = url::Url::parse(&up.upstream_url).expect("upstream url");
    target.query_pairs_mut().append_pair("digest", &digest);
    let mut headers = vec![("content-type", "application/octet-stream".to_string())];
    if !data.is_empty() {
        headers.push((
            "content-range",
            format!("{}-{}", up.committed, up.committed + data.len() as u64 - 1),
        ));
    }
    let n = data.len() as u64;
    let r = forward(
        st,
        Method::PUT,
        &path_and_query(target.as_str()),
        &headers,
        data,
    )
    .await?;
    if r.status == 201 {
        return finished(st, proxy, repo, uuid, &r, n, digest);
    }
    if r.status == 400 {
        return Ok(oci_error(
            400,
            "BLOB_UPLOAD_INVALID",
            "None of the provided layer digests match the calculated layer digest",
        ));
    }
    Ok(pass(r, &["location"]))
}

/// ECR's check of a session's parts at the final PUT: at least one part, and every part but the
/// last at least the minimum part size.
fn refused_parts(st: &ProxyState, up: &ProxyUpload, uuid: &str, data: &Bytes) -> Option<Resp> {
    let mut parts = up.parts.clone();
    if !data.is_empty() {
        parts.push(data.len() as u64);
    }
    if parts.is_empty() {
        return Some(oci_error(
            400,
            "BLOB_UPLOAD_INVALID",
            &format!("Layer upload {uuid} does not have any parts"),
        ));
    }
    let min = st.part_min_bytes.load(Ordering::SeqCst);
    if parts[..parts.len() - 1].iter().any(|p| *p < min) {
        return Some(oci_error(
            400,
            "BLOB_UPLOAD_INVALID",
            "LayerPartTooSmallException: All layer parts except the last part should be at least 5MB",
        ));
    }
    None
}

/// The registry accepted the final PUT (`n` last-part bytes): the session ends, and the client
/// gets ECR's 201 (unless the test drops it).
fn finished(
    st: &ProxyState,
    proxy: SocketAddr,
    repo: &str,
    uuid: &str,
    r: &Upstream,
    n: u64,
    digest: String,
) -> Result<Resp, Cut> {
    st.bytes_committed.fetch_add(n, Ordering::SeqCst);
    st.uploads.lock().unwrap().remove(uuid);
    if st.drop_next_finish_response.swap(false, Ordering::SeqCst) {
        return Err(Cut("scripted lost acknowledgement of the final PUT"));
    }
    let d = header(&r.headers, "docker-content-digest").unwrap_or(digest);
    Ok(respond(
        201,
        &[
            ("location", format!("http://{proxy}/v2/{repo}/blobs/{d}")),
            ("docker-content-digest", d),
        ],
        Bytes::new(),
    ))
}
