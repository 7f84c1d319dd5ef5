//! Image sources end to end: sample images written by `hoist::sample`, converted by real tools
//! (skopeo, tar), planned, and streamed with verification. Then every kind of bad input.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::digest::Digest;
use hoist::image::media;
use hoist::plan::{Codec, CompressedLayer, LayerAction, PlanError, PlanOptions, PushPlan};
use hoist::platform::Platform;
use hoist::sample::{
    IndexSpec, LayerContent, LayerSpec, SampleCompression, SampleImage, SampleSpec,
    write_oci_layout,
};
use hoist::source::{SourceRef, TarIndex};
use serde_json::{Value, json};

fn plan(src: &str) -> Result<PushPlan, PlanError> {
    plan_with(src, PlanOptions::default())
}

fn plan_with(src: &str, opts: PlanOptions) -> Result<PushPlan, PlanError> {
    let r: SourceRef = src.parse()?;
    PushPlan::new(&r, &opts)
}

fn err(src: &str) -> String {
    match plan(src) {
        Ok(_) => panic!("{src}: planned, expected an error"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "message is not one line: {s}");
            s
        }
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not contain {p:?}");
    }
}

fn arm64() -> Platform {
    "linux/arm64".parse().unwrap()
}

fn mixed_spec(seed: u64) -> SampleSpec {
    SampleSpec {
        seed,
        platform: Platform::linux_amd64(),
        layers: vec![
            LayerSpec::new(LayerContent::SmallFiles(5), SampleCompression::None),
            LayerSpec::new(LayerContent::Text(512 << 10), SampleCompression::Gzip),
            LayerSpec::new(LayerContent::Random(300 << 10), SampleCompression::None),
        ],
        ref_name: Some("latest".into()),
        index: None,
        manifest_media_type: true,
    }
}

fn sample(dir: &Path, spec: &SampleSpec) -> SampleImage {
    write_oci_layout(dir, spec).unwrap()
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().name()).join(d.hex())
}

/// The layer checks common to every source of `img`: digests, sizes, actions, verification.
fn check_plan_matches(p: &PushPlan, img: &SampleImage) {
    assert_eq!(p.platform, Platform::linux_amd64());
    assert_eq!(p.config.digest, img.config);
    assert_eq!(p.config.size, img.config_size);
    assert_eq!(p.layers.len(), img.layers.len());
    for (pl, sl) in p.layers.iter().zip(&img.layers) {
        assert_eq!(pl.diff_id, sl.diff_id);
        match &pl.action {
            LayerAction::Compress {
                diff_id,
                uncompressed_size,
                codec,
            } => {
                assert_eq!(diff_id, &sl.diff_id);
                assert_eq!(*uncompressed_size, sl.uncompressed_size);
                assert_eq!(pl.source.digest, sl.diff_id);
                assert_eq!(*codec, Codec::Gzip);
            }
            LayerAction::AsIs => {
                assert_eq!(pl.source.digest, sl.digest);
                assert_eq!(pl.source.size, sl.size);
            }
        }
    }
    p.verify_sources().unwrap();
}

#[test]
fn oci_layout_plans_mixed_layers() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(1));
    let src = format!("oci:{}", t.path().display());
    let p = plan(&src).unwrap();
    check_plan_matches(&p, &img);
    let actions: Vec<bool> = p
        .layers
        .iter()
        .map(|l| l.action == LayerAction::AsIs)
        .collect();
    assert_eq!(actions, [false, true, false]);
    assert_eq!(p.family, media::Family::Oci);
    assert!(p.source_manifest.is_none(), "layers need compression");
    assert_eq!(p.manifest_media_type, media::OCI_MANIFEST);
    // a bare directory and a named reference plan the same image
    let bare = plan(&t.path().display().to_string()).unwrap();
    assert_eq!(bare.config.digest, p.config.digest);
    let named = plan(&format!("{src}:latest")).unwrap();
    assert_eq!(named.config.digest, p.config.digest);
    let e = err(&format!("{src}:nope"));
    assert_has(&e, &["no image named \"nope\"", "has latest"]);

    // build the manifest with made-up compressed results
    let fake = |n: u8| CompressedLayer {
        digest: Digest::sha256_of(&[n]),
        size: 1000 + n as u64,
    };
    let m = p.build_manifest(&[fake(0), fake(2)]).unwrap();
    assert_eq!(m.digest, Digest::sha256_of(&m.bytes));
    let v: Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(v["mediaType"], media::OCI_MANIFEST);
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["config"]["digest"], img.config.to_string());
    assert_eq!(v["layers"][0]["mediaType"], media::OCI_LAYER_GZIP);
    assert_eq!(v["layers"][0]["digest"], fake(0).digest.to_string());
    assert_eq!(v["layers"][1]["digest"], img.layers[1].digest.to_string());
    assert_eq!(v["layers"][2]["size"], 1002);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["schemaVersion", "mediaType", "config", "layers"]);
    assert!(!String::from_utf8(m.bytes.clone()).unwrap().contains('\n'));
    assert_eq!(p.build_manifest(&[fake(0), fake(2)]).unwrap(), m, "stable");
    assert!(matches!(
        p.build_manifest(&[fake(0)]),
        Err(PlanError::CompressedCount { .. })
    ));

    let view = serde_json::to_value(p.view()).unwrap();
    assert_eq!(view["platform"], "linux/amd64");
    assert_eq!(view["layers"][0]["action"]["kind"], "compress");
    assert_eq!(view["layers"][1]["action"]["kind"], "as-is");
}

