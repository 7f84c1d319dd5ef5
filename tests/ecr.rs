//! The registry client against our ECR-emulating proxy (tests/common/ecr_proxy.rs) in front of
//! the real registry. Each test names the ECR behaviour (from docs/ECR.md) it covers.
use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use common::images::{self, Blob, OCI_MANIFEST};
use common::token_service::TokenService;
use hoist::digest::Digest;
use hoist::registry::{
    ClientOptions, CredentialLookup, MountOutcome, RegistryClient, RegistryError, ResumePoint,
    RetryPolicy,
};

const MIB: usize = 1 << 20;
/// The proxy's minimum part in these tests (ECR's 5 MiB scaled down to keep data small).
const PART_MIN: usize = MIB;

async fn setup() -> (TestRegistry, EcrProxy) {
    common::start_behind_ecr(PART_MIN as u64).await
}

fn opts() -> ClientOptions {
    ClientOptions {
        chunk_bytes: Some(PART_MIN as u64),
        retry: common::brisk_retries(),
        ..ClientOptions::default()
    }
}

/// Chunked PATCH answered 201 (not 202), absolute Location with the same UUID each time, a
/// stale Range, 5 MiB (scaled) minimum parts, manifest GET without Docker-Content-Digest: the
/// upload sends every byte exactly once, and the tag verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_with_201_absolute_location_and_stale_range() {
    let (reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    c.ping().await.unwrap();
    c.check_repository("team/app").await.unwrap();
    let layer = Blob::new(images::random_bytes(11, 4 * MIB + 999));
    let stats = images::upload(&c, "team/app", &layer, 0).await.unwrap();
    assert_eq!(stats.chunks, 4);
    assert_eq!(
        proxy.bytes_in(),
        layer.len(),
        "every byte sent exactly once"
    );
    assert_eq!(proxy.state.out_of_order.load(Ordering::SeqCst), 0);
    let m = images::put_image(&c, "team/app", "v1", "linux/amd64", &[&layer]).await;
    let r = images::verify_amd64(&c, &proxy.host(), "team/app:v1", &m)
        .await
        .unwrap();
    assert_eq!(r.tag_digest, Digest::sha256_of(&m));
    // Through the real registry directly, with skopeo.
    assert_eq!(
        common::skopeo_raw_manifest(&reg.host(), "team/app:v1"),
        m.to_vec()
    );
}

/// ECR refuses parts below 5 MiB at the final PUT (LayerPartTooSmallException): the proxy
/// enforces it (so the test above means something), and the client's chunk policy never goes
/// below 5 MiB on ECR hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_below_the_minimum_are_refused_and_ecr_hosts_never_use_them() {
    let (_reg, proxy) = setup().await;
    let small = ClientOptions {
        chunk_bytes: Some((PART_MIN / 2) as u64),
        ..opts()
    };
    let c = RegistryClient::new(&proxy.host(), small).unwrap();
    let layer = Blob::new(images::random_bytes(12, 2 * MIB));
    let e = images::upload(&c, "team/app", &layer, 0).await.unwrap_err();
    assert!(e.to_string().contains("LayerPartTooSmallException"), "{e}");
    let ecr = RegistryClient::new(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        ClientOptions {
            chunk_bytes: Some(MIB as u64),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ecr.chunk_bytes(), 5 << 20);
    assert!(ecr.is_ecr());
}

/// The lost acknowledgement: ECR stored a part but the answer never arrived. GET status is 404
/// on ECR (with an upload error code), so resume is unconfirmed at the acknowledged offset; the resent part gets 416 "First byte of
/// the layer part is N instead of M", and the client resyncs to M.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_ack_resyncs_from_the_416_message() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(13, 3 * MIB + 10));
    let cur = c.start_upload("team/app").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    proxy
        .state
        .drop_next_patch_response
        .store(true, Ordering::SeqCst);
    let e = c
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(MIB..2 * MIB)))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let ResumePoint::Unconfirmed(resumed) = c.resume("team/app", &cur).await.unwrap() else {
        panic!("expected Unconfirmed")
    };
    assert_eq!(proxy.state.status_gets.load(Ordering::SeqCst), 1);
    assert_eq!(
        resumed.offset, MIB as u64,
        "no status endpoint: trust our acknowledged offset"
    );
    let next = images::send_chunk(&c, &resumed, &blob, MIB..2 * MIB).await;
    assert_eq!(next.offset, 2 * MIB as u64, "resynced from the 416 message");
    assert_eq!(proxy.state.out_of_order.load(Ordering::SeqCst), 1);
    let next = images::send_chunk(&c, &next, &blob, 2 * MIB..3 * MIB).await;
    images::send_last(&c, &next, &blob, 3 * MIB).await;
    assert!(images::present(&c, "team/app", &blob).await);
}

