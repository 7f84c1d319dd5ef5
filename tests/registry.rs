//! The registry client against Debian's real distribution registry (tests/common starts one per
//! test), checked with skopeo.
use crate::common;

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use common::images::{self, Blob, OCI_INDEX, OCI_MANIFEST};
use common::{RegistryOptions, TestRegistry};
use hoist::platform::Platform;
use hoist::registry::{
    ClientOptions, CredentialLookup, ImageRef, MountOutcome, Reference, RegistryClient,
    RegistryError, ResumePoint, TransportKind, UploadCursor, VerifyError, verify_tag,
};

const MIB: usize = 1 << 20;

fn client(host: &str, chunk: usize) -> RegistryClient {
    RegistryClient::new(
        host,
        ClientOptions {
            chunk_bytes: Some(chunk as u64),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// A client that gives up on a request after 1 s without progress, and never retries.
fn stall_client(host: &str) -> RegistryClient {
    RegistryClient::new(
        host,
        ClientOptions {
            stall_timeout: Duration::from_secs(1),
            retry: hoist::registry::RetryPolicy::none(),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Pushes `layer`, its config and their manifest under `tag`; returns the manifest bytes.
async fn push_image(
    c: &RegistryClient,
    repo: &str,
    tag: &str,
    os_arch: &str,
    layer: &Blob,
) -> Bytes {
    images::upload(c, repo, layer, 0).await.unwrap();
    images::put_image(c, repo, tag, os_arch, &[layer]).await
}

/// Several chunks, then the manifest round trip: the tag reads back with the exact bytes and
/// digest, skopeo sees them, and the layer pulled by skopeo is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_chunk_upload_and_manifest_round_trip() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    c.ping().await.unwrap();
    c.check_repository("app/one").await.unwrap();
    let layer = Blob::new(images::random_bytes(1, 3 * MIB + 12345));
    let stats = images::upload(&c, "app/one", &layer, 0).await.unwrap();
    assert_eq!(stats.chunks, 3, "{stats:?}");
    assert!(images::present(&c, "app/one", &layer).await);
    let m = push_image(&c, "app/one", "v1", "linux/amd64", &layer).await;
    let (mt, bytes, digest) = c
        .get_manifest("app/one", &Reference::Tag("v1".into()))
        .await
        .unwrap();
    assert_eq!(mt, OCI_MANIFEST);
    assert_eq!(bytes, m);
    assert_eq!(digest, hoist::digest::Digest::sha256_of(&m));
    assert_eq!(
        common::skopeo_raw_manifest(&reg.host(), "app/one:v1"),
        m.to_vec()
    );
    // The layer as the registry serves it (a plain GET, not through our client).
    let (status, pulled) =
        common::http_get(reg.addr, &format!("/v2/app/one/blobs/{}", layer.digest)).unwrap();
    assert_eq!(status, 200);
    assert!(pulled == layer.bytes, "pulled layer differs");
    let image: ImageRef = format!("{}/app/one:v1", reg.host()).parse().unwrap();
    let report = verify_tag(&c, &image, Some(&digest), &Platform::linux_amd64())
        .await
        .unwrap();
    assert_eq!(report.image_digest, digest);
    assert!(!report.via_index);
}

/// A persisted cursor survives the client: a new client resumes between chunks where the
/// registry is (GET status + Range), and also when the persisted offset lags (lost ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_between_chunks_from_persisted_cursor() {
    let reg = TestRegistry::start();
    let blob = Blob::new(images::random_bytes(2, 4 * MIB + 7));
    let saved = {
        let c = client(&reg.host(), MIB);
        let mut cur = c.start_upload("app/two").await.unwrap();
        for i in 0..2 {
            cur = images::send_chunk(&c, &cur, &blob, i * MIB..(i + 1) * MIB).await;
        }
        assert_eq!(cur.offset, 2 * MIB as u64);
        serde_json::to_string(&cur).unwrap()
    };
    // A new process: a new client from the stored cursor.
    let c = client(&reg.host(), MIB);
    let cur: UploadCursor = serde_json::from_str(&saved).unwrap();
    let ResumePoint::Continue(cur) = c.resume("app/two", &cur).await.unwrap() else {
        panic!("expected Continue")
    };
    assert_eq!(cur.offset, 2 * MIB as u64);
    let off = cur.offset as usize;
    let cur = images::send_chunk(&c, &cur, &blob, off..off + MIB).await;
    images::send_last(&c, &cur, &blob, off + MIB).await;
    assert!(images::present(&c, "app/two", &blob).await);
}

/// Sends the first `n` bytes of a `total`-byte PATCH body to the cursor's URL, then resets.
fn cut_patch(cursor: &UploadCursor, body: &[u8], total: usize) {
    let url = url::Url::parse(&cursor.session_url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let pq = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    write!(
        s,
        "PATCH {pq} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}-{}\r\nContent-Length: {total}\r\n\r\n",
        url.host_str().unwrap(),
        cursor.offset,
        cursor.offset + total as u64 - 1
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
}

/// The status of a session that is gone is a 404, which proves nothing by itself (ECR answers
/// 404 for live sessions too): resume is `Unconfirmed` at the persisted cursor, and the PATCH
/// there (`bytes`) is what says the session is gone.
async fn gone_at(c: &RegistryClient, repo: &str, cur: &UploadCursor, bytes: Bytes) {
    assert_eq!(
        c.resume(repo, cur).await.unwrap(),
        ResumePoint::Unconfirmed(cur.clone())
    );
    let e = c
        .upload_chunk_from(cur, common::body(bytes))
        .await
        .unwrap_err();
    assert!(e.is_upload_gone(), "{e}");
}

/// Debian's registry keeps the part of a cut PATCH and then refuses the session
/// (404 BLOB_UPLOAD_INVALID): resume is unconfirmed, the next PATCH finds the session gone,
/// and a new session completes the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_patch_is_restart_on_debian() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let blob = Blob::new(images::random_bytes(3, 3 * MIB));
    let cur = c.start_upload("app/three").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    cut_patch(&cur, &blob.bytes[MIB..MIB + MIB / 2], MIB);
    gone_at(&c, "app/three", &cur, blob.bytes.slice(MIB..2 * MIB)).await;
    let stats = images::upload(&c, "app/three", &blob, 0).await.unwrap();
    assert_eq!(stats.chunks, 2);
    assert!(images::present(&c, "app/three", &blob).await);
}

/// A lost session (cancelled): its PATCH is `is_upload_gone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_session_restarts() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let blob = Blob::new(images::random_bytes(4, 2 * MIB + 1));
    let cur = c.start_upload("app/four").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    c.cancel_upload(&cur).await.unwrap();
    assert_eq!(
        c.resume("app/four", &cur).await.unwrap(),
        ResumePoint::Unconfirmed(cur.clone())
    );
    let e = c
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(MIB..2 * MIB)))
        .await
        .unwrap_err();
    assert!(e.is_upload_gone(), "{e}");
    assert!(!e.to_string().contains("_state"), "query leaked: {e}");
    // The reference loop restarts by itself.
    images::upload(&c, "app/four", &blob, 0).await.unwrap();
}

/// A default-sized part (and larger) sent to a session Debian's registry cancelled: the
/// registry answers 404 before reading the body, and the client sees that answer
/// (`is_upload_gone`), not a broken connection, so the upload loop starts the blob again
/// instead of resuming the dead session for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_part_to_a_cancelled_session_is_upload_gone() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), 32 * MIB);
    let blob = Blob::new(images::random_bytes(6, 33 * MIB));
    let cur = c.start_upload("app/large").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    c.cancel_upload(&cur).await.unwrap();
    for _ in 0..3 {
        gone_at(&c, "app/large", &cur, blob.bytes.slice(MIB..33 * MIB)).await;
    }
}

/// HEAD skips present blobs (size and digest checked); mount works across repositories, and a
/// mount of a blob the source lacks opens a usable session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_blobs_are_skipped_and_mount_works() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let blob = Blob::new(images::random_bytes(5, MIB + 5));
    assert!(!images::upload(&c, "src/a", &blob, 0).await.unwrap().skipped);
    assert!(images::upload(&c, "src/a", &blob, 0).await.unwrap().skipped);
    assert!(
        !c.blob_present("src/a", &blob.digest, blob.len() + 1)
            .await
            .unwrap(),
        "size must be checked"
    );
    assert!(!images::present(&c, "dst/b", &blob).await);
    assert_eq!(
        c.mount_blob("dst/b", "src/a", &blob.digest).await.unwrap(),
        MountOutcome::Mounted
    );
    assert!(images::present(&c, "dst/b", &blob).await);
    let other = Blob::new(images::random_bytes(6, 1000));
    assert!(
        !images::mount_or_upload(&c, "dst/b", "src/a", &other)
            .await
            .unwrap()
    );
    assert!(images::present(&c, "dst/b", &other).await);
}

