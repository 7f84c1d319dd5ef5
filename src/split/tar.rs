//! The entries of an uncompressed layer tar, found by reading headers only: each entry's byte
//! range (its PAX / GNU long-name records, header and padded data, kept together) and what the
//! split rules need of it (path, directory or hard link). File data is skipped, never read.

use std::collections::HashMap;

use super::SplitError;
use crate::source::BlobLocation;

/// Bytes of one tar block (a header, and the unit data is padded to).
pub const BLOCK_BYTES: u64 = 512;
/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE_BYTES: u64 = 2 * BLOCK_BYTES;
/// Entries one layer may have for hoist to split it; the planner keeps each entry's path in
/// memory (about 100 bytes each: 400 MiB at the limit).
pub const SPLIT_ENTRIES_MAX: usize = 4_000_000;
/// Largest PAX or GNU long-name record read into memory.
const RECORD_BYTES_MAX: u64 = 1 << 20;

/// What the split rules need to know about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A hard link to this (normalised) path.
    HardLink(String),
    Other,
}

/// One entry of the layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the entry's first record starts (a PAX or GNU long-name record when it has one).
    pub start: u64,
    /// Past its data's padding.
    pub end: u64,
    /// The path, without a leading `./` or `/` and without a trailing `/`.
    pub path: String,
    pub kind: EntryKind,
}

impl Entry {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    /// A whiteout (`.wh.NAME`) or an opaque marker (`.wh..wh..opq`).
    pub fn is_whiteout(&self) -> bool {
        self.path
            .rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with(".wh."))
    }
}

/// `./a/b/` -> `a/b`.
pub fn normalise(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    p.trim_end_matches('/').to_string()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// A numeric header field: octal text, or base-256 when the high bit of its first byte is set.
fn numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field.first()? & 0x7f);
        for &b in field.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = cstr(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn checksum_ok(block: &[u8; 512]) -> bool {
    let Some(stored) = numeric(&block[148..156]) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == stored
}

/// PAX records (`LEN key=value\n`), the keys the split needs.
fn pax_records(data: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let Some(record) = rest.get(space + 1..len) else {
            break;
        };
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&record[..eq]).into_owned();
            let value = String::from_utf8_lossy(&record[eq + 1..]).into_owned();
            out.insert(key, value);
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    out
}

/// What the records before an entry said about it.
#[derive(Default)]
struct Pending {
    start: Option<u64>,
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
}

impl Pending {
    /// Takes a PAX (`x`) or GNU long-name (`L`, `K`) record found at `pos`.
    fn take(&mut self, typeflag: u8, pos: u64, data: &[u8]) {
        self.start.get_or_insert(pos);
        match typeflag {
            b'L' => self.path = Some(cstr(data)),
            b'K' => self.link = Some(cstr(data)),
            _ => {
                let records = pax_records(data);
                if let Some(p) = records.get("path") {
                    self.path = Some(p.clone());
                }
                if let Some(l) = records.get("linkpath") {
                    self.link = Some(l.clone());
                }
                if let Some(s) = records.get("size") {
                    self.size = s.parse().ok();
                }
            }
        }
    }

    /// The entry whose header `block` is at `pos`, with what the records said.
    fn entry(self, block: &[u8; 512], pos: u64, header_size: u64) -> Entry {
        let size = self.size.unwrap_or(header_size);
        let end = pos + BLOCK_BYTES + size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let path = self.path.unwrap_or_else(|| header_path(block));
        let kind = match block[156] {
            b'5' => EntryKind::Dir,
            b'1' => EntryKind::HardLink(normalise(
                &self.link.unwrap_or_else(|| cstr(&block[157..257])),
            )),
            b'0' | 0 if path.ends_with('/') => EntryKind::Dir,
            _ => EntryKind::Other,
        };
        Entry {
            start: self.start.unwrap_or(pos),
            end,
            path: normalise(&path),
            kind,
        }
    }
}

/// Reads the header block at `pos` and its size field; `None` at an end-of-archive block.
fn header(layer: &BlobLocation, pos: u64, block: &mut [u8; 512]) -> Result<Option<u64>, String> {
    layer
        .read_exact_at(pos, block)
        .map_err(|e| format!("cannot read the header at byte {pos}: {e}"))?;
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if !checksum_ok(block) {
        return Err(format!("the header at byte {pos} has a bad checksum"));
    }
    numeric(&block[124..136])
        .map(Some)
        .ok_or_else(|| format!("the header at byte {pos} has a bad size"))
}

/// Scans the layer's headers: every entry in tar order, up to the end-of-archive marker.
pub fn scan(layer: &BlobLocation) -> Result<Vec<Entry>, SplitError> {
    let bad = |why: String| SplitError::Tar {
        layer: layer.name.to_string(),
        why,
    };
    let unsplittable = |why: String| SplitError::Unsplittable {
        layer: layer.name.to_string(),
        why,
    };
    let mut entries = Vec::new();
    let mut pending = Pending::default();
    let mut pos = 0u64;
    let mut block = [0u8; 512];
    while pos < layer.len {
        let Some(size) = header(layer, pos, &mut block).map_err(bad)? else {
            break;
        };
        match block[156] {
            t @ (b'x' | b'X' | b'L' | b'K') => {
                if size > RECORD_BYTES_MAX {
                    return Err(bad(format!("the record at byte {pos} is {size} bytes")));
                }
                let mut data = vec![0u8; size as usize];
                layer
                    .read_exact_at(pos + BLOCK_BYTES, &mut data)
                    .map_err(|e| bad(format!("cannot read the record at byte {pos}: {e}")))?;
                pending.take(t, pos, &data);
                pos += BLOCK_BYTES + size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
            }
            b'g' => {
                return Err(unsplittable(
                    "it has a global PAX header (it applies to every later entry)".into(),
                ));
            }
            b'S' | b'M' => {
                return Err(unsplittable(
                    "it has GNU sparse or multi-volume entries".into(),
                ));
            }
            _ => {
                let entry = std::mem::take(&mut pending).entry(&block, pos, size);
                if entry.end > layer.len {
                    return Err(bad(format!("the entry at byte {pos} ends past the layer")));
                }
                if entries.len() >= SPLIT_ENTRIES_MAX {
                    return Err(unsplittable(format!(
                        "it has more than {SPLIT_ENTRIES_MAX} entries"
                    )));
                }
                pos = entry.end;
                entries.push(entry);
            }
        }
    }
    if pending.start.is_some() {
        return Err(bad("the layer ends after a record without its entry".into()));
    }
    Ok(entries)
}

/// A ustar header's path: `prefix/name` when the prefix field is used.
fn header_path(block: &[u8; 512]) -> String {
    let name = cstr(&block[..100]);
    // POSIX ustar only: old GNU headers keep times where ustar has the prefix.
    let ustar = &block[257..263] == b"ustar\0";
    let prefix = if ustar {
        cstr(&block[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}