/// Parts are committed whole or not at all: a PATCH cut midway leaves the offset where it was,
/// so resuming costs at most the part in flight (unlike Debian's registry, which cancels the
/// session). The status GET answers 404 `BLOB_UPLOAD_UNKNOWN`, which does not end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_patch_resumes_from_the_last_whole_part() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(14, 4 * MIB + 1));
    let cur = c.start_upload("team/app").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    let cur = images::send_chunk(&c, &cur, &blob, MIB..2 * MIB).await;
    *proxy.state.cut_next_body_after.lock().unwrap() = Some((MIB / 2) as u64);
    let e = c
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(2 * MIB..3 * MIB)))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(proxy.state.cuts.load(Ordering::SeqCst), 1);
    let ResumePoint::Unconfirmed(cur) = c.resume("team/app", &cur).await.unwrap() else {
        panic!("expected Unconfirmed")
    };
    assert_eq!(cur.offset, 2 * MIB as u64);
    let cur = images::send_chunk(&c, &cur, &blob, 2 * MIB..3 * MIB).await;
    let cur = images::send_chunk(&c, &cur, &blob, 3 * MIB..4 * MIB).await;
    images::send_last(&c, &cur, &blob, 4 * MIB).await;
    let waste = proxy.bytes_in() - blob.len();
    assert!(
        waste >= (MIB / 2) as u64 && waste <= MIB as u64,
        "waste {waste}"
    );
    // And the reference loop gets through a cut on its own.
    let other = Blob::new(images::random_bytes(15, 3 * MIB));
    *proxy.state.cut_next_body_after.lock().unwrap() = Some((MIB / 3) as u64);
    let stats = images::upload(&c, "team/app", &other, 2).await.unwrap();
    assert_eq!((stats.resumes, stats.restarts), (1, 0), "{stats:?}");
}

/// A missing repository: ECR drops the connection on the upload POST. Nothing refuses it
/// before the POST (a create-on-push template may cover it); once the POST is dropped and the
/// tag list answers NAME_UNKNOWN, the client says what to do, on a host not named like ECR.
/// Asked explicitly (`require_existing_repository`), the check up front refuses it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_is_a_clear_error() {
    let (_reg, proxy) = setup().await;
    proxy.set_repositories(&["exists"]);
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    assert!(!c.is_ecr());
    c.check_repository("exists").await.unwrap();
    c.check_repository("nope/app").await.unwrap();
    let want = format!(
        "repository nope/app does not exist in registry {}: create it (aws ecr create-repository --repository-name nope/app) or add a repository creation template with CREATE_ON_PUSH that covers it",
        proxy.host()
    );
    let e = c.start_upload("nope/app").await.unwrap_err();
    assert!(matches!(e, RegistryError::RepositoryMissing { .. }), "{e}");
    assert_eq!(e.to_string(), want);
    assert!(!e.is_retryable());
    let strict = RegistryClient::new(
        &proxy.host(),
        ClientOptions {
            require_existing_repository: true,
            ..opts()
        },
    )
    .unwrap();
    let e = strict.check_repository("nope/app").await.unwrap_err();
    assert_eq!(e.to_string(), want);
}