/// verify_tag resolves like containerd on an amd64 node: a good single image and a good index
/// pass; an index of arm64 + unknown/unknown attestation fails at resolve time; a single arm64
/// image fails as "exec format error"; a tag moved elsewhere is a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_tag_catches_wrong_platforms() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let layer = Blob::new(images::random_bytes(7, 1000));
    let amd = Platform::linux_amd64();
    let at = |t: &str| -> ImageRef { format!("{}/app/v:{t}", reg.host()).parse().unwrap() };

    let good = push_image(&c, "app/v", "good", "linux/amd64", &layer).await;
    let r = verify_tag(&c, &at("good"), None, &amd).await.unwrap();
    assert_eq!(r.platform, amd);

    let arm = push_image(&c, "app/v", "arm", "linux/arm64", &layer).await;
    let e = verify_tag(&c, &at("arm"), None, &amd).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "image is linux/arm64 but nodes ask for linux/amd64: they fail with \"exec format error\""
    );

    let att = push_image(&c, "app/v", "att", "unknown/unknown", &layer).await;
    let idx = images::index(&[
        (&arm, "linux/arm64", false),
        (&att, "unknown/unknown", true),
    ]);
    c.put_manifest("app/v", "buildx", OCI_INDEX, idx)
        .await
        .unwrap();
    let e = verify_tag(&c, &at("buildx"), None, &amd).await.unwrap_err();
    assert!(matches!(e, VerifyError::NoPlatformMatch { .. }));
    assert_eq!(
        e.to_string(),
        "the tag is an index with only linux/arm64 and unknown/unknown entries: linux/amd64 nodes fail with \"no match for platform in manifest\""
    );

    let idx = images::index(&[
        (&good, "linux/amd64", false),
        (&att, "unknown/unknown", true),
    ]);
    c.put_manifest("app/v", "multi", OCI_INDEX, idx)
        .await
        .unwrap();
    let r = verify_tag(&c, &at("multi"), None, &amd).await.unwrap();
    assert!(r.via_index);
    assert_eq!(r.image_digest, hoist::digest::Digest::sha256_of(&good));

    let e = verify_tag(
        &c,
        &at("good"),
        Some(&hoist::digest::Digest::sha256_of(&arm)),
        &amd,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, VerifyError::TagMismatch { .. }), "{e}");
}

