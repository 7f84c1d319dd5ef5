//! Helpers for the end-to-end push tests: sample images in the three source kinds, a daemon
//! with the production body, and checks of what the registry serves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hoist::api::{self, Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::digest::Digest;
use hoist::platform::Platform;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression, SampleImage, SampleSpec};

use crate::common;

pub mod containerd;
pub mod split;

/// How long a push of a test image may take (debug build, 2 cores, shared with other tests).
pub const PUSH_MS_MAX: u64 = 90_000;
/// Upload chunk size of the tests: ECR's minimum, so images of a few tens of MB have several.
pub const CHUNK: u64 = 5 << 20;

/// An image of about `mb` MB in three layers (text, random, small files), layers stored with
/// `compression`, for `platform`.
pub fn image_spec(seed: u64, mb: u64, compression: SampleCompression) -> SampleSpec {
    let mut spec = SampleSpec::small(seed);
    spec.layers = vec![
        LayerSpec::new(LayerContent::SmallFiles(16), compression),
        LayerSpec::new(LayerContent::Text((mb / 2) << 20), compression),
        LayerSpec::new(LayerContent::Random((mb / 2) << 20), compression),
    ];
    spec
}

/// An image declared linux/amd64 whose second layer holds arm64 executables only (12 of
/// them), its layers stored with `compression`: the ELF census must refuse it.
pub fn arm64_binaries_spec(seed: u64, compression: SampleCompression) -> SampleSpec {
    let mut spec = image_spec(seed, 0, compression);
    spec.layers = vec![
        LayerSpec::new(LayerContent::Text(1 << 20), compression),
        LayerSpec::new(
            LayerContent::Elf {
                machine: 0xb7,
                count: 12,
            },
            compression,
        ),
    ];
    spec
}

pub fn write_oci(dir: &Path, spec: &SampleSpec) -> (SampleImage, String) {
    let img = hoist_testkit::sample::write_oci_layout(dir, spec).expect("write the sample layout");
    let src = format!("oci:{}", dir.display());
    (img, src)
}

/// A docker-archive made by skopeo from an OCI layout (uncompressed layers inside).
pub fn write_docker_archive(oci_dir: &Path, tar: &Path) -> String {
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        &format!("oci:{}", oci_dir.display()),
        &format!("docker-archive:{}:hoist/test:1", tar.display()),
    ]);
    format!("docker-archive:{}", tar.display())
}

/// A docker-archive under `dir` of [`image_spec`] `seed` of about `mb` MB, layers uncompressed.
pub fn archive(dir: &Path, seed: u64, mb: u64) -> String {
    let oci = dir.join(format!("img{seed}"));
    write_oci(&oci, &image_spec(seed, mb, SampleCompression::None));
    write_docker_archive(&oci, &dir.join(format!("img{seed}.tar")))
}

/// An ECR emulation in front of `upstream` that takes 300 ms over each part: slow enough for
/// a test to act on a job while it uploads.
pub async fn slow_ecr(upstream: std::net::SocketAddr) -> common::ecr_proxy::EcrProxy {
    let proxy = common::ecr_proxy::EcrProxy::start(upstream).await;
    proxy
        .state
        .part_delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    proxy
}

/// Submits a push of `source` to `target` (see [`request`]) and returns the job's ID.
pub async fn submit(
    client: &Client,
    source: &str,
    target: &str,
    compression: Compression,
) -> JobId {
    client
        .submit(&request(source, target, compression))
        .await
        .expect("the daemon accepts the job")
        .id
}

pub fn request(source: &str, target: &str, compression: Compression) -> api::SubmitRequest {
    api::SubmitRequest {
        source: source.into(),
        target: target.into(),
        platform: None,
        compression: Some(compression),
        chunk_size_bytes: Some(CHUNK),
        split_layers: None,
        extra_tags: Vec::new(),
        options: api::JobOptions {
            insecure: true,
            ..api::JobOptions::default()
        },
        env: Some(crate::common::shell_env_vars()),
    }
}

/// `req` from a shell that also has `vars` (a `DOCKER_HOST`, a `DOCKER_CONFIG`).
pub fn with_vars(mut req: api::SubmitRequest, vars: &[(&str, &str)]) -> api::SubmitRequest {
    let env = req.env.get_or_insert_with(crate::common::shell_env_vars);
    env.0
        .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    req
}

