//! The registry client against a hostile registry (tests/common/hostile.rs): oversized headers
//! and bodies, Locations to other schemes and hosts, endless redirects, slow-loris pacing, a
//! manifest read back different from what was pushed, invalid error JSON, a token realm on
//! another host. Each ends in a clear one-line error, in bounded time (asserted) and bounded
//! memory (the client caps what it reads; the peak RSS of the test process is asserted where
//! the registry sends 100 MB), never a panic.
use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hostile::{Answer, Hostile, owned};
use hoist::digest::Digest;
use hoist::platform::Platform;
use hoist::registry::{
    ClientOptions, Credentials, ImageRef, RegistryClient, RegistryError, RetryPolicy, verify_tag,
};

/// The stall timeout of these tests: short, so slow-loris cases end quickly.
const STALL: Duration = Duration::from_secs(2);
/// Every hostile case must end within this.
const ELAPSED_MAX: Duration = Duration::from_secs(15);

fn client(h: &Hostile, credentials: Option<Credentials>) -> RegistryClient {
    RegistryClient::new(
        &h.host(),
        ClientOptions {
            credentials,
            stall_timeout: STALL,
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::none(),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn creds() -> Option<Credentials> {
    Some(Credentials {
        username: "AWS".into(),
        secret: "hostile-secret-1".into(),
    })
}

/// The error is one printable line that says `parts`, and never shows the secret.
fn assert_clear(e: &dyn std::fmt::Display, parts: &[&str]) -> String {
    let msg = e.to_string();
    assert!(
        !msg.chars().any(char::is_control),
        "not one printable line: {msg:?}"
    );
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not say {p:?}");
    }
    assert!(!msg.contains("hostile-secret"), "{msg}");
    eprintln!("error: {msg}");
    msg
}

/// Peak resident memory of this process (KiB), from /proc.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    assert!(t.elapsed() < ELAPSED_MAX, "took {:?}", t.elapsed());
    out
}

const UPLOADS: &str = "/v2/team/app/blobs/uploads/";

/// A 100 MB error body: the client reads its first 64 KiB (the status and the start of the
/// text make the error), and a 100 MB manifest is refused at the 8 MiB cap of in-memory
/// responses. Peak memory stays far below 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_cut_at_the_cap() {
    let h = Hostile::start(|req| Answer::Huge {
        status: if req.method == "POST" { 400 } else { 200 },
        headers: owned(&[("content-type", "application/vnd.oci.image.manifest.v1+json")]),
        len: 100 << 20,
    })
    .await;
    let before = peak_rss_kib();
    let c = client(&h, None);
    let e = timed(c.start_upload("team/app")).await.unwrap_err();
    assert_clear(&e, &["POST", UPLOADS, "400: xxxxxxxx", "…"]);
    let r = hoist::registry::Reference::parse("v1").unwrap();
    let e = timed(c.get_manifest("team/app", &r)).await.unwrap_err();
    assert_clear(
        &e,
        &[
            "GET",
            "/manifests/v1",
            "response body larger than 8388608 bytes",
        ],
    );
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 48 << 10, "peak RSS grew by {grown} KiB");
}

/// A 1 MB response header: refused by the HTTP layer's head limit, a transport error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mb_header_is_refused() {
    let junk = "a".repeat(1 << 20);
    let h = Hostile::start(move |_| Answer::full(200, &[("x-junk", &junk)], "{}")).await;
    let before = peak_rss_kib();
    let e = timed(client(&h, None).ping()).await.unwrap_err();
    assert_clear(&e, &["GET", "/v2/"]);
    assert!(
        matches!(e, RegistryError::Transport { .. }),
        "a transport error: {e:?}"
    );
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 48 << 10, "peak RSS grew by {grown} KiB");
}

