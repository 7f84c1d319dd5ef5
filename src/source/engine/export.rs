//! The export's tar stream (`GET /images/{name}/get`), walked once as it arrives.
//!
//! Engines write a `docker save` archive: the legacy layout (`<id>/layer.tar`, `<hex>.json`,
//! `manifest.json`; Docker before 25, podman) or the OCI-layout form (`blobs/sha256/<hex>`,
//! `index.json`, `manifest.json`; Docker 25+, where the containerd store may hold gzip or zstd
//! layers). Nothing in the stream is trusted by name: a layer is the entry whose uncompressed
//! bytes hash to one of the inspect's diff_ids, the config is the JSON file `manifest.json`
//! names, checked against the inspect's diff_ids. Only small files stay in memory. The stream
//! is read through the one tar reader ([`crate::tarscan`]), as GNU tar and Go's `archive/tar`
//! read it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use super::{EngineError, ImageInspect};
use crate::digest::{Digest, Hasher};
use crate::image::JSON_BYTES_MAX;
use crate::image::doc::{self, Config, Descriptor, Doc, DockerArchiveEntry, Index, Manifest};
use crate::image::media::{Compression, sniff_unsupported};
use crate::image::select::{self, Fetch};
use crate::source::{SourceError, blob_path, normalise_name};
use crate::tarscan::{Kind, Reader, ScanError, Sequential};

/// Entries up to this size are read into memory first (configs, `manifest.json`, tiny
/// layers); larger ones stream to the layer handler.
pub const SMALL_ENTRY_BYTES_MAX: u64 = 1 << 20;
/// Small files kept in memory at most, in bytes: an export holds a few JSON files per image.
pub const SMALL_ENTRIES_BYTES_MAX: u64 = 64 << 20;

/// Where the walk hands the layers. `layer` is given one candidate layer: a reader over its
/// bytes as the engine stores them, and their compression (sniffed). It reads the whole entry
/// and returns the sha256 of its uncompressed bytes ([`decoder`] undoes the compression); it
/// keeps its result only when that digest is a diff_id still needed (it decides with the same
/// set). An export of every platform names its compressed blobs by digest before the image's
/// manifest says which are its own: those are `defer`red (kept compressed, unread), then each
/// is `take`n (read as `layer` reads, from where it was kept) or `discard`ed once the manifest
/// is known.
pub trait LayerSink {
    fn layer(
        &mut self,
        input: &mut dyn Read,
        compression: Compression,
    ) -> Result<Digest, SourceError>;

    /// Keeps the compressed blob `digest` as it streams, not decompressed; `false` when it
    /// keeps none (then the walk hands it to `layer` at once).
    fn defer(
        &mut self,
        digest: &Digest,
        input: &mut dyn Read,
        compression: Compression,
    ) -> Result<bool, SourceError>;

    /// A deferred blob read as `layer` reads one: the sha256 of its uncompressed bytes.
    fn take(&mut self, digest: &Digest, compression: Compression) -> Result<Digest, SourceError>;

    /// Forgets a deferred blob: the image does not name it.
    fn discard(&mut self, digest: &Digest);
}

/// A sink that keeps nothing aside: every candidate is read as it streams (a caller that has
/// nowhere to put blobs, such as a one-off walk of an archive).
impl<F> LayerSink for F
where
    F: FnMut(&mut dyn Read, Compression) -> Result<Digest, SourceError>,
{
    fn layer(
        &mut self,
        input: &mut dyn Read,
        compression: Compression,
    ) -> Result<Digest, SourceError> {
        self(input, compression)
    }

    fn defer(&mut self, _: &Digest, _: &mut dyn Read, _: Compression) -> Result<bool, SourceError> {
        Ok(false)
    }

    fn take(&mut self, digest: &Digest, _: Compression) -> Result<Digest, SourceError> {
        Err(not_kept(digest))
    }

    fn discard(&mut self, _: &Digest) {}
}

/// A [`LayerSink::take`] of a blob the sink did not keep (a bug).
pub fn not_kept(digest: &Digest) -> SourceError {
    SourceError::Io {
        what: format!("the deferred blob {digest}"),
        source: io::Error::other("internal error: it was never kept: report this as a bug"),
    }
}

