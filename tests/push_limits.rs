//! ECR's limits, end to end through the daemon's socket against the real registry (and the
//! ECR emulation where ECR answers differently): too many layers and an oversized layer are
//! refused before any upload with the numbers; a zero-length blob is pushed where the registry
//! takes it and refused with a clear message where it does not (docs/ECR.md, "limits").
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::path::Path;
use std::sync::atomic::Ordering;

use hoist::api::{Compression, JobState};
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist::limits::ECR_LIMITS;
use hoist_testkit::sample::{LayerContent, LayerSpec, SampleCompression, SampleSpec};
use serde_json::Value;

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use daemon_support::TestDaemon;
use push_support::*;

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image of `n` gzip layers of one small file each (pushed as they are).
fn layers_spec(seed: u64, n: usize) -> SampleSpec {
    let mut spec = SampleSpec::small(seed);
    spec.layers = vec![LayerSpec::new(LayerContent::SmallFiles(1), SampleCompression::Gzip); n];
    spec
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Writes `doc` as a blob of the layout `dir`; returns its digest and size.
fn write_blob(dir: &Path, doc: &Value) -> (Digest, u64) {
    let bytes = serde_json::to_vec(doc).unwrap();
    let digest = Digest::sha256_of(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    (digest, bytes.len() as u64)
}

/// Appends a layer of `media_type` to the image of the OCI layout `dir` (index -> manifest):
/// its descriptor says `digest` and `size`, `write` puts its bytes in place; the config gets a
/// diff_id for it.
fn append_layer(
    dir: &Path,
    media_type: &str,
    digest: &Digest,
    size: u64,
    write: impl FnOnce(&Path),
) {
    write(&dir.join("blobs/sha256").join(digest.hex()));
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut index = read_json(&dir.join("index.json"));
    let mut manifest = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut config = read_json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(digest.to_string()));
    let (config_digest, config_size) = write_blob(dir, &config);
    manifest["config"]["digest"] = Value::String(config_digest.to_string());
    manifest["config"]["size"] = config_size.into();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": media_type, "digest": digest.to_string(), "size": size,
        }));
    let (manifest_digest, manifest_size) = write_blob(dir, &manifest);
    index["manifests"][0]["digest"] = Value::String(manifest_digest.to_string());
    index["manifests"][0]["size"] = manifest_size.into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A sparse file of `size` bytes that starts with `head`: the size is real to the source, but
/// it takes no disk.
fn sparse(path: &Path, head: &[u8], size: u64) {
    let f = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &f, head).unwrap();
    f.set_len(size).unwrap();
}

