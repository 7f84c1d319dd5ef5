//! Deterministic sample images for tests, the demo and benchmarks.
//!
//! [`write_oci_layout`] writes an OCI image layout directory from a [`SampleSpec`]: the same
//! spec (seed included) always gives the same bytes and digests. Layers are real tar streams
//! (written with `tar::Builder`) holding files of generated content, so other tools (skopeo)
//! accept them. Layer content is generated while it is written, so layers of hundreds of MB
//! never sit in memory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use hoist::digest::{Algorithm, Digest, Hasher};
use hoist::image::media;
use hoist::platform::Platform;

use crate::testdata::SplitMix64;

/// Modification time written into every tar header (fixed, for reproducible layers).
const SAMPLE_MTIME: u64 = 1_700_000_000;

/// The share of a [`LayerContent::Tree`]'s files that hold random (incompressible) data.
pub const TREE_RANDOM_PERCENT: u64 = 30;
/// File sizes of a [`LayerContent::Tree`] (log-uniform between the two).
const TREE_FILE_BYTES_MIN: u64 = 4 << 10;
const TREE_FILE_BYTES_MAX: u64 = 32 << 20;
/// Files per directory of a [`LayerContent::Tree`].
const TREE_FILES_PER_DIR: usize = 16;

/// What a layer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerContent {
    /// One file of `n` pseudo-random (incompressible) bytes.
    Random(u64),
    /// One file of `n` bytes of text-like, compressible content.
    Text(u64),
    /// `n` small text files (a few hundred bytes each).
    SmallFiles(usize),
    /// A tree of files totalling `n` bytes, like an application or ML image's big layer:
    /// directories of files from 4 KiB to 32 MiB (log-uniform sizes), about
    /// [`TREE_RANDOM_PERCENT`] % of them random (compiled code, weights), the rest text-like,
    /// so the layer compresses (gzip) to about 60 % of its size: neither trivially nor not at all.
    Tree(u64),
    /// `count` small ELF executables whose header says `e_machine` = `machine`
    /// (0x3e x86-64, 0xb7 aarch64, ...), for the ELF census.
    Elf { machine: u16, count: usize },
    /// Copies of files from this machine (e.g. real binaries), as `usr/bin/<file name>`.
    HostFiles(Vec<PathBuf>),
}

/// How a sample layer blob is stored in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleCompression {
    /// `application/vnd.oci.image.layer.v1.tar`
    #[default]
    None,
    /// `...tar+gzip`
    Gzip,
    /// `...tar+zstd`
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    pub content: LayerContent,
    pub compression: SampleCompression,
}

impl LayerSpec {
    pub fn new(content: LayerContent, compression: SampleCompression) -> Self {
        LayerSpec {
            content,
            compression,
        }
    }
}

/// Wrap the image in an image index, like `docker buildx` does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSpec {
    /// Other platforms in the index (each a small one-layer image).
    pub extra_platforms: Vec<Platform>,
    /// Add a buildx-style provenance attestation manifest (`unknown/unknown`).
    pub attestation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    pub seed: u64,
    pub platform: Platform,
    pub layers: Vec<LayerSpec>,
    /// `org.opencontainers.image.ref.name` of the `index.json` entry.
    pub ref_name: Option<String>,
    /// `None`: `index.json` points straight at the image manifest.
    pub index: Option<IndexSpec>,
    /// Whether the image manifest carries a top-level `mediaType` (it should; some old
    /// tools omit it).
    pub manifest_media_type: bool,
}

impl SampleSpec {
    /// A small linux/amd64 image: a few files, about 1 MiB of text and 256 KiB of random bytes,
    /// uncompressed layers.
    pub fn small(seed: u64) -> Self {
        SampleSpec {
            seed,
            platform: Platform::linux_amd64(),
            layers: vec![
                LayerSpec::new(LayerContent::SmallFiles(8), SampleCompression::None),
                LayerSpec::new(LayerContent::Text(1 << 20), SampleCompression::None),
                LayerSpec::new(LayerContent::Random(256 << 10), SampleCompression::None),
            ],
            ref_name: Some("latest".into()),
            index: None,
            manifest_media_type: true,
        }
    }
}