/// The uncompressed bytes of `input`, compressed with `compression`; `what` names it in errors.
pub fn decoder<'a>(
    input: impl Read + 'a,
    compression: Compression,
    what: &str,
) -> Result<Box<dyn Read + 'a>, SourceError> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(
                zstd::stream::read::Decoder::new(input).map_err(|e| SourceError::Io {
                    what: what.to_string(),
                    source: e,
                })?,
            )
        }
    })
}

/// What the walk found: the verified config, and the diff_ids it handed over.
#[derive(Debug)]
pub struct Walked {
    pub config: Doc<Config>,
    pub found: HashSet<Digest>,
    /// What the image's index in the export also holds (other platforms, attestations), named
    /// as an OCI layout's are: not pushed. Empty for an export without an index.
    pub left_out: Vec<String>,
    /// The exact bytes of the engine's image manifest naming the config (the OCI-layout form
    /// of the export); `None` when the export holds none.
    pub manifest: Option<Vec<u8>>,
}

/// Walks `input` for the image `inspect` describes: every layer whose diff_id is in `needed`
/// goes to `layer` as it streams; entries that cannot be a needed layer are skipped unread, and
/// so are the blobs named by a digest in `held` (what the caller has: diff_ids, and the
/// digests of the engine's compressed blobs it stored).
pub fn walk(
    input: impl Read,
    image: &str,
    inspect: &ImageInspect,
    needed: &HashSet<Digest>,
    held: &HashSet<Digest>,
    layer: &mut dyn LayerSink,
) -> Result<Walked, SourceError> {
    let failed = |detail: String| -> SourceError {
        EngineError::Export {
            image: image.to_string(),
            detail,
        }
        .into()
    };
    let mut reader = Reader::new(Sequential(input));
    let mut walk = Walk {
        inspect,
        needed,
        held,
        small: HashMap::new(),
        small_bytes: 0,
        found: HashSet::new(),
        manifests: Vec::new(),
        chosen: None,
        deferred: Vec::new(),
    };
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(ScanError::Io(e)) => return Err(read_failed(&format!("the export of {image}"), e)),
            Err(ScanError::Inexact { entry, why }) => {
                let why = crate::text::detail(&format!("{entry}: {why}"));
                return Err(failed(format!("cannot be read as a tar stream ({why})")));
            }
        };
        // Only a plain file can be a layer or a JSON document; a sparse file's stored data
        // is not its bytes.
        if entry.kind != Kind::File || entry.sparse_size.is_some() {
            continue;
        }
        let raw = String::from_utf8_lossy(reader.written_path()).into_owned();
        let Some(name) = normalise_name(image, &raw)? else {
            continue;
        };
        walk.entry(&name, entry.data_len, &mut reader.data(), layer)?;
    }
    // No manifest told which deferred blobs are the image's: each is read to learn it.
    walk.settle(layer)?;
    if let Some(missing) = needed.iter().find(|d| !walk.found.contains(*d)) {
        return Err(failed(format!("lacks layer {missing}")));
    }
    let config = walk.config(image)?;
    let left_out = walk.left_out(image, &config);
    let manifest = walk.manifest_of(&config);
    Ok(Walked {
        config,
        found: walk.found,
        left_out,
        manifest,
    })
}

/// The export's small JSON entries as an OCI layout's blobs, for the platform choice.
struct SmallBlobs<'a> {
    image: &'a str,
    small: &'a HashMap<String, Vec<u8>>,
}

