//! CI smoke for the fuzz targets: replays every file of `fuzz/seeds/<target>/` and
//! `fuzz/corpus/<target>/` through the target's entry point in `hoist_testkit::fuzzing` (the
//! same function the fuzzer runs). Cheap and deterministic: it proves the kept corpus (seeds, everything the fuzzer found interesting,
//! and each former crash) still passes.
//!
//! `cargo test --test suite fuzz_corpus:: -- --ignored write_seeds` rewrites the hand-made seeds
//! (`fuzz/seeds/<target>/`, except the `regress-*` inputs of former findings) from
//! `hoist_testkit::sample`, skopeo and the header values of docs/ECR.md.

// The source tests' helpers: the same skopeo call and `docker save` archive entries.
#[allow(dead_code, unused_imports)]
use crate::sources::helpers;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use helpers::{add_bytes, docker25_head, skopeo};
use hoist::digest::Digest;
use hoist::platform::Platform;
use hoist_testkit::fuzzing::{self, PIECE_SEPARATOR};
use hoist_testkit::sample::{
    IndexSpec, LayerContent, LayerSpec, SampleCompression, SampleImage, SampleSpec,
    write_oci_layout,
};

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 4] = [
    ("index_tar", fuzzing::index_tar),
    ("plan_archive", fuzzing::plan_archive),
    ("parse_image", fuzzing::parse_image),
    ("parse_registry", fuzzing::parse_registry),
];

/// `fuzz/KIND/TARGET`: `seeds` (hand-made and regression inputs) or `corpus` (what the
/// fuzzer kept).
fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target)
}

fn replay(target: &str, entry: Entry) {
    for kind in ["seeds", "corpus"] {
        let dir = fuzz_dir(kind, target);
        let mut n = 0;
        for f in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = f.unwrap().path();
            let data = fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| entry(&data));
            assert!(r.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
        assert!(n > 0, "{target}: {} is empty", dir.display());
    }
}