/// A layer as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// What [`write_oci_layout`] wrote.
#[derive(Debug, Clone)]
pub struct SampleImage {
    pub dir: PathBuf,
    /// The image manifest for `spec.platform`.
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub config_size: u64,
    pub layers: Vec<SampleLayer>,
    /// The image index, when the spec asked for one.
    pub index: Option<Digest>,
    /// Manifests of the extra platforms.
    pub extra_manifests: Vec<(Platform, Digest)>,
    /// The attestation manifest, when asked for.
    pub attestation: Option<Digest>,
}

const WORDS: &[&str] = &[
    "layer",
    "image",
    "registry",
    "push",
    "manifest",
    "digest",
    "tar",
    "blob",
    "config",
    "amd64",
    "linux",
    "the",
    "a",
    "of",
    "and",
    "container",
    "resume",
    "upload",
    "chunk",
    "gzip",
    "zstd",
    "index",
    "platform",
    "ecr",
    "hoist",
    "daemon",
    "socket",
    "sqlite",
    "verify",
    "offset",
];

/// Generates `remaining` bytes of random or text content.
struct Generator {
    rng: SplitMix64,
    remaining: u64,
    text: bool,
    pending: Vec<u8>,
    pos: usize,
}

impl Generator {
    fn new(seed: u64, len: u64, text: bool) -> Self {
        Generator {
            rng: SplitMix64(seed),
            remaining: len,
            text,
            pending: Vec::with_capacity(8192),
            pos: 0,
        }
    }

    fn refill(&mut self) {
        self.pending.clear();
        self.pos = 0;
        if self.text {
            while self.pending.len() < 4096 {
                let r = self.rng.next_u64();
                let word = WORDS[(r % WORDS.len() as u64) as usize];
                self.pending.extend_from_slice(word.as_bytes());
                self.pending.push(if (r >> 32).is_multiple_of(12) {
                    b'\n'
                } else {
                    b' '
                });
            }
        } else {
            for _ in 0..512 {
                self.pending
                    .extend_from_slice(&self.rng.next_u64().to_le_bytes());
            }
        }
    }
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.remaining > 0 {
            if self.pos >= self.pending.len() {
                self.refill();
            }
            let take = (buf.len() - n)
                .min(self.pending.len() - self.pos)
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            buf[n..n + take].copy_from_slice(&self.pending[self.pos..self.pos + take]);
            self.pos += take;
            n += take;
            self.remaining -= take as u64;
        }
        Ok(n)
    }
}

/// Counts and hashes what passes through.
struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Layout {
    blobs: PathBuf,
    tmp_counter: u64,
}

impl Layout {
    fn tmp(&mut self) -> PathBuf {
        self.tmp_counter += 1;
        self.blobs.join(format!(".tmp-{}", self.tmp_counter))
    }

    fn put_bytes(&mut self, bytes: &[u8]) -> io::Result<(Digest, u64)> {
        let digest = Digest::sha256_of(bytes);
        fs::write(self.blobs.join(digest.hex()), bytes)?;
        Ok((digest, bytes.len() as u64))
    }

