//! Pushes through the ECR emulation on a loopback address: a host hoist does not recognise as
//! ECR by name (as the dual-stack endpoint, a corporate proxy or a CNAME), so everything here
//! works by what the registry does. Its upload status answers 404 `BLOB_UPLOAD_UNKNOWN` for
//! live sessions (or a bare 404, in one test); a repository that was not created drops the
//! upload POST unless a create-on-push template covers it. Figures are recorded for `docs/RELIABILITY.md`.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hoist::api::{Compression, JobId, JobState};
use hoist::cli::client::Client;
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression, SampleSpec};
use serde_json::json;

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use common::fault_proxy::{FaultProxy, Faults};
use common::figures::record;
use daemon_support::{TestDaemon, kill9, wait_answers};
use push_support::*;

const MIB: u64 = 1 << 20;
/// Parallel uploads of one daemon (its default).
const IN_FLIGHT_MAX: u64 = hoist::daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT as u64;
const EMULATION: &str = "ECR emulation on 127.0.0.1 (not ECR by name)";

/// An OCI layout of random layers of `layers_mib` MiB each, stored zstd-compressed (pushed as
/// they are, so the blob bytes are known exactly). The bytes come from `/dev/urandom` and zstd
/// passes them through fast: 400 MB take seconds in a debug build, where the sample
/// generator's own random bytes would take most of a minute.
fn random_layers(dir: &std::path::Path, seed: u64, layers_mib: &[u64]) -> String {
    let files = dir.join(format!("random{seed}-files"));
    std::fs::create_dir_all(&files).unwrap();
    let layers = layers_mib
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let path = files.join(format!("layer{i}"));
            let mut urandom = std::io::Read::take(
                std::fs::File::open("/dev/urandom").expect("open /dev/urandom"),
                n * MIB,
            );
            let mut file = std::fs::File::create(&path).unwrap();
            std::io::copy(&mut urandom, &mut file).unwrap();
            LayerSpec::new(LayerContent::HostFiles(vec![path]), SampleCompression::Zstd)
        })
        .collect();
    let spec = SampleSpec {
        layers,
        ..SampleSpec::small(seed)
    };
    write_oci(&dir.join(format!("random{seed}")), &spec).1
}

/// The manifest digest the registry serves for `repo:1`, read with skopeo.
fn served_digest(host: &str, repo: &str) -> Digest {
    Digest::sha256_of(&common::skopeo_raw_manifest(host, &format!("{repo}:1")))
}

/// The one layer of [`periodic_resets_on_one_blob`]: about 300 MB, a dozen reset intervals.
const ONE_BLOB_MIB: u64 = 286;
/// The reset period of the link, in bytes it carries upstream (exact multiples, no jitter).
const RESET_PERIOD_BYTES: u64 = 25_000_000;
/// Wire bytes per blob byte the part sizer must stay within at that period.
const WIRE_RATIO_MAX: f64 = 1.15;

/// The real registry behind the ECR emulation behind a TCP fault proxy that resets the link
/// every [`RESET_PERIOD_BYTES`] of upstream traffic.
async fn resetting_link() -> (TestRegistry, EcrProxy, FaultProxy) {
    let registry = TestRegistry::start();
    let ecr = EcrProxy::start(registry.addr).await;
    let tcp = FaultProxy::start(ecr.addr).await;
    ecr.serve_behind(tcp.addr);
    tcp.set(Faults {
        reset_after_upstream_bytes: Some(RESET_PERIOD_BYTES),
        reset_every: true,
        ..Faults::default()
    });
    (registry, ecr, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_every_25_mb_on_a_400_mb_image_cost_at_most_a_part_each() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, ecr, tcp) = resetting_link().await;
    let source = random_layers(dir.path(), 71, &[96, 96, 96, 96, 6]);
    let d = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = d.client();
    let target = format!("{}/resets/big:1", tcp.host());
    let t = Instant::now();
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_done(&client, &id).await;
    let took = t.elapsed();
    assert_eq!(
        Some(served_digest(&registry.host(), "resets/big")),
        job.manifest_digest
    );
    let blobs = job.bytes_total();
    let sent = ecr.bytes_in();
    let resets = tcp.resets();
    let ratio = sent as f64 / blobs as f64;
    let status_gets = ecr.state.status_gets.load(Ordering::SeqCst);
    record(
        "resets_every_25_mb_on_a_400_mb_image_cost_at_most_a_part_each",
        "TCP reset (RST) every 25 MB, 400 MB image",
        EMULATION,
        "completes; each reset costs at most the 5 MiB part in flight; a 404 upload status never restarts a blob",
        &format!(
            "{resets} resets; {:.1} MB sent for {:.1} MB of blobs ({ratio:.2}x); {status_gets} status GETs answered 404; {:.1} s",
            sent as f64 / 1e6,
            blobs as f64 / 1e6,
            took.as_secs_f64()
        ),
        json!({"resets": resets, "sent_bytes": sent, "blob_bytes": blobs, "ratio": ratio, "status_404": status_gets, "seconds": took.as_secs_f64()}),
    );
    assert!(resets >= 10, "the link reset only {resets} times");
    assert!(status_gets >= 1, "the upload status was never asked");
    assert!(
        ratio <= 1.3,
        "sent {sent} for {blobs} blob bytes ({ratio:.2}x)"
    );
    assert!(
        sent - blobs <= resets * CHUNK,
        "re-sent {} bytes for {resets} resets: more than a part each",
        sent - blobs
    );
}