#[test]
fn corpus_index_tar() {
    replay(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn corpus_plan_archive() {
    replay(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn corpus_parse_image() {
    replay(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn corpus_parse_registry() {
    replay(TARGETS[3].0, TARGETS[3].1);
}

// ---- seeds -------------------------------------------------------------------------------

fn tiny_spec(seed: u64, compression: SampleCompression) -> SampleSpec {
    SampleSpec {
        seed,
        platform: Platform::linux_amd64(),
        layers: vec![LayerSpec::new(LayerContent::SmallFiles(1), compression)],
        ref_name: Some("latest".into()),
        index: None,
        manifest_media_type: true,
    }
}

fn blob(layout: &Path, d: &Digest) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap()
}

/// A tar of the whole layout directory, as `tar -cf x.tar -C layout .` writes it.
fn tar_dir(dir: &Path, prefix: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(prefix, dir).unwrap();
    b.into_inner().unwrap()
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir("seeds", target);
    fs::create_dir_all(&dir).unwrap();
    fs::File::create(dir.join(name))
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, skopeo_archive) = write_archive_seeds(tmp.path());
    write_document_seeds(tmp.path(), &img, &skopeo_archive);
    for (name, v) in REGISTRY_SEEDS {
        write_seed("parse_registry", name, v.as_bytes());
    }
}

/// Archives: skopeo's docker-archive and oci-archive, a Docker 25+ save, a tar of a layout;
/// returns the layout they were made from and the path of skopeo's docker-archive.
fn write_archive_seeds(tmp: &Path) -> (SampleImage, PathBuf) {
    let layout = tmp.join("layout");
    let img = write_oci_layout(&layout, &tiny_spec(1, SampleCompression::None)).unwrap();
    let da = tmp.join("d.tar");
    let oa = tmp.join("o.tar");
    let layout_ref = format!("oci:{}:latest", layout.display());
    skopeo(&[
        "copy",
        &layout_ref,
        &format!("docker-archive:{}:sample:latest", da.display()),
    ]);
    skopeo(&[
        "copy",
        &layout_ref,
        &format!("oci-archive:{}:latest", oa.display()),
    ]);
    let mut archives = vec![
        ("skopeo-docker-archive", fs::read(&da).unwrap()),
        ("skopeo-oci-archive", fs::read(&oa).unwrap()),
        ("layout-dot", tar_dir(&layout, ".")),
    ];
    let gz = tmp.join("gz");
    let gimg = write_oci_layout(&gz, &tiny_spec(2, SampleCompression::Gzip)).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    docker25_head(&mut b, &gz, &gimg);
    for d in [&gimg.manifest, &gimg.config, &gimg.layers[0].digest] {
        add_bytes(&mut b, &format!("blobs/sha256/{}", d.hex()), &blob(&gz, d));
    }
    archives.push(("docker25-gzip", b.into_inner().unwrap()));
    for (name, bytes) in &archives {
        write_seed("index_tar", name, bytes);
        write_seed("plan_archive", name, bytes);
    }
    (img, da)
}

/// Documents: the single manifest of `img` with its config, a buildx index with its manifests,
/// a layout's `index.json`, and the `manifest.json` of skopeo's docker-archive `da`.
fn write_document_seeds(tmp: &Path, img: &SampleImage, da: &Path) {
    let sep = [PIECE_SEPARATOR];
    let layout = &img.dir;
    let single = [blob(layout, &img.manifest), blob(layout, &img.config)].join(&sep[..]);
    write_seed("parse_image", "single-manifest", &single);
    let multi = tmp.join("multi");
    let mut spec = tiny_spec(3, SampleCompression::Gzip);
    spec.index = Some(IndexSpec {
        extra_platforms: vec!["linux/arm64/v8".parse().unwrap()],
        attestation: true,
    });
    let mimg = write_oci_layout(&multi, &spec).unwrap();
    let mut pieces = vec![
        blob(&multi, mimg.index.as_ref().unwrap()),
        blob(&multi, &mimg.manifest),
        blob(&multi, &mimg.config),
    ];
    for (_, d) in &mimg.extra_manifests {
        pieces.push(blob(&multi, d));
    }
    if let Some(a) = &mimg.attestation {
        pieces.push(blob(&multi, a));
    }
    write_seed("parse_image", "buildx-index", &pieces.join(&sep[..]));
    let index_json = fs::read(multi.join("index.json")).unwrap();
    write_seed("parse_image", "layout-index-json", &index_json);
    let mut da_manifest = None;
    let mut ar = tar::Archive::new(fs::File::open(da).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            da_manifest = Some(v);
        }
    }
    write_seed("parse_image", "docker-manifest-json", &da_manifest.unwrap());
}

/// Registry answers, from docs/ECR.md and the distribution registry.
const REGISTRY_SEEDS: &[(&str, &str)] = &[
    (
        "ecr-basic",
        r#"Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com""#,
    ),
    (
        "bearer",
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
    ),
    (
        "bearer-escaped",
        r#"bearer realm="http://127.0.0.1:5001/token?a=\"b\"", service=reg, error="insufficient_scope""#,
    ),
    (
        "ecr-416",
        r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"First byte of the layer part is 0 instead of 11304960"}]}"#,
    ),
    (
        "ecr-416-message",
        "First byte of the layer part is 5242880 instead of 10485760",
    ),
    (
        "ecr-digest",
        r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"None of the provided layer digests match the calculated layer digest"}]}"#,
    ),
    (
        "ecr-name-unknown",
        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'app' does not exist in the registry with id '123456789012'"}]}"#,
    ),
    (
        "ecr-unsupported",
        r#"{"errors":[{"code":"UNSUPPORTED","message":"Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"}]}"#,
    ),
    (
        "distribution-detail",
        r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content","detail":{"Digest":"sha256:0"}}]}"#,
    ),
    (
        "ecr-denied",
        "denied: Your authorization token has expired. Reauthenticate and try again.",
    ),
    ("range", "0-11304959"),
    ("range-bytes", "bytes=0-5242879"),
    ("retry-after", "30"),
    (
        "location-ecr",
        "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/app/blobs/uploads/6f1b5c1e-0d9f-4b59-9a6c-2a1f0c1d2e3f",
    ),
    (
        "location-state",
        "/v2/a/b/blobs/uploads/0c2e9a?_state=c2VjcmV0&digest=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    ("location-evil", "http://evil:8080/v2/a/b/blobs/uploads/x"),
    ("location-file", "file:///etc/passwd"),
    (
        "location-userinfo",
        "https://AWS:secret@123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/app/blobs/uploads/x?X-Amz-Signature=abc",
    ),
];