    fn put_json(&mut self, value: &serde_json::Value) -> io::Result<(Digest, u64)> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.put_bytes(&bytes)
    }

    fn finish_tmp(&mut self, tmp: &Path, digest: &Digest) -> io::Result<()> {
        fs::rename(tmp, self.blobs.join(digest.hex()))
    }

    /// Writes one layer, streaming: tar -> (hash diff_id) -> [compress] -> (hash digest) -> file.
    fn put_layer(&mut self, seed: u64, index: usize, spec: &LayerSpec) -> io::Result<SampleLayer> {
        let tmp = self.tmp();
        let file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let outer = HashWriter::new(file);
        let (digest, size, diff_id, uncompressed_size) = match spec.compression {
            SampleCompression::None => {
                let w = write_tar(HashWriter::new(outer), seed, index, &spec.content)?;
                let inner = w.inner;
                let mut file = inner.inner;
                file.flush()?;
                let d = w.hasher.finish();
                (d.clone(), w.count, d, inner.count)
            }
            SampleCompression::Gzip => {
                let gz = flate2::write::GzEncoder::new(outer, flate2::Compression::fast());
                let w = write_tar(HashWriter::new(gz), seed, index, &spec.content)?;
                let (diff_id, usize_) = (w.hasher.finish(), w.count);
                let mut outer = w.inner.finish()?;
                outer.flush()?;
                (outer.hasher.finish(), outer.count, diff_id, usize_)
            }
            SampleCompression::Zstd => {
                let z = zstd::stream::write::Encoder::new(outer, 3)?;
                let w = write_tar(HashWriter::new(z), seed, index, &spec.content)?;
                let (diff_id, usize_) = (w.hasher.finish(), w.count);
                let mut outer = w.inner.finish()?;
                outer.flush()?;
                (outer.hasher.finish(), outer.count, diff_id, usize_)
            }
        };
        self.finish_tmp(&tmp, &digest)?;
        let media_type = match spec.compression {
            SampleCompression::None => media::OCI_LAYER_TAR,
            SampleCompression::Gzip => media::OCI_LAYER_GZIP,
            SampleCompression::Zstd => media::OCI_LAYER_ZSTD,
        };
        Ok(SampleLayer {
            digest,
            size,
            media_type: media_type.to_string(),
            diff_id,
            uncompressed_size,
        })
    }
}

fn tar_header(path: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(SAMPLE_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes a tar stream into `w` and returns the writer (the tar end blocks written).
fn write_tar<W: Write>(w: W, seed: u64, index: usize, content: &LayerContent) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    let seed = seed ^ (index as u64).wrapping_mul(0x1000_0000_01b3);
    match content {
        LayerContent::Random(n) => {
            let h = tar_header(&format!("data/layer-{index}.bin"), *n)?;
            b.append(&h, Generator::new(seed, *n, false))?;
        }
        LayerContent::Text(n) => {
            let h = tar_header(&format!("data/layer-{index}.txt"), *n)?;
            b.append(&h, Generator::new(seed, *n, true))?;
        }
        LayerContent::SmallFiles(count) => {
            let mut rng = SplitMix64(seed);
            for j in 0..*count {
                let n = 64 + rng.next_u64() % 512;
                let h = tar_header(&format!("files/{index}/file-{j}.txt"), n)?;
                b.append(&h, Generator::new(rng.next_u64(), n, true))?;
            }
        }
        LayerContent::Tree(n) => write_tree(&mut b, seed, index, *n)?,
        LayerContent::HostFiles(paths) => {
            for path in paths {
                let data = fs::read(path)?;
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
                let mut h = tar_header(&format!("usr/bin/{name}"), data.len() as u64)?;
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, data.as_slice())?;
            }
        }
        LayerContent::Elf { machine, count } => {
            for j in 0..*count {
                let elf = elf_file(*machine, seed ^ j as u64);
                let mut h = tar_header(&format!("usr/bin/tool-{index}-{j}"), elf.len() as u64)?;
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, elf.as_slice())?;
            }
        }
    }
    b.into_inner()
}

/// The files of a [`LayerContent::Tree`] of `total` bytes, each directory's entry before its
/// files (as `docker build` writes them).
fn write_tree<W: Write>(
    b: &mut tar::Builder<W>,
    seed: u64,
    index: usize,
    total: u64,
) -> io::Result<()> {
    let mut rng = SplitMix64(seed);
    let (log_min, log_max) = (
        (TREE_FILE_BYTES_MIN as f64).ln(),
        (TREE_FILE_BYTES_MAX as f64).ln(),
    );
    let mut left = total;
    let mut j = 0usize;
    while left > 0 {
        let dir = format!("tree/{index}/pkg-{}", j / TREE_FILES_PER_DIR);
        if j.is_multiple_of(TREE_FILES_PER_DIR) {
            let mut h = tar_header(&format!("{dir}/"), 0)?;
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_cksum();
            b.append(&h, io::empty())?;
        }
        let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let size = ((log_min + unit * (log_max - log_min)).exp() as u64).min(left);
        let text = rng.next_u64() % 100 >= TREE_RANDOM_PERCENT;
        let name = format!("{dir}/file-{j}.{}", if text { "txt" } else { "bin" });
        b.append(
            &tar_header(&name, size)?,
            Generator::new(rng.next_u64(), size, text),
        )?;
        left -= size;
        j += 1;
    }
    Ok(())
}

