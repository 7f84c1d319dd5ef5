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