#[test]
fn all_compressed_layout_pushes_source_manifest_bytes() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(2);
    for l in &mut spec.layers {
        l.compression = SampleCompression::Gzip;
    }
    spec.layers[0].compression = SampleCompression::Zstd;
    let img = sample(t.path(), &spec);
    let p = plan(&format!("oci:{}", t.path().display())).unwrap();
    check_plan_matches(&p, &img);
    let m = p
        .source_manifest
        .clone()
        .expect("source manifest pushed as is");
    assert_eq!(m.digest, img.manifest);
    assert_eq!(
        m.bytes,
        fs::read(blob_file(t.path(), &img.manifest)).unwrap()
    );
    assert_eq!(p.manifest(&[]).unwrap(), m);
    assert_eq!(p.view().manifest_digest, Some(img.manifest.clone()));

    // zstd compression of an OCI image: still OCI, no conversion warning
    let opts = PlanOptions {
        compression: Codec::Zstd,
        ..PlanOptions::default()
    };
    let z = plan_with(&format!("oci:{}", t.path().display()), opts).unwrap();
    assert!(z.warnings.is_empty(), "{:?}", z.warnings);
}

#[test]
fn manifest_without_media_type_is_rewritten_with_it() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(3);
    spec.manifest_media_type = false;
    for l in &mut spec.layers {
        l.compression = SampleCompression::Gzip;
    }
    let img = sample(t.path(), &spec);
    let p = plan(&t.path().display().to_string()).unwrap();
    assert!(p.source_manifest.is_none());
    assert_has(&p.warnings.join(" "), &["no top-level mediaType"]);
    let m = p.manifest(&[]).unwrap();
    assert_ne!(m.digest, img.manifest);
    let v: Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(v["mediaType"], media::OCI_MANIFEST);
}