/// A repository creation template with CREATE_ON_PUSH: the upload POST creates a missing
/// repository under its prefix (`team` covers `team/new`, not `teamwork`), which then works like
/// any other; one outside stays missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_on_push_template_creates_the_repository() {
    let (_reg, proxy) = setup().await;
    proxy.set_repositories(&[]);
    proxy.create_on_push(&["team"]);
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    assert!(!proxy.repository_exists("team/new"));
    let layer = Blob::new(images::random_bytes(17, 2 * MIB + 3));
    images::upload(&c, "team/new", &layer, 0).await.unwrap();
    assert!(proxy.repository_exists("team/new"));
    images::put_image(&c, "team/new", "v1", "linux/amd64", &[&layer]).await;
    c.get_manifest("team/new", &hoist::registry::Reference::Tag("v1".into()))
        .await
        .unwrap();
    let e = c.start_upload("teamwork").await.unwrap_err();
    assert!(matches!(e, RegistryError::RepositoryMissing { .. }), "{e}");
    proxy.create_on_push(&["ROOT"]);
    c.start_upload("teamwork").await.unwrap();
}

/// Basic challenge, credentials from a credential helper (as docker-credential-ecr-login), and
/// the expired token: `403 Your authorization token has expired` mid-upload makes the client
/// run the helper again once and carry on; a helper that keeps giving an expired token is an
/// auth error naming the helper. Parallel requests meeting the expiry run the helper once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_from_the_helper() {
    let (_reg, proxy) = setup().await;
    proxy.basic_auth(&["token-1"]);
    let dir = tempfile::tempdir().unwrap();
    let host = proxy.host();
    let helper = FakeHelper::install(dir.path(), &host, "token-1");
    let c = RegistryClient::new(
        &host,
        ClientOptions {
            lookup: CredentialLookup {
                docker_config_dir: Some(dir.path().to_path_buf()),
                helper_dirs: vec![dir.path().to_path_buf()],
                ..CredentialLookup::default()
            },
            ..opts()
        },
    )
    .unwrap();
    c.ping().await.unwrap();
    let blob = Blob::new(images::random_bytes(16, 3 * MIB));
    let cur = c.start_upload("team/app").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    // The token expires mid-push; the helper now mints a new one.
    proxy.expire_password("token-1", "token-2");
    helper.mint("token-2");
    let cur = images::send_chunk(&c, &cur, &blob, MIB..2 * MIB).await;
    images::send_last(&c, &cur, &blob, 2 * MIB).await;
    let runs = std::fs::read_to_string(&helper.calls).unwrap();
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        vec![host.as_str(), host.as_str()],
        "helper runs"
    );
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.starts_with("PATCH") && l.ends_with(" auth"))
    );

    // HEAD answers carry no body: a 403 to a HEAD is refreshed once as well.
    proxy.expire_password("token-2", "token-3");
    helper.mint("token-3");
    assert!(images::present(&c, "team/app", &blob).await);
    assert_eq!(helper.runs(), 3);
    // Parallel requests that all meet the expiry run the helper once between them.
    proxy.expire_password("token-3", "token-4");
    helper.mint("token-4");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.check_repository("team/app").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(helper.runs(), 4);
    // A helper that keeps handing out an expired token: an auth error naming the helper.
    proxy.expire_password("token-4", "token-5");
    let e = c.check_repository("team/app").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, RegistryError::Auth { status: 403, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("docker-credential-ecr-fake") && msg.contains("expired"),
        "{msg}"
    );
    assert!(!msg.contains("token-4"), "{msg}");
}

/// `docker-credential-ecr-fake` in a directory with a Docker config naming it for one host: it
/// hands out the token in `secret` and appends each server it is asked about to `calls`.
struct FakeHelper {
    secret: std::path::PathBuf,
    calls: std::path::PathBuf,
}

impl FakeHelper {
    fn install(dir: &std::path::Path, host: &str, token: &str) -> FakeHelper {
        std::fs::write(
            dir.join("config.json"),
            serde_json::json!({"credHelpers": {host: "ecr-fake"}}).to_string(),
        )
        .unwrap();
        let helper = FakeHelper {
            secret: dir.join("secret"),
            calls: dir.join("calls"),
        };
        helper.mint(token);
        let script = dir.join("docker-credential-ecr-fake");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nread server\necho \"$server\" >> {calls}\nprintf '{{\"Username\":\"AWS\",\"Secret\":\"%s\"}}' \"$(cat {secret})\"\n",
                calls = helper.calls.display(),
                secret = helper.secret.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
        helper
    }

