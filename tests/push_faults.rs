//! Measured resilience: real pushes through the daemon's socket while the link misbehaves.
//! Faults come from one stack of proxies in front of the real registry
//! (`hoistd -> FaultProxy (TCP: resets, blackholes, caps) -> EcrProxy (HTTP: atomic parts,
//! lost acks, 429/5xx bursts) -> docker-registry`), or the fault proxy alone in front of
//! Debian's registry. Every test asserts its outcome with figures and records them (see
//! `common::figures`) for `docs/RELIABILITY.md`.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hoist::api::{Compression, JobState};
use hoist::daemon::Config;
use hoist::daemon::push::NetSettings;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression, SampleSpec};
use serde_json::json;

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use common::fault_proxy::{FaultProxy, Faults};
use common::figures::record;
use daemon_support::TestDaemon;
use push_support::*;

const MIB: u64 = 1 << 20;

/// The fault stack: a TCP fault proxy, optionally in front of the ECR emulation.
struct Link {
    registry: TestRegistry,
    ecr: Option<EcrProxy>,
    tcp: FaultProxy,
}

impl Link {
    async fn through_ecr() -> Link {
        let registry = TestRegistry::start();
        let ecr = EcrProxy::start(registry.addr).await;
        let tcp = FaultProxy::start(ecr.addr).await;
        ecr.serve_behind(tcp.addr);
        Link {
            registry,
            ecr: Some(ecr),
            tcp,
        }
    }

    async fn debian() -> Link {
        let registry = TestRegistry::start();
        let tcp = FaultProxy::start(registry.addr).await;
        Link {
            registry,
            ecr: None,
            tcp,
        }
    }

    fn ecr(&self) -> &EcrProxy {
        self.ecr.as_ref().expect("an ECR link")
    }

    fn target(&self, repo: &str) -> String {
        format!("{}/{repo}:1", self.tcp.host())
    }
}

/// An OCI layout whose layers are random bytes stored gzip-compressed: pushed as they are, so
/// blob bytes are known exactly and the manifest digest is the layout's.
fn image(dir: &std::path::Path, seed: u64, layers_mib: &[u64]) -> String {
    let mut spec = SampleSpec::small(seed);
    spec.layers = layers_mib
        .iter()
        .map(|mb| LayerSpec::new(LayerContent::Random(mb * MIB), SampleCompression::Gzip))
        .collect();
    write_oci(&dir.join(format!("img{seed}")), &spec).1
}

fn daemon(dir: &std::path::Path, net: NetSettings) -> TestDaemon {
    TestDaemon::start_with(&dir.join("d"), Config::with_net(net))
}

fn fast_net() -> NetSettings {
    NetSettings {
        stall_timeout: Duration::from_secs(1),
        retry_delay_max: Duration::from_secs(2),
        ..NetSettings::default()
    }
}

/// Pushes `source` to `target`, waits for it, checks what the registry serves (skopeo pull
/// with digest checks) equals the job's manifest digest; returns the job.
async fn push_and_check(
    link: &Link,
    d: &TestDaemon,
    dir: &std::path::Path,
    source: &str,
    repo: &str,
    chunk: u64,
) -> (hoist::api::Job, Duration) {
    let client = d.client();
    let mut req = request(source, &link.target(repo), Compression::Gzip);
    req.chunk_size_bytes = Some(chunk);
    let t = Instant::now();
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_done(&client, &id).await;
    let took = t.elapsed();
    check_pulled(link, dir, repo, &job).await;
    (job, took)
}

