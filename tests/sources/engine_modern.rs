//! `docker-daemon:` against Docker 28 (Engine API 1.51) with both image stores, images built
//! there with buildx (`tests/common/modern_engine.rs`): pushes pulled back and compared with
//! the engine's own view (diff_ids, platform), the platform chosen by name on a
//! multi-platform image with attestations (and refused, naming those held, when absent), and
//! hoistd stopped (kill -9, SIGTERM) during the export and mid-upload, then started again:
//! the job goes on by itself into the same manifest digest.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};

use hoist::api::{Compression, EventKind, JobId, JobState, SubmitRequest};
use hoist::cli::client::Client;
use hoist::digest::Digest;

use crate::common::TestRegistry;
use crate::common::modern_engine::{ModernEngine, Store};
use crate::daemon_support::{hoistd_command, kill9, wait_answers};
use crate::push_support::{PUSH_MS_MAX, pull_back, request, wait_for, with_vars};

/// The job's upload limit in the stop tests: the app image takes seconds to upload.
const SLOW_BYTES_PER_S: u64 = 2 << 20;

/// A hoistd in `dir` whose own environment names `engine`, and its client.
async fn hoistd(engine: &ModernEngine, dir: &Path) -> (Child, Client) {
    std::fs::create_dir_all(dir).unwrap();
    let child = hoistd_command(dir, "warn")
        .env("DOCKER_HOST", &engine.host)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(dir.join("hoist.sock"));
    wait_answers(&client, 20).await;
    (child, client)
}

fn engine_request(engine: &ModernEngine, image: &str, target: &str) -> SubmitRequest {
    with_vars(
        request(&format!("docker-daemon:{image}"), target, Compression::Gzip),
        &[("DOCKER_HOST", &engine.host)],
    )
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The manifest of the single image in the OCI layout at `layout`.
fn layout_manifest(layout: &Path) -> serde_json::Value {
    let index = json_of(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(&blob_path(layout, &digest))
}

/// The pulled image's platform (from its config) and the digests of its uncompressed layers.
fn pulled_image(layout: &Path) -> (String, Vec<Digest>) {
    let manifest = layout_manifest(layout);
    let config = json_of(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let platform = format!(
        "{}/{}",
        config["os"].as_str().unwrap(),
        config["architecture"].as_str().unwrap()
    );
    let diff_ids = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let f = std::fs::File::open(blob_path(layout, l["digest"].as_str().unwrap())).unwrap();
            let mut bytes = Vec::new();
            match l["mediaType"]
                .as_str()
                .unwrap_or_default()
                .ends_with("zstd")
            {
                true => zstd::stream::read::Decoder::new(f)
                    .unwrap()
                    .read_to_end(&mut bytes),
                false => flate2::read::MultiGzDecoder::new(f).read_to_end(&mut bytes),
            }
            .unwrap();
            Digest::sha256_of(&bytes)
        })
        .collect();
    (platform, diff_ids)
}

/// The engine's diff_ids of `image` for `platform`.
fn engine_diff_ids(engine: &ModernEngine, image: &str, platform: &str) -> Vec<Digest> {
    let out = engine.docker(&[
        "image",
        "inspect",
        "--platform",
        platform,
        "--format",
        "{{json .RootFS.Layers}}",
        image,
    ]);
    serde_json::from_slice(&out).unwrap()
}

/// Pushes `image` for `platform` and checks the pulled image against the engine's; returns
/// the manifest digest.
async fn push_checked(
    engine: &ModernEngine,
    client: &Client,
    registry: &TestRegistry,
    image: &str,
    platform: &str,
    repo: &str,
) -> Digest {
    let host = registry.host();
    let mut req = engine_request(engine, image, &format!("{host}/{repo}:1"));
    req.platform = Some(platform.to_string());
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let pulled = tempfile::tempdir().unwrap();
    let digest = pull_back(&host, &format!("{repo}:1"), &pulled.path().join("l"));
    assert_eq!(Some(digest.clone()), job.manifest_digest);
    let (have, diff_ids) = pulled_image(&pulled.path().join("l"));
    assert_eq!(have, platform);
    assert_eq!(diff_ids, engine_diff_ids(engine, image, platform));
    digest
}

async fn pushes_the_app_image(store: Store) {
    let Some(engine) = ModernEngine::shared(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let (child, client) = hoistd(&engine, dir.path()).await;
    push_checked(&engine, &client, &registry, "app:1", "linux/amd64", "app").await;
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_classic_store_pushes_an_image_built_with_buildx() {
    pushes_the_app_image(Store::Classic).await;
}

/// The layer digests of `docker save --platform PLATFORM IMAGE`'s `manifest.json`, and the
/// digest of the image manifest its `index.json` names.
fn saved_image(engine: &ModernEngine, image: &str, platform: &str) -> (Vec<String>, String) {
    let dir = engine.shared_dir(&format!("save-{}", image.replace(':', "-")));
    let tar = dir.join("image.tar");
    engine.docker(&[
        "save",
        "--platform",
        platform,
        "-o",
        tar.to_str().unwrap(),
        image,
    ]);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let (mut manifest, mut index) = (None, None);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_str()
            .unwrap_or_default()
            .to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let json = || Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        match name.as_str() {
            "manifest.json" => manifest = json(),
            "index.json" => index = json(),
            _ => {}
        }
    }
    let manifest = manifest.expect("manifest.json in docker save's archive");
    let index = index.expect("index.json in docker save's archive");
    let layers = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().replace("blobs/sha256/", "sha256:"))
        .collect();
    (
        layers,
        index["manifests"][0]["digest"].as_str().unwrap().into(),
    )
}

/// The digests and media types of the layers of `repo:1`'s manifest in the registry.
fn pushed_layers(registry: &TestRegistry, repo: &str) -> Vec<(String, String)> {
    let raw = crate::common::skopeo_raw_manifest(&registry.host(), &format!("{repo}:1"));
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap().to_string();
            (field("digest"), field("mediaType"))
        })
        .collect()
}

