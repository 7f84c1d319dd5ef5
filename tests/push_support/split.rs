//! Split-layer tests' helpers: a crafted docker-archive whose big layer has every entry kind
//! the split rules care about, and the file system `umoci unpack` makes of an image, compared
//! entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use hoist::api::{self, SplitLayers};
use hoist::digest::Digest;
use hoist_testkit::testdata::random_bytes;

use crate::common;

/// The split size the tests push with; the crafted big layer makes several parts of it.
pub const SPLIT_TEST_BYTES: u64 = 1 << 20;

const KIB: usize = 1 << 10;

/// What a crafted entry is.
enum Kind<'a> {
    Dir,
    File(usize),
    Symlink(&'a str),
    HardLink(&'a str),
}

/// Appends one entry with the given mode, owner and mtime; file data is seeded by the path.
fn put(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: Kind<'_>,
    mode: u32,
    owner: u64,
    mtime: u64,
) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(mtime);
    h.set_size(0);
    match kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, format!("{path}/"), std::io::empty())
                .unwrap();
        }
        Kind::File(n) => {
            let seed = path.bytes().map(u64::from).sum::<u64>();
            let data = random_bytes(n, seed);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(n as u64);
            b.append_data(&mut h, path, data.as_slice()).unwrap();
        }
        Kind::Symlink(to) | Kind::HardLink(to) => {
            let t = if matches!(kind, Kind::Symlink(_)) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            };
            h.set_entry_type(t);
            b.append_link(&mut h, path, to).unwrap();
        }
    }
}

/// One crafted entry: path, kind, mode, owner (uid and gid), mtime.
type Spec<'a> = (&'a str, Kind<'a>, u32, u64, u64);

fn layer_of(entries: Vec<Spec<'_>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, owner, mtime) in entries {
        if path.starts_with("deep/pax") {
            // A PAX path record (the header keeps a short name).
            let long = format!("deep/{}", "p".repeat(120));
            b.append_pax_extensions([("path", long.as_bytes())])
                .unwrap();
        }
        put(&mut b, path, kind, mode, owner, mtime);
    }
    b.into_inner().unwrap()
}

/// The lower layer: what the big layer whites out and makes opaque.
fn lower_layer() -> Vec<u8> {
    layer_of(vec![
        ("lower", Kind::Dir, 0o755, 0, 1_000),
        ("lower/keep", Kind::File(KIB), 0o644, 0, 1_001),
        ("lower/gone", Kind::File(KIB), 0o644, 0, 1_002),
        ("opaque", Kind::Dir, 0o755, 0, 1_003),
        ("opaque/old", Kind::File(KIB), 0o644, 0, 1_004),
    ])
}

/// The big layer: about 4.5 MiB, a setuid file, setgid and 0700 directories, a whiteout in
/// the middle, hard links far from their target, symlinks, a GNU long name and a PAX path,
/// a file larger than the split size, and the opaque marker last (its directory has files
/// in the first part and the last).
fn big_layer() -> Vec<u8> {
    let gnu_long = format!("deep/{}", "n".repeat(110));
    let fill: Vec<String> = (0..4).map(|i| format!("fill/{i}")).collect();
    let mut entries: Vec<Spec<'_>> = vec![
        ("bin", Kind::Dir, 0o755, 0, 2_000),
        ("bin/tool", Kind::File(400 * KIB), 0o4755, 0, 2_001),
        ("opaque", Kind::Dir, 0o750, 0, 2_018),
        ("opaque/early", Kind::File(30 * KIB), 0o644, 0, 2_019),
        ("links", Kind::Dir, 0o755, 0, 2_002),
        ("links/orig", Kind::File(200 * KIB), 0o644, 0, 2_003),
        ("lower", Kind::Dir, 0o755, 0, 2_004),
        ("lower/.wh.gone", Kind::File(0), 0o644, 0, 2_005),
        ("setgid", Kind::Dir, 0o2775, 1000, 2_006),
        ("setgid/a", Kind::File(700 * KIB), 0o664, 1000, 2_007),
        ("big", Kind::File(1536 * KIB), 0o644, 0, 2_008),
        ("secret", Kind::Dir, 0o700, 1000, 2_009),
        ("secret/key", Kind::File(300 * KIB), 0o600, 1000, 2_010),
        ("deep", Kind::Dir, 0o755, 0, 2_011),
        (&gnu_long, Kind::File(100 * KIB), 0o644, 0, 2_012),
        ("deep/pax-short-name", Kind::File(90 * KIB), 0o640, 0, 2_013),
        ("links/sym", Kind::Symlink("../setgid/a"), 0o777, 0, 2_014),
        ("links/abs", Kind::Symlink("/bin/tool"), 0o777, 0, 2_015),
        ("fill", Kind::Dir, 0o755, 0, 2_016),
    ];
    entries.extend(
        fill.iter()
            .map(|f| (f.as_str(), Kind::File(300 * KIB), 0o644, 0, 2_017)),
    );
    entries.extend([
        ("links/far", Kind::HardLink("links/orig"), 0o644, 0, 2_003),
        ("links/far2", Kind::HardLink("links/orig"), 0o644, 0, 2_003),
        ("opaque/new", Kind::File(50 * KIB), 0o644, 0, 2_019),
        ("opaque/.wh..wh..opq", Kind::File(0), 0o644, 0, 2_020),
    ]);
    layer_of(entries)
}