    /// The token the helper hands out from now on.
    fn mint(&self, token: &str) {
        std::fs::write(&self.secret, token).unwrap();
    }

    /// How many times the helper ran.
    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.calls)
            .unwrap()
            .lines()
            .count()
    }
}

/// ECR Public style Bearer flow with our token service: realm, service and scope; tokens are
/// cached per scope (one per repository) and replaced when they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    let (_reg, proxy) = setup().await;
    let ts = TokenService::start("robot", "pw-123", Duration::from_secs(300)).await;
    proxy.bearer_auth(ts.realm(), ts.state.clone());
    let c = RegistryClient::new(
        &proxy.host(),
        common::with_credentials(opts(), "robot", "pw-123"),
    )
    .unwrap();
    c.ping().await.unwrap();
    let layer = Blob::new(images::random_bytes(17, 2 * MIB + 5));
    images::upload(&c, "team/app", &layer, 0).await.unwrap();
    let m = images::put_image(&c, "team/app", "v1", "linux/amd64", &[&layer]).await;
    images::verify_amd64(&c, &proxy.host(), "team/app:v1", &m)
        .await
        .unwrap();
    let issued = ts.state.issued.load(Ordering::SeqCst);
    // push scope and pull scope (HEAD, GET) of one repository.
    assert!((1..=3).contains(&issued), "tokens issued: {issued}");
    // An expired token is replaced once.
    ts.state.expire_all();
    assert!(images::present(&c, "team/app", &layer).await);
    assert!(ts.state.issued.load(Ordering::SeqCst) > issued);
    // Wrong credentials: the token service refuses, the error says where they came from.
    let bad = RegistryClient::new(
        &proxy.host(),
        common::with_credentials(opts(), "robot", "nope"),
    )
    .unwrap();
    let e = bad
        .blob_present("team/app", &layer.digest, layer.len())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Auth { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("nope"));
}

/// 429 TOOMANYREQUESTS bursts without Retry-After: backed off with jitter and retried, for
/// idempotent requests and for PATCH (a throttled request was not processed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_bursts_are_retried() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(18, 2 * MIB + 3));
    proxy.state.throttle_next.store(3, Ordering::SeqCst);
    images::upload(&c, "team/app", &blob, 0).await.unwrap();
    let cur = c.start_upload("team/app").await.unwrap();
    proxy.state.throttle_next.store(2, Ordering::SeqCst);
    let other = Blob::new(images::random_bytes(19, MIB));
    let cur = c
        .upload_chunk_from(&cur, common::body(other.bytes.clone()))
        .await
        .unwrap();
    c.finish_upload(&cur, &other.digest, bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(proxy.state.throttled.load(Ordering::SeqCst), 5);
    // Without retries the 429 surfaces, retryable.
    let no = RegistryClient::new(
        &proxy.host(),
        ClientOptions {
            retry: RetryPolicy::none(),
            ..opts()
        },
    )
    .unwrap();
    proxy.state.throttle_next.store(1, Ordering::SeqCst);
    let e = no
        .blob_present("team/app", &blob.digest, blob.len())
        .await
        .unwrap_err();
    assert!(e.is_retryable() && e.status() == Some(429), "{e}");
}