async fn check_pulled(link: &Link, dir: &std::path::Path, repo: &str, job: &hoist::api::Job) {
    let host = link.registry.host();
    let pulled = dir.join(format!("pulled-{}", repo.replace('/', "-")));
    let reference = format!("{repo}:1");
    let got = tokio::task::spawn_blocking(move || pull_back(&host, &reference, &pulled))
        .await
        .unwrap();
    assert_eq!(
        Some(&got),
        job.manifest_digest.as_ref(),
        "pulled image differs"
    );
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_every_25_mb_through_ecr_cost_at_most_a_chunk_each() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    link.tcp.set(Faults {
        reset_after_upstream_bytes: Some(25_000_000),
        reset_every: true,
        ..Faults::default()
    });
    let source = image(dir.path(), 51, &[24, 24, 16]);
    let d = daemon(dir.path(), NetSettings::default());
    let (job, took) = push_and_check(&link, &d, dir.path(), &source, "resets/ecr", CHUNK).await;
    let blobs = job.bytes_total();
    let sent = link.ecr().bytes_in();
    let resets = link.tcp.resets();
    let ratio = sent as f64 / blobs as f64;
    record(
        "resets_every_25_mb_through_ecr_cost_at_most_a_chunk_each",
        "TCP reset (RST) every 25 MB",
        "ECR emulation (atomic parts)",
        "completes; each reset costs at most the 5 MiB part in flight",
        &format!(
            "{resets} resets; {:.1} MB sent for {:.1} MB of blobs ({ratio:.2}x); {:.1} s",
            mb(sent),
            mb(blobs),
            took.as_secs_f64()
        ),
        json!({"resets": resets, "sent_bytes": sent, "blob_bytes": blobs, "ratio": ratio, "seconds": took.as_secs_f64()}),
    );
    assert!(resets >= 2, "the link never reset: {resets}");
    assert!(
        ratio <= 1.3,
        "sent {sent} for {blobs} blob bytes ({ratio:.2}x)"
    );
    assert!(
        sent - blobs <= resets * CHUNK,
        "re-sent {} bytes for {resets} resets: more than a chunk each",
        sent - blobs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_every_25_mb_on_debians_registry_cost_the_blobs_prefix_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::debian().await;
    link.tcp.set(Faults {
        reset_after_upstream_bytes: Some(25_000_000),
        reset_every: true,
        ..Faults::default()
    });
    // Blobs well under the reset interval: a blob whose session is cancelled by every cut
    // starts from byte 0 again, so a blob larger than the interval would never complete.
    let source = image(dir.path(), 58, &[10, 10, 10, 10, 10]);
    let d = daemon(dir.path(), NetSettings::default());
    let (job, took) = push_and_check(&link, &d, dir.path(), &source, "resets/deb", CHUNK).await;
    let blobs = job.bytes_total();
    let sent = link.tcp.upstream_bytes();
    let resets = link.tcp.resets();
    let ratio = sent as f64 / blobs as f64;
    record(
        "resets_every_25_mb_on_debians_registry_cost_the_blobs_prefix_and_complete",
        "TCP reset (RST) every 25 MB",
        "Debian distribution 2.8.2 directly",
        "completes; a cut mid-PATCH cancels that blob's session (its prefix is sent again)",
        &format!(
            "{resets} resets; {:.1} MB on the wire (with HTTP headers) for {:.1} MB of blobs ({ratio:.2}x); {:.1} s",
            mb(sent),
            mb(blobs),
            took.as_secs_f64()
        ),
        json!({"resets": resets, "sent_bytes": sent, "blob_bytes": blobs, "ratio": ratio, "seconds": took.as_secs_f64()}),
    );
    assert!(resets >= 2, "the link never reset: {resets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_shrink_after_a_reset_and_grow_back_after_clean_intervals_never_below_5_mib() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let source = image(dir.path(), 52, &[136]);
    let d = daemon(dir.path(), NetSettings::default());
    // One reset inside the layer's first 16 MiB part: the link carried about 12 MiB between
    // the start and the failure.
    link.tcp.set(Faults {
        reset_after_upstream_bytes: Some(12 * MIB),
        ..Faults::default()
    });
    let (_job, _) = push_and_check(&link, &d, dir.path(), &source, "adaptive/img", 16 * MIB).await;
    let parts: Vec<u64> = link.ecr().state.part_sizes.lock().unwrap().clone();
    // The layer's parts (the config and the last part are small).
    let big: Vec<u64> = parts.iter().copied().filter(|p| *p >= MIB).collect();
    let shown: Vec<String> = big
        .iter()
        .map(|p| format!("{:.1}", *p as f64 / MIB as f64))
        .collect();
    record(
        "parts_shrink_after_a_reset_and_grow_back_after_clean_intervals_never_below_5_mib",
        "one reset 12 MiB into the first part, 16 MiB parts configured",
        "ECR emulation (atomic parts)",
        "parts are sized from the ~12 MiB between the start and the reset (5 MiB, the minimum), grow after 3 such intervals without failure, back to 16 MiB",
        &format!("PATCH sizes in MiB: {}", shown.join(", ")),
        json!({"part_sizes": parts}),
    );
    assert_eq!(link.tcp.resets(), 1);
    let n = big.len();
    assert!(big[0] < 8 * MIB, "the first part was not cut: {shown:?}");
    // Three intervals of about 12 MiB at the minimum before any growth.
    assert!(
        big[..6].iter().all(|p| *p == 5 * MIB),
        "grew too early: {shown:?}"
    );
    assert!(
        big[..n - 1].windows(2).all(|w| w[1] >= w[0]),
        "shrank without a failure: {shown:?}"
    );
    assert!(
        big.contains(&(16 * MIB)),
        "never grew back to 16 MiB: {shown:?}"
    );
    assert!(
        big[..n - 1].iter().all(|p| *p >= 5 * MIB),
        "a part below 5 MiB: {shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_is_detected_by_the_watchdog_reported_and_resumed_after() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    // A slow-ish link and large parts: a blackhole catches a body midway (not all of it in
    // the socket buffers).
    link.tcp.set(Faults {
        upstream_bytes_per_sec: Some(24 * MIB),
        ..Faults::default()
    });
    let source = image(dir.path(), 53, &[48]);
    let d = daemon(dir.path(), fast_net());
    let client = d.client();
    let mut req = request(&source, &link.target("stall/img"), Compression::Gzip);
    req.chunk_size_bytes = Some(32 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    let ecr = link.ecr();
    while ecr.bytes_in() < 8 * MIB {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outage = Duration::from_secs(6);
    let start = Instant::now();
    link.tcp.set(Faults {
        upstream_bytes_per_sec: Some(24 * MIB),
        blackhole_until: Some(start + outage),
        ..Faults::default()
    });
    let waiting = wait_for(&client, &id, 10_000, "waiting for network", |j| {
        j.reason
            .as_deref()
            .is_some_and(|r| r.contains("waiting for network, retry in"))
    })
    .await;
    let detected = start.elapsed();
    let reason = waiting.reason.clone().unwrap_or_default();
    // The job carries on by itself once the link is back.
    let committed = ecr.state.bytes_committed.load(Ordering::SeqCst);
    while Instant::now() < start + outage {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = Instant::now();
    while ecr.state.bytes_committed.load(Ordering::SeqCst) <= committed {
        assert!(back.elapsed() < Duration::from_secs(30), "never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = back.elapsed();
    let job = wait_done(&client, &id).await;
    check_pulled(&link, dir.path(), "stall/img", &job).await;
    record(
        "a_blackhole_is_detected_by_the_watchdog_reported_and_resumed_after",
        "blackhole 6 s mid-PATCH (sleeping laptop), stall timeout 1 s, backoff cap 2 s",
        "ECR emulation (atomic parts)",
        "request dropped by the stall watchdog; status says so; resumes by itself",
        &format!(
            "reported after {:.1} s (\"{}\"); next part committed {:.1} s after the link returned",
            detected.as_secs_f64(),
            reason.chars().take(40).collect::<String>(),
            resumed.as_secs_f64()
        ),
        json!({"detected_s": detected.as_secs_f64(), "resumed_after_s": resumed.as_secs_f64(), "reason": reason}),
    );
    assert!(detected < Duration::from_secs(5), "{detected:?}");
    // Within one backoff interval (2 s) plus a stalled attempt (1 s) and a part's transfer.
    assert!(resumed < Duration::from_secs(6), "{resumed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_is_waited_out_until_the_deadline_then_the_job_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    // Large parts on a capped link: the outage catches a body midway (see the blackhole test).
    link.tcp.set(Faults {
        upstream_bytes_per_sec: Some(8 * MIB),
        ..Faults::default()
    });
    let source = image(dir.path(), 54, &[40]);
    let d = daemon(dir.path(), fast_net());
    let client = d.client();
    let mut req = request(&source, &link.target("deadline/img"), Compression::Gzip);
    req.chunk_size_bytes = Some(32 * MIB);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    req.options.deadline_unix_s = Some(now_s + 6);
    let id = client.submit(&req).await.unwrap().id;
    while link.ecr().bytes_in() < 4 * MIB {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The network goes away for good.
    link.tcp.set(Faults {
        blackhole_until: Some(Instant::now() + Duration::from_secs(3600)),
        ..Faults::default()
    });
    let job = wait_for(&client, &id, 20_000, "failed", |j| j.state.is_final()).await;
    let late = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - (now_s + 6) as f64;
    let reason = job.reason.clone().unwrap_or_default();
    record(
        "a_long_outage_is_waited_out_until_the_deadline_then_the_job_fails_with_the_reason",
        "network gone for good, job deadline 6 s",
        "ECR emulation (atomic parts)",
        "retries with capped backoff until the deadline, then fails with a clear reason",
        &format!(
            "failed {late:.1} s after the deadline: \"{}\"",
            reason.chars().take(60).collect::<String>()
        ),
        json!({"late_s": late, "reason": reason}),
    );
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(reason.contains("deadline"), "{reason}");
    assert!(late < 5.0, "failed {late} s after the deadline");

    // A plain retry keeps the job's deadline, which has passed: it fails again at its first
    // network call, with the same advice.
    let out = retry_cli(&d, &id, &[]).await;
    assert!(requeued(&out), "{out}");
    let job = wait_for(&client, &id, 20_000, "failed", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(job.reason.unwrap_or_default().contains("--deadline"));
    assert_eq!(job.spec.options.deadline_unix_s, Some(now_s + 6));
    // With a new deadline it runs again, and completes once the network is back.
    link.tcp.set(Faults::default());
    let out = retry_cli(&d, &id, &["--deadline", "2h"]).await;
    assert!(requeued(&out), "{out}");
    let job = wait_done(&client, &id).await;
    let deadline = job.spec.options.deadline_unix_s.unwrap();
    assert!(
        (now_s + 7200..now_s + 7300).contains(&deadline),
        "{deadline}"
    );
    check_pulled(&link, dir.path(), "deadline/img", &job).await;
}

/// Whether `hoist retry` printed a state the job runs again from.
fn requeued(out: &str) -> bool {
    ["queued", "preparing", "uploading"]
        .iter()
        .any(|s| out.trim_end().ends_with(s))
}

/// `hoist retry ID ARGS` through the `hoist` binary; its stdout.
async fn retry_cli(d: &TestDaemon, id: &hoist::api::JobId, args: &[&str]) -> String {
    let socket = d.socket.clone();
    let mut argv = vec!["retry".to_string(), id.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        daemon_support::hoist(&socket, &argv)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        daemon_support::text(&out.stderr)
    );
    daemon_support::text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_and_bursts_of_429_and_503_leave_a_correct_image() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let ecr = link.ecr();
    ecr.state.part_delay_ms.store(100, Ordering::SeqCst);
    let source = image(dir.path(), 55, &[16, 12]);
    let d = daemon(dir.path(), fast_net());
    let client = d.client();
    let req = request(&source, &link.target("acks/img"), Compression::Gzip);
    let t = Instant::now();
    let id = client.submit(&req).await.unwrap().id;
    wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.bytes_uploaded() >= CHUNK
    })
    .await;
    ecr.state
        .drop_next_patch_response
        .store(true, Ordering::SeqCst);
    ecr.state
        .drop_next_finish_response
        .store(true, Ordering::SeqCst);
    ecr.state.throttle_next.store(5, Ordering::SeqCst);
    ecr.state.fail_next_5xx.store(5, Ordering::SeqCst);
    let job = wait_done(&client, &id).await;
    let took = t.elapsed();
    check_pulled(&link, dir.path(), "acks/img", &job).await;
    let blobs = job.bytes_total();
    let sent = ecr.bytes_in();
    let out_of_order = ecr.state.out_of_order.load(Ordering::SeqCst);
    record(
        "lost_acks_and_bursts_of_429_and_503_leave_a_correct_image",
        "lost ack of a PATCH and of the final PUT; 5 x 429 and 5 x 503",
        "ECR emulation (atomic parts)",
        "resync by 416 (committed offset) and HEAD; a refused PATCH costs its part; skopeo pull checks every digest",
        &format!(
            "{out_of_order} resyncs by 416; {:.1} MB sent for {:.1} MB of blobs ({:.2}x); {:.1} s",
            mb(sent),
            mb(blobs),
            sent as f64 / blobs as f64,
            took.as_secs_f64()
        ),
        json!({"sent_bytes": sent, "blob_bytes": blobs, "resyncs_416": out_of_order, "seconds": took.as_secs_f64()}),
    );
    assert!(
        !ecr.state.drop_next_patch_response.load(Ordering::SeqCst),
        "no PATCH acknowledgement was dropped"
    );
    // A lost ack costs the part sent again (then 416 resyncs); a 429 or 503 answered to a
    // PATCH costs its body too (the registry read it, then refused it).
    let refused = ecr.state.throttled.load(Ordering::SeqCst) as u64;
    assert_eq!(refused, 10);
    assert!(
        sent <= blobs + (1 + refused) * CHUNK,
        "sent {sent} for {blobs}"
    );
}

/// Bytes the ECR proxy received during `window`, as a rate.
async fn rate_over(ecr: &EcrProxy, window: Duration) -> f64 {
    let b0 = ecr.bytes_in();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    (ecr.bytes_in() - b0) as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_bandwidth_limit_holds_and_changes_at_runtime_and_a_job_limit_applies() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let ecr = link.ecr();
    let net = NetSettings {
        bandwidth: hoist::bandwidth::Bucket::new(Some(4 * MIB)),
        ..NetSettings::default()
    };
    let source = image(dir.path(), 56, &[20, 16]);
    let d = daemon(dir.path(), net);
    let client = d.client();
    let id = submit(&client, &source, &link.target("bw/img"), Compression::Gzip).await;
    while ecr.bytes_in() < MIB {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at4 = rate_over(ecr, Duration::from_secs(3)).await;
    let set = client.set_bandwidth(Some(8 * MIB)).await.unwrap();
    assert_eq!(set.bytes_per_s, Some(8 * MIB));
    assert_eq!(client.bandwidth().await.unwrap().bytes_per_s, Some(8 * MIB));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at8 = rate_over(ecr, Duration::from_secs(2)).await;
    // Unlimited daemon-wide, 3 MiB/s for the next job.
    client.set_bandwidth(None).await.unwrap();
    wait_done(&client, &id).await;
    let mut req = request(
        &image(dir.path(), 57, &[16]),
        &link.target("bw/job"),
        Compression::Gzip,
    );
    req.options.bandwidth_bytes_per_s = Some(3 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    let b0 = ecr.bytes_in();
    while ecr.bytes_in() < b0 + MIB {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at3 = rate_over(ecr, Duration::from_secs(2)).await;
    client.control(&id, "cancel").await.unwrap();
    let m = |r: f64| r / MIB as f64;
    record(
        "the_global_bandwidth_limit_holds_and_changes_at_runtime_and_a_job_limit_applies",
        "bandwidth limit: daemon 4 MiB/s, then 8 MiB/s at runtime; a job at 3 MiB/s",
        "ECR emulation (atomic parts)",
        "measured upload rate follows the limit",
        &format!(
            "{:.2} MiB/s at 4; {:.2} MiB/s after `hoist limit 8MiB/s`; {:.2} MiB/s for a job at 3",
            m(at4),
            m(at8),
            m(at3)
        ),
        json!({"rate_at_4": at4, "rate_at_8": at8, "rate_job_3": at3}),
    );
    let within = |r: f64, want: u64| (r - want as f64).abs() <= 0.2 * want as f64;
    assert!(within(at4, 4 * MIB), "{} MiB/s at 4", m(at4));
    assert!(within(at8, 8 * MIB), "{} MiB/s at 8", m(at8));
    assert!(within(at3, 3 * MIB), "{} MiB/s at 3", m(at3));
}

/// A job's own limit changes while it uploads (`PUT /v1/jobs/{id}/bandwidth`, `hoist limit
/// --job`): up, then down below where it started; both blobs of the job share its one limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_limit_changes_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let ecr = link.ecr();
    // No daemon-wide limit: only the job's own applies.
    let d = daemon(dir.path(), NetSettings::default());
    let client = d.client();
    let mut req = request(
        &image(dir.path(), 58, &[16, 16]),
        &link.target("bw/joblive"),
        Compression::Gzip,
    );
    req.options.bandwidth_bytes_per_s = Some(3 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    while ecr.bytes_in() < MIB {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at3 = rate_over(ecr, Duration::from_secs(2)).await;
    // Uploads follow a change within a burst (100 ms); the windows start 150 ms after it.
    let settle = Duration::from_millis(150);
    let job = client.set_job_bandwidth(&id, Some(6 * MIB)).await.unwrap();
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(6 * MIB));
    tokio::time::sleep(settle).await;
    let at6 = rate_over(ecr, Duration::from_secs(2)).await;
    client.set_job_bandwidth(&id, Some(2 * MIB)).await.unwrap();
    tokio::time::sleep(settle).await;
    let at2 = rate_over(ecr, Duration::from_secs(2)).await;
    let job = client.job(&id).await.unwrap();
    assert_eq!(job.state, JobState::Uploading, "{job:?}");
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(2 * MIB));
    client.control(&id, "cancel").await.unwrap();
    let m = |r: f64| r / MIB as f64;
    record(
        "a_job_limit_changes_at_runtime",
        "a job's own limit: 3 MiB/s at submission, 6 MiB/s then 2 MiB/s while it uploads",
        "ECR emulation (atomic parts)",
        "measured upload rate follows the job's limit",
        &format!(
            "{:.2} MiB/s at 3; {:.2} MiB/s after `hoist limit --job ID 6MiB/s`; {:.2} MiB/s after 2MiB/s",
            m(at3),
            m(at6),
            m(at2)
        ),
        json!({"rate_job_3": at3, "rate_job_6": at6, "rate_job_2": at2}),
    );
    let within = |r: f64, want: u64| (r - want as f64).abs() <= 0.15 * want as f64;
    assert!(within(at3, 3 * MIB), "{} MiB/s at 3", m(at3));
    assert!(within(at6, 6 * MIB), "{} MiB/s at 6", m(at6));
    assert!(within(at2, 2 * MIB), "{} MiB/s at 2", m(at2));
}

/// docker's config.json with `AWS:password` for `host`.
fn docker_config(dir: &std::path::Path, host: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    std::fs::create_dir_all(dir).unwrap();
    // Written whole then renamed: the daemon may read it at any moment.
    let tmp = dir.join("config.json.tmp");
    std::fs::write(&tmp, json!({"auths": {host: {"auth": auth}}}).to_string()).unwrap();
    std::fs::rename(tmp, dir.join("config.json")).unwrap();
}

/// The real `hoistd` binary (its own process, so the docker config it reads is its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_push_is_refreshed_without_losing_progress() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let ecr = link.ecr();
    ecr.basic_auth(&["token-1"]);
    ecr.state.part_delay_ms.store(100, Ordering::SeqCst);
    let docker = dir.path().join("docker");
    docker_config(&docker, &link.tcp.host(), "token-1");
    let source = image(dir.path(), 59, &[16, 12]);
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let (mut child, client) = hoistd_reading_docker_config(&d, &docker).await;
    let docker_var = docker.display().to_string();
    let req = push_support::with_vars(
        request(&source, &link.target("token/img"), Compression::Gzip),
        &[("DOCKER_CONFIG", &docker_var)],
    );
    let id = client.submit(&req).await.expect("accepted").id;
    let before = wait_for(&client, &id, PUSH_MS_MAX, "uploading", |j| {
        j.bytes_uploaded() >= 2 * CHUNK
    })
    .await
    .bytes_uploaded();
    // The helper would mint a new token; the old one expires now.
    docker_config(&docker, &link.tcp.host(), "token-2");
    ecr.expire_password("token-1", "token-2");
    let job = wait_done(&client, &id).await;
    child.kill().unwrap();
    child.wait().unwrap();
    check_pulled(&link, dir.path(), "token/img", &job).await;
    let blobs = job.bytes_total();
    let sent = ecr.bytes_in();
    record(
        "a_token_expiring_mid_push_is_refreshed_without_losing_progress",
        "registry token expires mid-push (403 \"Your authorization token has expired\")",
        "ECR emulation (Basic auth, expiring tokens)",
        "credentials re-read, the push goes on from its acknowledged offsets",
        &format!(
            "expired at {:.1} MB uploaded; {:.1} MB sent for {:.1} MB of blobs ({:.2}x)",
            mb(before),
            mb(sent),
            mb(blobs),
            sent as f64 / blobs as f64
        ),
        json!({"uploaded_before_expiry": before, "sent_bytes": sent, "blob_bytes": blobs}),
    );
    // At most the parts in flight when the token expired are sent again.
    assert!(
        sent <= blobs + hoist::daemon::UPLOADS_IN_FLIGHT_MAX_DEFAULT as u64 * CHUNK,
        "sent {sent} for {blobs}"
    );
}

/// The real hoistd in `d`, its own environment naming the docker config in `docker` (as the
/// shell's job does); returns once it answers.
async fn hoistd_reading_docker_config(
    d: &std::path::Path,
    docker: &std::path::Path,
) -> (std::process::Child, hoist::cli::client::Client) {
    let child = std::process::Command::new(daemon_support::hoistd_bin())
        .arg("--socket")
        .arg(d.join("hoist.sock"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--allow-root")
        .env("DOCKER_CONFIG", docker)
        .env("HOIST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hoistd");
    let client = hoist::cli::client::Client::new(d.join("hoist.sock"));
    let t = Instant::now();
    while client.health().await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "hoistd does not answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (child, client)
}

/// The status of a job while it waits for the network, and how it ended.
async fn wait_out(
    client: &hoist::cli::client::Client,
    id: &hoist::api::JobId,
    outage_end: Instant,
) -> (String, hoist::api::Job) {
    let waiting = wait_for(client, id, 20_000, "waiting for network", |j| {
        j.reason
            .as_deref()
            .is_some_and(|r| r.contains("waiting for network, retry in"))
    })
    .await;
    assert!(
        Instant::now() < outage_end,
        "reported only after the outage"
    );
    (
        waiting.reason.unwrap_or_default(),
        wait_done(client, id).await,
    )
}

/// Records the figure of a test whose push waited out an outage through the ECR emulation:
/// the status the job showed, and how long after the link returned the push was done.
fn record_waited_out(test: &str, fault: &str, outcome: &str, reason: &str, done_after: Duration) {
    record(
        test,
        fault,
        "ECR emulation (atomic parts)",
        outcome,
        &format!(
            "\"{}\"; done {:.1} s after the link returned",
            reason.chars().take(50).collect::<String>(),
            done_after.as_secs_f64()
        ),
        json!({"reason": reason, "done_after_s": done_after.as_secs_f64()}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_submitted_offline_waits_for_the_network_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let source = image(dir.path(), 57, &[6]);
    let d = daemon(dir.path(), fast_net());
    let client = d.client();
    let outage = Duration::from_secs(8);
    let start = Instant::now();
    link.tcp.set(Faults {
        blackhole_until: Some(start + outage),
        ..Faults::default()
    });
    let id = submit(
        &client,
        &source,
        &link.target("offline/img"),
        Compression::Gzip,
    )
    .await;
    let (reason, job) = wait_out(&client, &id, start + outage).await;
    let done_after = start.elapsed().saturating_sub(outage);
    check_pulled(&link, dir.path(), "offline/img", &job).await;
    record_waited_out(
        "a_push_submitted_offline_waits_for_the_network_then_completes",
        "blackhole 8 s from submission (offline laptop), stall timeout 1 s, backoff cap 2 s",
        "the repository check waits for the network, status says so; push completes",
        &reason,
        done_after,
    );
    assert!(reason.contains("check the repository"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_the_manifest_commit_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::through_ecr().await;
    let source = image(dir.path(), 58, &[6]);
    let d = daemon(dir.path(), fast_net());
    let client = d.client();
    let ecr = link.ecr();
    ecr.state.hold_manifest_puts.store(true, Ordering::SeqCst);
    let id = submit(
        &client,
        &source,
        &link.target("commit-outage/img"),
        Compression::Gzip,
    )
    .await;
    wait_for(&client, &id, PUSH_MS_MAX, "manifest PUT held", |j| {
        j.state == JobState::Committing && ecr.state.manifest_puts_held.load(Ordering::SeqCst)
    })
    .await;
    // The link dies while the registry stores the manifest: the answer never arrives.
    let outage = Duration::from_secs(8);
    let start = Instant::now();
    link.tcp.set(Faults {
        blackhole_until: Some(start + outage),
        ..Faults::default()
    });
    ecr.state.hold_manifest_puts.store(false, Ordering::SeqCst);
    let (reason, job) = wait_out(&client, &id, start + outage).await;
    let done_after = start.elapsed().saturating_sub(outage);
    check_pulled(&link, dir.path(), "commit-outage/img", &job).await;
    record_waited_out(
        "an_outage_during_the_manifest_commit_is_waited_out",
        "blackhole 8 s while the manifest PUT is answered, stall timeout 1 s, backoff cap 2 s",
        "the PUT (idempotent) is retried after the outage, status says so; tag read back",
        &reason,
        done_after,
    );
    assert!(reason.contains("manifest"), "{reason}");
    assert_eq!(job.state, JobState::Done);
}

/// The backoff a waiting job's status announces (`retry in N s`), 0 when it waits for nothing.
fn backoff_s(job: &hoist::api::Job) -> u64 {
    job.reason
        .as_deref()
        .and_then(|r| r.split("retry in ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// How long after `back` the link carried `bytes` more client->registry bytes than at `back`
/// (stale bytes a blackhole held are far fewer); panics after `limit`.
async fn moved_after(tcp: &FaultProxy, back: Instant, bytes: u64, limit: Duration) -> Duration {
    let before = tcp.upstream_bytes();
    while tcp.upstream_bytes() < before + bytes {
        assert!(
            back.elapsed() < limit,
            "no upload {limit:?} after the link returned"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    back.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_again_within_seconds_of_the_links_return_whatever_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::debian().await;
    link.tcp.set(Faults {
        upstream_bytes_per_sec: Some(8 * MIB),
        ..Faults::default()
    });
    let source = image(dir.path(), 61, &[24]);
    // A high backoff cap, so the backoff grows long while the link refuses.
    let net = NetSettings {
        stall_timeout: Duration::from_secs(2),
        retry_delay_max: Duration::from_secs(120),
        ..NetSettings::default()
    };
    let d = daemon(dir.path(), net);
    let client = d.client();
    let mut req = request(&source, &link.target("wake/img"), Compression::Gzip);
    req.chunk_size_bytes = Some(5 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    while link.tcp.upstream_bytes() < 4 * MIB {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    link.tcp.set(Faults {
        refuse_until: Some(Instant::now() + Duration::from_secs(3600)),
        ..Faults::default()
    });
    let waiting = wait_for(&client, &id, 40_000, "waiting 16 s or more", |j| {
        backoff_s(j) >= 16
    })
    .await;
    let back = Instant::now();
    link.tcp.set(Faults::default());
    let resumed = moved_after(&link.tcp, back, MIB, Duration::from_secs(30)).await;
    let job = wait_done(&client, &id).await;
    check_pulled(&link, dir.path(), "wake/img", &job).await;
    let backoff = backoff_s(&waiting);
    record(
        "uploads_go_again_within_seconds_of_the_links_return_whatever_the_backoff",
        "link refused until the backoff reached 16 s (backoff cap 120 s)",
        "Debian's distribution",
        "the link probe sees the registry answer again and wakes the waiting upload at once",
        &format!(
            "backoff {backoff} s; upload moving {:.1} s after the link returned",
            resumed.as_secs_f64()
        ),
        json!({"backoff_s": backoff, "resumed_after_s": resumed.as_secs_f64()}),
    );
    assert!(
        resumed < Duration::from_secs(5),
        "the upload went again {resumed:?} after the link returned, with a backoff of {backoff} s"
    );
}

/// The wake-up figure at default settings (stall timeout 30 s, backoff cap 5 min) for one
/// outage: `HOIST_OUTAGE_S` seconds (default 10) of a `HOIST_OUTAGE_KIND` link (`refused`,
/// the default, or `blackhole`) while a layer uploads. Long: run by `scripts/wake-up.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of minutes: scripts/wake-up.sh runs it"]
async fn wake_up_after_an_outage_at_default_settings() {
    let env = |name: &str| std::env::var(name).ok();
    let outage = Duration::from_secs(env("HOIST_OUTAGE_S").map_or(10, |s| s.parse().unwrap()));
    let kind = env("HOIST_OUTAGE_KIND").unwrap_or_else(|| "refused".into());
    let dir = tempfile::tempdir().unwrap();
    let link = Link::debian().await;
    link.tcp.set(Faults {
        upstream_bytes_per_sec: Some(8 * MIB),
        ..Faults::default()
    });
    let source = image(dir.path(), 62, &[48]);
    let d = daemon(dir.path(), NetSettings::default());
    let client = d.client();
    let mut req = request(&source, &link.target("wake/measured"), Compression::Gzip);
    req.chunk_size_bytes = Some(5 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    while link.tcp.upstream_bytes() < 4 * MIB {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = Instant::now() + outage;
    link.tcp.set(match kind.as_str() {
        "refused" => Faults {
            refuse_until: Some(end),
            ..Faults::default()
        },
        "blackhole" => Faults {
            blackhole_until: Some(end),
            ..Faults::default()
        },
        other => panic!("HOIST_OUTAGE_KIND={other}: use refused or blackhole"),
    });
    let longest = wait_out_measuring(&client, &id, end).await;
    // The faults end by themselves at `end`; the cap goes too, so bytes move at once.
    link.tcp.set(Faults::default());
    let resumed = moved_after(&link.tcp, end, MIB, Duration::from_secs(600)).await;
    let job = wait_done(&client, &id).await;
    check_pulled(&link, dir.path(), "wake/measured", &job).await;
    println!(
        "WAKE {kind} outage {} s: longest backoff {longest} s; first MiB uploaded {:.2} s after the link returned",
        outage.as_secs(),
        resumed.as_secs_f64()
    );
}

/// Polls the job until `end`; returns the longest backoff its status announced meanwhile.
async fn wait_out_measuring(
    client: &hoist::cli::client::Client,
    id: &hoist::api::JobId,
    end: Instant,
) -> u64 {
    let mut longest = 0;
    while Instant::now() < end {
        if let Ok(job) = client.job(id).await {
            longest = longest.max(backoff_s(&job));
        }
        tokio::time::sleep(Duration::from_millis(50).min(end - Instant::now())).await;
    }
    longest
}

/// The job's logged events (all of them: the job is finished).
async fn logged_events(d: &TestDaemon, id: &hoist::api::JobId) -> Vec<hoist::api::Event> {
    let mut stream = d.client().events(id, 0, false).await.unwrap();
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        events.push(ev.unwrap());
    }
    events
}

/// Seconds from `from` to an event's time.
fn secs_after(from: std::time::SystemTime, time_ms: u64) -> f64 {
    let from_ms = from
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    (time_ms as f64 - from_ms) / 1000.0
}

/// A silent stall: the registry side stops reading mid-PATCH for 90 s, its kernel
/// acknowledging what fits into its receive buffer, so the rest of the body leaves hoistd and
/// nothing comes back. At the default stall timeout (30 s) the watchdog, reading what the
/// peer acknowledged, gives up on that connection, and the upload goes on on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stall_of_90_s_is_noticed_at_the_stall_timeout_and_the_push_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::debian().await;
    let layer_mib = 8;
    let source = image(dir.path(), 71, &[layer_mib]);
    let d = daemon(dir.path(), NetSettings::default());
    // The layer is one PATCH (16 MiB chunks); its last MiB fits into socket buffers.
    let freeze_at = (layer_mib - 1) * MIB;
    link.tcp.set(Faults {
        freeze_after_upstream_bytes: Some((freeze_at, Duration::from_secs(90))),
        ..Faults::default()
    });
    let client = d.client();
    let mut req = request(&source, &link.target("silent/img"), Compression::Gzip);
    req.chunk_size_bytes = Some(16 * MIB);
    let id = client.submit(&req).await.unwrap().id;
    // The frozen connection forwards nothing past `freeze_at`: a MiB more went on another.
    let mut going_again = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    let job = loop {
        if going_again.is_none() && link.tcp.upstream_bytes() >= freeze_at + MIB {
            going_again = Some(std::time::SystemTime::now());
        }
        match client.job(&id).await {
            Ok(job) if job.state.is_final() => break job,
            _ => assert!(Instant::now() < deadline, "the push never finished"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.state, JobState::Done, "{job:?}");
    check_pulled(&link, dir.path(), "silent/img", &job).await;
    let frozen = link.tcp.frozen_at().expect("the proxy froze a connection");
    let retry = logged_events(&d, &id)
        .await
        .into_iter()
        .find_map(|e| match e.kind {
            hoist::api::EventKind::Retry { reason, .. } => Some((e.time_ms, reason)),
            _ => None,
        });
    let (retry_ms, reason) = retry.expect("the stalled PATCH was given up and retried");
    let noticed_s = secs_after(frozen, retry_ms);
    let again_s = going_again
        .expect("a MiB moved on another connection")
        .duration_since(frozen)
        .unwrap()
        .as_secs_f64();
    record(
        "a_silent_stall_of_90_s_is_noticed_at_the_stall_timeout_and_the_push_goes_on",
        "silent stall: the registry side stops reading mid-PATCH for 90 s (its kernel still acknowledges), default stall timeout 30 s",
        "Debian distribution 2.8.2 directly",
        "the watchdog sees nothing acknowledged and drops the connection; the upload goes on on a new one; skopeo pull checks every digest",
        &format!(
            "stall noticed {noticed_s:.1} s after the freeze; a MiB more uploaded on a new connection {again_s:.1} s after it (goal 35 s)"
        ),
        json!({"noticed_s": noticed_s, "going_again_s": again_s, "reason": reason}),
    );
    assert!(reason.contains("no bytes moved"), "{reason}");
    // Without the kernel's count the body got 64 s more (94 s): past the freeze itself.
    assert!(noticed_s < 60.0, "noticed after {noticed_s} s");
}

/// A slow but moving link (64 KiB/s per connection) is not a stall at the default stall
/// timeout, even once a PATCH body sits whole in socket buffers and drains for many seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_moving_at_64_kib_per_s_is_not_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    let link = Link::debian().await;
    link.tcp.set(Faults {
        conn_bytes_per_sec: Some(64 * 1024),
        ..Faults::default()
    });
    let source = image(dir.path(), 72, &[3]);
    let d = daemon(dir.path(), NetSettings::default());
    let client = d.client();
    let mut req = request(&source, &link.target("slow/img"), Compression::Gzip);
    req.chunk_size_bytes = Some(16 * MIB);
    let t = Instant::now();
    let id = client.submit(&req).await.unwrap().id;
    // About a minute at 64 KiB/s: longer than a push is usually given.
    let job = wait_for(&client, &id, 180_000, "finished", |j| j.state.is_final()).await;
    let took = t.elapsed();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    check_pulled(&link, dir.path(), "slow/img", &job).await;
    let retries: Vec<String> = logged_events(&d, &job.id)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            hoist::api::EventKind::Retry { what, reason } => Some(format!("{what}: {reason}")),
            _ => None,
        })
        .collect();
    record(
        "a_link_moving_at_64_kib_per_s_is_not_a_stall",
        "a slow link: 64 KiB/s per connection, a 3 MiB layer in one PATCH, default stall timeout 30 s",
        "Debian distribution 2.8.2 directly",
        "no stall: the body drains from socket buffers while the peer acknowledges it",
        &format!(
            "pushed in {:.1} s with {} retries",
            took.as_secs_f64(),
            retries.len()
        ),
        json!({"took_s": took.as_secs_f64(), "retries": retries}),
    );
    assert!(retries.is_empty(), "retried: {retries:?}");
}