/// The crafted image's config for layers of these diff_ids.
fn crafted_config(diff_ids: &[Digest]) -> Vec<u8> {
    let diff_ids: Vec<String> = diff_ids.iter().map(Digest::to_string).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD lower /"},
            {"created": "2024-01-01T00:00:01Z", "created_by": "ENV A=b", "empty_layer": true},
            {"created": "2024-01-01T00:00:02Z", "created_by": "RUN make big"}
        ]
    });
    serde_json::to_vec(&config).unwrap()
}

/// A docker-archive (`dir/crafted.tar`, as `docker save` lays it out) of the lower and the big
/// layer; returns its source reference and its config digest.
pub fn crafted_archive(dir: &Path) -> (String, Digest) {
    let layers = [lower_layer(), big_layer()];
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
    let config = crafted_config(&diff_ids);
    let path = dir.join("crafted.tar");
    let source = docker_archive(&path, &config, &layers);
    (source, Digest::sha256_of(&config))
}

/// A docker-archive at `path` (as `docker save` lays it out) of `config` and `layers`;
/// returns its source reference.
pub fn docker_archive(path: &Path, config: &[u8], layers: &[Vec<u8>]) -> String {
    let config_name = format!("{}.json", Digest::sha256_of(config).hex());
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["hoist/split:1"],
        "Layers": names,
    }]);
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        out.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, config);
    for (name, layer) in names.iter().zip(layers) {
        add(name, layer);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out.into_inner().unwrap())
        .unwrap();
    format!("docker-archive:{}", path.display())
}

/// A docker-archive at `path` of one layer, with a minimal linux/amd64 config.
pub fn one_layer_archive(path: &Path, layer: &[u8]) -> String {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(layer).to_string()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD layer /"}]
    });
    docker_archive(
        path,
        &serde_json::to_vec(&config).unwrap(),
        &[layer.to_vec()],
    )
}

/// The tag of the crafted OCI layout's image (`DIR:TAG` for umoci).
pub const CRAFTED_OCI_TAG: &str = "src";

/// An OCI layout (`dir`, image tagged [`CRAFTED_OCI_TAG`]) of the lower and the big layer,
/// both gzip-compressed; with `wrong_diff_id` the config names another diff_id for the big
/// one. Returns its source reference and the big layer's compressed digest.
pub fn crafted_oci_gzip(dir: &Path, wrong_diff_id: bool) -> (String, Digest) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8], media_type: &str| {
        let digest = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()})
    };
    let layers = [lower_layer(), big_layer()];
    let mut diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
    if wrong_diff_id {
        diff_ids[1] = Digest::sha256_of(b"not the big layer");
    }
    let gzipped: Vec<Vec<u8>> = layers
        .iter()
        .map(|l| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(l).unwrap();
            gz.finish().unwrap()
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(&crafted_config(&diff_ids), "application/vnd.oci.image.config.v1+json"),
        "layers": gzipped
            .iter()
            .map(|l| put(l, "application/vnd.oci.image.layer.v1.tar+gzip"))
            .collect::<Vec<_>>(),
    });
    let mut descriptor = put(
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    descriptor["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": CRAFTED_OCI_TAG});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [descriptor]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let big = Digest::sha256_of(&gzipped[1]);
    (format!("oci:{}", dir.display()), big)
}

