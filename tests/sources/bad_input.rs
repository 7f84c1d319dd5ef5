//! Bad input: each is a typed error with a one-line message naming the file and the problem.

use super::helpers::*;

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
        &[
            "has 128 layers, over ECR's limit of 127",
            "squash the image",
        ],
    );
    // A registry that takes more layers plans them.
    let opts = PlanOptions {
        limits: hoist::limits::RegistryLimits {
            layers_per_image_max: 128,
            ..hoist::limits::ECR_LIMITS
        },
        ..PlanOptions::default()
    };
    let p = plan_with(&src, opts).unwrap();
    assert_eq!(p.layers.len(), 128);
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
        &err(&format!("docker-archive:{}", d.display())),
        &[
            "emptydir: not a tar archive (it is a directory; name an OCI layout directory as oci:DIR)",
        ],
    );
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