impl Fetch for SmallBlobs<'_> {
    type Error = SourceError;

    fn fetch_json(&self, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        let name = blob_path(&desc.digest);
        let bytes = self.small.get(&name).ok_or_else(|| SourceError::Missing {
            what: format!("the export of {}", self.image),
            entry: name.clone(),
            hint: "the engine exported this image without that blob",
        })?;
        let mut h = Hasher::new(desc.digest.algorithm());
        h.update(bytes);
        let actual = h.finish();
        if actual != desc.digest {
            return Err(SourceError::DigestMismatch {
                what: self.what(&desc.digest),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes.clone())
    }

    fn what(&self, digest: &Digest) -> String {
        format!("the export of {}: {}", self.image, blob_path(digest))
    }
}

struct Walk<'a> {
    inspect: &'a ImageInspect,
    needed: &'a HashSet<Digest>,
    held: &'a HashSet<Digest>,
    small: HashMap<String, Vec<u8>>,
    small_bytes: u64,
    found: HashSet<Digest>,
    /// Image manifests seen so far: their config's entry name and their layer blobs.
    manifests: Vec<(String, HashSet<Digest>)>,
    /// The layer blobs of the image's own manifest, once it and its config have streamed by
    /// (an export of every platform holds other platforms' layers, not to be read).
    chosen: Option<HashSet<Digest>>,
    /// Compressed blobs kept unread until the image's manifest is known.
    deferred: Vec<(Digest, Compression)>,
}

