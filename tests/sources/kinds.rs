//! Each kind of source (OCI layout, docker-archive classic and Docker 25+, OCI archive),
//! written by hoist_testkit::sample and converted by real tools, planned and streamed.

use super::helpers::*;

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
    check_classic_plan(&p, &img);
    check_archive_names(t.path(), &layout, &archive, &img);
    check_zstd_converts_to_oci(&archive);

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

/// The plan of skopeo's docker-archive of `img`: Docker schema 2, every layer compressed
/// (skopeo keeps them uncompressed), the sources as the plan says.
fn check_classic_plan(p: &PushPlan, img: &SampleImage) {
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
}

/// Images in a docker-archive are found by their full and their short (normalised) names; an
/// unknown name is an error that lists the names there are.
fn check_archive_names(dir: &Path, layout: &Path, archive: &Path, img: &SampleImage) {
    let named = plan(&format!(
        "docker-archive:{}:example.com/sample:v1",
        archive.display()
    ))
    .unwrap();
    assert_eq!(named.config.digest, img.config);
    // skopeo writes RepoTags normalised: docker.io/library/NAME:TAG
    let short = dir.join("short.tar");
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
}

/// zstd turns the Docker image into an OCI one, and says so.
fn check_zstd_converts_to_oci(archive: &Path) {
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
    tar_layout(&layout, &tarball);
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
    // what the index holds besides, said as for an oci-archive
    assert_eq!(
        p.warnings,
        [
            "the source is an index that also holds unknown/unknown attestation: hoist pushes only the linux/amd64 image manifest"
        ]
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
    // containerd's full-name annotation also names an image
    let mut e = entry("latest");
    e["annotations"]["io.containerd.image.name"] = json!("docker.io/library/app:1.0");
    let index = json!({"schemaVersion": 2, "manifests": [e]});
    fs::write(
        t.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    assert_eq!(
        plan(&format!("{src}:app:1.0")).unwrap().config.digest,
        img.config
    );
    assert_has(
        &err(&format!("{src}:app:2.0")),
        &["no image named \"app:2.0\""],
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

/// A directory whose size field claims data: GNU tar and Go's `archive/tar` read none for it
/// (the next header follows at once), and so does hoist, which reads the archive's entries as
/// GNU tar lists them.
#[test]
fn archives_are_read_as_gnu_tar_reads_them() {
    let t = tempfile::tempdir().unwrap();
    let (img, entries) = docker25_entries(t.path());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..6].copy_from_slice(b"blobs/");
    h.set_size(1024);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_cksum();
    let f = t.path().join("dirsize.tar");
    write_tar(
        &f,
        &[vec![h.as_bytes().to_vec()], regular(&entries)].concat(),
    );
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&f)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout).unwrap();
    for (name, _) in &entries {
        assert!(listed.lines().any(|l| l == name), "GNU tar lists {listed}");
    }
    let p = plan(&f.display().to_string()).unwrap();
    assert_eq!(p.config.digest, img.config);
    p.verify_sources().unwrap();
}

#[test]
fn docker_schema2_manifest_in_an_oci_layout() {
    // skopeo --format v2s2 writes a Docker schema 2 manifest (gzip layers) into an OCI layout
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let img = sample(&layout, &mixed_spec(23));
    let v2 = t.path().join("v2s2");
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        &format!("oci:{}", layout.display()),
        &format!("oci:{}", v2.display()),
    ]);
    for codec in [Codec::Gzip, Codec::Zstd] {
        let opts = PlanOptions {
            compression: codec,
            ..PlanOptions::default()
        };
        let p = plan_with(&format!("oci:{}", v2.display()), opts).unwrap();
        assert_eq!(p.family, media::Family::Docker2);
        assert_eq!(p.manifest_media_type, media::DOCKER_MANIFEST);
        assert_eq!(p.config.media_type, media::DOCKER_CONFIG);
        assert_eq!(p.config.digest, img.config);
        for (pl, sl) in p.layers.iter().zip(&img.layers) {
            assert_eq!(pl.diff_id, sl.diff_id);
            assert_eq!(pl.action, LayerAction::AsIs);
            assert_eq!(pl.media_type, media::DOCKER_LAYER_GZIP);
        }
        // nothing to compress: the source manifest goes as is, whatever the codec
        let m = p.source_manifest.as_ref().expect("pushed as is");
        assert!(String::from_utf8_lossy(&m.bytes).contains(media::DOCKER_MANIFEST));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        p.verify_sources().unwrap();
    }
}

