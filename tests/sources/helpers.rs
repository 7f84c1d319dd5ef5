//! Helpers shared by the source tests: planning shortcuts, tools, archives built by hand.

pub use std::fs;
pub use std::io::Write;
pub use std::path::{Path, PathBuf};
pub use std::process::Command;

pub use hoist::digest::Digest;
pub use hoist::image::media;
pub use hoist::plan::{Codec, CompressedLayer, LayerAction, PlanError, PlanOptions, PushPlan};
pub use hoist::platform::Platform;
pub use hoist::source::{SourceRef, TarIndex};
pub use hoist_testkit::sample::{
    IndexSpec, LayerContent, LayerSpec, SampleCompression, SampleImage, SampleSpec,
    write_oci_layout,
};
pub use serde_json::{Value, json};

use hoist_testkit::tools::run_ok;

pub fn plan(src: &str) -> Result<PushPlan, PlanError> {
    plan_with(src, PlanOptions::default())
}

pub fn plan_with(src: &str, opts: PlanOptions) -> Result<PushPlan, PlanError> {
    let r: SourceRef = src.parse()?;
    PushPlan::new(&r, &opts)
}

pub fn err(src: &str) -> String {
    match plan(src) {
        Ok(_) => panic!("{src}: planned, expected an error"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "message is not one line: {s}");
            s
        }
    }
}

pub fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not contain {p:?}");
    }
}

pub fn arm64() -> Platform {
    "linux/arm64".parse().unwrap()
}

pub fn mixed_spec(seed: u64) -> SampleSpec {
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

pub fn sample(dir: &Path, spec: &SampleSpec) -> SampleImage {
    write_oci_layout(dir, spec).unwrap()
}

pub fn skopeo(args: &[&str]) {
    run_ok(
        Command::new("skopeo").arg("--insecure-policy").args(args),
        &format!("skopeo {args:?}"),
    );
}

pub fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().name()).join(d.hex())
}

/// The layer checks common to every source of `img`: digests, sizes, actions, verification.
pub fn check_plan_matches(p: &PushPlan, img: &SampleImage) {
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

/// skopeo 1.9 gzips uncompressed layers on the way into an OCI layout or archive: same
/// diff_ids, every layer as is, and the source manifest pushed unchanged.
pub fn check_skopeo_oci(p: &PushPlan, img: &SampleImage) {
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

/// `tar -cf out -C layout .`: an OCI archive of the layout.
pub fn tar_layout(layout: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(layout)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// Builds a Docker 25+ `docker save` archive from a layout: the OCI layout plus manifest.json.
pub fn docker25_archive(layout: &Path, img: &SampleImage, out: &Path, largest_last: bool) {
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
    docker25_head(&mut b, layout, img);
    for p in names {
        let name = format!("blobs/sha256/{}", p.file_name().unwrap().to_str().unwrap());
        b.append_path_with_name(&p, name).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// The `manifest.json` of a `docker save` archive of `img`: its config, the tag
/// `sample:latest`, and its layers, each at `blobs/sha256/HEX`.
pub fn docker_save_manifest(img: &SampleImage) -> Value {
    json!([{
        "Config": format!("blobs/sha256/{}", img.config.hex()),
        "RepoTags": ["sample:latest"],
        "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
    }])
}

/// The first entries of a Docker 25+ `docker save` archive of `img` written as an OCI layout
/// at `layout`: manifest.json, then the layout's oci-layout and index.json. The blobs follow.
pub fn docker25_head<W: Write>(b: &mut tar::Builder<W>, layout: &Path, img: &SampleImage) {
    let manifest = docker_save_manifest(img);
    add_bytes(b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add_bytes(
        b,
        "oci-layout",
        &fs::read(layout.join("oci-layout")).unwrap(),
    );
    add_bytes(
        b,
        "index.json",
        &fs::read(layout.join("index.json")).unwrap(),
    );
}

pub fn add_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, bytes).unwrap();
}

/// Replaces the image manifest of a single-manifest sample layout, returning the new digest.
pub fn rewrite_manifest(dir: &Path, img: &SampleImage, f: impl FnOnce(&mut Value)) -> Digest {
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

/// A tar header with a raw name (tar::Builder refuses unsafe names, which is the point).
pub fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
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

pub fn write_tar(path: &Path, entries: &[Vec<u8>]) {
    let mut bytes: Vec<u8> = entries.concat();
    bytes.extend_from_slice(&[0u8; 1024]);
    fs::write(path, bytes).unwrap();
}

/// A small valid Docker 25+ archive's entries, for tampering: (name, bytes).
pub fn docker25_entries(dir: &Path) -> (SampleImage, Vec<(String, Vec<u8>)>) {
    let layout = dir.join("layout");
    let mut spec = mixed_spec(16);
    spec.layers.truncate(1);
    let img = sample(&layout, &spec);
    let manifest = docker_save_manifest(&img);
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

pub fn regular(entries: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .map(|(n, b)| raw_entry(n, tar::EntryType::Regular, b, None))
        .collect()
}