/// A push request of `source` with `split`, as the tests send it.
pub fn split_request(source: &str, target: &str, split: SplitLayers) -> api::SubmitRequest {
    api::SubmitRequest {
        split_layers: Some(split),
        ..super::request(source, target, api::Compression::Gzip)
    }
}

/// One entry of an unpacked file system, as the comparison sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Option<Digest>,
    link: Option<String>,
}

/// An unpacked file system: every entry under the root, and the hard-link groups.
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub link_groups: BTreeSet<Vec<String>>,
}

/// Every entry under `dir` into `tree`, keyed by its path under the root with bytes that are
/// not printable ASCII escaped (names that differ in a byte that is not UTF-8 stay apart).
fn walk(dir: &Path, key: &str, tree: &mut Tree, inodes: &mut BTreeMap<(u64, u64), Vec<String>>) {
    use std::os::unix::ffi::OsStrExt as _;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let shown = name.as_bytes().escape_ascii().to_string();
        let path = if key.is_empty() {
            shown
        } else {
            format!("{key}/{shown}")
        };
        let full = dir.join(&name);
        let m = std::fs::symlink_metadata(&full).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        if !ft.is_dir() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(path.clone());
        }
        tree.nodes.insert(
            path.clone(),
            Node {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                content: ft
                    .is_file()
                    .then(|| Digest::sha256_of(&std::fs::read(&full).unwrap())),
                link: ft.is_symlink().then(|| {
                    let to = std::fs::read_link(&full).unwrap();
                    to.as_os_str().as_bytes().escape_ascii().to_string()
                }),
            },
        );
        if ft.is_dir() {
            walk(&full, &path, tree, inodes);
        }
    }
}

/// The file system under `root` as a [`Tree`].
pub fn tree_of(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes = BTreeMap::new();
    walk(root, "", &mut tree, &mut inodes);
    tree.link_groups = inodes
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    tree
}

/// `umoci unpack` of `image` (`DIR:TAG`, an OCI layout) into `bundle`, then its root file
/// system as a [`Tree`].
pub fn unpacked(image: &str, bundle: &Path) -> Tree {
    try_unpacked(image, bundle).unwrap_or_else(|e| panic!("{e}"))
}

/// [`unpacked`], or umoci's error when it cannot unpack the image.
pub fn try_unpacked(image: &str, bundle: &Path) -> Result<Tree, String> {
    common::require_tool("umoci");
    let mut cmd = std::process::Command::new("umoci");
    cmd.arg("unpack");
    if !rustix::process::getuid().is_root() {
        cmd.arg("--rootless");
    }
    cmd.args(["--image", image]).arg(bundle);
    let out = cmd.output().expect("run umoci");
    if !out.status.success() {
        return Err(format!(
            "umoci unpack {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(tree_of(&bundle.join("rootfs")))
}

/// Every difference between two trees, one line each.
pub fn differences(want: &Tree, got: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in &want.nodes {
        match got.nodes.get(path) {
            None => out.push(format!("{path}: missing")),
            Some(g) if g != w => out.push(format!("{path}: {w:?} became {g:?}")),
            Some(_) => {}
        }
    }
    for path in got.nodes.keys().filter(|p| !want.nodes.contains_key(*p)) {
        out.push(format!("{path}: not in the source"));
    }
    if want.link_groups != got.link_groups {
        out.push(format!(
            "hard links {:?} became {:?}",
            want.link_groups, got.link_groups
        ));
    }
    out
}

/// The pushed config lists every layer (each part) in `rootfs.diff_ids` and has one non-empty
/// history entry per layer, the parts after the first saying which part they are.
pub fn check_split_config(host: &str, reference: &str) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&common::skopeo_raw_manifest(host, reference)).unwrap();
    let layers = manifest["layers"].as_array().unwrap().len();
    let config: serde_json::Value = serde_json::from_slice(
        &common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--config",
            "--raw",
            &format!("docker://{host}/{reference}"),
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers
    );
    let history = config["history"].as_array().unwrap();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(non_empty, layers);
    assert_eq!(history[2]["created_by"], "RUN make big");
    assert!(
        history[3]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("hoist --split-layers: part 2 of"),
        "{history:?}"
    );
}