/// Manifest rules: an OCI manifest without a top-level mediaType is 405 UNSUPPORTED (the error
/// says so), too many layers is refused in words, immutable tags give TAG_INVALID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rules() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let cfg = images::config("linux", "amd64");
    let l1 = Blob::new(images::random_bytes(20, 100));
    let l2 = Blob::new(images::random_bytes(21, 100));
    for b in [&cfg, &l1, &l2] {
        images::upload(&c, "team/app", b, 0).await.unwrap();
    }
    let bare = images::manifest(&cfg, &[&l1], false);
    let e = c
        .put_manifest("team/app", "v1", OCI_MANIFEST, bare)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::ManifestRejected { status: 405, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("top-level \"mediaType\""), "{e}");

    proxy.state.layers_max.store(1, Ordering::SeqCst);
    let two = images::manifest(&cfg, &[&l1, &l2], true);
    let e = c
        .put_manifest("team/app", "v1", OCI_MANIFEST, two)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("too many layers"), "{e}");
    proxy.state.layers_max.store(127, Ordering::SeqCst);

    proxy.state.immutable_tags.store(true, Ordering::SeqCst);
    c.put_manifest(
        "team/app",
        "v1",
        OCI_MANIFEST,
        images::manifest(&cfg, &[&l1], true),
    )
    .await
    .unwrap();
    let e = c
        .put_manifest(
            "team/app",
            "v1",
            OCI_MANIFEST,
            images::manifest(&cfg, &[&l2], true),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ImmutableTag { .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "tag v1 already exists in repository team/app and the repository is immutable"
        ),
        "{e}"
    );

    let huge = bytes::Bytes::from(vec![b' '; hoist::registry::MANIFEST_BYTES_MAX + 1]);
    let e = c
        .put_manifest("team/app", "v2", OCI_MANIFEST, huge)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ManifestTooLarge { .. }), "{e}");
}

/// Cross-repository mount is off by default on ECR: the mount POST opens a plain session,
/// which the client uses; with mounting on, it mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_falls_back_to_a_session() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(22, 1000));
    images::upload(&c, "team/a", &blob, 0).await.unwrap();
    match c
        .mount_blob("team/b", "team/a", &blob.digest)
        .await
        .unwrap()
    {
        MountOutcome::Upload(cur) => c
            .finish_upload(&cur, &blob.digest, blob.bytes.clone())
            .await
            .unwrap(),
        MountOutcome::Mounted => panic!("mounting is off on this emulated ECR"),
    }
    proxy.state.mount_enabled.store(true, Ordering::SeqCst);
    assert_eq!(
        c.mount_blob("team/c", "team/a", &blob.digest)
            .await
            .unwrap(),
        MountOutcome::Mounted
    );
}

/// Credentials go only to the registry host: an upload Location on another host (here a spy
/// on another port) gets no Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_to_other_hosts() {
    use common::serve::{Cut, respond, spawn_server};
    use std::sync::{Arc, Mutex};
    let (_reg, proxy) = setup().await;
    proxy.basic_auth(&["token-1"]);
    let c = RegistryClient::new(
        &proxy.host(),
        common::with_credentials(opts(), "AWS", "token-1"),
    )
    .unwrap();
    c.ping().await.unwrap();
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let s2 = seen.clone();
    let (spy, task) = spawn_server(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = s2.clone();
        async move {
            let authz = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(authz);
            Ok::<_, Cut>(respond(
                202,
                &[("location", "/elsewhere".to_string())],
                bytes::Bytes::new(),
            ))
        }
    })
    .await;
    let cursor = hoist::registry::UploadCursor {
        session_url: format!("http://{spy}/v2/team/app/blobs/uploads/x"),
        offset: 0,
    };
    let next = c
        .upload_chunk_from(&cursor, common::body(bytes::Bytes::from_static(b"abc")))
        .await
        .unwrap();
    assert_eq!(
        next.session_url,
        format!("http://{spy}/elsewhere"),
        "relative Location resolved"
    );
    assert_eq!(next.offset, 3);
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    // The registry itself does get them.
    assert!(proxy.log().iter().any(|l| l == "GET /v2/ auth"));
    drop(task);
}

/// A digest mismatch at the final PUT (ECR: 400 BLOB_UPLOAD_INVALID "None of the provided
/// layer digests match the calculated layer digest") is recognised as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_is_recognised() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(24, MIB + 1));
    let cur = c.start_upload("team/app").await.unwrap();
    let cur = images::send_chunk(&c, &cur, &blob, 0..MIB).await;
    let wrong = Digest::sha256_of(b"other");
    let e = c
        .finish_upload(&cur, &wrong, blob.bytes.slice(MIB..))
        .await
        .unwrap_err();
    assert!(e.is_digest_refused() && !e.is_retryable(), "{e}");
    assert!(
        e.to_string()
            .contains("None of the provided layer digests match"),
        "{e}"
    );
}

