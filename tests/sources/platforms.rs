//! The platform guard: indexes, attestations, wrong and mislabelled platforms.

use super::helpers::*;

#[test]
fn multi_arch_index_with_attestation() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(7);
    spec.index = Some(IndexSpec {
        extra_platforms: vec![arm64(), "linux/arm/v7".parse().unwrap()],
        attestation: true,
    });
    let img = sample(t.path(), &spec);
    let src = format!("oci:{}", t.path().display());
    let p = plan(&src).unwrap();
    check_plan_matches(&p, &img);
    assert_eq!(
        p.warnings,
        [
            "the source is an index that also holds linux/arm64, linux/arm/v7, unknown/unknown attestation: hoist pushes only the linux/amd64 image manifest"
        ]
    );

    let opts = PlanOptions {
        platform: arm64(),
        ..PlanOptions::default()
    };
    let a = plan_with(&src, opts).unwrap();
    assert_eq!(a.platform, arm64());
    assert_has(
        &a.warnings.join(" "),
        &[
            "also holds linux/amd64, linux/arm/v7, unknown/unknown attestation: hoist pushes only the linux/arm64 image manifest",
        ],
    );
    assert_ne!(a.config.digest, img.config);
    assert_eq!(
        a.source_manifest.as_ref().unwrap().digest,
        img.extra_manifests[0].1
    );
    a.verify_sources().unwrap();

    let opts = PlanOptions {
        platform: "linux/s390x".parse().unwrap(),
        ..PlanOptions::default()
    };
    let e = plan_with(&src, opts).unwrap_err().to_string();
    assert_has(
        &e,
        &[
            "no linux/s390x image in index (has linux/amd64, linux/arm64, linux/arm/v7, unknown/unknown attestation): rebuild with --platform linux/s390x",
        ],
    );
}

#[test]
fn arm64_only_single_manifest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(8);
    spec.platform = arm64();
    sample(t.path(), &spec);
    let e = err(&t.path().display().to_string());
    assert_has(
        &e,
        &[
            t.path().to_str().unwrap(),
            "image is linux/arm64, not linux/amd64: rebuild with --platform linux/amd64",
        ],
    );
    // and as a docker-archive written by skopeo
    let archive = t.path().with_extension("tar");
    skopeo(&[
        "copy",
        "--override-arch",
        "arm64",
        &format!("oci:{}", t.path().display()),
        &format!("docker-archive:{}", archive.display()),
    ]);
    let e = err(&archive.display().to_string());
    assert_has(&e, &["image is linux/arm64, not linux/amd64"]);
    fs::remove_file(archive).unwrap();
}

#[test]
fn arm64_plus_attestation_index_lists_platforms() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(9);
    spec.platform = arm64();
    spec.index = Some(IndexSpec {
        extra_platforms: vec![],
        attestation: true,
    });
    sample(t.path(), &spec);
    let e = err(&format!("oci:{}", t.path().display()));
    assert_has(
        &e,
        &[
            "index.json: no linux/amd64 image in index (has linux/arm64, unknown/unknown attestation): rebuild with --platform linux/amd64",
        ],
    );
}

#[test]
fn mislabelled_index_entry_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(10);
    spec.platform = arm64();
    let img = sample(t.path(), &spec);
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media::OCI_MANIFEST, "digest": img.manifest.to_string(), "size": img.manifest_size,
         "platform": {"os": "linux", "architecture": "amd64"}}]});
    fs::write(
        t.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let e = err(&t.path().display().to_string());
    assert_has(
        &e,
        &["index entry says linux/amd64 but the image config says linux/arm64"],
    );
}