impl Walk<'_> {
    fn entry(
        &mut self,
        name: &str,
        size: u64,
        entry: &mut dyn Read,
        layer: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        let io_err = |e: io::Error| read_failed(name, e);
        // `blobs/sha256/<digest>` of a layer the caller has (from an earlier run): skip.
        let named = name
            .strip_prefix("blobs/")
            .and_then(|rest| Digest::parse(&rest.replacen('/', ":", 1)).ok());
        if named.as_ref().is_some_and(|d| self.held.contains(d)) {
            return Ok(());
        }
        // A blob the image's manifest does not name: another platform's, an attestation's.
        if let (Some(d), Some(chosen)) = (&named, &self.chosen)
            && size > SMALL_ENTRY_BYTES_MAX
            && !chosen.contains(d)
        {
            return Ok(());
        }
        if size <= SMALL_ENTRY_BYTES_MAX {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(io_err)?;
            return self.small_entry(name, named, bytes, layer);
        }
        if self.needed.iter().all(|d| self.found.contains(d)) {
            return Ok(());
        }
        let mut head = [0u8; 8];
        let n = read_up_to(entry, &mut head).map_err(io_err)?;
        let mut whole = io::Cursor::new(head[..n].to_vec()).chain(entry);
        if self.deferred(named.as_ref(), &head[..n], &mut whole, layer)? {
            return Ok(());
        }
        self.candidate(name, &head[..n], &mut whole, layer)
    }

    /// Whether the walk is done with a blob named `named` without decompressing it: a
    /// compressed blob the image's manifest does not name, or one that came before that
    /// manifest (kept by `layer` for [`Walk::settle`]).
    fn deferred(
        &mut self,
        named: Option<&Digest>,
        head: &[u8],
        input: &mut dyn Read,
        layer: &mut dyn LayerSink,
    ) -> Result<bool, SourceError> {
        let compression = Compression::sniff(head);
        let Some(digest) = named.filter(|_| compression != Compression::None) else {
            return Ok(false);
        };
        match &self.chosen {
            Some(chosen) => Ok(!chosen.contains(digest)),
            None if layer.defer(digest, input, compression)? => {
                self.deferred.push((digest.clone(), compression));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads the deferred blobs the image's manifest names (all of them when none is known)
    /// while layers are still needed, and discards the others.
    fn settle(&mut self, layer: &mut dyn LayerSink) -> Result<(), SourceError> {
        for (digest, compression) in std::mem::take(&mut self.deferred) {
            let ours = self.chosen.as_ref().is_none_or(|c| c.contains(&digest));
            if !ours || self.needed.iter().all(|d| self.found.contains(d)) {
                layer.discard(&digest);
                continue;
            }
            let diff_id = layer.take(&digest, compression)?;
            if self.needed.contains(&diff_id) {
                self.found.insert(diff_id);
            }
        }
        Ok(())
    }

    /// A small entry: a layer if its bytes say so, else kept when it may be JSON the config
    /// resolution needs.
    fn small_entry(
        &mut self,
        name: &str,
        named: Option<Digest>,
        bytes: Vec<u8>,
        layer: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        let head: Vec<u8> = bytes.iter().take(8).copied().collect();
        if self.deferred(named.as_ref(), &head, &mut bytes.as_slice(), layer)? {
            return Ok(());
        }
        let compressed = Compression::sniff(&head) != Compression::None;
        let digest = Digest::sha256_of(&bytes);
        if compressed || self.needed.contains(&digest) {
            self.candidate(name, &head, &mut bytes.as_slice(), layer)?;
        }
        if !compressed && matches!(bytes.first(), Some(b'{' | b'[')) {
            self.small_bytes += bytes.len() as u64;
            if self.small_bytes > SMALL_ENTRIES_BYTES_MAX {
                return Err(SourceError::TooManyEntries {
                    what: "the export".into(),
                    max: self.small.len(),
                });
            }
            self.note_manifest(&bytes);
            self.small.insert(name.to_string(), bytes);
            self.choose();
            if self.chosen.is_some() {
                self.settle(layer)?;
            }
        }
        Ok(())
    }

    /// Keeps what an image manifest names (other JSON files are not manifests: skipped).
    fn note_manifest(&mut self, bytes: &[u8]) {
        let Ok(m) = serde_json::from_slice::<Manifest>(bytes) else {
            return;
        };
        let config = format!(
            "blobs/{}",
            m.config.digest.to_string().replacen(':', "/", 1)
        );
        let layers = m.layers.into_iter().map(|l| l.digest).collect();
        self.manifests.push((config, layers));
    }

    /// The bytes of the image manifest blob whose config is `config`.
    fn manifest_of(&self, config: &Doc<Config>) -> Option<Vec<u8>> {
        self.small
            .iter()
            .filter(|(name, _)| name.starts_with("blobs/"))
            .find(|(_, bytes)| {
                serde_json::from_slice::<Manifest>(bytes)
                    .is_ok_and(|m| m.config.digest == config.digest)
            })
            .map(|(_, bytes)| bytes.clone())
    }

    /// The image's own manifest: the one whose config, streamed by, lists the inspect's
    /// diff_ids.
    fn choose(&mut self) {
        if self.chosen.is_some() {
            return;
        }
        let want = &self.inspect.rootfs.layers;
        let ours = self.manifests.iter().find(|(config, _)| {
            self.small
                .get(config)
                .and_then(|b| serde_json::from_slice::<Config>(b).ok())
                .is_some_and(|c| &c.rootfs.diff_ids == want)
        });
        self.chosen = ours.map(|(_, layers)| layers.clone());
    }

    /// An entry that may be a layer: its uncompressed bytes go to the handler.
    fn candidate(
        &mut self,
        name: &str,
        head: &[u8],
        input: &mut dyn Read,
        layer: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        if let Some(codec) = sniff_unsupported(head) {
            return Err(SourceError::UnsupportedCompression {
                what: name.to_string(),
                codec,
            });
        }
        let diff_id = layer.layer(input, Compression::sniff(head))?;
        if self.needed.contains(&diff_id) {
            self.found.insert(diff_id);
        }
        Ok(())
    }

    /// What the image's index (in the export's `index.json`, Docker 25+) holds besides the
    /// image of `config`, chosen from it the way an OCI layout's image is. Informative only: an
    /// export without an index, or one whose index does not lead to `config`, gives none.
    fn left_out(&self, image: &str, config: &Doc<Config>) -> Vec<String> {
        let Some(bytes) = self.small.get("index.json") else {
            return Vec::new();
        };
        let what = format!("the export of {image}: index.json");
        let Ok(index) = doc::parse::<Index>(bytes.clone(), &what, "OCI index.json") else {
            return Vec::new();
        };
        let blobs = SmallBlobs {
            image,
            small: &self.small,
        };
        match select::select(
            &blobs,
            &what,
            &index.parsed.manifests,
            &config.parsed.platform(),
        ) {
            Ok(sel) if sel.config.digest == config.digest => sel.skipped,
            _ => Vec::new(),
        }
    }

    /// The config: the file `manifest.json` names (the one entry whose layers match the
    /// inspect), checked to list the inspect's diff_ids and platform-checked by the caller.
    fn config(&self, image: &str) -> Result<Doc<Config>, SourceError> {
        let what = format!("the export of {image}");
        let missing = |entry: &str| SourceError::Missing {
            what: what.clone(),
            entry: entry.to_string(),
            hint: "the engine wrote an export hoist cannot read; save the image with docker save and push the archive",
        };
        let manifest = self
            .small
            .get("manifest.json")
            .ok_or_else(|| missing("manifest.json"))?;
        let entries: Doc<Vec<DockerArchiveEntry>> = doc::parse(
            manifest.clone(),
            &format!("{what}: manifest.json"),
            "docker save manifest.json",
        )?;
        let want = &self.inspect.rootfs.layers;
        for e in &entries.parsed {
            let Some(name) = normalise_name(image, &e.config)? else {
                continue;
            };
            let Some(bytes) = self.small.get(&name) else {
                continue;
            };
            let config: Doc<Config> =
                doc::parse(bytes.clone(), &format!("{what}: {name}"), "image config")?;
            if &config.parsed.rootfs.diff_ids == want {
                return Ok(config);
            }
        }
        Err(missing("the image config listing the inspected layers"))
    }
}

/// A read of the export that failed: the engine's own error when the stream broke off.
pub fn read_failed(what: &str, e: io::Error) -> SourceError {
    if e.get_ref().is_some_and(|i| i.is::<EngineError>()) {
        if let Some(Ok(engine)) = e.into_inner().map(|i| i.downcast::<EngineError>()) {
            return SourceError::Engine(*engine);
        }
        return SourceError::Io {
            what: what.to_string(),
            source: io::Error::other("the export stream broke off"),
        };
    }
    SourceError::from_io(what, e)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `JSON_BYTES_MAX` bounds every small file parsed here.
const _: () = assert!(SMALL_ENTRY_BYTES_MAX <= JSON_BYTES_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o444);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).expect("append");
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// An export of two platforms: the manifest and config of ours, another platform's
    /// large gzip blob, our layer, `manifest.json`; the manifest first or after the other blob.
    fn export(manifest_first: bool) -> (Vec<u8>, ImageInspect) {
        let layer = vec![7u8; 2 << 20];
        let diff_id = Digest::sha256_of(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config_digest = Digest::sha256_of(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{config_digest}","size":{}}},"layers":[{{"digest":"{diff_id}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let other = gzip(&noise(9, 3 << 20));
        let mut b = tar::Builder::new(Vec::new());
        let manifest_name = blob_name(&Digest::sha256_of(manifest.as_bytes()));
        if manifest_first {
            add(&mut b, &manifest_name, manifest.as_bytes());
        }
        add(&mut b, &blob_name(&config_digest), config.as_bytes());
        add(&mut b, &blob_name(&Digest::sha256_of(&other)), &other);
        if !manifest_first {
            add(&mut b, &manifest_name, manifest.as_bytes());
        }
        add(&mut b, &blob_name(&diff_id), &layer);
        let entries = format!(
            r#"[{{"Config":"{}","Layers":["{}"]}}]"#,
            blob_name(&config_digest),
            blob_name(&diff_id)
        );
        add(&mut b, "manifest.json", entries.as_bytes());
        let inspect = serde_json::from_str(&format!(
            r#"{{"Id":"{config_digest}","Os":"linux","Architecture":"amd64","RootFS":{{"Layers":["{diff_id}"]}}}}"#
        ))
        .expect("inspect");
        (b.into_inner().expect("tar"), inspect)
    }

    /// How many entries the walk decompressed (handed to the sink's `layer`, or taken back
    /// after they were deferred); with `held`, the caller has every blob named by a digest
    /// already (and needs nothing); with `defer`, the sink keeps the blobs the walk defers.
    fn handled(manifest_first: bool, held: bool, defer: bool) -> usize {
        let (tar, inspect) = export(manifest_first);
        let layers: HashSet<Digest> = inspect.rootfs.layers.iter().cloned().collect();
        let (needed, held) = match held {
            true => (HashSet::new(), blob_digests(&tar)),
            false => (layers, HashSet::new()),
        };
        let mut sink = Counting::new(defer);
        let walked =
            walk(tar.as_slice(), "img", &inspect, &needed, &held, &mut sink).expect("walk");
        assert_eq!(walked.found, needed);
        assert!(
            sink.kept.is_empty(),
            "deferred blobs left: {:?}",
            sink.kept.keys()
        );
        sink.decompressed.len()
    }

    /// A sink that decompresses and hashes each layer it is given, noting the diff_ids it
    /// computed, and keeps deferred blobs in memory (when `defer`).
    struct Counting {
        defer: bool,
        decompressed: Vec<Digest>,
        kept: HashMap<Digest, Vec<u8>>,
        discarded: HashSet<Digest>,
    }

    impl Counting {
        fn new(defer: bool) -> Counting {
            Counting {
                defer,
                decompressed: Vec::new(),
                kept: HashMap::new(),
                discarded: HashSet::new(),
            }
        }
    }

    impl LayerSink for Counting {
        fn layer(&mut self, input: &mut dyn Read, c: Compression) -> Result<Digest, SourceError> {
            let mut bytes = Vec::new();
            decoder(input, c, "test")?
                .read_to_end(&mut bytes)
                .map_err(|e| SourceError::from_io("test", e))?;
            let diff_id = Digest::sha256_of(&bytes);
            self.decompressed.push(diff_id.clone());
            Ok(diff_id)
        }

        fn defer(
            &mut self,
            digest: &Digest,
            input: &mut dyn Read,
            _: Compression,
        ) -> Result<bool, SourceError> {
            if !self.defer {
                return Ok(false);
            }
            let mut bytes = Vec::new();
            input.read_to_end(&mut bytes).expect("read");
            assert_eq!(&Digest::sha256_of(&bytes), digest, "deferred as named");
            self.kept.insert(digest.clone(), bytes);
            Ok(true)
        }

        fn take(&mut self, digest: &Digest, c: Compression) -> Result<Digest, SourceError> {
            let bytes = self.kept.remove(digest).expect("a kept blob");
            self.layer(&mut bytes.as_slice(), c)
        }

        fn discard(&mut self, digest: &Digest) {
            self.kept.remove(digest).expect("a kept blob");
            self.discarded.insert(digest.clone());
        }
    }

    /// Walks `tar` with a sink that defers nothing and hashes each candidate whole.
    fn walk_hashing(
        tar: &[u8],
        inspect: &ImageInspect,
        needed: &HashSet<Digest>,
        held: &HashSet<Digest>,
    ) -> Walked {
        let mut sink = Counting::new(false);
        walk(tar, "img", inspect, needed, held, &mut sink).expect("walk")
    }

    /// The digests the export's layer blobs (its large ones) are named by.
    fn blob_digests(tar: &[u8]) -> HashSet<Digest> {
        let mut reader = Reader::new(Sequential(tar));
        let mut digests = HashSet::new();
        while let Some(e) = reader.next_entry().expect("entry") {
            let name = String::from_utf8_lossy(&e.path).into_owned();
            if e.data_len <= SMALL_ENTRY_BYTES_MAX {
                continue;
            }
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                digests.extend(Digest::parse(&format!("sha256:{hex}")).ok());
            }
        }
        digests
    }

    #[test]
    fn blobs_the_images_manifest_does_not_name_are_not_read_once_it_is_known() {
        assert_eq!(handled(true, false, true), 1);
        assert_eq!(handled(true, false, false), 1);
        // The manifest after the other blob: deferred, then discarded unread; a sink that
        // keeps nothing has it read to learn what it is.
        assert_eq!(handled(false, false, true), 1);
        assert_eq!(handled(false, false, false), 2);
    }

    /// A directory whose size field claims data has none (as Go's `archive/tar`, which the
    /// engine reads with, sees it): the entries after it are all found.
    #[test]
    fn a_size_on_a_directory_hides_no_entries() {
        let (tar, inspect) = export(true);
        let mut h = tar::Header::new_ustar();
        h.set_path("blobs/").expect("path");
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(2048);
        h.set_cksum();
        let tar = [h.as_bytes().as_slice(), &tar].concat();
        let needed: HashSet<Digest> = inspect.rootfs.layers.iter().cloned().collect();
        let walked = walk_hashing(&tar, &inspect, &needed, &HashSet::new());
        assert_eq!(walked.found, needed);
        assert!(walked.manifest.is_some());
    }

    /// `len` bytes no compressor shrinks much, different for each `seed`.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    /// An image manifest and its config for gzip `layers` (blob, uncompressed bytes).
    fn image(arch: &str, layers: &[(Vec<u8>, Vec<u8>)]) -> (String, String) {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, raw)| format!(r#""{}""#, Digest::sha256_of(raw)))
            .collect();
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let descs: Vec<String> = layers
            .iter()
            .map(|(blob, _)| {
                format!(
                    r#"{{"digest":"{}","size":{}}}"#,
                    Digest::sha256_of(blob),
                    blob.len()
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":{}}},"layers":[{}]}}"#,
            Digest::sha256_of(config.as_bytes()),
            config.len(),
            descs.join(",")
        );
        (manifest, config)
    }

    /// An export of every platform as Docker 26 and 27 write it (blobs in digest order, here
    /// the other platform's large and small gzip layers and one of ours before our manifest,
    /// our other layer after it): only our two layers are decompressed, and both are found.
    #[test]
    fn an_export_of_every_platform_decompresses_only_the_images_blobs() {
        let layer = |seed, len| {
            let raw = noise(seed, len);
            (gzip(&raw), raw)
        };
        let (ours_big, ours_small) = (layer(1, 2 << 20), layer(2, 4096));
        let (other_big, other_small) = (layer(3, 3 << 20), layer(4, 8192));
        let (manifest, config) = image("amd64", &[ours_big.clone(), ours_small.clone()]);
        let (other_manifest, other_config) =
            image("arm64", &[other_big.clone(), other_small.clone()]);
        let mut b = tar::Builder::new(Vec::new());
        for bytes in [&other_big.0, &other_small.0, &ours_big.0] {
            add(&mut b, &blob_name(&Digest::sha256_of(bytes)), bytes);
        }
        for doc in [&config, &manifest, &other_config, &other_manifest] {
            add(
                &mut b,
                &blob_name(&Digest::sha256_of(doc.as_bytes())),
                doc.as_bytes(),
            );
        }
        add(
            &mut b,
            &blob_name(&Digest::sha256_of(&ours_small.0)),
            &ours_small.0,
        );
        let config_name = blob_name(&Digest::sha256_of(config.as_bytes()));
        add(
            &mut b,
            "manifest.json",
            format!(r#"[{{"Config":"{config_name}"}}]"#).as_bytes(),
        );
        let tar = b.into_inner().expect("tar");
        let diff_ids = [&ours_big.1, &ours_small.1].map(|raw| Digest::sha256_of(raw));
        let inspect: ImageInspect = serde_json::from_str(&format!(
            r#"{{"Id":"sha256:{}","Os":"linux","Architecture":"amd64","RootFS":{{"Layers":["{}","{}"]}}}}"#,
            "0".repeat(64),
            diff_ids[0],
            diff_ids[1]
        ))
        .expect("inspect");
        let needed: HashSet<Digest> = diff_ids.iter().cloned().collect();
        let mut sink = Counting::new(true);
        let walked = walk(
            tar.as_slice(),
            "img",
            &inspect,
            &needed,
            &HashSet::new(),
            &mut sink,
        )
        .expect("walk");
        assert_eq!(walked.found, needed);
        let decompressed: HashSet<Digest> = sink.decompressed.iter().cloned().collect();
        assert_eq!(sink.decompressed.len(), 2, "{:?}", sink.decompressed);
        assert_eq!(decompressed, needed);
        let others = [&other_big.0, &other_small.0].map(|b| Digest::sha256_of(b));
        assert_eq!(sink.discarded, others.into_iter().collect());
        assert!(sink.kept.is_empty());
        assert_eq!(walked.left_out, Vec::<String>::new());
    }

    #[test]
    fn blobs_the_caller_holds_are_not_read() {
        assert_eq!(handled(false, true, true), 0);
    }
}