/// Polls until `pred` holds or the job ends otherwise; panics with the job after `ms`.
pub async fn wait_for(
    client: &Client,
    id: &JobId,
    ms: u64,
    what: &str,
    pred: impl Fn(&api::Job) -> bool,
) -> api::Job {
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut last = None;
    while Instant::now() < deadline {
        match client.job(id).await {
            Ok(job) if pred(&job) => return job,
            Ok(job) => last = Some(job),
            // The daemon may be restarting.
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never became {what}; last seen: {last:?}");
}

/// Waits for the job to end and asserts it is done.
pub async fn wait_done(client: &Client, id: &JobId) -> api::Job {
    let job = wait_for(client, id, PUSH_MS_MAX, "finished", |j| j.state.is_final()).await;
    assert_eq!(
        job.state,
        JobState::Done,
        "the push did not finish: {job:?}"
    );
    job
}

/// Pulls `reference` back with skopeo (which checks every blob's digest as it copies) and
/// returns the manifest digest the registry serves.
pub fn pull_back(host: &str, reference: &str, dest: &Path) -> Digest {
    common::skopeo_pull_oci(host, reference, dest);
    let raw = common::skopeo_raw_manifest(host, reference);
    // Every blob in the pulled layout matches its name.
    let blobs = dest.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).expect("pulled blobs") {
        let p: PathBuf = e.unwrap().path();
        let got = Digest::sha256_of(&std::fs::read(&p).unwrap());
        assert_eq!(got.hex(), p.file_name().unwrap().to_str().unwrap());
    }
    Digest::sha256_of(&raw)
}

/// `hoist verify` as the library runs it: the tag resolves to `digest` on linux/amd64.
pub async fn verify(host: &str, reference: &str, digest: &Digest) {
    let target = hoist::registry::ImageRef::parse(&format!("{host}/{reference}")).unwrap();
    let client =
        hoist::registry::RegistryClient::new(host, hoist::registry::ClientOptions::default())
            .unwrap();
    let report =
        hoist::registry::verify_tag(&client, &target, Some(digest), &Platform::linux_amd64())
            .await
            .expect("the tag verifies");
    assert_eq!(&report.tag_digest, digest);
}

/// Whether the tag exists in the registry (HEAD the manifest, accepting every manifest type:
/// without an Accept header the registry hides OCI manifests).
///
/// Debian's registry (2.8.2) writes a tag's link file in place, truncated then written (upstream
/// distribution v3 writes a temporary file and renames it, "to prevent partial writes"), so a
/// HEAD that lands in between gets `500 UNKNOWN` (seen once in CI, from the crash loop's watcher
/// polling every 25 ms while hoistd committed): a 5xx is asked again, up to
/// [`TAG_HEAD_5XX_RETRIES_MAX`] times, 20 ms apart.
pub fn tag_exists(addr: std::net::SocketAddr, repo: &str, tag: &str) -> bool {
    use std::io::{Read, Write};
    let mut attempt = 0;
    loop {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the registry");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf);
        match head.split_whitespace().nth(1) {
            Some("200") => return true,
            Some("404") => return false,
            Some(code) if code.starts_with('5') && attempt < TAG_HEAD_5XX_RETRIES_MAX => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("HEAD manifest answered {other:?}: {head}"),
        }
    }
}

/// How many times [`tag_exists`] asks again after a 5xx (a tag being written).
pub const TAG_HEAD_5XX_RETRIES_MAX: u32 = 10;

/// Writes a docker-archive (`dir/img.tar`, by skopeo from the OCI layout `dir/img`) of image
/// `seed` with three uncompressed layers: 16 small files, `text_bytes` of text and
/// `random_bytes` of random bytes; returns its source reference.
pub fn uncompressed_docker_archive(
    dir: &Path,
    seed: u64,
    text_bytes: u64,
    random_bytes: u64,
) -> String {
    let none = SampleCompression::None;
    let mut spec = image_spec(seed, 0, none);
    spec.layers = vec![
        LayerSpec::new(LayerContent::SmallFiles(16), none),
        LayerSpec::new(LayerContent::Text(text_bytes), none),
        LayerSpec::new(LayerContent::Random(random_bytes), none),
    ];
    let oci = dir.join("img");
    write_oci(&oci, &spec);
    write_docker_archive(&oci, &dir.join("img.tar"))
}

/// The manifest digest of an uninterrupted push of `source` to `host/base/img:1` (gzip), by
/// an in-process daemon in `dir`: the result an interrupted push must equal.
pub async fn uninterrupted(dir: &Path, host: &str, source: &str) -> Digest {
    let daemon =
        crate::daemon_support::TestDaemon::start_with(dir, hoist::daemon::Config::default());
    let client = daemon.client();
    let target = format!("{host}/base/img:1");
    let id = submit(&client, source, &target, Compression::Gzip).await;
    wait_done(&client, &id).await.manifest_digest.unwrap()
}
