//! End to end through the socket against Debian's registry: the production body pushes
//! docker-archives (compressed by hoist, gzip and zstd) and OCI layouts (byte for byte); the
//! image is pulled back with skopeo and verified, and every gzip layer hoist wrote is one gzip
//! member that Python's zlib, `gzip -t`, unpigz and Go's readers (skopeo, umoci) all take.
use crate::common;
use crate::daemon_support;
use crate::push_support;

use hoist::api::{BlobState, Compression};
use hoist::daemon::Config;
use hoist::digest::Digest;
use hoist_testkit::sample::SampleCompression;

use common::TestRegistry;
use daemon_support::TestDaemon;
use push_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_with_gzip_layers_is_pushed_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (img, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(11, 12, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{host}/e2e/oci:1");
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_done(&client, &id).await;
    // Pushed as it is: the manifest is the source's, byte for byte.
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    assert!(
        job.blobs.iter().all(|b| b.state == BlobState::Verified),
        "{job:?}"
    );
    let pulled = pull_back(&host, "e2e/oci:1", &dir.path().join("pulled"));
    assert_eq!(pulled, img.manifest);
    verify(&host, "e2e/oci:1", &img.manifest).await;
    // And `hoist verify` as a user runs it.
    let out = daemon_support::hoist_command()
        .args(["verify", &target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&img.manifest.to_string()), "{text}");
}

async fn push_docker_archive(compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let oci = dir.path().join("img");
    write_oci(&oci, &image_spec(12, 16, SampleCompression::None));
    let source = write_docker_archive(&oci, &dir.path().join("img.tar"));
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{host}/e2e/archive:{}", compression.as_str());
    let id = submit(&client, &source, &target, compression).await;
    let job = wait_done(&client, &id).await;
    let digest = job.manifest_digest.clone().unwrap();
    let reference = format!("e2e/archive:{}", compression.as_str());
    let pulled = pull_back(&host, &reference, &dir.path().join("pulled"));
    assert_eq!(pulled, digest);
    verify(&host, &reference, &digest).await;
    // The layers really are in the asked-for format.
    let raw = common::skopeo_raw_manifest(&host, &reference);
    let text = String::from_utf8(raw).unwrap();
    // docker-archive sources keep the Docker media types.
    let want = match compression {
        Compression::Gzip => "tar.gzip",
        Compression::Zstd => "tar+zstd",
    };
    assert!(text.contains(want), "{text}");
    if compression == Compression::Gzip {
        gzip_layers_are_one_member(&host, &reference, dir.path());
    }
    // The spool of a finished job is gone.
    let spool = daemon.state_dir.join("spool").join(id.as_str());
    assert!(!spool.exists(), "{} is left behind", spool.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive_is_compressed_with_gzip_and_pushed() {
    push_docker_archive(Compression::Gzip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive_is_compressed_with_zstd_and_pushed() {
    push_docker_archive(Compression::Zstd).await;
}

/// Uploading a layer starts while it is still being compressed: the event log shows an
/// acknowledged part of the layer before its last compressed chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_uploads_while_it_is_compressed() {
    use hoist::api::EventKind;
    use hoist_testkit::sample::{LayerContent, LayerSpec};
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let mut spec = image_spec(13, 0, SampleCompression::None);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Text(64 << 20),
        SampleCompression::None,
    )];
    let oci = dir.path().join("img");
    write_oci(&oci, &spec);
    let source = write_docker_archive(&oci, &dir.path().join("img.tar"));
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/e2e/pipe:1", registry.host());
    let id = submit(&client, &source, &target, Compression::Gzip).await;
    let job = wait_done(&client, &id).await;
    let layer = job.blobs[1].digest.clone();
    let (mut first_part, mut last_chunk) = (None, None);
    let mut stream = client.events(&id, 0, false).await.unwrap();
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap();
        match ev.kind {
            EventKind::Progress {
                digest,
                offset_bytes,
                ..
            } if digest == layer && offset_bytes > 0 && first_part.is_none() => {
                first_part = Some(ev.seq)
            }
            EventKind::Compress { digest, .. } if digest == layer => last_chunk = Some(ev.seq),
            _ => {}
        }
    }
    let (first_part, last_chunk) = (first_part.unwrap(), last_chunk.unwrap());
    assert!(
        first_part < last_chunk,
        "the first part was acknowledged (event {first_part}) only after compression ended (event {last_chunk})"
    );
}

/// Each layer of the pushed gzip image `reference`, pulled by skopeo: exactly one gzip member
/// (Python's zlib reading the first member only finds nothing after it), `gzip -t` passes,
/// unpigz and skopeo's `--dest-decompress` (Go) give the config's diff_ids, and umoci unpacks
/// the image.
fn gzip_layers_are_one_member(host: &str, reference: &str, dir: &std::path::Path) {
    let layout = dir.join("one-member");
    pull_tagged(host, reference, &layout, "t");
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blob(d)).unwrap()).unwrap()
    };
    // skopeo writes the OCI layout's own manifest and config (converted from Docker's).
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let path = blob(layer["digest"].as_str().unwrap());
        let tar = hoist_testkit::tools::python_gzip_one_member(&path);
        assert_eq!(Digest::sha256_of(&tar).to_string(), *diff_id, "python zlib");
        let mut gzip_t = std::process::Command::new("gzip");
        hoist_testkit::tools::run_ok(gzip_t.arg("-t").arg(&path), "gzip -t");
        let mut unpigz = std::process::Command::new("unpigz");
        let out = hoist_testkit::tools::run_ok(unpigz.arg("-dc").arg(&path), "unpigz -dc");
        assert_eq!(
            Digest::sha256_of(&out.stdout).to_string(),
            *diff_id,
            "unpigz"
        );
    }
    // Go's gzip reader: skopeo decompresses every layer, which it names by its digest.
    let plain = dir.join("decompressed");
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--dest-decompress",
        &format!("docker://{host}/{reference}"),
        &format!("dir:{}", plain.display()),
    ]);
    for diff_id in &diff_ids {
        let file = plain.join(diff_id.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            Digest::sha256_of(&bytes).to_string(),
            *diff_id,
            "skopeo --dest-decompress"
        );
    }
    let tree =
        push_support::split::unpacked(&format!("{}:t", layout.display()), &dir.join("bundle"));
    assert!(!tree.nodes.is_empty(), "umoci unpacked nothing");
}