#[test]
fn skopeo_docker_archive_classic_layout() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = sample(&layout, &mixed_spec(4));
    let archive = t.path().join("img.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("docker-archive:{}:example.com/sample:v1", archive.display()),
    ]);
    let index = TarIndex::open(&archive).unwrap();
    assert!(index.contains("manifest.json"));
    let detected: SourceRef = archive.display().to_string().parse().unwrap();
    assert!(matches!(detected, SourceRef::DockerArchive { .. }));

    let p = plan(&archive.display().to_string()).unwrap();
    assert_eq!(p.family, media::Family::Docker2);
    assert_eq!(p.config.media_type, media::DOCKER_CONFIG);
    assert_eq!(p.config.digest, img.config);
    for (pl, sl) in p.layers.iter().zip(&img.layers) {
        assert_eq!(pl.diff_id, sl.diff_id);
        assert_eq!(pl.media_type, media::DOCKER_LAYER_GZIP);
        // skopeo's docker-archive holds every layer uncompressed
        assert_eq!(
            pl.action,
            LayerAction::Compress {
                diff_id: sl.diff_id.clone(),
                uncompressed_size: sl.uncompressed_size,
                codec: Codec::Gzip
            }
        );
    }
    p.verify_sources().unwrap();
    let named = plan(&format!(
        "docker-archive:{}:example.com/sample:v1",
        archive.display()
    ))
    .unwrap();
    assert_eq!(named.config.digest, img.config);
    // skopeo writes RepoTags normalised: docker.io/library/NAME:TAG
    let short = t.path().join("short.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("docker-archive:{}:sample:v2", short.display()),
    ]);
    let named = plan(&format!("docker-archive:{}:sample:v2", short.display())).unwrap();
    assert_eq!(named.config.digest, img.config);
    let e = err(&format!("docker-archive:{}:other:v2", archive.display()));
    assert_has(
        &e,
        &["no image named \"other:v2\"", "example.com/sample:v1"],
    );

    // zstd turns the Docker image into an OCI one, and says so
    let opts = PlanOptions {
        compression: Codec::Zstd,
        ..PlanOptions::default()
    };
    let z = plan_with(&archive.display().to_string(), opts).unwrap();
    assert_eq!(z.family, media::Family::Oci);
    assert_eq!(z.manifest_media_type, media::OCI_MANIFEST);
    assert_eq!(z.config.media_type, media::OCI_CONFIG);
    assert_eq!(z.layers[0].media_type, media::OCI_LAYER_ZSTD);
    assert_has(
        &z.warnings.join(" "),
        &["converting the Docker schema 2 image to OCI"],
    );

    let m = p
        .build_manifest(&vec![
            CompressedLayer {
                digest: Digest::sha256_of(b"x"),
                size: 1
            };
            3
        ])
        .unwrap();
    let v: Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(v["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(v["config"]["mediaType"], media::DOCKER_CONFIG);
}

/// skopeo 1.9 gzips uncompressed layers on the way into an OCI layout or archive: same
/// diff_ids, every layer as is, and the source manifest pushed unchanged.
fn check_skopeo_oci(p: &PushPlan, img: &SampleImage) {
    assert_eq!(p.config.digest, img.config);
    for (pl, sl) in p.layers.iter().zip(&img.layers) {
        assert_eq!(pl.diff_id, sl.diff_id);
        assert_eq!(pl.action, LayerAction::AsIs);
        assert_eq!(pl.media_type, media::OCI_LAYER_GZIP);
    }
    assert_eq!(p.layers[1].source.digest, img.layers[1].digest);
    assert!(p.source_manifest.is_some());
    p.verify_sources().unwrap();
}

#[test]
fn skopeo_oci_copy_and_oci_archives() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = sample(&layout, &mixed_spec(5));
    let copy = t.path().join("copy");
    skopeo(&[
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("oci:{}:v1", copy.display()),
    ]);
    let p = plan(&format!("oci:{}:v1", copy.display())).unwrap();
    check_skopeo_oci(&p, &img);

    // tar -cf of a layout is an oci-archive, detected from a bare path too
    let tarball = t.path().join("layout.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&layout)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let detected: SourceRef = tarball.display().to_string().parse().unwrap();
    assert!(
        matches!(detected, SourceRef::OciArchive { .. }),
        "{detected}"
    );
    let p = plan(&tarball.display().to_string()).unwrap();
    check_plan_matches(&p, &img);
    let p = plan(&format!("oci-archive:{}:latest", tarball.display())).unwrap();
    check_plan_matches(&p, &img);

    // skopeo's own oci-archive
    let sk = t.path().join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("oci-archive:{}", sk.display()),
    ]);
    let p = plan(&format!("oci-archive:{}", sk.display())).unwrap();
    check_skopeo_oci(&p, &img);
}

/// Builds a Docker 25+ `docker save` archive from a layout: the OCI layout plus manifest.json.
fn docker25_archive(layout: &Path, img: &SampleImage, out: &Path, largest_last: bool) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut names: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort_by_key(|p| {
        (
            largest_last && fs::metadata(p).unwrap().len() > 100_000,
            p.clone(),
        )
    });
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", img.config.hex()),
        "RepoTags": ["sample:latest"],
        "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
    }]);
    add_bytes(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    add_bytes(
        &mut b,
        "oci-layout",
        &fs::read(layout.join("oci-layout")).unwrap(),
    );
    add_bytes(
        &mut b,
        "index.json",
        &fs::read(layout.join("index.json")).unwrap(),
    );
    for p in names {
        let name = format!("blobs/sha256/{}", p.file_name().unwrap().to_str().unwrap());
        b.append_path_with_name(&p, name).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

fn add_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, bytes).unwrap();
}

#[test]
fn docker25_archive_uncompressed_and_gzip_layers() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = sample(&layout, &mixed_spec(6));
    let archive = t.path().join("d25.tar");
    docker25_archive(&layout, &img, &archive, false);
    let detected: SourceRef = archive.display().to_string().parse().unwrap();
    assert!(matches!(detected, SourceRef::DockerArchive { .. }));
    let p = plan(&archive.display().to_string()).unwrap();
    check_plan_matches(&p, &img);
    // the archive's own OCI manifest was found: its family and media types are kept
    assert_eq!(p.family, media::Family::Oci);
    assert_eq!(p.layers[1].action, LayerAction::AsIs);
    assert_eq!(p.layers[1].media_type, media::OCI_LAYER_GZIP);
    assert_eq!(p.layers[1].source.digest, img.layers[1].digest);
    assert!(p.source_manifest.is_none(), "two layers need compression");
    // the same file as an oci-archive: the OCI manifest
    let p = plan(&format!("oci-archive:{}", archive.display())).unwrap();
    check_plan_matches(&p, &img);
    assert_eq!(p.family, media::Family::Oci);
}