/// No layer blob reached the registry (only what a manifest PUT would leave is absent too).
fn registry_has_no_blobs(registry: &TestRegistry) -> bool {
    !registry.storage().join("docker/registry/v2/blobs").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_128_layers_is_refused_before_any_upload_and_127_are_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let max = ECR_LIMITS.layers_per_image_max;

    let (_, over) = write_oci(&dir.path().join("over"), &layers_spec(1, max + 1));
    let id = submit(
        &client,
        &over,
        &format!("{host}/many/img:1"),
        Compression::Gzip,
    )
    .await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("128 layers") && reason.contains("limit of 127"),
        "{reason}"
    );
    assert!(registry_has_no_blobs(&registry), "a blob was uploaded");

    let (img, at_limit) = write_oci(&dir.path().join("max"), &layers_spec(2, max));
    let id = submit(
        &client,
        &at_limit,
        &format!("{host}/many/img:2"),
        Compression::Gzip,
    )
    .await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest.unwrap(), img.manifest);
    assert!(tag_exists(registry.addr, "many/img", "2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_over_52000_mib_is_refused_before_any_upload() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let layout = dir.path().join("img");
    write_oci(&layout, &layers_spec(3, 1));
    // A sparse file: the declared size is real to the source, but takes no disk.
    let size = ECR_LIMITS.layer_bytes_max + 1;
    let digest = Digest::sha256_of(b"a layer too large to hash in a test");
    append_layer(&layout, GZIP_LAYER, &digest, size, |path| {
        sparse(path, &[0x1f, 0x8b, 8, 0], size)
    });
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let source = format!("oci:{}", layout.display());
    let target = format!("{}/big/img:1", registry.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    for part in [
        &format!("layer 1 ({digest})"),
        &format!("{size} bytes"),
        "over ECR's limit of 52000 MiB per layer",
        "smaller layers",
        "split",
    ] {
        assert!(reason.contains(part), "{part:?} not in {reason}");
    }
    assert!(registry_has_no_blobs(&registry), "a blob was uploaded");
}

/// A small image plus an empty gzip layer (0 bytes; the ELF census cannot read it, so the
/// jobs skip it).
fn image_with_an_empty_layer(dir: &Path) -> String {
    write_oci(dir, &layers_spec(4, 1));
    append_layer(dir, GZIP_LAYER, &Digest::sha256_of(b""), 0, |path| {
        std::fs::write(path, b"").unwrap();
    });
    format!("oci:{}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_blob_is_pushed_where_the_registry_takes_it_and_refused_clearly_on_ecr() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let source = image_with_an_empty_layer(&dir.path().join("img"));
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let push = |target: String| {
        let mut req = request(&source, &target, Compression::Gzip);
        req.options.allow_arch_mismatch = true;
        req
    };

    // Debian's registry stores the empty upload (POST, then a PUT without a body).
    let req = push(format!("{}/empty/img:1", registry.host()));
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_done(&client, &id).await;
    assert!(tag_exists(registry.addr, "empty/img", "1"));
    let mut events = client.events(&id, 0, false).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        seen.push(format!("{:?}", e.unwrap()));
    }
    assert!(
        seen.iter().any(|e| e.contains("is empty (0 bytes)")),
        "no warning about the empty layer: {job:?} {seen:?}"
    );

    // ECR refuses an upload without parts: the job fails at once, saying why and what to do,
    // with no retry.
    let proxy = EcrProxy::start(registry.addr).await;
    let req = push(format!("{}/empty/ecr:1", proxy.host()));
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    for part in [
        &format!("blob {} is empty (0 bytes)", Digest::sha256_of(b"")),
        "does not have any parts",
        "rebuild the image without the empty layer",
    ] {
        assert!(reason.contains(part), "{part:?} not in {reason}");
    }
    let empty_puts = proxy
        .log()
        .iter()
        .filter(|l| l.starts_with("PUT") && l.contains("/blobs/uploads/"))
        .count();
    assert!(empty_puts >= 1, "{:?}", proxy.log());
    assert_eq!(proxy.state.throttled.load(Ordering::SeqCst), 0);

    // When the registry has the blob already (HEAD), nothing is uploaded and the push works.
    let req = push(format!("{}/empty/img:2", proxy.host()));
    let id = client.submit(&req).await.unwrap().id;
    wait_done(&client, &id).await;
}

#[test]
fn inspect_shows_the_limits_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let opts = hoist::inspect::InspectOptions {
        plan: hoist::plan::PlanOptions::default(),
        elf_census: false,
    };
    let inspect = |layout: &Path| {
        let source = format!("oci:{}", layout.display()).parse().unwrap();
        hoist::inspect::inspect(&source, &opts)
    };
    // An uncompressed layer at the limit may end over it once compressed: a warning.
    let layout = dir.path().join("tar");
    write_oci(&layout, &layers_spec(5, 1));
    let size = ECR_LIMITS.layer_bytes_max;
    let digest = Digest::sha256_of(b"an uncompressed layer at the limit");
    append_layer(&layout, TAR_LAYER, &digest, size, |path| {
        sparse(path, b"", size)
    });
    let report = inspect(&layout).unwrap();
    let warnings = report.plan.warnings.join("\n");
    assert!(
        warnings.contains("before compression, near or over ECR's limit"),
        "{warnings}"
    );
    // A compressed layer over it: the same refusal as a push.
    let layout = dir.path().join("gz");
    write_oci(&layout, &layers_spec(6, 1));
    let size = ECR_LIMITS.layer_bytes_max + 1;
    append_layer(&layout, GZIP_LAYER, &digest, size, |path| {
        sparse(path, &[0x1f, 0x8b, 8, 0], size)
    });
    let e = inspect(&layout).unwrap_err().to_string();
    assert!(e.contains("over ECR's limit of 52000 MiB per layer"), "{e}");
}