/// An explicit split size splits gzip and zstd layers of an OCI archive and of a Docker 25+
/// archive: decompressed, cut into parts that are each their diff_id, recompressed; without a
/// directory to decompress into, such a layer is refused in one line.
#[test]
fn compressed_layers_of_archives_split_on_request() {
    use hoist::plan::{SplitPolicy, UnpackDir};
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let mut spec = mixed_spec(31);
    spec.layers = vec![
        LayerSpec::new(LayerContent::SmallFiles(5), SampleCompression::Gzip),
        LayerSpec::new(LayerContent::Tree(6 << 20), SampleCompression::Gzip),
        LayerSpec::new(LayerContent::Tree(5 << 20), SampleCompression::Zstd),
    ];
    let img = sample(&layout, &spec);
    let d25 = t.path().join("d25.tar");
    docker25_archive(&layout, &img, &d25, false);
    let oci_archive = t.path().join("layout.tar");
    tar_layout(&layout, &oci_archive);
    let unpack_dir = t.path().join("unpack");
    std::fs::create_dir_all(&unpack_dir).unwrap();
    let split = SplitPolicy::MaxBytes(1 << 20);
    for src in [
        format!("docker-archive:{}", d25.display()),
        format!("oci-archive:{}", oci_archive.display()),
    ] {
        let opts = PlanOptions {
            split,
            unpack: Some(UnpackDir {
                dir: unpack_dir.clone(),
                reserve_bytes: 0,
                keep: false,
            }),
            ..PlanOptions::default()
        };
        let p = plan_with(&src, opts).unwrap();
        assert_eq!((p.splits.len(), p.unpacked.len()), (2, 2), "{src}");
        let parts: Vec<_> = p.layers.iter().filter(|l| l.part.is_some()).collect();
        assert!(parts.len() >= 4, "{src}: {:?}", p.view());
        assert!(
            parts
                .iter()
                .all(|l| matches!(l.action, LayerAction::Compress { .. })
                    && l.media_type == media::OCI_LAYER_GZIP)
        );
        // The small layer stays as it is; no compressed blob of the split layers is pushed.
        assert_eq!(p.layers[0].source.digest, img.layers[0].digest);
        assert!(p.layers[1..].iter().all(|l| l.part.is_some()));
        assert_has(
            &p.warnings.join(" "),
            &["gzip blob", "zstd blob", "not pushed"],
        );
        // Every part reads back as its diff_id.
        p.verify_sources().unwrap();
        assert_eq!(std::fs::read_dir(&unpack_dir).unwrap().count(), 0);
        let refused = plan_with(
            &src,
            PlanOptions {
                split,
                ..PlanOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert_has(&refused, &["-compressed", "--split-layers auto or off"]);
        assert!(!refused.contains('\n'));
    }
}

#[test]
fn split_parts_upload_heaviest_first() {
    use hoist::plan::SplitPolicy;
    let t = tempfile::tempdir().unwrap();
    let mut spec = mixed_spec(33);
    spec.layers = vec![
        LayerSpec::new(LayerContent::SmallFiles(3), SampleCompression::None),
        LayerSpec::new(LayerContent::Tree(32 << 20), SampleCompression::None),
        LayerSpec::new(LayerContent::SmallFiles(4), SampleCompression::None),
    ];
    sample(t.path(), &spec);
    let opts = PlanOptions {
        split: SplitPolicy::MaxBytes(2 << 20),
        ..PlanOptions::default()
    };
    let p = plan_with(&format!("oci:{}", t.path().display()), opts).unwrap();
    let weight = |l: &hoist::plan::PlannedLayer| l.part.as_ref().map(|p| p.weight);
    let weights: Vec<u64> = p.layers.iter().filter_map(weight).collect();
    assert!(weights.len() >= 4, "{:?}", p.view());
    assert!(weights.iter().all(|&w| w > 0), "{weights:?}");
    let order = p.upload_order();
    assert_eq!(order.len(), p.layers.len());
    // The whole layers keep their places; the parts between them go heaviest first.
    assert_eq!(order[0].source.digest, p.layers[0].source.digest);
    assert_eq!(
        order.last().map(|l| &l.source.digest),
        p.layers.last().map(|l| &l.source.digest)
    );
    let ordered: Vec<u64> = order[1..=weights.len()]
        .iter()
        .map(|l| weight(l).expect("a part"))
        .collect();
    let mut heaviest_first = weights.clone();
    heaviest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ordered, heaviest_first);
    assert_ne!(
        weights, heaviest_first,
        "tar order already sorted: the test shows nothing"
    );
}