/// A minimal 64-bit little-endian ELF executable header for `machine`, padded with bytes
/// that make each file distinct.
fn elf_file(machine: u16, seed: u64) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    f[16] = 2; // ET_EXEC
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f.extend_from_slice(&seed.to_le_bytes());
    f
}

fn platform_json(p: &Platform) -> serde_json::Value {
    let mut v = json!({"architecture": p.architecture, "os": p.os});
    if let (Some(variant), Some(map)) = (&p.variant, v.as_object_mut()) {
        map.insert("variant".into(), json!(variant));
    }
    v
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

struct WrittenImage {
    manifest: Digest,
    manifest_size: u64,
    config: Digest,
    config_size: u64,
    layers: Vec<SampleLayer>,
}

fn write_image(
    layout: &mut Layout,
    seed: u64,
    platform: &Platform,
    layers: &[LayerSpec],
    manifest_media_type: bool,
) -> io::Result<WrittenImage> {
    let mut written = Vec::with_capacity(layers.len());
    for (i, spec) in layers.iter().enumerate() {
        written.push(layout.put_layer(seed, i, spec)?);
    }
    let mut config = platform_json(platform);
    if let Some(map) = config.as_object_mut() {
        map.insert("created".into(), json!("2023-11-14T22:13:20Z"));
        map.insert(
            "config".into(),
            json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]}),
        );
        map.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": written.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()}),
        );
        map.insert(
            "history".into(),
            json!(
                written
                    .iter()
                    .map(|_| json!({"created_by": "hoist sample"}))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let (config_digest, config_size) = layout.put_json(&config)?;
    let mut manifest = serde_json::Map::new();
    manifest.insert("schemaVersion".into(), json!(2));
    if manifest_media_type {
        manifest.insert("mediaType".into(), json!(media::OCI_MANIFEST));
    }
    manifest.insert(
        "config".into(),
        descriptor(media::OCI_CONFIG, &config_digest, config_size),
    );
    manifest.insert(
        "layers".into(),
        json!(
            written
                .iter()
                .map(|l| descriptor(&l.media_type, &l.digest, l.size))
                .collect::<Vec<_>>()
        ),
    );
    let (digest, size) = layout.put_json(&serde_json::Value::Object(manifest))?;
    Ok(WrittenImage {
        manifest: digest,
        manifest_size: size,
        config: config_digest,
        config_size,
        layers: written,
    })
}

/// Writes a buildx-style provenance attestation manifest for `subject`.
fn write_attestation(layout: &mut Layout, subject: &Digest) -> io::Result<(Digest, u64)> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "hoist-sample", "digest": {"sha256": subject.hex()}}],
        "predicate": {"builder": {"id": "hoist sample"}},
    });
    let (layer, layer_size) = layout.put_json(&statement)?;
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
    });
    let (config_digest, config_size) = layout.put_json(&config)?;
    let mut layer_desc = descriptor("application/vnd.in-toto+json", &layer, layer_size);
    if let Some(map) = layer_desc.as_object_mut() {
        map.insert(
            "annotations".into(),
            json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}),
        );
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(media::OCI_CONFIG, &config_digest, config_size),
        "layers": [layer_desc],
    });
    layout.put_json(&manifest)
}