/// Pushes one ~300 MB layer at the default part size through the ECR emulation behind a link
/// that resets every 25 MB of upstream traffic; the emulation's upload status answers 404 with
/// `BLOB_UPLOAD_UNKNOWN`, or a bare 404 (`bare_404`). Checks the image with skopeo and the bytes
/// on the wire (everything the link carried upstream: bodies, headers, every request) against
/// [`WIRE_RATIO_MAX`], and records the figure.
async fn periodic_resets_on_one_blob(test: &str, seed: u64, bare_404: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (registry, ecr, tcp) = resetting_link().await;
    ecr.state
        .status_404_without_code
        .store(bare_404, Ordering::SeqCst);
    let source = random_layers(dir.path(), seed, &[ONE_BLOB_MIB]);
    let d = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = d.client();
    let repo = format!("resets/one{seed}");
    let mut req = request(
        &source,
        &format!("{}/{repo}:1", tcp.host()),
        Compression::Gzip,
    );
    req.chunk_size_bytes = Some(hoist::chunk_size::CHUNK_BYTES_DEFAULT);
    let t = Instant::now();
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_done(&client, &id).await;
    let took = t.elapsed();
    let (host, reference) = (registry.host(), format!("{repo}:1"));
    let pulled = dir.path().join("pulled");
    let got = tokio::task::spawn_blocking(move || pull_back(&host, &reference, &pulled))
        .await
        .unwrap();
    assert_eq!(
        Some(got),
        job.manifest_digest,
        "the registry serves another image"
    );
    let (blobs, wire, resets) = (job.bytes_total(), tcp.upstream_bytes(), tcp.resets());
    let ratio = wire as f64 / blobs as f64;
    let status_gets = ecr.state.status_gets.load(Ordering::SeqCst);
    let parts: Vec<u64> = ecr.state.part_sizes.lock().unwrap().clone();
    let mut sizes: Vec<String> = parts
        .iter()
        .map(|p| format!("{:.2}", *p as f64 / 1e6))
        .collect();
    sizes.dedup();
    let status = if bare_404 {
        "a bare 404"
    } else {
        "404 BLOB_UPLOAD_UNKNOWN"
    };
    record(
        test,
        &format!(
            "TCP reset (RST) every 25 MB of upstream traffic, one {ONE_BLOB_MIB} MiB layer, 16 MiB parts configured"
        ),
        &format!("{EMULATION}, upload status answers {status}"),
        "completes; parts sized from the bytes between resets end before the next reset; at most 1.15x on the wire",
        &format!(
            "{resets} resets; {:.1} MB on the wire for {:.1} MB of blobs ({ratio:.3}x); part sizes in MB as they changed: {}; {status_gets} status GETs; {:.1} s",
            wire as f64 / 1e6,
            blobs as f64 / 1e6,
            sizes.join(", "),
            took.as_secs_f64()
        ),
        json!({"resets": resets, "wire_bytes": wire, "blob_bytes": blobs, "ratio": ratio, "status_404": status_gets, "bare_404": bare_404, "part_sizes": parts, "seconds": took.as_secs_f64()}),
    );
    assert!(resets >= 10, "the link reset only {resets} times");
    assert!(status_gets >= 1, "the upload status was never asked");
    assert!(
        ratio <= WIRE_RATIO_MAX,
        "{wire} bytes on the wire for {blobs} blob bytes ({ratio:.3}x); parts {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_every_25_mb_on_one_300_mb_blob_cost_at_most_1_15x_on_the_wire() {
    periodic_resets_on_one_blob(
        "resets_every_25_mb_on_one_300_mb_blob_cost_at_most_1_15x_on_the_wire",
        81,
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_every_25_mb_with_a_bare_404_status_cost_at_most_1_15x_on_the_wire() {
    periodic_resets_on_one_blob(
        "resets_every_25_mb_with_a_bare_404_status_cost_at_most_1_15x_on_the_wire",
        82,
        true,
    )
    .await;
}

fn hoistd(dir: &std::path::Path) -> Child {
    daemon_support::hoistd_command(dir, "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hoistd")
}

/// Waits until job `id` (run by `child`) has uploaded `at_least` bytes and the emulation holds
/// a part it received whole (not committed yet), and kills `child`. Returns the parts held.
async fn kill_mid_part(
    child: Child,
    client: &Client,
    id: &JobId,
    ecr: &EcrProxy,
    at_least: u64,
) -> u32 {
    wait_for(client, id, PUSH_MS_MAX, "uploading with a part held", |j| {
        j.state == JobState::Uploading
            && j.bytes_uploaded() >= at_least
            && ecr.state.parts_held.load(Ordering::SeqCst) > 0
    })
    .await;
    let held = ecr.state.parts_held.load(Ordering::SeqCst);
    kill9(child);
    held
}

/// hoistd in `d`, once it answers.
async fn hoistd_answering(d: &std::path::Path, client: &Client) -> Child {
    let child = hoistd(d);
    wait_answers(client, 10).await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kills_mid_upload_resend_at_most_a_part_per_blob_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let ecr = EcrProxy::start(registry.addr).await;
    ecr.state.part_delay_ms.store(150, Ordering::SeqCst);
    let source = random_layers(dir.path(), 72, &[40, 30, 30]);
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));
    let target = format!("{}/kill/unnamed:1", ecr.host());
    let mut child = hoistd_answering(&d, &client).await;
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let mut held = Vec::new();
    for kill in 0..3u64 {
        held.push(kill_mid_part(child, &client, &id, &ecr, (kill + 1) * 4 * CHUNK).await);
        child = hoistd_answering(&d, &client).await;
    }
    let job = wait_done(&client, &id).await;
    kill9(child);
    assert_eq!(
        Some(served_digest(&registry.host(), "kill/unnamed")),
        job.manifest_digest
    );
    let manifest = common::skopeo_raw_manifest(&registry.host(), "kill/unnamed:1").len() as u64;
    let once = job.bytes_total() + manifest;
    let resent = ecr.bytes_in().saturating_sub(once);
    let status_gets = ecr.state.status_gets.load(Ordering::SeqCst);
    let per_kill = resent as f64 / 3.0;
    record(
        "three_kills_mid_upload_resend_at_most_a_part_per_blob_in_flight",
        "3 x kill -9 of hoistd mid-upload (a part received, not committed)",
        EMULATION,
        "each restart resumes every blob at its last acknowledged part (404 status, then the PATCH there)",
        &format!(
            "{resent} bytes sent again over 3 kills ({:.1} MB per kill, budget {} parts of {} MiB per kill); {status_gets} status GETs answered 404",
            per_kill / 1e6,
            IN_FLIGHT_MAX,
            CHUNK / MIB
        ),
        json!({"resent_bytes": resent, "resent_per_kill": per_kill, "parts_held_at_kills": held, "part_bytes": CHUNK, "status_404": status_gets}),
    );
    assert!(status_gets >= 1, "no restart asked the upload status");
    assert!(
        resent <= 3 * IN_FLIGHT_MAX * CHUNK,
        "{resent} bytes sent again over 3 kills"
    );
}

/// The push at defaults, through the emulation where `set_up` made the repositories.
async fn push_at_defaults(
    dir: &std::path::Path,
    repo: &str,
    set_up: impl FnOnce(&EcrProxy),
) -> (TestRegistry, EcrProxy, hoist::api::Job, Duration) {
    let registry = TestRegistry::start();
    let ecr = EcrProxy::start(registry.addr).await;
    set_up(&ecr);
    let source = random_layers(dir, 73, &[6, 2]);
    let d = TestDaemon::start_with(&dir.join("d"), Config::default());
    let client = d.client();
    let mut req = request(
        &source,
        &format!("{}/{repo}:1", ecr.host()),
        Compression::Gzip,
    );
    req.chunk_size_bytes = None;
    let t = Instant::now();
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "finished", |j| {
        j.state.is_final()
    })
    .await;
    (registry, ecr, job, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repository_fails_at_once_naming_both_remedies() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, ecr, job, took) = push_at_defaults(dir.path(), "team/missing", |e| {
        e.set_repositories(&["other"])
    })
    .await;
    let reason = job.reason.clone().unwrap_or_default();
    record(
        "a_missing_repository_fails_at_once_naming_both_remedies",
        "repository not created, no create-on-push template (upload POST dropped)",
        EMULATION,
        "the job fails at once with the repository and both remedies",
        &format!("failed after {:.1} s: \"{reason}\"", took.as_secs_f64()),
        json!({"seconds": took.as_secs_f64(), "reason": reason}),
    );
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
    for want in [
        "repository team/missing does not exist",
        "aws ecr create-repository --repository-name team/missing",
        "repository creation template with CREATE_ON_PUSH",
    ] {
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
    }
    assert!(!reason.contains('\n'), "{reason:?}");
    assert!(!ecr.repository_exists("team/missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_covered_by_a_create_on_push_template_is_created_and_pullable() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, ecr, job, _) = push_at_defaults(dir.path(), "team/fresh", |e| {
        e.set_repositories(&[]);
        e.create_on_push(&["team"]);
    })
    .await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(ecr.repository_exists("team/fresh"));
    // Pulled through the emulation: the created repository serves like any other.
    let host = ecr.host();
    let pulled = dir.path().join("pulled");
    let got = tokio::task::spawn_blocking(move || pull_back(&host, "team/fresh:1", &pulled))
        .await
        .unwrap();
    assert_eq!(Some(got), job.manifest_digest);
}
