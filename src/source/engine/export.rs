//! The export's tar stream (`GET /images/{name}/get`), walked once as it arrives.
//!
//! Engines write a `docker save` archive: the legacy layout (`<id>/layer.tar`, `<hex>.json`,
//! `manifest.json`; Docker before 25, podman) or the OCI-layout form (`blobs/sha256/<hex>`,
//! `index.json`, `manifest.json`; Docker 25+, where the containerd store may hold gzip or zstd
//! layers). Nothing in the stream is trusted by name: a layer is the entry whose uncompressed
//! bytes hash to one of the inspect's diff_ids, the config is the JSON file `manifest.json`
//! names, checked against the inspect's diff_ids. Only small files stay in memory.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use super::{EngineError, ImageInspect};
use crate::digest::{Digest, Hasher};
use crate::image::JSON_BYTES_MAX;
use crate::image::doc::{self, Config, Descriptor, Doc, DockerArchiveEntry, Index};
use crate::image::media::{Compression, sniff_unsupported};
use crate::image::select::{self, Fetch};
use crate::source::{SourceError, blob_path, normalise_name};

/// Entries up to this size are read into memory first (configs, `manifest.json`, tiny
/// layers); larger ones stream to the layer handler.
pub const SMALL_ENTRY_BYTES_MAX: u64 = 1 << 20;
/// Small files kept in memory at most, in bytes: an export holds a few JSON files per image.
pub const SMALL_ENTRIES_BYTES_MAX: u64 = 64 << 20;

/// What the handler is given for one candidate layer: a reader over its uncompressed bytes.
/// It reads the whole entry and returns the sha256 of what it read; it keeps its result only
/// when that digest is a diff_id still needed (it decides with the same set).
pub type LayerHandler<'a> = dyn FnMut(&mut dyn Read) -> Result<Digest, SourceError> + 'a;

/// What the walk found: the verified config, and the diff_ids it handed over.
#[derive(Debug)]
pub struct Walked {
    pub config: Doc<Config>,
    pub found: HashSet<Digest>,
    /// What the image's index in the export also holds (other platforms, attestations), named
    /// as an OCI layout's are: not pushed. Empty for an export without an index.
    pub left_out: Vec<String>,
}

/// Walks `input` for the image `inspect` describes: every layer whose diff_id is in `needed`
/// goes to `layer` as it streams; entries that cannot be a needed layer are skipped unread.
pub fn walk(
    input: impl Read,
    image: &str,
    inspect: &ImageInspect,
    needed: &HashSet<Digest>,
    layer: &mut LayerHandler<'_>,
) -> Result<Walked, SourceError> {
    let failed = |detail: String| -> SourceError {
        EngineError::Export {
            image: image.to_string(),
            detail,
        }
        .into()
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| {
        failed(format!(
            "is not a tar stream ({})",
            crate::text::detail(&e.to_string())
        ))
    })?;
    let mut walk = Walk {
        inspect,
        needed,
        small: HashMap::new(),
        small_bytes: 0,
        found: HashSet::new(),
    };
    for entry in entries {
        let mut entry = entry.map_err(|e| read_failed(&format!("the export of {image}"), e))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = normalise_name(image, &raw)? else {
            continue;
        };
        let size = entry.size();
        walk.entry(&name, size, &mut entry, layer)?;
    }
    if let Some(missing) = needed.iter().find(|d| !walk.found.contains(*d)) {
        return Err(failed(format!("lacks layer {missing}")));
    }
    let config = walk.config(image)?;
    let left_out = walk.left_out(image, &config);
    Ok(Walked {
        config,
        found: walk.found,
        left_out,
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
    small: HashMap<String, Vec<u8>>,
    small_bytes: u64,
    found: HashSet<Digest>,
}

impl Walk<'_> {
    fn entry(
        &mut self,
        name: &str,
        size: u64,
        entry: &mut dyn Read,
        layer: &mut LayerHandler<'_>,
    ) -> Result<(), SourceError> {
        let io_err = |e: io::Error| read_failed(name, e);
        // `blobs/sha256/<diff_id>` of a layer not needed (done by an earlier run): skip.
        let named = name
            .strip_prefix("blobs/")
            .and_then(|rest| Digest::parse(&rest.replacen('/', ":", 1)).ok());
        if let Some(d) = &named
            && self.inspect.rootfs.layers.contains(d)
            && !self.needed.contains(d)
        {
            return Ok(());
        }
        if size <= SMALL_ENTRY_BYTES_MAX {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(io_err)?;
            return self.small_entry(name, bytes, layer);
        }
        if self.needed.iter().all(|d| self.found.contains(d)) {
            return Ok(());
        }
        let mut head = [0u8; 8];
        let n = read_up_to(entry, &mut head).map_err(io_err)?;
        let mut whole = io::Cursor::new(head[..n].to_vec()).chain(entry);
        self.candidate(name, &head[..n], &mut whole, layer)
    }

    /// A small entry: a layer if its bytes say so, else kept when it may be JSON the config
    /// resolution needs.
    fn small_entry(
        &mut self,
        name: &str,
        bytes: Vec<u8>,
        layer: &mut LayerHandler<'_>,
    ) -> Result<(), SourceError> {
        let head: Vec<u8> = bytes.iter().take(8).copied().collect();
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
            self.small.insert(name.to_string(), bytes);
        }
        Ok(())
    }

    /// An entry that may be a layer: its uncompressed bytes go to the handler.
    fn candidate(
        &mut self,
        name: &str,
        head: &[u8],
        input: &mut dyn Read,
        layer: &mut LayerHandler<'_>,
    ) -> Result<(), SourceError> {
        if let Some(codec) = sniff_unsupported(head) {
            return Err(SourceError::UnsupportedCompression {
                what: name.to_string(),
                codec,
            });
        }
        let diff_id = match Compression::sniff(head) {
            Compression::None => layer(input)?,
            Compression::Gzip => layer(&mut flate2::read::MultiGzDecoder::new(input))?,
            Compression::Zstd => {
                let mut z =
                    zstd::stream::read::Decoder::new(input).map_err(|e| SourceError::Io {
                        what: name.to_string(),
                        source: e,
                    })?;
                layer(&mut z)?
            }
        };
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
