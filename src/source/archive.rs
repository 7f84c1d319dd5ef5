//! Tar archives indexed by offset, never extracted.
//!
//! One pass over the headers through the one tar reader ([`crate::tarscan`], reading as GNU
//! tar and Go's `archive/tar` do; data skipped, never read) records where each entry's bytes
//! are; the descriptor stays open and blobs are later read in place with `pread`.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::blob::BlobLocation;
use super::error::SourceError;
use crate::image::media::{Compression, sniff_unsupported};
use crate::tarscan::{self, Positional, Reader, ScanError};
use crate::text::detail;

/// Archives with more entries than this are refused: image archives have a few entries per
/// layer, and the index costs memory per entry.
pub const TAR_ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Other(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    size: u64,
    kind: Kind,
    /// Target of a symlink, as written in the archive.
    link: Option<String>,
}

/// The entries of a tar archive, by normalised name (no leading `./`).
#[derive(Debug)]
pub struct TarIndex {
    file: Arc<File>,
    display: String,
    len: u64,
    entries: HashMap<String, Entry>,
}

/// Normalises an entry name: strips leading `./` and trailing `/`. `None` for the archive
/// root; an error for absolute names and names with `..`.
pub fn normalise_name(display: &str, raw: &str) -> Result<Option<String>, SourceError> {
    let unsafe_name = || SourceError::UnsafeName {
        what: display.to_string(),
        entry: raw.to_string(),
    };
    if raw.starts_with('/') || raw.contains('\0') {
        return Err(unsafe_name());
    }
    // Names end up in messages on terminals and in logs: no escape sequences, no new lines.
    if raw.chars().any(char::is_control) {
        return Err(SourceError::ControlInName {
            what: display.to_string(),
            entry: raw.to_string(),
        });
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_name()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

/// Refuses a compressed archive (hoist reads archives in place, so it must be a plain tar) and
/// a file too short to hold one tar header; `head` is the file's first bytes.
fn check_plain_tar(display: &str, head: &[u8], len: u64) -> Result<(), SourceError> {
    let compressed = |codec, tool| SourceError::CompressedArchive {
        what: display.to_string(),
        codec,
        tool,
    };
    match Compression::sniff(head) {
        Compression::Gzip => return Err(compressed("gzip", "gunzip")),
        Compression::Zstd => return Err(compressed("zstd", "unzstd")),
        Compression::None => {}
    }
    if let Some(codec) = sniff_unsupported(head) {
        return Err(compressed(
            codec,
            if codec == "xz" { "unxz" } else { "bunzip2" },
        ));
    }
    if len < 512 {
        return Err(SourceError::NotTar {
            what: display.to_string(),
            detail: format!("the file has {len} bytes, less than one tar header"),
        });
    }
    Ok(())
}

/// One pass over the headers of the archive (`probe`, the whole file) through the one tar
/// reader, data skipped unread.
fn read_entries(
    probe: &BlobLocation,
    display: &str,
) -> Result<HashMap<String, Entry>, SourceError> {
    let mut entries = HashMap::new();
    let mut last = String::new();
    let mut reader = Reader::new(Positional::new(probe.len, |at, buf: &mut [u8]| {
        probe.read_exact_at(at, buf)
    }));
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => return Err(scan_failed(display, &last, e)),
        };
        let raw = String::from_utf8_lossy(reader.written_path()).into_owned();
        last = raw.clone();
        let Some(name) = normalise_name(display, &raw)? else {
            continue;
        };
        let record = entry_record(&entry, display, &name, probe.len)?;
        insert_entry(&mut entries, display, name, record)?;
    }
    if entries.is_empty() {
        return Err(SourceError::NotTar {
            what: display.to_string(),
            detail: "no entries".into(),
        });
    }
    Ok(entries)
}

/// The archive could not be read past entry `last` (`""`: not even its first header).
fn scan_failed(display: &str, last: &str, e: ScanError) -> SourceError {
    let detail = match e {
        ScanError::Inexact { entry, why } => detail(&format!("{entry}: {why}")),
        ScanError::Io(source) => {
            return SourceError::Io {
                what: display.to_string(),
                source,
            };
        }
    };
    if last.is_empty() {
        return SourceError::NotTar {
            what: display.to_string(),
            detail,
        };
    }
    SourceError::Corrupt {
        what: display.to_string(),
        after: last.to_string(),
        detail,
    }
}

/// Where entry `name`'s bytes are, checked to end inside the file (`len` bytes).
fn entry_record(
    entry: &tarscan::Entry,
    display: &str,
    name: &str,
    len: u64,
) -> Result<Entry, SourceError> {
    let kind = match entry.kind {
        // Its stored data holds only the parts that are not holes: not the file's bytes.
        tarscan::Kind::File if entry.sparse_size.is_some() => Kind::Other("sparse file"),
        tarscan::Kind::File => Kind::File,
        tarscan::Kind::Dir => Kind::Dir,
        tarscan::Kind::Symlink => Kind::Symlink,
        tarscan::Kind::HardLink => Kind::HardLink,
        tarscan::Kind::Char => Kind::Other("character device"),
        tarscan::Kind::Block => Kind::Other("block device"),
        tarscan::Kind::Fifo => Kind::Other("fifo"),
        tarscan::Kind::Other(_) => Kind::Other("special entry"),
    };
    let offset = entry.data_start;
    let size = entry.data_len;
    let end = offset.saturating_add(size);
    if end > len {
        return Err(SourceError::Truncated {
            what: display.to_string(),
            entry: name.to_string(),
            end,
            len,
        });
    }
    let link = (kind == Kind::Symlink).then(|| String::from_utf8_lossy(&entry.link).into_owned());
    Ok(Entry {
        offset,
        size,
        kind,
        link,
    })
}