/// On the containerd store the engine's compressed blobs are pushed as they are: the layers
/// of `docker save`'s manifest, gzip and zstd, under their media types, and the engine's
/// manifest with them (the digest `docker push` gives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_containerd_store_pushes_the_engines_own_layer_blobs_gzip_and_zstd() {
    let Some(engine) = ModernEngine::shared(Store::Containerd) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let (child, client) = hoistd(&engine, dir.path()).await;
    for (image, repo, ending) in [("app:1", "app", "tar+gzip"), ("zst:1", "zst", "tar+zstd")] {
        let digest = push_checked(&engine, &client, &registry, image, "linux/amd64", repo).await;
        let pushed = pushed_layers(&registry, repo);
        let digests: Vec<String> = pushed.iter().map(|(d, _)| d.clone()).collect();
        let (saved, manifest) = saved_image(&engine, image, "linux/amd64");
        assert_eq!(digests, saved, "{image}");
        assert_eq!(digest.to_string(), manifest, "{image}");
        assert!(
            pushed.iter().all(|(_, m)| m.ends_with(ending)),
            "{pushed:?}"
        );
    }
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_containerd_store_pushes_the_platform_asked_for_by_name_and_names_those_held() {
    let Some(engine) = ModernEngine::shared(Store::Containerd) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let (child, client) = hoistd(&engine, dir.path()).await;
    let arm = push_checked(
        &engine,
        &client,
        &registry,
        "multi:1",
        "linux/arm64",
        "m/arm",
    )
    .await;
    let amd = push_checked(
        &engine,
        &client,
        &registry,
        "multi:1",
        "linux/amd64",
        "m/amd",
    )
    .await;
    assert_ne!(arm, amd);
    // What each push left out is said (from the engine's list of the image's manifests).
    let warnings = warnings(&client).await;
    for (pushed, other) in [
        ("linux/arm64", "linux/amd64"),
        ("linux/amd64", "linux/arm64"),
    ] {
        let said = format!(
            "also holds {other}, unknown/unknown attestation: hoist pushes only the {pushed} image manifest"
        );
        assert!(
            warnings.iter().any(|w| w.contains(&said)),
            "{said}: {warnings:?}"
        );
    }

    let host = registry.host();
    let mut req = engine_request(&engine, "multi:1", &format!("{host}/m/s390x:1"));
    req.platform = Some("linux/s390x".into());
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("no linux/s390x image in index (has linux/amd64, linux/arm64)"),
        "{reason}"
    );

    // The ELF census reads the engine's stored blobs too: x86-64 executables in an image
    // labelled linux/arm64 are refused before the commit.
    let mut req = engine_request(&engine, "armbins:1", &format!("{host}/m/armbins:1"));
    req.platform = Some("linux/arm64".into());
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.reason.unwrap_or_default();
    assert!(
        reason.contains("ELF files in layer 1 are x86-64")
            && reason.contains("--allow-arch-mismatch"),
        "{reason}"
    );
    kill9(child);
}