/// htpasswd Basic auth with credentials from a temporary DOCKER_CONFIG; a wrong password is an
/// auth error naming the config entry, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_docker_config() {
    let reg = TestRegistry::start_with(RegistryOptions {
        basic_auth: Some(("hoister".into(), "s3cret-pass".into())),
        ..RegistryOptions::default()
    });
    let write_config = |dir: &std::path::Path, pass: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("hoister:{pass}"));
        let cfg = serde_json::json!({"auths": {reg.host(): {"auth": auth}}});
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "s3cret-pass");
    let opts = |dir: &std::path::Path| ClientOptions {
        chunk_bytes: Some(MIB as u64),
        lookup: CredentialLookup {
            docker_config_dir: Some(dir.to_path_buf()),
            ..CredentialLookup::default()
        },
        ..ClientOptions::default()
    };
    let c = RegistryClient::new(&reg.host(), opts(dir.path())).unwrap();
    c.ping().await.unwrap();
    let layer = Blob::new(images::random_bytes(8, 2 * MIB + 3));
    let m = push_image(&c, "auth/app", "v1", "linux/amd64", &layer).await;
    images::verify_amd64(&c, &reg.host(), "auth/app:v1", &m)
        .await
        .unwrap();

    let bad = tempfile::tempdir().unwrap();
    write_config(bad.path(), "wrong-pass");
    let c = RegistryClient::new(&reg.host(), opts(bad.path())).unwrap();
    let e = c.ping().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, RegistryError::Auth { status: 401, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("config.json") && msg.contains(&reg.host()),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-pass") && !format!("{e:?}").contains("wrong-pass"),
        "{msg}"
    );
}