/// An upload Location with another scheme (`file://`) or on another host is refused: blob
/// bytes (and a persisted session URL) never leave the registry's origin. The other host
/// sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_locations_off_the_registry_are_refused() {
    let evil = Hostile::start(|_| Answer::full(202, &[], "")).await;
    let evil_url = format!(
        "http://{}/v2/team/app/blobs/uploads/x?_state=s",
        evil.host()
    );
    for location in [
        "file:///etc/passwd".to_string(),
        evil_url.clone(),
        format!("https://{}/v2/team/app/blobs/uploads/x", evil.host()),
    ] {
        let loc = location.clone();
        let h = Hostile::start(move |_| Answer::full(202, &[("location", &loc)], "")).await;
        let e = timed(client(&h, creds()).start_upload("team/app"))
            .await
            .unwrap_err();
        let msg = assert_clear(&e, &["upload Location on another origin", "refused"]);
        assert!(!msg.contains("_state=s"), "query redacted: {msg}");
    }
    // The same from a PATCH answer, mid-upload.
    let evil_loc = evil_url.clone();
    let h = Hostile::start(move |req| {
        if req.method == "POST" {
            Answer::full(202, &[("location", "/v2/team/app/blobs/uploads/1")], "")
        } else {
            Answer::full(202, &[("location", &evil_loc), ("range", "0-2")], "")
        }
    })
    .await;
    let c = client(&h, creds());
    let cur = c.start_upload("team/app").await.unwrap();
    let e = timed(c.upload_chunk_from(&cur, common::body(Bytes::from_static(b"abc"))))
        .await
        .unwrap_err();
    assert_clear(&e, &["upload Location on another origin", "refused"]);
    assert!(evil.seen().is_empty(), "{:?}", evil.seen());
}

/// Redirects forever: the blob GET stops after 5 with "too many redirects"; a redirect to
/// `file://` is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_redirects_end() {
    let h = Hostile::start(|req| {
        let n: u32 = req
            .target
            .rsplit_once("?n=")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        let loc = format!("/v2/team/app/blobs/sha256:x?n={}", n + 1);
        Answer::full(307, &[("location", &loc)], "")
    })
    .await;
    let d = Digest::sha256_of(b"{}");
    let e = timed(client(&h, None).get_blob("team/app", &d, 1 << 20))
        .await
        .unwrap_err();
    let msg = assert_clear(&e, &["GET", "too many redirects"]);
    assert!(msg.contains("?REDACTED"), "{msg}");
    assert_eq!(h.seen().len(), 6, "the first GET and 5 redirects");

    let h = Hostile::start(|_| Answer::full(302, &[("location", "file:///etc/shadow")], "")).await;
    let e = timed(client(&h, None).get_blob("team/app", &d, 1 << 20))
        .await
        .unwrap_err();
    assert_clear(&e, &["redirected to file:///etc/shadow", "refused"]);
}

/// Slow-loris, body: the head arrives at once, then one byte per second. Each byte resets
/// the stall watchdog, so the client bounds the whole body by a minimum rate instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_body_is_aborted() {
    let h = Hostile::start(|_| Answer::Trickle {
        status: 200,
        headers: owned(&[("content-type", "application/json")]),
        body: vec![b' '; 3600],
        every: Duration::from_secs(1),
        head_too: false,
    })
    .await;
    let t = Instant::now();
    let e = timed(client(&h, None).ping()).await.unwrap_err();
    assert_clear(
        &e,
        &["GET", "/v2/", "the response came too slowly", "aborted"],
    );
    assert!(
        t.elapsed() >= STALL,
        "not before the grace: {:?}",
        t.elapsed()
    );
}

/// Slow-loris, head: one byte per second of the status line and headers. No response is
/// complete, so the stall watchdog fires after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_head_is_aborted() {
    let h = Hostile::start(|_| Answer::Trickle {
        status: 200,
        headers: owned(&[("x-pad", &"p".repeat(200))]),
        body: b"{}".to_vec(),
        every: Duration::from_secs(1),
        head_too: true,
    })
    .await;
    let e = timed(client(&h, None).ping()).await.unwrap_err();
    assert_clear(&e, &["GET", "/v2/", "no bytes moved for 2 s", "aborted"]);
}

