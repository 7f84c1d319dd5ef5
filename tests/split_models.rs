//! The applier models of `hoist_testkit::apply` held against the real appliers they model:
//! generated cases (a lower layer and a layer of every oddity) as images, unpacked by umoci
//! (the one-tree model) and applied by a private containerd's overlayfs snapshotter (the
//! overlay model). A split check is only as good as these models.

use std::io::Write as _;
use std::path::Path;

use hoist::digest::Digest;
use hoist_testkit::apply::{self, NodeKind, Tree};
use hoist_testkit::layergen;

use crate::push_support::containerd::Containerd;
use crate::push_support::split::try_unpacked;

/// Generated cases checked against each real applier: a few seconds of umoci and containerd.
const CASES: usize = 30;

/// An OCI image layout at `dir` of `layers` (uncompressed), tagged `tag`, and the same as an
/// archive (`dir.tar`) for `ctr images import` under the name `name`.
fn oci_image(dir: &Path, layers: &[Vec<u8>], tag: &str, name: &str) {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |bytes: Vec<u8>, media_type: &str| {
        let digest = Digest::sha256_of(&bytes);
        let d = serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()});
        files.push((format!("blobs/sha256/{}", digest.hex()), bytes));
        d
    };
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::sha256_of(l).to_string())
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(serde_json::to_vec(&config).unwrap(), "application/vnd.oci.image.config.v1+json"),
        "layers": layers.iter().map(|l| put(l.clone(), "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    });
    let mut desc = put(
        serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    desc["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": tag,
        "io.containerd.image.name": name,
    });
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    let mut archive = tar::Builder::new(Vec::new());
    for (name, bytes) in &files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        archive.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    std::fs::File::create(dir.with_extension("tar"))
        .unwrap()
        .write_all(&archive.into_inner().unwrap())
        .unwrap();
}

/// `real` and `model` with what a real applier cannot keep or the model does not know left
/// out: the mtime of a directory the applier made itself (the model's `None`), a symlink's
/// mode (Linux has none) and mtime.
fn comparable(model: &Tree, real: &Tree) -> (Tree, Tree) {
    let (mut m, mut r) = (model.clone(), real.clone());
    for (path, node) in m.nodes.iter_mut() {
        let Some(other) = r.nodes.get_mut(path) else {
            continue;
        };
        if node.mtime.is_none() {
            other.mtime = None;
        }
        if node.kind == NodeKind::Symlink && other.kind == NodeKind::Symlink {
            (node.mode, other.mode, node.mtime, other.mtime) = (0, 0, None, None);
        }
    }
    (m, r)
}

/// A model's tree, or why the layer fails under it.
type Modelled = Result<Tree, String>;

/// The first `CASES` generated cases from `base` that both models can judge (no "not
/// modelled" failure), with what each model says.
fn cases(base: u64) -> Vec<(u64, Vec<Vec<u8>>, Modelled, Modelled)> {
    let mut out = Vec::new();
    for seed in base.. {
        let case = layergen::random_case(seed);
        let tars = vec![layergen::render(&case.lower), layergen::render(&case.layer)];
        let entries: Result<Vec<_>, _> = tars.iter().map(|t| apply::read_tar(t)).collect();
        let Ok(entries) = entries else { continue };
        let (o, t) = (apply::overlay(&entries), apply::one_tree(&entries));
        let unmodelled = |r: &Modelled| r.as_ref().is_err_and(|e| e.contains("not modelled"));
        if !unmodelled(&o) && !unmodelled(&t) {
            out.push((seed, tars, o, t));
        }
        if out.len() == CASES {
            break;
        }
    }
    out
}

/// What differs between a model's verdict and a real applier's.
fn judged(model: Modelled, real: Result<Tree, String>) -> Option<String> {
    match (model, real) {
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => Some(format!("the model applies it, the applier fails: {e}")),
        (Err(e), Ok(_)) => Some(format!("the applier applies it, the model fails: {e}")),
        (Ok(m), Ok(r)) => {
            let (m, r) = comparable(&m, &r);
            let d = apply::differences(&m, &r);
            (!d.is_empty()).then(|| d[..d.len().min(3)].join("; "))
        }
    }
}

#[test]
fn the_applier_models_agree_with_umoci_and_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(&dir.path().join("containerd"));
    let base = std::env::var("HOIST_SPLIT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut failed = Vec::new();
    let (mut ok, mut fails) = (0, 0);
    for (seed, tars, overlay, one_tree) in cases(base) {
        ok += usize::from(overlay.is_ok()) + usize::from(one_tree.is_ok());
        fails += usize::from(overlay.is_err()) + usize::from(one_tree.is_err());
        let image = dir.path().join(format!("c{seed}"));
        let name = format!("docker.io/hoist/case:{seed}");
        oci_image(&image, &tars, "case", &name);
        let bundle = dir.path().join(format!("b{seed}"));
        let umoci = try_unpacked(&format!("{}:case", image.display()), &bundle)
            .and_then(|_| apply::read_dir_tree(&bundle.join("rootfs")).map_err(|e| e.to_string()));
        let archive = image.with_extension("tar");
        let at = dir.path().join(format!("m{seed}"));
        let ctd = containerd
            .ctr(&["images", "import", archive.to_str().unwrap()])
            .and_then(|()| containerd.mounted(&name, &at, apply::read_dir_tree))
            .and_then(|r| r.map_err(|e| e.to_string()));
        for (applier, model, real) in [("umoci", one_tree, umoci), ("containerd", overlay, ctd)] {
            if let Some(d) = judged(model, real) {
                failed.push(format!("seed {seed}, {applier}: {d}"));
            }
        }
    }
    eprintln!("models against appliers: {ok} trees and {fails} failures compared");
    assert!(
        failed.is_empty(),
        "the models differ from the real appliers:\n{}",
        failed.join("\n")
    );
}