/// Adds `record` under `name`. A directory repeated is harmless; anything else twice is
/// ambiguous, and more than [`TAR_ENTRIES_MAX`] entries is not an image archive.
fn insert_entry(
    entries: &mut HashMap<String, Entry>,
    display: &str,
    name: String,
    record: Entry,
) -> Result<(), SourceError> {
    match entries.get(&name) {
        Some(Entry {
            kind: Kind::Dir, ..
        }) if record.kind == Kind::Dir => {}
        Some(_) => {
            return Err(SourceError::Duplicate {
                what: display.to_string(),
                entry: name,
            });
        }
        None => {
            if entries.len() >= TAR_ENTRIES_MAX {
                return Err(SourceError::TooManyEntries {
                    what: display.to_string(),
                    max: TAR_ENTRIES_MAX,
                });
            }
            entries.insert(name, record);
        }
    }
    Ok(())
}

impl TarIndex {
    /// Opens and indexes the archive at `path`.
    pub fn open(path: &Path) -> Result<TarIndex, SourceError> {
        let display = path.display().to_string();
        if path.is_dir() {
            return Err(SourceError::NotTar {
                what: display,
                detail: "it is a directory; name an OCI layout directory as oci:DIR".into(),
            });
        }
        let file = File::open(path).map_err(|e| SourceError::opening(&display, e))?;
        TarIndex::from_file(file, display)
    }

    /// Indexes an already open archive; `display` names it in messages.
    pub fn from_file(file: File, display: String) -> Result<TarIndex, SourceError> {
        let len = file
            .metadata()
            .map_err(|e| SourceError::Io {
                what: display.clone(),
                source: e,
            })?
            .len();
        let file = Arc::new(file);
        let probe = BlobLocation {
            file: file.clone(),
            offset: 0,
            len,
            name: display.as_str().into(),
            splice: None,
        };
        check_plain_tar(&display, &probe.head(512)?, len)?;
        let entries = read_entries(&probe, &display)?;
        Ok(TarIndex {
            file,
            display,
            len,
            entries,
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Size of the archive file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Whether a regular file (or a link) named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.kind != Kind::Dir)
    }

    /// Number of entries (directories included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the bytes of `name` are, following one symlink whose target is a regular file
    /// inside the archive. Only for content verified as it streams (docker save layers, checked
    /// against their diff_id): `docker save` before Docker 25 writes a layer that appears twice
    /// as a relative symlink to the first copy. Any other link is refused as [`TarIndex::locate`]
    /// refuses it.
    pub fn locate_following_symlink(
        &self,
        name: &str,
        hint: &'static str,
    ) -> Result<BlobLocation, SourceError> {
        let first = self.locate(name, hint);
        let Err(SourceError::Link {
            kind: "symlink", ..
        }) = &first
        else {
            return first;
        };
        let Some(target) = self.entries.get(name).and_then(|e| e.link.as_deref()) else {
            return first;
        };
        if target.starts_with('/') {
            return first;
        }
        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return first;
                    }
                }
                p => parts.push(p),
            }
        }
        let resolved = parts.join("/");
        match self.entries.get(&resolved) {
            Some(Entry {
                kind: Kind::File, ..
            }) => {
                let mut loc = self.locate(&resolved, hint)?;
                loc.name = format!("{}: {} -> {}", self.display, name, resolved).into();
                Ok(loc)
            }
            _ => first,
        }
    }

    /// Where the bytes of regular file `name` are. `hint` says what to do if it is missing.
    pub fn locate(&self, name: &str, hint: &'static str) -> Result<BlobLocation, SourceError> {
        let entry = self.entries.get(name).ok_or_else(|| SourceError::Missing {
            what: self.display.clone(),
            entry: name.to_string(),
            hint,
        })?;
        let link = |kind| SourceError::Link {
            what: self.display.clone(),
            entry: name.to_string(),
            kind,
        };
        match entry.kind {
            Kind::File => Ok(BlobLocation {
                file: self.file.clone(),
                offset: entry.offset,
                len: entry.size,
                name: format!("{}: {}", self.display, name).into(),
                splice: None,
            }),
            Kind::Symlink => Err(link("symlink")),
            Kind::HardLink => Err(link("hard link")),
            Kind::Dir => Err(SourceError::NotRegular {
                what: self.display.clone(),
                entry: name.to_string(),
                kind: "directory",
            }),
            Kind::Other(kind) => Err(SourceError::NotRegular {
                what: self.display.clone(),
                entry: name.to_string(),
                kind,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalise_name("a", "./x/y").unwrap().unwrap(), "x/y");
        assert_eq!(normalise_name("a", "x//y/").unwrap().unwrap(), "x/y");
        assert!(normalise_name("a", "./").unwrap().is_none());
        assert!(normalise_name("a", "/etc/passwd").is_err());
        assert!(normalise_name("a", "x/../../y").is_err());
        // Names reach one-line error messages (a manifest.json layer path "is missing"): an
        // escape sequence or a new line in one is refused, and quoted escaped.
        let e = normalise_name("a.tar", "x\u{1b}[31my\nz")
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(
            e.contains(r#""x\u{1b}[31my\nz" has control characters"#),
            "{e}"
        );
    }
}