#[test]
fn deeply_nested_indexes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(20);
    spec.index = Some(IndexSpec::default());
    let img = sample(t.path(), &spec);
    let mut top = (
        img.index.clone().unwrap(),
        fs::metadata(blob_file(t.path(), img.index.as_ref().unwrap()))
            .unwrap()
            .len(),
    );
    // one level of nesting is fine
    assert_eq!(
        plan(&t.path().display().to_string()).unwrap().config.digest,
        img.config
    );
    for _ in 0..6 {
        let bytes = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
            "manifests": [{"mediaType": media::OCI_INDEX, "digest": top.0.to_string(), "size": top.1}]}))
        .unwrap();
        let d = Digest::sha256_of(&bytes);
        fs::write(blob_file(t.path(), &d), &bytes).unwrap();
        top = (d, bytes.len() as u64);
    }
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media::OCI_INDEX, "digest": top.0.to_string(), "size": top.1}]});
    fs::write(
        t.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    assert_has(
        &err(&t.path().display().to_string()),
        &["indexes nested more than 4 deep"],
    );
}

/// What a source of [`docker25_multi_platform`] says when amd64 is pushed.
const AMD64_LEFT_OUT: &str = "the source is an index that also holds linux/arm64, unknown/unknown attestation: hoist pushes only the linux/amd64 image manifest";

/// A Docker 25+ `docker save` of a multi-platform image (what the containerd image store
/// writes): `manifest.json` names the host's platform only; the index in `index.json` holds
/// amd64, arm64 and an attestation.
fn docker25_multi_platform(dir: &Path, seed: u64) -> (SampleImage, PathBuf) {
    let layout = dir.join("layout");
    let mut spec = mixed_spec(seed);
    spec.index = Some(IndexSpec {
        extra_platforms: vec![arm64()],
        attestation: true,
    });
    let img = sample(&layout, &spec);
    let archive = dir.join("multi.tar");
    docker25_archive(&layout, &img, &archive, false);
    (img, archive)
}