/// The tag read back is not the manifest pushed: verify_tag says so (both digests). A PUT
/// answered with another Docker-Content-Digest is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_read_back_differs() {
    let pushed = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#);
    let other = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"evil":1}"#;
    let pushed_digest = Digest::sha256_of(&pushed);
    let pd = pushed_digest.to_string();
    let h = Hostile::start(move |req| match req.method.as_str() {
        "PUT" => Answer::full(201, &[("docker-content-digest", &pd)], ""),
        _ => Answer::full(
            200,
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            other.to_vec(),
        ),
    })
    .await;
    let c = client(&h, None);
    let d = c
        .put_manifest(
            "team/app",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            pushed.clone(),
        )
        .await
        .unwrap();
    assert_eq!(d, pushed_digest);
    let image = ImageRef::parse(&format!("{}/team/app:v1", h.host())).unwrap();
    let e = timed(verify_tag(
        &c,
        &image,
        Some(&pushed_digest),
        &Platform::linux_amd64(),
    ))
    .await
    .unwrap_err();
    assert_clear(
        &e,
        &[
            &pushed_digest.to_string(),
            &Digest::sha256_of(other).to_string(),
        ],
    );

    let h = Hostile::start(|_| {
        Answer::full(
            201,
            &[(
                "docker-content-digest",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            )],
            "",
        )
    })
    .await;
    let e = timed(client(&h, None).put_manifest(
        "team/app",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        pushed,
    ))
    .await
    .unwrap_err();
    assert_clear(&e, &["PUT", "digest sha256:0000", "was expected"]);
}

/// Invalid or hostile error JSON: truncated envelopes, wrong types, newlines and terminal
/// escapes in code and message, a 4 MB message. The error is one line, the registry's text
/// cut to 300 characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_error_json_gives_one_line() {
    let long = format!(
        r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#,
        "m".repeat(4 << 20)
    );
    let cases: Vec<(Vec<u8>, &[&str])> = vec![
        (br#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","mess"#.to_vec(), &["400", "BLOB_UPLOAD_INVALID"]),
        (br#"{"errors":"nope"}"#.to_vec(), &["400", "nope"]),
        (br#"{"errors":[{"code":42,"message":{"a":[1,2]}}]}"#.to_vec(), &["400", "42"]),
        (
            b"{\"errors\":[{\"code\":\"X\\u001b[2J\\u001b]0;pwned\\u0007\",\"message\":\"line one\\nline two\\r\\n\"}]}".to_vec(),
            &["400", "line one line two"],
        ),
        (b"<html>\n<body>\x1b[31mbad gateway\x00</body>\n</html>".to_vec(), &["400", "bad gateway"]),
        (vec![0xff, 0xfe, b'\n', 0x07], &["400"]),
        (long.into_bytes(), &["400", "DENIED", "mmm…"]),
    ];
    for (body, parts) in cases {
        let b = body.clone();
        let h = Hostile::start(move |_| {
            Answer::full(400, &[("content-type", "application/json")], b.clone())
        })
        .await;
        let e = timed(client(&h, None).start_upload("team/app"))
            .await
            .unwrap_err();
        let msg = assert_clear(&e, parts);
        assert!(msg.len() < 1200, "{} bytes: {msg}", msg.len());
    }
}

/// A token realm elsewhere over plain HTTP (or another scheme) never gets the credentials:
/// a clear error, and nothing is sent. A Basic challenge's realm naming another host is only
/// a name: the credentials go to the registry, never there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realms_on_other_hosts_get_no_credentials() {
    for realm in [
        "http://evil.example:9/token",
        "file:///etc/passwd",
        "ftp://evil.example/t",
    ] {
        let challenge = format!(r#"Bearer realm="{realm}",service="s""#);
        let h = Hostile::start(move |_| Answer::full(401, &[("www-authenticate", &challenge)], ""))
            .await;
        let e = timed(client(&h, creds()).ping()).await.unwrap_err();
        assert_clear(&e, &["token realm", "refused to send them there"]);
    }

    let spy = Hostile::start(|_| Answer::full(200, &[], "{}")).await;
    let challenge = format!(r#"Basic realm="http://{}/""#, spy.host());
    let h = Hostile::start(move |req| {
        if req.header("authorization").is_some() {
            Answer::full(200, &[], "{}")
        } else {
            Answer::full(401, &[("www-authenticate", &challenge)], "")
        }
    })
    .await;
    timed(client(&h, creds()).ping()).await.unwrap();
    assert!(spy.seen().is_empty(), "{:?}", spy.seen());
    let seen = h.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
}
