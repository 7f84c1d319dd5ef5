//! The entries of an uncompressed layer tar, found by reading headers only through the one tar
//! reader ([`crate::tarscan`]): each entry's byte range (its PAX / GNU long-name records,
//! header and padded data, kept together) and what the split rules and the proof need of it.
//! File data is skipped, never read.

use super::SplitError;
use crate::source::BlobLocation;
pub use crate::tarscan::{BLOCK_BYTES, END_OF_ARCHIVE_BYTES, Entry, Kind};
use crate::tarscan::{Positional, Reader, ScanError};

/// Entries one layer may have for hoist to split it; the planner keeps each entry (about
/// 150 bytes and its path) in memory: about 1 GiB at the limit.
pub const SPLIT_ENTRIES_MAX: usize = 4_000_000;

/// Scans the layer's headers: every entry in tar order, up to the end-of-archive marker. A
/// layer the reader cannot read exactly is [`SplitError::Unsplittable`], naming the entry.
pub fn scan(layer: &BlobLocation) -> Result<Vec<Entry>, SplitError> {
    let unsplittable = |why: String| SplitError::Unsplittable {
        layer: layer.name.to_string(),
        why,
    };
    let mut reader = Reader::new(Positional::new(layer.len, |at, buf: &mut [u8]| {
        layer.read_exact_at(at, buf)
    }));
    let mut entries = Vec::new();
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(entries),
            Err(e @ ScanError::Inexact { .. }) => return Err(unsplittable(e.to_string())),
            Err(ScanError::Io(source)) => {
                return Err(SplitError::Read {
                    layer: layer.name.to_string(),
                    source,
                });
            }
        };
        if entries.len() >= SPLIT_ENTRIES_MAX {
            return Err(unsplittable(format!(
                "it has more than {SPLIT_ENTRIES_MAX} entries"
            )));
        }
        entries.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Arc;

    fn location(bytes: &[u8]) -> BlobLocation {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        BlobLocation {
            file: Arc::new(f),
            offset: 0,
            len: bytes.len() as u64,
            name: "t: layer".into(),
            splice: None,
        }
    }

    #[test]
    fn long_names_and_pax_records_travel_with_their_entry() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "./d/", std::io::empty()).unwrap();
        let long = format!("d/{}", "n".repeat(120));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let pax = format!("d/{}", "p".repeat(130));
        b.append_pax_extensions([("path", pax.as_bytes())]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(700);
        b.append_data(&mut h, "short", &[7u8; 700][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "d/link", &long).unwrap();
        let bytes = b.into_inner().unwrap();
        let entries = scan(&location(&bytes)).unwrap();
        let paths: Vec<String> = entries.iter().map(Entry::shown).collect();
        assert_eq!(paths, ["d", long.as_str(), pax.as_str(), "d/link"]);
        assert_eq!(entries[0].kind, Kind::Dir);
        assert_eq!(entries[3].kind, Kind::HardLink);
        assert_eq!(entries[3].link_path(), long.as_bytes());
        // Back to back from byte 0: every record belongs to an entry, nothing is left out.
        let mut at = 0;
        for e in &entries {
            assert_eq!(e.start, at, "{e:?}");
            at = e.end;
        }
        assert_eq!(&bytes[at as usize..], &[0u8; 1024][..]);
        assert!(matches!(
            scan(&location(&bytes[..600])),
            Err(SplitError::Unsplittable { .. })
        ));
    }
}