/// The stall watchdog aborts a PATCH whose body stops moving (a server that never reads) and a
/// request whose answer never comes, after the configured time rather than hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_watchdog_aborts_silent_requests() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold connections without reading a byte.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(2) {
            held.push(s.unwrap());
        }
        std::thread::sleep(Duration::from_secs(6));
    });
    let c = stall_client(&addr.to_string());
    let cursor = UploadCursor {
        session_url: format!("http://{addr}/v2/x/blobs/uploads/u?_state=S"),
        offset: 0,
    };
    let t = std::time::Instant::now();
    let e = c
        .upload_chunk_from(&cursor, common::body(images::random_bytes(9, 32 * MIB)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Transport {
                kind: TransportKind::Stalled,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Transport {
                kind: TransportKind::Stalled,
                ..
            }
        ),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    holder.join().unwrap();
}

/// A wrong digest at the final PUT is refused (400 DIGEST_INVALID, not retryable). Measured:
/// Debian's 2.8.2 then cancels the session (REGISTRIES.md says it stays alive; it does not),
/// so its next PATCH finds it gone, and the blob goes again in a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_is_refused_at_put() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let blob = Blob::new(images::random_bytes(30, MIB + 10));
    let cur = c.start_upload("app/dig").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    let wrong = hoist::digest::Digest::sha256_of(b"not this");
    let e = c
        .finish_upload(&cur, &wrong, blob.bytes.slice(MIB..))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(400), Some("DIGEST_INVALID")),
        "{e}"
    );
    assert!(!e.is_retryable() && e.is_digest_refused(), "{e}");
    gone_at(&c, "app/dig", &cur, blob.bytes.slice(MIB..)).await;
    assert!(!images::present(&c, "app/dig", &blob).await);
    images::upload(&c, "app/dig", &blob, 0).await.unwrap();
    assert!(images::present(&c, "app/dig", &blob).await);
}

/// One client, several blobs in parallel (HTTP/1.1, one connection each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_share_one_client() {
    let reg = TestRegistry::start();
    let c = client(&reg.host(), MIB);
    let blobs: Vec<Blob> = (0..4)
        .map(|i| Blob::new(images::random_bytes(40 + i, 2 * MIB + i as usize)))
        .collect();
    let tasks: Vec<_> = blobs
        .iter()
        .map(|b| {
            let (c, b) = (c.clone(), b.clone());
            tokio::spawn(async move { images::upload(&c, "app/par", &b, 0).await })
        })
        .collect();
    for t in tasks {
        assert!((1..=2).contains(&t.await.unwrap().unwrap().chunks));
    }
    for b in &blobs {
        assert!(c.blob_present("app/par", &b.digest, b.len()).await.unwrap());
    }
}