#[test]
fn docker25_archive_of_compressed_layers_keeps_the_manifest_bytes() {
    // what docker save writes with the containerd image store: compressed blobs, an index
    // (with an attestation) in index.json, and manifest.json
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let mut spec = mixed_spec(21);
    for l in &mut spec.layers {
        l.compression = SampleCompression::Gzip;
    }
    spec.index = Some(IndexSpec {
        extra_platforms: vec![],
        attestation: true,
    });
    let img = sample(&layout, &spec);
    let archive = t.path().join("d25.tar");
    docker25_archive(&layout, &img, &archive, false);
    let p = plan(&format!("docker-archive:{}", archive.display())).unwrap();
    check_plan_matches(&p, &img);
    let m = p
        .source_manifest
        .as_ref()
        .expect("the OCI manifest is pushed as is");
    assert_eq!(m.digest, img.manifest);
    assert_eq!(
        m.bytes,
        fs::read(blob_file(&layout, &img.manifest)).unwrap()
    );

    // without its manifest blob, the archive is still pushed, as a Docker schema 2 image
    let stripped = t.path().join("stripped.tar");
    fs::remove_file(blob_file(&layout, &img.manifest)).unwrap();
    docker25_archive(&layout, &img, &stripped, false);
    let p = plan(&stripped.display().to_string()).unwrap();
    check_plan_matches(&p, &img);
    assert_eq!(p.family, media::Family::Docker2);
    assert!(p.source_manifest.is_none());
    assert!(
        p.layers
            .iter()
            .all(|l| l.media_type == media::DOCKER_LAYER_GZIP)
    );
}

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

    let opts = PlanOptions {
        platform: arm64(),
        ..PlanOptions::default()
    };
    let a = plan_with(&src, opts).unwrap();
    assert_eq!(a.platform, arm64());
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

/// Replaces the image manifest of a single-manifest sample layout, returning the new digest.
fn rewrite_manifest(dir: &Path, img: &SampleImage, f: impl FnOnce(&mut Value)) -> Digest {
    let mut m: Value =
        serde_json::from_slice(&fs::read(blob_file(dir, &img.manifest)).unwrap()).unwrap();
    f(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = Digest::sha256_of(&bytes);
    fs::write(blob_file(dir, &d), &bytes).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": bytes.len()}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    d
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
fn bad_digests_in_manifest() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(11));
    let src = t.path().display().to_string();
    let hex = img.layers[1].digest.hex().to_string();
    for (digest, want) in [
        (format!("md5:{}", &hex[..32]), "unsupported algorithm"),
        (
            format!("sha256:{}", hex.to_uppercase()),
            "not lowercase hex",
        ),
        (
            format!("sha256:{}", &hex[..60]),
            "has 60 hex characters, 64 expected",
        ),
    ] {
        rewrite_manifest(t.path(), &img, |m| m["layers"][1]["digest"] = json!(digest));
        let e = err(&src);
        assert_has(&e, &["not a valid image manifest", want]);
    }
    // sha512 is accepted as an algorithm (the blob is then simply missing)
    let d512 = format!("sha512:{}", "ab".repeat(64));
    rewrite_manifest(t.path(), &img, |m| m["layers"][1]["digest"] = json!(d512));
    let e = err(&src);
    assert_has(&e, &["blobs/sha512/abab", "is missing"]);
}

#[test]
fn unknown_layer_media_type() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(12));
    rewrite_manifest(t.path(), &img, |m| {
        m["layers"][0]["mediaType"] = json!("application/vnd.example.foo")
    });
    let e = err(&t.path().display().to_string());
    assert_has(
        &e,
        &["unknown layer media type \"application/vnd.example.foo\""],
    );
}

#[test]
fn layer_bytes_must_match_their_media_type() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(22));
    rewrite_manifest(t.path(), &img, |m| {
        m["layers"][2]["mediaType"] = json!(media::OCI_LAYER_GZIP)
    });
    assert_has(
        &err(&t.path().display().to_string()),
        &[
            &img.layers[2].digest.hex()[..12],
            "media type \"application/vnd.oci.image.layer.v1.tar+gzip\" says gzip but the bytes are uncompressed",
        ],
    );
    rewrite_manifest(t.path(), &img, |m| {
        m["layers"][1]["mediaType"] = json!(media::OCI_LAYER_ZSTD)
    });
    assert_has(
        &err(&t.path().display().to_string()),
        &["says zstd but the bytes are gzip"],
    );
}