/// Pushes `image` to `target` and waits for the job's end: the job and every event it had.
async fn push_with_events(
    engine: &ModernEngine,
    client: &Client,
    image: &str,
    target: &str,
) -> (hoist::api::Job, Vec<EventKind>) {
    let id = client
        .submit(&engine_request(engine, image, target))
        .await
        .unwrap()
        .id;
    let job = wait_for(client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    let mut events = Vec::new();
    let mut stream = client.events(&id, 0, false).await.unwrap();
    while let Some(e) = stream.next().await {
        events.push(e.unwrap().kind);
    }
    (job, events)
}

fn notes(events: &[EventKind]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::Note { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

fn exported(events: &[EventKind]) -> bool {
    events.iter().any(|e| matches!(e, EventKind::Export { .. }))
}

/// A re-push of an image the repository holds (the manifest the engine names, on the
/// containerd store, or the one hoistd remembers pushing, on the classic store, with every
/// blob it names) is committed without asking the engine for an export; a blob gone from the
/// registry's storage, or another repository, makes it export and push as always, into the
/// same manifest. A hoistd with no memory re-pushes without an export on the containerd store
/// only.
async fn repush_skips_the_export(store: Store) {
    let Some(engine) = ModernEngine::shared(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let (child, client) = hoistd(&engine, &dir.path().join("a")).await;
    let first = push_checked(&engine, &client, &registry, "app:1", "linux/amd64", "re").await;

    let started = std::time::Instant::now();
    let (job, events) = push_with_events(&engine, &client, "app:1", &format!("{host}/re:1")).await;
    eprintln!(
        "{store:?}: re-push of a held image: {:?}",
        started.elapsed()
    );
    assert_skipped(&job, &events, &first);
    let pulled = tempfile::tempdir().unwrap();
    assert_eq!(pull_back(&host, "re:1", &pulled.path().join("l")), first);

    // A layer the registry lost: the probe's HEAD misses it, the export runs.
    let (lost, _) = pushed_layers(&registry, "re").remove(0);
    let lost = Digest::parse(&lost).unwrap();
    let data = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&lost.hex()[..2])
        .join(lost.hex());
    std::fs::remove_dir_all(&data).expect("remove the blob from the registry");
    let (job, events) = push_with_events(&engine, &client, "app:1", &format!("{host}/re:1")).await;
    assert_exported(&job, &events, &first);
    let said = notes(&events);
    let missing = format!("blob {} ", lost.short());
    assert!(said.iter().any(|n| n.contains(&missing)), "{said:?}");
    let pulled = tempfile::tempdir().unwrap();
    assert_eq!(pull_back(&host, "re:1", &pulled.path().join("l")), first);

    // Another repository does not hold the manifest: the export runs.
    let target = format!("{host}/other:1");
    let (job, events) = push_with_events(&engine, &client, "app:1", &target).await;
    assert_exported(&job, &events, &first);
    kill9(child);

    // A hoistd with no memory: only the engine's own manifest can be asked for.
    let (child, client) = hoistd(&engine, &dir.path().join("b")).await;
    let (job, events) = push_with_events(&engine, &client, "app:1", &format!("{host}/re:1")).await;
    match store {
        Store::Containerd => assert_skipped(&job, &events, &first),
        Store::Classic => assert_exported(&job, &events, &first),
    }
    kill9(child);
}

fn assert_skipped(job: &hoist::api::Job, events: &[EventKind], manifest: &Digest) {
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(job.manifest_digest.as_ref(), Some(manifest));
    let said = notes(events);
    assert!(
        said.iter().any(|n| n.starts_with("export skipped")),
        "{said:?}"
    );
    assert!(!exported(events), "{events:?}");
    let uploaded = |e: &EventKind| matches!(e, EventKind::Progress { .. });
    assert!(!events.iter().any(uploaded), "{events:?}");
}

fn assert_exported(job: &hoist::api::Job, events: &[EventKind], manifest: &Digest) {
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(job.manifest_digest.as_ref(), Some(manifest));
    assert!(exported(events), "{events:?}");
    let said = notes(events);
    assert!(
        !said.iter().any(|n| n.starts_with("export skipped")),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_containerd_store_repush_of_a_held_image_skips_the_export() {
    repush_skips_the_export(Store::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_classic_store_repush_of_a_remembered_image_skips_the_export() {
    repush_skips_the_export(Store::Classic).await;
}

/// Every warning of every job of `client`'s daemon.
async fn warnings(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for job in client.jobs().await.unwrap() {
        let mut stream = client.events(&job.id, 0, false).await.unwrap();
        while let Some(e) = stream.next().await {
            if let EventKind::Warning { message } = e.unwrap().kind {
                out.push(message);
            }
        }
    }
    out
}

/// When the push is stopped.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// At the first export event.
    Exporting,
    /// Once the export has ended and an upload moved bytes.
    Uploading,
}

/// How hoistd is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Kill9,
    Term,
}

/// Follows `id`'s events until `moment`; false when the job ended first.
async fn wait_moment(client: &Client, id: &JobId, moment: Moment) -> bool {
    let mut stream = client.events(id, 0, true).await.unwrap();
    let mut exported = false;
    while let Some(e) = stream.next().await {
        match (moment, e.unwrap().kind) {
            (Moment::Exporting, EventKind::Export { .. }) => return true,
            (
                _,
                EventKind::Export {
                    layers_done,
                    layers_total,
                    ..
                },
            ) => exported |= layers_done == layers_total,
            (Moment::Uploading, EventKind::Progress { .. }) if exported => return true,
            (_, EventKind::State { state, .. }) if state.is_final() => return false,
            _ => {}
        }
    }
    false
}

fn stop(mut child: Child, how: Stop) {
    match how {
        Stop::Kill9 => kill9(child),
        Stop::Term => {
            let pid = child.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            child.wait().unwrap();
        }
    }
}

/// A clean push, then the same push stopped at each moment and resumed by a new hoistd with no
/// command: every one ends in the clean push's manifest digest.
async fn resumes_after_stops(store: Store) {
    let Some(engine) = ModernEngine::shared(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let d = dir.path().join("d");
    let (mut child, mut client) = hoistd(&engine, &d).await;
    let clean = push_checked(&engine, &client, &registry, "app:1", "linux/amd64", "clean").await;
    let cases = [
        (Moment::Exporting, Stop::Kill9),
        (Moment::Exporting, Stop::Term),
        (Moment::Uploading, Stop::Kill9),
        (Moment::Uploading, Stop::Term),
    ];
    for (moment, how) in cases {
        // A registry of its own: none of the blobs there to mount.
        let registry = TestRegistry::start();
        let mut req = engine_request(&engine, "app:1", &format!("{}/stop:1", registry.host()));
        req.options.bandwidth_bytes_per_s = Some(SLOW_BYTES_PER_S);
        let id = client.submit(&req).await.unwrap().id;
        assert!(
            wait_moment(&client, &id, moment).await,
            "{moment:?}: ended first"
        );
        stop(child, how);
        (child, client) = hoistd(&engine, &d).await;
        let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
        assert_eq!(job.state, JobState::Done, "{moment:?} {how:?}: {job:?}");
        assert_eq!(
            job.manifest_digest.as_ref(),
            Some(&clean),
            "{moment:?} {how:?}"
        );
    }
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_classic_store_resumes_after_kill_and_term_into_the_same_manifest() {
    resumes_after_stops(Store::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker28_containerd_store_resumes_after_kill_and_term_into_the_same_manifest() {
    resumes_after_stops(Store::Containerd).await;
}