/// Writes an OCI image layout for `spec` into `dir` (created if missing).
pub fn write_oci_layout(dir: &Path, spec: &SampleSpec) -> io::Result<SampleImage> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs)?;
    let mut layout = Layout {
        blobs,
        tmp_counter: 0,
    };
    let main = write_image(
        &mut layout,
        spec.seed,
        &spec.platform,
        &spec.layers,
        spec.manifest_media_type,
    )?;
    let (top, wrapped) = match &spec.index {
        None => (
            descriptor(media::OCI_MANIFEST, &main.manifest, main.manifest_size),
            WrappedIndex::default(),
        ),
        Some(ix) => {
            let wrapped = write_image_index(&mut layout, spec, ix, &main)?;
            let (d, size) = wrapped.index.as_ref().expect("an index was written");
            (descriptor(media::OCI_INDEX, d, *size), wrapped)
        }
    };
    let mut top = top;
    if let (Some(r), Some(map)) = (&spec.ref_name, top.as_object_mut()) {
        map.insert(
            "annotations".into(),
            json!({ media::ANNOTATION_REF_NAME: r }),
        );
    }
    let index_json = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [top],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index_json).map_err(io::Error::other)?,
    )?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(SampleImage {
        dir: dir.to_path_buf(),
        manifest: main.manifest,
        manifest_size: main.manifest_size,
        config: main.config,
        config_size: main.config_size,
        layers: main.layers,
        index: wrapped.index.map(|(d, _)| d),
        extra_manifests: wrapped.extra_manifests,
        attestation: wrapped.attestation,
    })
}

/// What [`write_image_index`] wrote besides the main image.
#[derive(Default)]
struct WrappedIndex {
    /// The image index and its size.
    index: Option<(Digest, u64)>,
    extra_manifests: Vec<(Platform, Digest)>,
    attestation: Option<Digest>,
}

/// Writes the image index wrapping `main`, like `docker buildx` does: `main` for
/// `spec.platform`, a small image for each extra platform, and the attestation if asked for.
fn write_image_index(
    layout: &mut Layout,
    spec: &SampleSpec,
    ix: &IndexSpec,
    main: &WrittenImage,
) -> io::Result<WrappedIndex> {
    let mut wrapped = WrappedIndex::default();
    let mut entry = descriptor(media::OCI_MANIFEST, &main.manifest, main.manifest_size);
    if let Some(map) = entry.as_object_mut() {
        map.insert("platform".into(), platform_json(&spec.platform));
    }
    let mut entries = vec![entry];
    for (k, p) in ix.extra_platforms.iter().enumerate() {
        let small = [LayerSpec::new(
            LayerContent::SmallFiles(3),
            SampleCompression::Gzip,
        )];
        let seed = spec.seed.wrapping_add(1 + k as u64);
        let img = write_image(layout, seed, p, &small, true)?;
        let mut e = descriptor(media::OCI_MANIFEST, &img.manifest, img.manifest_size);
        if let Some(map) = e.as_object_mut() {
            map.insert("platform".into(), platform_json(p));
        }
        entries.push(e);
        wrapped.extra_manifests.push((p.clone(), img.manifest));
    }
    if ix.attestation {
        let (d, size) = write_attestation(layout, &main.manifest)?;
        let mut e = descriptor(media::OCI_MANIFEST, &d, size);
        if let Some(map) = e.as_object_mut() {
            map.insert(
                "annotations".into(),
                json!({
                    "vnd.docker.reference.digest": main.manifest.to_string(),
                    media::ANNOTATION_REFERENCE_TYPE: media::ATTESTATION_MANIFEST,
                }),
            );
            map.insert(
                "platform".into(),
                json!({"architecture": "unknown", "os": "unknown"}),
            );
        }
        entries.push(e);
        wrapped.attestation = Some(d);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": entries,
    });
    wrapped.index = Some(layout.put_json(&index)?);
    Ok(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_exact() {
        let mut a = Vec::new();
        Generator::new(7, 10_000, true).read_to_end(&mut a).unwrap();
        let mut b = Vec::new();
        Generator::new(7, 10_000, true).read_to_end(&mut b).unwrap();
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
        let mut r = Vec::new();
        Generator::new(7, 4097, false).read_to_end(&mut r).unwrap();
        assert_eq!(r.len(), 4097);
    }

    #[test]
    fn same_spec_same_digests() {
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        let mut spec = SampleSpec::small(42);
        spec.layers[1].compression = SampleCompression::Gzip;
        let a = write_oci_layout(t1.path(), &spec).unwrap();
        let b = write_oci_layout(t2.path(), &spec).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.layers, b.layers);
        spec.seed = 43;
        let t3 = tempfile::tempdir().unwrap();
        let c = write_oci_layout(t3.path(), &spec).unwrap();
        assert_ne!(a.manifest, c.manifest);
    }
}