/// Who saw a request, with which Authorization.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// ECR redirects blob GETs to presigned S3 URLs: the redirect target (another host) gets no
/// Authorization, the registry does, and the blob's digest is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_get_no_credentials() {
    let body = bytes::Bytes::from_static(b"{\"os\":\"linux\",\"architecture\":\"amd64\"}");
    let digest = Digest::sha256_of(&body);
    let seen: Seen = Seen::default();
    let (s3, s3_task) = spawn_s3(&seen, body.clone()).await;
    let (registry, reg_task) = spawn_redirecting_registry(&seen, s3).await;
    let c = RegistryClient::new(
        &registry.to_string(),
        common::with_credentials(opts(), "AWS", "tok"),
    )
    .unwrap();
    let got = c.get_blob("team/app", &digest, 1 << 20).await.unwrap();
    assert_eq!(got, body);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|(w, a)| w == "registry" && a.is_some())
            .count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|(w, a)| w == "s3" && a.is_none())
            .count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|(w, a)| w != "s3" || a.is_none()),
        "{seen:?}"
    );
    drop(s3_task);
    drop(reg_task);
}

/// Notes who was asked and with which `Authorization` header.
fn record_request(seen: &Seen, who: &str, req: &hyper::Request<hyper::body::Incoming>) {
    let authz = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    seen.lock().unwrap().push((who.to_string(), authz));
}

/// The presigned-URL host: serves `body` to anyone.
async fn spawn_s3(
    seen: &Seen,
    body: bytes::Bytes,
) -> (std::net::SocketAddr, common::serve::ServerTask) {
    use common::serve::{Cut, respond, spawn_server};
    let seen = seen.clone();
    spawn_server(move |req: hyper::Request<hyper::body::Incoming>| {
        record_request(&seen, "s3", &req);
        let body = body.clone();
        async move { Ok::<_, Cut>(respond(200, &[], body)) }
    })
    .await
}

/// A registry that asks for Basic credentials, then redirects every request to `s3`.
async fn spawn_redirecting_registry(
    seen: &Seen,
    s3: std::net::SocketAddr,
) -> (std::net::SocketAddr, common::serve::ServerTask) {
    use common::serve::{Cut, respond, spawn_server};
    let seen = seen.clone();
    spawn_server(move |req: hyper::Request<hyper::body::Incoming>| {
        record_request(&seen, "registry", &req);
        let authed = req.headers().contains_key("authorization");
        async move {
            Ok::<_, Cut>(if !authed {
                respond(
                    401,
                    &[("www-authenticate", r#"Basic realm="r""#.to_string())],
                    "",
                )
            } else {
                respond(
                    307,
                    &[(
                        "location",
                        format!("http://{s3}/bucket/obj?X-Amz-Signature=sig"),
                    )],
                    "",
                )
            })
        }
    })
    .await
}

/// The lost answer to the final PUT: the blob is complete but the client saw the connection
/// drop. Resuming finds the session gone (ECR: no status endpoint, then the PUT again is
/// BLOB_UPLOAD_UNKNOWN), and a HEAD shows the blob is there: no new session, only the final
/// piece went twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_to_the_final_put() {
    let (_reg, proxy) = setup().await;
    let c = RegistryClient::new(&proxy.host(), opts()).unwrap();
    let blob = Blob::new(images::random_bytes(25, 2 * MIB + 3));
    proxy
        .state
        .drop_next_finish_response
        .store(true, Ordering::SeqCst);
    let stats = images::upload(&c, "team/app", &blob, 3).await.unwrap();
    assert_eq!((stats.resumes, stats.restarts), (1, 0), "{stats:?}");
    let last_piece = blob.len() - 2 * MIB as u64;
    assert_eq!(
        proxy.bytes_in(),
        blob.len() + last_piece,
        "only the last piece went twice"
    );
    assert!(images::present(&c, "team/app", &blob).await);
}