/// `OCI-Chunk-Min-Length` announced at POST raises the client's chunk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_min_length_is_honoured() {
    use common::serve::{Cut, respond, spawn_server};
    let (addr, task) = spawn_server(|_req: hyper::Request<hyper::body::Incoming>| async {
        Ok::<_, Cut>(respond(
            202,
            &[
                ("location", "/v2/x/blobs/uploads/u1".to_string()),
                ("oci-chunk-min-length", (3 * MIB).to_string()),
            ],
            Bytes::new(),
        ))
    })
    .await;
    let c = client(&addr.to_string(), MIB);
    assert_eq!(c.chunk_bytes(), MIB as u64);
    let cur = c.start_upload("x").await.unwrap();
    assert_eq!(
        cur.session_url,
        format!("http://{addr}/v2/x/blobs/uploads/u1")
    );
    assert_eq!(c.chunk_bytes(), 3 * MIB as u64);
    assert_eq!(c.chunk_bytes_min(), 3 * MIB as u64);
    drop(task);
}

/// The same cut mid-PATCH, through the client (a TCP proxy forwards half of the PATCH body to
/// the registry, then resets): the client's error is retryable, the next PATCH at the
/// persisted offset finds the session gone (Debian's registry kept the partial part and
/// refuses the session), and the daemon-like loop finishes the blob in a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_patch_through_the_client_is_restart() {
    let reg = TestRegistry::start();
    let cut = common::cut_proxy::CutProxy::start(reg.addr).await;
    let c = client(&cut.host(), MIB);
    let blob = Blob::new(images::random_bytes(50, 3 * MIB));
    let cur = c.start_upload("app/cut").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    cut.cut_after((MIB / 2) as u64);
    let e = c
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(MIB..2 * MIB)))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(cut.state.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Right after the cut the registry may still be swallowing the broken body: its status
    // then says the old offset. Once it is done, the status is a 404 and the PATCH says gone.
    let mut point = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        point = Some(c.resume("app/cut", &cur).await.unwrap());
        if point == Some(ResumePoint::Unconfirmed(cur.clone())) {
            break;
        }
    }
    assert_eq!(point, Some(ResumePoint::Unconfirmed(cur.clone())));
    let e = c
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(MIB..2 * MIB)))
        .await
        .unwrap_err();
    assert!(e.is_upload_gone(), "{e}");
    // The loop copes on its own too.
    cut.cut_after((MIB + MIB / 2) as u64);
    let stats = images::upload(&c, "app/cut", &blob, 5).await.unwrap();
    assert!(stats.restarts >= 1, "{stats:?}");
    assert!(images::present(&c, "app/cut", &blob).await);
}

/// A slow uplink is not a stall: with a 1 s stall timeout, a 1 MiB PATCH through a 256 KiB/s
/// link (which the kernel's socket buffers take in at once, then drain for ~4 s while nothing
/// moves for the client) completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uplink_is_not_a_stall() {
    let reg = TestRegistry::start();
    let slow = common::cut_proxy::CutProxy::start(reg.addr).await;
    slow.state
        .rate_up
        .store(256 * 1024, std::sync::atomic::Ordering::SeqCst);
    let c = stall_client(&slow.host());
    let blob = Blob::new(images::random_bytes(60, MIB));
    let cur = c.start_upload("app/slow").await.unwrap();
    let t = std::time::Instant::now();
    let cur = c
        .upload_chunk_from(&cur, common::body(blob.bytes.clone()))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the link was not slow: {:?}",
        t.elapsed()
    );
    c.finish_upload(&cur, &blob.digest, Bytes::new())
        .await
        .unwrap();
}