#[test]
fn blob_digest_and_size_mismatches() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(13));
    let src = t.path().display().to_string();
    // a gzip layer changed in place, same size: planned, but streaming it fails
    let gz = blob_file(t.path(), &img.layers[1].digest);
    let mut bytes = fs::read(&gz).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&gz, &bytes).unwrap();
    let p = plan(&src).unwrap();
    let e = p.verify_sources().unwrap_err().to_string();
    assert_has(
        &e,
        &[
            &img.layers[1].digest.hex()[..12],
            "content is sha256:",
            "expected",
        ],
    );
    // one byte more: refused at plan time
    bytes.push(0);
    fs::write(&gz, &bytes).unwrap();
    let e = err(&src);
    assert_has(
        &e,
        &[&format!(
            "size is {} bytes, expected {}",
            bytes.len(),
            bytes.len() - 1
        )],
    );
    bytes.pop();
    // an uncompressed layer changed: the diff_id check catches it
    let raw = blob_file(t.path(), &img.layers[2].digest);
    let mut tarb = fs::read(&raw).unwrap();
    tarb[600] ^= 0x55;
    fs::write(&raw, &tarb).unwrap();
    bytes[mid] ^= 0xff;
    fs::write(&gz, &bytes).unwrap();
    let p = plan(&src).unwrap();
    let e = p.verify_sources().unwrap_err().to_string();
    assert_has(&e, &["uncompressed content is", "diff_id is"]);
    // a changed config is refused when read
    let cfg = blob_file(t.path(), &img.config);
    let mut c = fs::read(&cfg).unwrap();
    c[2] = b'X';
    fs::write(&cfg, &c).unwrap();
    let e = err(&src);
    assert_has(&e, &[&img.config.hex()[..12], "content is sha256:"]);
}

#[test]
fn json_over_4_mib_is_refused() {
    let t = tempfile::tempdir().unwrap();
    sample(t.path(), &mixed_spec(14));
    let mut index = fs::read(t.path().join("index.json")).unwrap();
    index.resize(4 * 1024 * 1024 + 1, b' ');
    fs::write(t.path().join("index.json"), &index).unwrap();
    let e = err(&t.path().display().to_string());
    assert_has(
        &e,
        &["index.json", "4194305 bytes is over the 4194304-byte limit"],
    );
}

#[test]
fn more_than_127_layers() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(15);
    spec.layers = vec![LayerSpec::new(LayerContent::SmallFiles(1), SampleCompression::None); 128];
    sample(t.path(), &spec);
    let src = t.path().display().to_string();
    let e = err(&src);
    assert_has(
        &e,
        &["has 128 layers, over ECR's limit of 127", "--force-layers"],
    );
    let opts = PlanOptions {
        force_layers: true,
        ..PlanOptions::default()
    };
    let p = plan_with(&src, opts).unwrap();
    assert_eq!(p.layers.len(), 128);
    assert_has(&p.warnings.join(" "), &["128 layers"]);
}

// ---- archives built by hand ------------------------------------------------------------

/// A tar header with a raw name (tar::Builder refuses unsafe names, which is the point).
fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    let nb = &mut h.as_old_mut().name;
    nb[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn write_tar(path: &Path, entries: &[Vec<u8>]) {
    let mut bytes: Vec<u8> = entries.concat();
    bytes.extend_from_slice(&[0u8; 1024]);
    fs::write(path, bytes).unwrap();
}

/// A small valid Docker 25+ archive's entries, for tampering: (name, bytes).
fn docker25_entries(dir: &Path) -> (SampleImage, Vec<(String, Vec<u8>)>) {
    let layout = dir.join("layout");
    let mut spec = mixed_spec(16);
    spec.layers.truncate(1);
    let img = sample(&layout, &spec);
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", img.config.hex()),
        "RepoTags": ["sample:latest"],
        "Layers": [format!("blobs/sha256/{}", img.layers[0].digest.hex())],
    }]);
    let mut v = vec![(
        "manifest.json".to_string(),
        serde_json::to_vec(&manifest).unwrap(),
    )];
    for d in [&img.config, &img.layers[0].digest] {
        v.push((
            format!("blobs/sha256/{}", d.hex()),
            fs::read(blob_file(&layout, d)).unwrap(),
        ));
    }
    (img, v)
}

fn regular(entries: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .map(|(n, b)| raw_entry(n, tar::EntryType::Regular, b, None))
        .collect()
}

#[test]
fn hand_built_archive_baseline_plans() {
    let t = tempfile::tempdir().unwrap();
    let (img, entries) = docker25_entries(t.path());
    let f = t.path().join("ok.tar");
    write_tar(&f, &regular(&entries));
    let p = plan(&f.display().to_string()).unwrap();
    assert_eq!(p.config.digest, img.config);
    p.verify_sources().unwrap();
}

#[test]
fn not_a_tar_and_compressed_archives() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("junk.tar");
    fs::write(&f, "hello, this is not a tar archive at all\n".repeat(40)).unwrap();
    assert_has(
        &err(&f.display().to_string()),
        &["junk.tar: not a tar archive"],
    );
    fs::write(&f, b"tiny").unwrap();
    assert_has(
        &err(&format!("docker-archive:{}", f.display())),
        &["not a tar archive", "4 bytes"],
    );
    fs::write(&f, b"").unwrap();
    assert_has(&err(&f.display().to_string()), &["not a tar archive"]);

    let (_, entries) = docker25_entries(t.path());
    let tarf = t.path().join("ok.tar");
    write_tar(&tarf, &regular(&entries));
    let gz = t.path().join("ok.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), Default::default());
    enc.write_all(&fs::read(&tarf).unwrap()).unwrap();
    enc.finish().unwrap();
    assert_has(
        &err(&gz.display().to_string()),
        &["gzip-compressed", "gunzip"],
    );
    assert_has(
        &err("/nonexistent/img.tar"),
        &["/nonexistent/img.tar: no such file"],
    );
    assert_has(&err("docker-archive:"), &["the path is empty"]);
    assert_has(&err("ftp:thing"), &["unknown transport \"ftp\""]);
}