/// Copies `docker://HOST/REFERENCE` into the OCI layout `dir` under `tag` (for umoci).
fn pull_tagged(host: &str, reference: &str, dir: &std::path::Path, tag: &str) {
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        &format!("docker://{host}/{reference}"),
        &format!("oci:{}:{tag}", dir.display()),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_push_unpacks_to_the_source_file_system_and_repeats_its_digest() {
    use hoist::api::SplitLayers;
    use push_support::split::*;
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (source, config_digest) = crafted_archive(dir.path());
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let split = SplitLayers::MaxBytes(SPLIT_TEST_BYTES);
    let push = |tag: &'static str, split: SplitLayers| {
        let (client, source, host) = (&client, &source, &host);
        async move {
            let target = format!("{host}/split/img:{tag}");
            let id = client
                .submit(&split_request(source, &target, split))
                .await
                .expect("the daemon accepts the job")
                .id;
            wait_done(client, &id).await
        }
    };
    // `hoist inspect` shows the parts and says the digests change.
    let out = daemon_support::hoist_command()
        .args(["inspect", "--no-elf", "--split-layers", "1MiB", &source])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("part 2 of") && text.contains("image ID"),
        "{text}"
    );

    let job = push("1", split).await;
    let digest = job.manifest_digest.clone().unwrap();
    // The config, the lower layer and at least four parts of the big one.
    assert!(job.blobs.len() >= 6, "{job:?}");

    // Applied in order, the parts give the source's file system: 0 differences.
    let src_oci = dir.path().join("src-oci");
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        &source,
        &format!("oci:{}:src", src_oci.display()),
    ]);
    let pushed_oci = dir.path().join("pushed-oci");
    pull_tagged(&host, "split/img:1", &pushed_oci, "pushed");
    let want = unpacked(
        &format!("{}:src", src_oci.display()),
        &dir.path().join("b-src"),
    );
    let got = unpacked(
        &format!("{}:pushed", pushed_oci.display()),
        &dir.path().join("b-pushed"),
    );
    assert!(want.nodes.len() > 20, "{:?}", want.nodes.keys());
    assert!(!want.nodes.contains_key("lower/gone") && !want.nodes.contains_key("opaque/old"));
    assert!(want.nodes.contains_key("opaque/early") && !want.link_groups.is_empty());
    assert_eq!(differences(&want, &got), Vec::<String>::new());

    check_split_config(&host, "split/img:1");

    // The same push again (a new job, the layer scanned again): the same digest.
    assert_eq!(push("2", split).await.manifest_digest, Some(digest.clone()));

    // Off: the image as built, its config untouched.
    let whole = push("3", SplitLayers::Off).await;
    assert_ne!(whole.manifest_digest, Some(digest));
    assert!(
        whole.blobs.iter().any(|b| b.digest == config_digest),
        "{whole:?}"
    );
    assert_eq!(whole.blobs.len(), 3, "{whole:?}");

    zstd_split_unpacks_the_same(&client, &host, &source, &want, dir.path()).await;
}