/// A link that dies once the whole request body left the process (it sits in socket buffers,
/// unacknowledged, like a laptop whose Wi-Fi drops at the end of a part) is a stall: the
/// request fails within about the stall timeout, not after the allowance a slow link gets to
/// drain those buffers (up to 64 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_dying_after_the_body_left_is_a_stall() {
    let reg = TestRegistry::start();
    let dying = common::fault_proxy::FaultProxy::start_with_window(reg.addr, 64 * 1024).await;
    let c = stall_client(&dying.host());
    let blob = Blob::new(images::random_bytes(61, 8 * MIB));
    let cur = c.start_upload("app/dying").await.unwrap();
    // The last 512 KiB fit in the client's socket buffer: the body leaves the process whole.
    dying.set(common::fault_proxy::Faults {
        blackhole_after_upstream_bytes: Some((
            8 * MIB as u64 - 512 * 1024,
            Duration::from_secs(300),
        )),
        ..Default::default()
    });
    let (e, took) = failing_patch(&c, &cur, &blob).await;
    common::figures::record(
        "a_link_dying_after_the_body_left_is_a_stall",
        "link dies after a PATCH body left the process (in socket buffers), stall timeout 1 s",
        "Debian registry, client level",
        "the kernel drops the connection (TCP_USER_TIMEOUT = stall timeout); retryable error",
        &format!(
            "request failed {:.1} s after the link died",
            took.as_secs_f64()
        ),
        serde_json::json!({"detected_s": took.as_secs_f64()}),
    );
    assert!(e.is_retryable(), "{e}");
    assert!(
        took < Duration::from_secs(6),
        "the dead link was noticed after {took:?}: {e}"
    );
}

/// A PATCH of `blob` at `cur` that must fail: its error and how long it took.
async fn failing_patch(
    c: &RegistryClient,
    cur: &UploadCursor,
    blob: &Blob,
) -> (RegistryError, Duration) {
    let t = std::time::Instant::now();
    let e = c
        .upload_chunk_from(cur, common::body(blob.bytes.clone()))
        .await
        .unwrap_err();
    (e, t.elapsed())
}