#[test]
fn docker25_archive_of_a_multi_platform_image_chooses_from_its_index() {
    let t = tempfile::tempdir().unwrap();
    let (img, archive) = docker25_multi_platform(t.path(), 22);
    let src = format!("docker-archive:{}", archive.display());
    let left_out = AMD64_LEFT_OUT;

    let p = plan(&src).unwrap();
    check_plan_matches(&p, &img);
    assert_eq!(p.family, media::Family::Oci);
    assert_eq!(p.warnings, [left_out]);
    // detected from the bare path, and by the tag manifest.json gives it
    let p = plan(&archive.display().to_string()).unwrap();
    assert_eq!(p.config.digest, img.config);
    let p = plan(&format!("{src}:sample:latest")).unwrap();
    assert_eq!(p.warnings, [left_out]);

    let a = plan_with(
        &src,
        PlanOptions {
            platform: arm64(),
            ..PlanOptions::default()
        },
    )
    .unwrap();
    assert_eq!(a.platform, arm64());
    assert_ne!(a.config.digest, img.config);
    assert_eq!(
        a.source_manifest.as_ref().unwrap().digest,
        img.extra_manifests[0].1
    );
    assert_eq!(
        a.warnings,
        [
            "the source is an index that also holds linux/amd64, unknown/unknown attestation: hoist pushes only the linux/arm64 image manifest"
        ]
    );
    a.verify_sources().unwrap();

    let e = plan_with(
        &src,
        PlanOptions {
            platform: "linux/s390x".parse().unwrap(),
            ..PlanOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert_has(
        &e,
        &[
            &format!("{}: index.json", archive.display()),
            "no linux/s390x image in index (has linux/amd64, linux/arm64, unknown/unknown attestation): rebuild with --platform linux/s390x",
        ],
    );
}

#[test]
fn a_platform_docker_save_left_out_is_refused_saying_what_to_do() {
    // docker save leaves out the platforms the engine did not pull: amd64 is still pushed,
    // arm64 is refused naming its blob.
    let t = tempfile::tempdir().unwrap();
    let (img, _) = docker25_multi_platform(t.path(), 25);
    let left_out = AMD64_LEFT_OUT;
    let layout = t.path().join("layout");
    fs::remove_file(blob_file(&layout, &img.extra_manifests[0].1)).unwrap();
    let partial = t.path().join("partial.tar");
    docker25_archive(&layout, &img, &partial, false);
    let src = format!("docker-archive:{}", partial.display());
    assert_eq!(plan(&src).unwrap().warnings, [left_out]);
    let e = plan_with(
        &src,
        PlanOptions {
            platform: arm64(),
            ..PlanOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    let blob = img.extra_manifests[0].1.hex().to_string();
    assert_has(
        &e,
        &[
            blob.as_str(),
            "is missing: docker save wrote only the platforms its engine holds: pull the platform wanted",
        ],
    );
}

/// The diff_ids an export of `img` walks through, and what the walk says is left out.
fn walk_left_out(archive: &Path, img: &SampleImage) -> Vec<String> {
    use hoist::source::engine::ImageInspect;
    use hoist::source::engine::export;
    let diff_ids: Vec<Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    let inspect: ImageInspect = serde_json::from_value(json!({
        "Id": img.config.to_string(),
        "Os": "linux",
        "Architecture": "amd64",
        "RootFS": {"Layers": diff_ids},
    }))
    .unwrap();
    let needed = diff_ids.iter().cloned().collect();
    let mut layer = |r: &mut dyn std::io::Read| {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).unwrap();
        Ok(Digest::sha256_of(&bytes))
    };
    let walked = export::walk(
        fs::File::open(archive).unwrap(),
        "app:1",
        &inspect,
        &needed,
        &mut layer,
    )
    .unwrap();
    assert_eq!(walked.config.digest, img.config);
    assert_eq!(walked.found, needed);
    walked.left_out
}

#[test]
fn an_engine_export_of_a_multi_platform_image_says_what_is_left_out() {
    // An engine's export is a `docker save` archive: Docker 25+ writes the image's index too.
    let t = tempfile::tempdir().unwrap();
    let (img, archive) = docker25_multi_platform(t.path(), 23);
    assert_eq!(
        walk_left_out(&archive, &img),
        ["linux/arm64", "unknown/unknown attestation"]
    );
    // A single-platform image's export (and any export without index.json) leaves out nothing.
    let layout = t.path().join("single");
    let single = sample(&layout, &mixed_spec(24));
    let plain = t.path().join("single.tar");
    docker25_archive(&layout, &single, &plain, false);
    assert!(walk_left_out(&plain, &single).is_empty());
}

#[test]
fn an_engine_inspect_of_a_multi_platform_image_says_what_is_left_out() {
    // Docker 28's inspect (API 1.48, `platform` and `manifests=1`) of a buildx image built for
    // amd64 and arm64 with provenance: its export then holds the amd64 manifest only.
    use hoist::source::engine::ImageInspect;
    let entry = |digest: char, arch: &str, attestation_for: Option<char>| {
        let mut d = json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": format!("sha256:{}", digest.to_string().repeat(64)),
            "size": 670,
            "platform": {"architecture": arch, "os": if arch == "unknown" { "unknown" } else { "linux" }},
        });
        if let Some(f) = attestation_for {
            d["annotations"] = json!({
                "vnd.docker.reference.digest": format!("sha256:{}", f.to_string().repeat(64)),
                "vnd.docker.reference.type": "attestation-manifest",
            });
        }
        json!({"ID": d["digest"], "Descriptor": d, "Available": true, "Kind": "image"})
    };
    let inspect = |arch: &str, manifests: Value| -> ImageInspect {
        serde_json::from_value(json!({
            "Id": format!("sha256:{}", "e".repeat(64)),
            "Os": "linux",
            "Architecture": arch,
            "RootFS": {"Layers": []},
            "Manifests": manifests,
        }))
        .unwrap()
    };
    let manifests = json!([
        entry('a', "amd64", None),
        entry('b', "arm64", None),
        entry('c', "unknown", Some('a')),
        entry('d', "unknown", Some('b')),
    ]);
    assert_eq!(
        inspect("amd64", manifests.clone()).left_out(),
        ["linux/arm64", "unknown/unknown attestation"]
    );
    assert_eq!(
        inspect("arm64", manifests).left_out(),
        ["linux/amd64", "unknown/unknown attestation"]
    );
    // A single-platform image, and an engine that does not list the index: nothing.
    assert!(
        inspect("amd64", json!([entry('a', "amd64", None)]))
            .left_out()
            .is_empty()
    );
    assert!(inspect("amd64", Value::Null).left_out().is_empty());
}