#[test]
fn truncated_archive() {
    let t = tempfile::tempdir().unwrap();
    let (_, entries) = docker25_entries(t.path());
    let f = t.path().join("cut.tar");
    write_tar(&f, &regular(&entries));
    let bytes = fs::read(&f).unwrap();
    let layer_len = entries[2].1.len();
    // cut in the middle of the last (layer) entry's data
    let cut = bytes.len() - 1024 - layer_len / 2;
    fs::write(&f, &bytes[..cut]).unwrap();
    assert_has(
        &err(&f.display().to_string()),
        &["cut.tar: archive is truncated", "export the image again"],
    );
    // cut in the middle of a header
    let first = raw_entry(
        "manifest.json",
        tar::EntryType::Regular,
        &entries[0].1,
        None,
    )
    .len();
    fs::write(&f, &bytes[..first + 100]).unwrap();
    let e = err(&f.display().to_string());
    assert!(e.contains("truncated") || e.contains("damaged"), "{e}");
}

#[test]
fn missing_manifest_or_index() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("other.tar");
    write_tar(
        &f,
        &[raw_entry("hello.txt", tar::EntryType::Regular, b"hi", None)],
    );
    assert_has(
        &err(&f.display().to_string()),
        &["manifest.json is missing"],
    );
    assert_has(
        &err(&format!("oci-archive:{}", f.display())),
        &["other.tar: index.json is missing"],
    );
    assert_has(
        &err(&format!("docker-archive:{}", f.display())),
        &["other.tar: manifest.json is missing", "docker save"],
    );
    let d = t.path().join("emptydir");
    fs::create_dir(&d).unwrap();
    assert_has(&err(&d.display().to_string()), &["not an image"]);
    assert_has(
        &err(&format!("oci:{}", d.display())),
        &["emptydir: index.json is missing"],
    );
    // a docker archive whose manifest.json names a layer that is not there
    let (_, mut entries) = docker25_entries(t.path());
    entries.pop();
    write_tar(&f, &regular(&entries));
    assert_has(
        &err(&f.display().to_string()),
        &["blobs/sha256/", "is missing"],
    );
}

#[test]
fn unsafe_names_links_and_duplicates() {
    let t = tempfile::tempdir().unwrap();
    let (img, entries) = docker25_entries(t.path());
    let f = t.path().join("bad.tar");
    let layer_name = format!("blobs/sha256/{}", img.layers[0].digest.hex());
    for name in ["/etc/passwd", "../escape", "blobs/../../x"] {
        let mut es = regular(&entries);
        es.push(raw_entry(name, tar::EntryType::Regular, b"x", None));
        write_tar(&f, &es);
        assert_has(
            &err(&f.display().to_string()),
            &[&format!("entry name {name:?} is absolute or contains '..'")],
        );
    }
    for (kind, word) in [
        (tar::EntryType::Symlink, "symlink"),
        (tar::EntryType::Link, "hard link"),
    ] {
        let mut es = regular(&entries[..2]);
        es.push(raw_entry(&layer_name, kind, b"", Some("layout/other")));
        write_tar(&f, &es);
        assert_has(
            &err(&f.display().to_string()),
            &[&format!("{layer_name} is a {word} where a blob should be")],
        );
    }
    let mut es = regular(&entries);
    es.push(raw_entry(
        "manifest.json",
        tar::EntryType::Regular,
        b"[]",
        None,
    ));
    write_tar(&f, &es);
    assert_has(
        &err(&f.display().to_string()),
        &["entry \"manifest.json\" appears twice"],
    );
}

#[test]
fn docker_archive_content_mismatches() {
    let t = tempfile::tempdir().unwrap();
    let (_, entries) = docker25_entries(t.path());
    let f = t.path().join("m.tar");
    // layer bytes changed: the diff_id check fails while streaming
    let mut es = entries.clone();
    es[2].1[700] ^= 1;
    write_tar(&f, &regular(&es));
    let p = plan(&f.display().to_string()).unwrap();
    assert_has(
        &p.verify_sources().unwrap_err().to_string(),
        &["uncompressed content is", "diff_id is"],
    );
    // config bytes changed: its name (the digest) no longer matches
    let mut es = entries.clone();
    es[1].1[3] ^= 1;
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &["content is sha256:", "expected sha256:"],
    );
    // a gzip layer whose diff_id does not match is refused at plan time
    let mut es = entries.clone();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Default::default());
    enc.write_all(b"not the layer").unwrap();
    es[2].1 = enc.finish().unwrap();
    es[2].0 = "layer.tar.gz".into();
    let mut m: Value = serde_json::from_slice(&es[0].1).unwrap();
    m[0]["Layers"][0] = json!("layer.tar.gz");
    es[0].1 = serde_json::to_vec(&m).unwrap();
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &["layer.tar.gz: uncompressed content is"],
    );
}