/// A peer whose application froze while its kernel took the whole body (a silent stall) is
/// noticed within about the stall timeout: nothing is left unacknowledged, so the body gets no
/// time to drain (a fixed allowance for slow links gave it 32 s more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_took_the_body_and_froze_is_a_stall() {
    let reg = TestRegistry::start();
    let frozen = common::fault_proxy::FaultProxy::start(reg.addr).await;
    let c = stall_client(&frozen.host());
    let blob = Blob::new(images::random_bytes(62, 2 * MIB));
    let cur = c.start_upload("app/frozen").await.unwrap();
    frozen.set(common::fault_proxy::Faults {
        freeze_after_upstream_bytes: Some((2 * MIB as u64 - 256 * 1024, Duration::from_secs(300))),
        ..Default::default()
    });
    let (e, took) = failing_patch(&c, &cur, &blob).await;
    common::figures::record(
        "a_peer_that_took_the_body_and_froze_is_a_stall",
        "silent stall: the registry side stops reading once a PATCH body is in socket buffers (its kernel acknowledged it), stall timeout 1 s",
        "Debian registry, client level",
        "nothing left unacknowledged: no drain allowance; the watchdog drops the request",
        &format!(
            "the PATCH failed {:.1} s after it began (on loopback its body leaves at once)",
            took.as_secs_f64()
        ),
        serde_json::json!({"detected_s": took.as_secs_f64()}),
    );
    assert!(
        matches!(
            e,
            RegistryError::Transport {
                kind: TransportKind::Stalled,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        took < Duration::from_secs(10),
        "noticed after {took:?}: {e}"
    );
}

/// Two PATCHes in parallel on one client, each on its own connection through a link capped at
/// 256 KiB/s per connection: one connection freezes once its body sits in socket buffers, the
/// other drains for seconds. Each request reads its own connection: the frozen one fails
/// within about the stall timeout (3 s), the moving one is not taken for a stall. (The proxy
/// caps after its kernel took the bytes: its receive buffer's worth drains unseen, which a
/// 1 s timeout would not cover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_is_not_hidden_by_a_moving_one() {
    let reg = TestRegistry::start();
    let link = common::fault_proxy::FaultProxy::start(reg.addr).await;
    let c = RegistryClient::new(
        &link.host(),
        ClientOptions {
            stall_timeout: Duration::from_secs(3),
            retry: hoist::registry::RetryPolicy::none(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let blobs = [61, 62].map(|seed| Blob::new(images::random_bytes(seed, 3 * MIB / 2)));
    let a = c.start_upload("app/pa").await.unwrap();
    let b = c.start_upload("app/pb").await.unwrap();
    link.set(common::fault_proxy::Faults {
        conn_bytes_per_sec: Some(256 * 1024),
        freeze_after_upstream_bytes: Some((MIB as u64, Duration::from_secs(300))),
        ..Default::default()
    });
    let timed = |cur: UploadCursor, blob: &Blob| {
        let (c, body) = (c.clone(), common::body(blob.bytes.clone()));
        async move {
            let t = std::time::Instant::now();
            (c.upload_chunk_from(&cur, body).await, t.elapsed())
        }
    };
    let (ra, rb) = tokio::join!(timed(a, &blobs[0]), timed(b, &blobs[1]));
    let (frozen, moving) = if ra.0.is_err() { (ra, rb) } else { (rb, ra) };
    let e = frozen.0.expect_err("one connection froze");
    // The watchdog's stall, or the kernel's (`TCP_USER_TIMEOUT`) when the window shut with
    // part of the body still unsent.
    assert!(
        matches!(e, RegistryError::Transport { .. }) && e.is_retryable(),
        "{e}"
    );
    moving.0.expect("the moving upload completes");
    assert!(
        moving.1 >= Duration::from_secs(3),
        "not slow: {:?}",
        moving.1
    );
    // A fixed allowance for draining 1.5 MiB at 64 KiB/s gave the frozen one 24 s more.
    assert!(
        frozen.1 < Duration::from_secs(15),
        "noticed after {:?}",
        frozen.1
    );
}

/// The docker token flow against the registry's own token auth: its Bearer challenge (realm,
/// service, scope), our token service issuing JWTs it verifies, tokens cached per scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_of_the_real_registry() {
    let keys = tempfile::tempdir().unwrap();
    let ts = common::token_service::TokenService::start_jwt(
        "robot",
        "pw-456",
        Duration::from_secs(300),
        keys.path(),
    )
    .await;
    let reg = TestRegistry::start_with(RegistryOptions {
        extra_yaml: Some(ts.registry_yaml(keys.path())),
        ..RegistryOptions::default()
    });
    let anonymous = client(&reg.host(), MIB);
    let e = anonymous.ping().await.unwrap_err();
    assert!(matches!(e, RegistryError::Auth { status: 401, .. }), "{e}");
    let c = RegistryClient::new(
        &reg.host(),
        common::with_credentials(
            ClientOptions {
                chunk_bytes: Some(MIB as u64),
                ..ClientOptions::default()
            },
            "robot",
            "pw-456",
        ),
    )
    .unwrap();
    c.ping().await.unwrap();
    let layer = Blob::new(images::random_bytes(70, 2 * MIB + 9));
    let m = push_image(&c, "tok/app", "v1", "linux/amd64", &layer).await;
    images::verify_amd64(&c, &reg.host(), "tok/app:v1", &m)
        .await
        .unwrap();
    let issued = ts.state.issued.load(std::sync::atomic::Ordering::SeqCst);
    // `/v2/`, pull (HEAD/GET) and pull,push scopes: a handful, not one per request.
    assert!((2..=4).contains(&issued), "tokens issued: {issued}");
}

/// A client for `host` given the caller's environment `env`, without retries (a refused
/// connection is an error at once).
#[allow(clippy::result_large_err)] // the client's own error type, as its API returns it
fn env_client(host: &str, env: &[(&str, &str)]) -> Result<RegistryClient, RegistryError> {
    RegistryClient::new(
        host,
        ClientOptions {
            chunk_bytes: Some(MIB as u64),
            retry: hoist::registry::RetryPolicy::none(),
            env: hoist::environ::CallerEnv::from_vars(env.iter().copied()),
            ..ClientOptions::default()
        },
    )
}

/// A TLS registry reached by this machine's name (not loopback by name, so the client speaks
/// HTTPS), its certificate signed by a test CA; returns the registry, the CA and `NAME:PORT`.
fn tls_registry(dir: &std::path::Path) -> (TestRegistry, common::netcfg::TestCa, String) {
    let (name, ip) = common::netcfg::own_name();
    let ca = common::netcfg::TestCa::new(&dir.join("ca"), &[&name]);
    let reg = TestRegistry::start_with(RegistryOptions {
        tls: Some(ca.registry_tls()),
        ip: Some(ip),
        ..RegistryOptions::default()
    });
    let host = format!("{name}:{}", reg.addr.port());
    (reg, ca, host)
}

/// `SSL_CERT_FILE` of the caller's environment adds a private CA: an image pushed over HTTPS
/// without a proxy reads back through skopeo trusting the same CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_with_a_private_ca_is_trusted_through_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, ca, host) = tls_registry(dir.path());
    let ca_file = ca.ca().display().to_string();
    let c = env_client(&host, &[("SSL_CERT_FILE", &ca_file)]).unwrap();
    assert!(c.base_url().starts_with("https://"), "{}", c.base_url());
    c.ping().await.unwrap();
    let layer = Blob::new(images::random_bytes(80, MIB + 77));
    let m = push_image(&c, "tls/app", "v1", "linux/amd64", &layer).await;
    let certs = dir.path().join("skopeo-certs");
    ca.install_for(&certs, &host);
    let out = hoist_testkit::tools::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(certs.join(".docker/certs.d").join(&host))
            .arg(format!("docker://{host}/tls/app:v1")),
        "skopeo inspect",
    );
    assert_eq!(out.stdout, m.to_vec());
}