/// The crafted archive split and pushed with zstd: its parts are zstd, and they unpack to
/// `want`, the source's file system.
async fn zstd_split_unpacks_the_same(
    client: &hoist::cli::client::Client,
    host: &str,
    source: &str,
    want: &push_support::split::Tree,
    dir: &std::path::Path,
) {
    use hoist::api::SplitLayers;
    use push_support::split::*;
    let split = SplitLayers::MaxBytes(SPLIT_TEST_BYTES);
    let request = hoist::api::SubmitRequest {
        compression: Some(hoist::api::Compression::Zstd),
        ..split_request(source, &format!("{host}/split/img:zstd"), split)
    };
    let id = client.submit(&request).await.expect("accepted").id;
    let zstd = wait_done(client, &id).await;
    assert!(zstd.blobs.len() >= 6, "{zstd:?}");
    let zstd_layers = zstd
        .blobs
        .iter()
        .filter(|b| b.media_type.ends_with("+zstd"));
    assert_eq!(zstd_layers.count(), zstd.blobs.len() - 1, "{zstd:?}");
    // umoci 0.4.7 reads no zstd layer: skopeo decompresses each part (checking its digest)
    // and writes it again with gzip.
    let zstd_oci = dir.join("zstd-oci");
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--dest-compress",
        "--dest-compress-format=gzip",
        &format!("docker://{host}/split/img:zstd"),
        &format!("oci:{}:pushed", zstd_oci.display()),
    ]);
    let got = unpacked(
        &format!("{}:pushed", zstd_oci.display()),
        &dir.join("b-zstd"),
    );
    assert_eq!(differences(want, &got), Vec::<String>::new());
}

/// `hoist inspect --no-elf --split-layers 1MiB SOURCE`'s output, asserted to succeed.
fn inspect_split(source: &str) -> String {
    let out = daemon_support::hoist_command()
        .args(["inspect", "--no-elf", "--split-layers", "1MiB", source])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_layer_split_on_request_unpacks_to_the_source_file_system() {
    use hoist::api::{JobState, SplitLayers};
    use push_support::split::*;
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let split = SplitLayers::MaxBytes(SPLIT_TEST_BYTES);
    let submit_split = |tag: &'static str, source: String| {
        let (client, host) = (&client, &host);
        async move {
            let target = format!("{host}/gz/img:{tag}");
            let request = split_request(&source, &target, split);
            client.submit(&request).await.expect("accepted").id
        }
    };

    // A config whose diff_id is not the big layer's: one line, and nothing is pushed.
    let (bad, _) = crafted_oci_gzip(&dir.path().join("bad"), true);
    let id = submit_split("bad", bad).await;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("not its diff_id") && !reason.contains('\n'),
        "{reason}"
    );
    let blobs = registry.storage().join("docker/registry/v2/blobs");
    assert!(!blobs.exists(), "a blob was uploaded");

    let src = dir.path().join("src");
    let (source, compressed) = crafted_oci_gzip(&src, false);
    // `hoist inspect` decompresses the layer to show its parts, and leaves nothing behind.
    let text = inspect_split(&source);
    assert!(
        text.contains("part 2 of") && text.contains("gzip blob") && text.contains("not pushed"),
        "{text}"
    );
    let job = wait_done(&client, &submit_split("1", source.clone()).await).await;
    let digest = job.manifest_digest.clone().unwrap();
    // The config, the lower layer as it is and at least four parts; not the big gzip blob.
    assert!(job.blobs.len() >= 6, "{job:?}");
    assert!(job.blobs.iter().all(|b| b.digest != compressed), "{job:?}");
    // The decompressed layer goes with the job's spool, just after the job is done.
    let spool = daemon.state_dir.join("spool").join(job.id.as_str());
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spool.exists() && std::time::Instant::now() < gone_by {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!spool.exists(), "{} is left behind", spool.display());

    // Applied in order, the parts give the source's file system: 0 differences.
    let pushed_oci = dir.path().join("pushed-oci");
    pull_tagged(&host, "gz/img:1", &pushed_oci, "pushed");
    let want = unpacked(
        &format!("{}:{CRAFTED_OCI_TAG}", src.display()),
        &dir.path().join("b-src"),
    );
    let got = unpacked(
        &format!("{}:pushed", pushed_oci.display()),
        &dir.path().join("b-pushed"),
    );
    assert!(want.nodes.len() > 20, "{:?}", want.nodes.keys());
    assert_eq!(differences(&want, &got), Vec::<String>::new());
    check_split_config(&host, "gz/img:1");

    // The same push again (a new job, decompressed again): the same digest.
    let again = wait_done(&client, &submit_split("2", source).await).await;
    assert_eq!(again.manifest_digest, Some(digest));
}