#[test]
fn bigger_layer_streams() {
    // one ~48 MiB layer (the only big test): compressible text, docker archive via skopeo
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let mut spec = mixed_spec(17);
    spec.layers = vec![LayerSpec::new(
        LayerContent::Random(48 << 20),
        SampleCompression::None,
    )];
    let img = sample(&layout, &spec);
    let archive = t.path().join("big.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("docker-archive:{}", archive.display()),
    ]);
    let p = plan(&archive.display().to_string()).unwrap();
    assert_eq!(p.layers[0].diff_id, img.layers[0].diff_id);
    assert_eq!(p.layers[0].source.size, img.layers[0].uncompressed_size);
    p.verify_sources().unwrap();
}

// ---- property tests ----------------------------------------------------------------------

mod props {
    use super::*;
    use hoist::image::doc::{self, Config, DockerArchiveEntry, Index, Manifest};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// A valid Docker 25+ archive, as bytes, to mutate.
    fn base_archive() -> &'static [u8] {
        static BASE: OnceLock<Vec<u8>> = OnceLock::new();
        BASE.get_or_init(|| {
            let t = tempfile::tempdir().unwrap();
            let (_, entries) = docker25_entries(t.path());
            let f = t.path().join("base.tar");
            write_tar(&f, &regular(&entries));
            fs::read(f).unwrap()
        })
    }

    /// Plans `bytes` as every kind of archive; must not panic, errors must be one line.
    fn plan_all_ways(bytes: &[u8]) {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("x.tar");
        fs::write(&f, bytes).unwrap();
        let _ = TarIndex::open(&f);
        for src in [
            format!("docker-archive:{}", f.display()),
            format!("oci-archive:{}", f.display()),
            f.display().to_string(),
        ] {
            match plan(&src) {
                Ok(p) => {
                    if let Err(e) = p.verify_sources() {
                        assert!(!e.to_string().contains('\n'), "{e}");
                    }
                }
                Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            plan_all_ways(&bytes);
        }

        #[test]
        fn mutated_archives_never_panic(
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
        ) {
            let mut bytes = base_archive().to_vec();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
            plan_all_ways(&bytes);
        }

        #[test]
        fn json_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = doc::parse::<Manifest>(bytes.clone(), "f", "manifest");
            let _ = doc::parse::<Index>(bytes.clone(), "f", "index");
            let _ = doc::parse::<Config>(bytes.clone(), "f", "config");
            let _ = doc::parse::<Vec<DockerArchiveEntry>>(bytes, "f", "manifest.json");
        }

        #[test]
        fn mutated_manifests_never_panic(
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":7,"annotations":{"a":"b"}}]}"#;
            let mut bytes = m.to_vec();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Err(e) = doc::parse::<Manifest>(bytes, "f", "manifest") {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn digest_round_trips(bytes in proptest::collection::vec(any::<u8>(), 32..=32), long in proptest::collection::vec(any::<u8>(), 64..=64)) {
            let s = format!("sha256:{}", hex::encode(&bytes));
            let d = Digest::parse(&s).unwrap();
            prop_assert_eq!(d.to_string(), s.clone());
            prop_assert_eq!(serde_json::from_str::<Digest>(&serde_json::to_string(&d).unwrap()).unwrap(), d);
            let s512 = format!("sha512:{}", hex::encode(&long));
            prop_assert_eq!(Digest::parse(&s512).unwrap().to_string(), s512);
            prop_assert!(Digest::parse(&s.to_uppercase()).is_err());
        }

        #[test]
        fn digest_parse_never_panics(s in ".{0,140}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}

#[test]
fn layer_annotations_and_urls_are_kept() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(18));
    rewrite_manifest(t.path(), &img, |m| {
        m["layers"][0]["annotations"] = json!({"z.last": "1", "a.first": "2"});
        m["layers"][1]["urls"] = json!(["https://example.com/layer"]);
        m["annotations"] = json!({"org.opencontainers.image.title": "sample"});
    });
    let p = plan(&t.path().display().to_string()).unwrap();
    let c = |n: u8| CompressedLayer {
        digest: Digest::sha256_of(&[n]),
        size: 10,
    };
    let m = p.build_manifest(&[c(0), c(2)]).unwrap();
    let text = String::from_utf8(m.bytes).unwrap();
    assert!(
        text.contains(r#""annotations":{"z.last":"1","a.first":"2"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""urls":["https://example.com/layer"]"#),
        "{text}"
    );
    assert!(
        text.ends_with(r#""annotations":{"org.opencontainers.image.title":"sample"}}"#),
        "{text}"
    );
}

#[test]
fn several_named_images_need_a_name() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path(), &mixed_spec(19));
    let entry = |name: &str| {
        json!({"mediaType": media::OCI_MANIFEST, "digest": img.manifest.to_string(),
               "size": img.manifest_size, "annotations": {media::ANNOTATION_REF_NAME: name}})
    };
    let index = json!({"schemaVersion": 2, "manifests": [entry("v1"), entry("v2")]});
    fs::write(
        t.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let src = format!("oci:{}", t.path().display());
    assert_has(
        &err(&src),
        &["holds 2 images (v1, v2): name one, e.g. oci:", ":v1"],
    );
    assert_eq!(
        plan(&format!("{src}:v2")).unwrap().config.digest,
        img.config
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

#[test]
fn docker_archive_bad_paths_and_big_manifest_json() {
    let t = tempfile::tempdir().unwrap();
    let (img, entries) = docker25_entries(t.path());
    let f = t.path().join("p.tar");
    // a layer path naming an unsupported digest algorithm
    let mut es = entries.clone();
    let md5 = format!("blobs/md5/{}", &img.layers[0].digest.hex()[..32]);
    let mut m: Value = serde_json::from_slice(&es[0].1).unwrap();
    m[0]["Layers"][0] = json!(md5);
    es[0].1 = serde_json::to_vec(&m).unwrap();
    es[2].0 = md5.clone();
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &[&md5, "unsupported algorithm"],
    );
    // manifest.json naming a path outside the archive
    let mut es = entries.clone();
    let mut m: Value = serde_json::from_slice(&es[0].1).unwrap();
    m[0]["Config"] = json!("../../etc/passwd");
    es[0].1 = serde_json::to_vec(&m).unwrap();
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &["\"../../etc/passwd\" is absolute or contains '..'"],
    );
    // manifest.json over 4 MiB
    let mut es = entries.clone();
    es[0].1.resize(4 * 1024 * 1024 + 10, b' ');
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &["p.tar: manifest.json: JSON document of 4194314 bytes is over the 4194304-byte limit"],
    );
    // not JSON at all
    let mut es = entries.clone();
    es[0].1 = b"{not json".to_vec();
    write_tar(&f, &regular(&es));
    assert_has(
        &err(&f.display().to_string()),
        &["manifest.json: not a valid docker save manifest.json"],
    );
}

#[test]
fn classic_docker_save_layer_symlinks_are_followed_inside_the_archive() {
    // docker save before 25 writes a layer that appears twice as `<id2>/layer.tar ->
    // ../<id1>/layer.tar`. Such a link is followed (the layer is checked against its diff_id);
    // links that leave the archive, dangle or chain are refused.
    let t = tempfile::tempdir().unwrap();
    let (img, entries) = docker25_entries(t.path());
    let layer = entries[2].1.clone();
    let diff = img.layers[0].diff_id.to_string();
    let mut cfg: Value = serde_json::from_slice(&entries[1].1).unwrap();
    cfg["rootfs"]["diff_ids"] = json!([diff, diff]);
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let cfg_name = format!("{}.json", Digest::sha256_of(&cfg).hex());
    let manifest = serde_json::to_vec(&json!([{"Config": cfg_name, "RepoTags": null,
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]))
    .unwrap();
    let f = t.path().join("classic.tar");
    let build = |target: &str, extra: Option<Vec<u8>>| {
        let mut es = vec![
            raw_entry(&cfg_name, tar::EntryType::Regular, &cfg, None),
            raw_entry("aaa/layer.tar", tar::EntryType::Regular, &layer, None),
            raw_entry("bbb/layer.tar", tar::EntryType::Symlink, b"", Some(target)),
            raw_entry("manifest.json", tar::EntryType::Regular, &manifest, None),
        ];
        es.extend(extra);
        write_tar(&f, &es);
    };
    build("../aaa/layer.tar", None);
    let p = plan(&f.display().to_string()).unwrap();
    assert_eq!(p.layers.len(), 2);
    assert_eq!(p.layers[1].source.digest, img.layers[0].diff_id);
    assert!(
        p.layers[1]
            .source
            .location
            .name
            .contains("bbb/layer.tar -> aaa/layer.tar")
    );
    p.verify_sources().unwrap();
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "../nope/layer.tar",
        "../ccc/layer.tar",
    ] {
        build(
            bad,
            Some(raw_entry(
                "ccc/layer.tar",
                tar::EntryType::Symlink,
                b"",
                Some("../aaa/layer.tar"),
            )),
        );
        assert_has(
            &err(&f.display().to_string()),
            &["bbb/layer.tar is a symlink where a blob should be"],
        );
    }
}