/// A certificate from an unknown CA fails at once (no retry can help) with a one-line error
/// saying where docker's layout wants the CA; put there, in the caller's `HOME`, it is
/// trusted; a bad file there is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_says_to_put_the_ca_into_certs_d() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, ca, host) = tls_registry(dir.path());
    let home = dir.path().join("home");
    let home_s = home.display().to_string();
    let e = env_client(&host, &[("HOME", &home_s)])
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Certificate { .. }), "{msg}");
    assert!(!e.is_retryable(), "{msg}");
    assert!(
        msg.contains(&format!("~/.docker/certs.d/{host}/ca.crt"))
            && msg.contains(&format!("/etc/docker/certs.d/{host}/ca.crt"))
            && !msg.contains('\n'),
        "{msg}"
    );
    ca.install_for(&home, &host);
    let c = env_client(&host, &[("HOME", &home_s)]).unwrap();
    c.ping().await.unwrap();
    let bad = home.join(".docker/certs.d").join(&host).join("other.crt");
    std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let msg = env_client(&host, &[("HOME", &home_s)])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && !msg.contains('\n'),
        "{msg}"
    );
}

/// `HTTPS_PROXY` of the caller's environment is used (a dead proxy fails the request, and
/// the error never shows the proxy's password); `NO_PROXY` naming the host, with or without
/// its port, in either spelling, or `*`, sends it directly; another port or a subdomain-only
/// entry does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_bypasses_the_callers_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (_reg, ca, host) = tls_registry(dir.path());
    let name = host.rsplit_once(':').unwrap().0.to_string();
    let ca_file = ca.ca().display().to_string();
    let dead = format!("http://robot:hunter2@127.0.0.1:{}", common::free_port());
    let via_proxy = [("SSL_CERT_FILE", ca_file.as_str()), ("HTTPS_PROXY", &dead)];
    let c = env_client(&host, &via_proxy).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    for (var, list) in [
        ("NO_PROXY", name.clone()),
        ("no_proxy", format!("other.example, {host}")),
        ("NO_PROXY", "*".to_string()),
    ] {
        let mut env = via_proxy.to_vec();
        env.push((var, &list));
        env_client(&host, &env)
            .unwrap()
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{var}={list}: {e}"));
    }
    // An entry with another port, or one for subdomains only, leaves the host to the proxy.
    let other_port = format!("{name}:1");
    let subdomains = format!(".{name}");
    for list in [other_port.as_str(), subdomains.as_str()] {
        let mut env = via_proxy.to_vec();
        env.push(("NO_PROXY", list));
        let e = env_client(&host, &env).unwrap().ping().await;
        assert!(e.is_err(), "NO_PROXY={list} must not bypass the proxy");
    }
}
