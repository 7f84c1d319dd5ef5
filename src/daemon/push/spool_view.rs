//! A layer's compressed stream as the uploads read it: compressed chunks from the spool file,
//! stored chunks framed on the fly from the source.
//!
//! An incompressible chunk is written as stored deflate blocks (or raw zstd blocks): its input
//! with a few bytes of framing every 64 KiB. Copying those bytes into the spool cost as much CPU
//! as SHA-256 or deflate in a push's profile (the page-cache write of every byte, then the read
//! back), and as much disk as the layer. So the spool file holds only the chunks that were
//! compressed, and a map file beside it (`<spool file>.map`) says, per compressor chunk, how
//! long its output is and whether it was stored: a stored chunk's framing depends only on its
//! length and on whether it is the stream's first (gzip's header), both known from its index.
//! A gzip stream's trailer is one more piece after the chunks, in the spool like a compressed
//! chunk. [`SpoolView`] reads any range of the whole stream from the two.
//!
//! Durability: the map is synced with the spool file before the store records a chunk as done,
//! so the store's chunk count is what a rerun trusts; records past it are cut off on load.
//! A stored chunk's bytes are read from the source at upload time: the source's identity is
//! checked on every rerun (`identity.rs`), the compressor hashed the same bytes for the blob
//! digest, and the registry checks that digest at the final PUT, so a source changed under a
//! running push fails the blob instead of landing wrong bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::compress::{Codec, StoredChunk};
use crate::registry::ReadAt;
use crate::source::BlobLocation;

/// Bytes of one map record: the chunk's output length, then flags.
const MAP_RECORD_BYTES: usize = 16;
/// Flag bit of a record's second word: the chunk is stored (framed input), not in the spool.
const STORED_FLAG: u64 = 1 << 63;

/// The map file of a spool file.
pub fn map_path(spool: &Path) -> PathBuf {
    let mut name = spool.as_os_str().to_owned();
    name.push(".map");
    PathBuf::from(name)
}

/// Where one chunk's output lives.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Spooled {
        spool_start: u64,
    },
    Stored {
        chunk: StoredChunk,
        input_start: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    out_start: u64,
    out_len: u64,
    piece: Piece,
}

#[derive(Default)]
struct Inner {
    spool: Option<Arc<File>>,
    entries: Vec<Entry>,
    /// Bytes of the whole stream so far (the logical length).
    len: u64,
    /// Bytes of the spool file (compressed chunks only).
    spooled: u64,
}

/// One layer's compressed stream: the spool file plus the source, as the map says.
pub struct SpoolView {
    source: BlobLocation,
    codec: Codec,
    chunk_bytes: u64,
    inner: RwLock<Inner>,
}

/// Lengths a map file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLengths {
    pub chunks: u64,
    /// The whole stream's bytes.
    pub len: u64,
    /// The spool file's bytes.
    pub spooled: u64,
}

/// Reads a map file's records: (output length, stored).
fn read_records(map: &mut File) -> io::Result<Vec<(u64, bool)>> {
    map.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    map.read_to_end(&mut bytes)?;
    Ok(bytes
        .chunks_exact(MAP_RECORD_BYTES)
        .map(|r| {
            let out_len = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
            let info = u64::from_le_bytes(r[8..].try_into().expect("8 bytes"));
            (out_len, info & STORED_FLAG != 0)
        })
        .collect())
}

/// The lengths a map file describes (for a cached spool file, before taking it).
pub fn map_lengths(map: &Path) -> io::Result<MapLengths> {
    let records = read_records(&mut File::open(map)?)?;
    Ok(MapLengths {
        chunks: records.len() as u64,
        len: records.iter().map(|r| r.0).sum(),
        spooled: records.iter().filter(|r| !r.1).map(|r| r.0).sum(),
    })
}

impl SpoolView {
    pub fn new(source: BlobLocation, codec: Codec, chunk_bytes: u64) -> Self {
        SpoolView {
            source,
            codec,
            chunk_bytes,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A poisoned lock means a compressor thread panicked mid-push of an entry; the
        // entries themselves are whole (pushed in one statement).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Input bytes of compressor chunk `index` (the last one may be short).
    fn input_len(&self, index: u64) -> Option<u64> {
        let input_start = index.checked_mul(self.chunk_bytes)?;
        Some(
            self.chunk_bytes
                .min(self.source.len.checked_sub(input_start)?),
        )
    }

    /// The stored chunk a map record describes, if its length agrees with the layout.
    fn stored_chunk(&self, index: u64, out_len: u64) -> Option<StoredChunk> {
        let chunk = StoredChunk {
            codec: self.codec,
            input_len: self.input_len(index)?,
            first: index == 0,
        };
        (chunk.encoded_len() == out_len).then_some(chunk)
    }

    /// Loads the view from a spool file and its map: the first `chunks` records (all with
    /// `None`), which must describe `len` bytes when given. Records and spool bytes past them
    /// were written after the last durable chunk and are cut off. Returns false, with both
    /// files emptied and the view empty, when the files hold less than that (removed or
    /// damaged by hand): the layer starts over.
    pub fn load(
        &self,
        spool: Arc<File>,
        map: &mut File,
        chunks: Option<u64>,
        len: Option<u64>,
    ) -> io::Result<bool> {
        let mut records = read_records(map)?;
        let want = chunks.unwrap_or(records.len() as u64);
        let mut inner = Inner {
            spool: Some(spool.clone()),
            ..Inner::default()
        };
        let mut ok = records.len() as u64 >= want;
        records.truncate(want as usize);
        for (index, &(out_len, stored)) in records.iter().enumerate() {
            let piece = match stored {
                false => Piece::Spooled {
                    spool_start: inner.spooled,
                },
                true => match self.stored_chunk(index as u64, out_len) {
                    Some(chunk) => Piece::Stored {
                        chunk,
                        input_start: index as u64 * self.chunk_bytes,
                    },
                    None => {
                        ok = false;
                        break;
                    }
                },
            };
            inner.entries.push(Entry {
                out_start: inner.len,
                out_len,
                piece,
            });
            inner.len += out_len;
            if !stored {
                inner.spooled += out_len;
            }
        }
        ok &= len.is_none_or(|l| l == inner.len) && spool.metadata()?.len() >= inner.spooled;
        if !ok {
            inner = Inner {
                spool: Some(spool.clone()),
                ..Inner::default()
            };
        }
        spool.set_len(inner.spooled)?;
        map.set_len(inner.entries.len() as u64 * MAP_RECORD_BYTES as u64)?;
        map.seek(SeekFrom::End(0))?;
        *self.write() = inner;
        Ok(ok)
    }

    /// Adds chunk `index`'s output: written to `spool` (at its end) unless it is a stored
    /// chunk, which is only described; either way a record is appended to `map`. Neither file
    /// is synced here: the caller syncs both before recording the chunk as done.
    pub fn append(
        &self,
        index: u64,
        stored: bool,
        out: &[u8],
        mut spool: &File,
        mut map: &File,
    ) -> io::Result<()> {
        let out_len = out.len() as u64;
        let chunk = if stored {
            self.input_len(index).and_then(|input_len| {
                StoredChunk::from_output(self.codec, input_len, index == 0, out)
            })
        } else {
            None
        };
        // Only this layer's compressor appends, so what is read here stays true while the bytes
        // are written without holding the lock (the uploads keep reading meanwhile).
        let (entries, spooled) = {
            let inner = self.read();
            (inner.entries.len() as u64, inner.spooled)
        };
        if entries != index {
            return Err(io::Error::other(format!(
                "spool map out of step: chunk {index} after {entries} chunks"
            )));
        }
        let (piece, info) = match chunk {
            Some(chunk) => (
                Piece::Stored {
                    chunk,
                    input_start: index * self.chunk_bytes,
                },
                STORED_FLAG,
            ),
            // Compressed, or a stored chunk whose framing the layout does not rebuild exactly
            // (never expected): its bytes go to the spool like any other.
            None => {
                spool.write_all(out)?;
                (
                    Piece::Spooled {
                        spool_start: spooled,
                    },
                    0,
                )
            }
        };
        let mut record = [0u8; MAP_RECORD_BYTES];
        record[..8].copy_from_slice(&out_len.to_le_bytes());
        record[8..].copy_from_slice(&info.to_le_bytes());
        map.write_all(&record)?;
        let mut inner = self.write();
        let out_start = inner.len;
        inner.entries.push(Entry {
            out_start,
            out_len,
            piece,
        });
        inner.len += out_len;
        if matches!(piece, Piece::Spooled { .. }) {
            inner.spooled += out_len;
        }
        Ok(())
    }

    fn read_input(&self, dst: &mut [u8], at: u64) -> io::Result<()> {
        if at + dst.len() as u64 > self.source.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a stored chunk reaches past the end of its layer",
            ));
        }
        self.source.read_exact_at(at, dst)
    }
}

impl ReadAt for SpoolView {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let (entry, spool) = {
            let inner = self.read();
            let i = inner
                .entries
                .partition_point(|e| e.out_start + e.out_len <= pos);
            match inner.entries.get(i) {
                Some(e) if e.out_start <= pos => (*e, inner.spool.clone()),
                _ => return Ok(0),
            }
        };
        let rel = pos - entry.out_start;
        let n = ((entry.out_len - rel) as usize).min(buf.len());
        match entry.piece {
            Piece::Spooled { spool_start } => {
                let spool = spool.ok_or_else(|| io::Error::other("the spool file is not open"))?;
                ReadAt::read_at(&*spool, &mut buf[..n], spool_start + rel)
            }
            Piece::Stored { chunk, input_start } => {
                chunk.read_at(&mut buf[..n], rel, &mut |dst, at| {
                    self.read_input(dst, input_start + at)
                })
            }
        }
    }
}

/// A `Read` over a view from byte 0 (the compressor re-hashes the kept prefix on resume).
pub struct ViewReader<'a> {
    view: &'a SpoolView,
    pos: u64,
}

impl<'a> ViewReader<'a> {
    pub fn new(view: &'a SpoolView) -> Self {
        ViewReader { view, pos: 0 }
    }
}

impl Read for ViewReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.view.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{ChunkCompressor, ChunkPlace, gzip_trailer};
    use hoist_testkit::testdata;

    const CHUNK: u64 = 256 << 10;

    /// A source of three chunks: random (stored), text (compressed), random tail (stored).
    fn source(dir: &Path) -> (BlobLocation, Vec<u8>) {
        let mut bytes = testdata::random_bytes(CHUNK as usize, 1);
        bytes.extend(testdata::text_like(CHUNK as usize, 2));
        bytes.extend(testdata::random_bytes(CHUNK as usize - 1000, 3));
        let path = dir.join("layer");
        std::fs::write(&path, &bytes).unwrap();
        let loc = BlobLocation {
            file: Arc::new(File::open(&path).unwrap()),
            offset: 0,
            len: bytes.len() as u64,
            name: "layer".into(),
            splice: None,
        };
        (loc, bytes)
    }

    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    fn read_all(view: &SpoolView) -> Vec<u8> {
        let mut out = Vec::new();
        ViewReader::new(view).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_view_reads_the_whole_stream_with_stored_chunks_left_out_of_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (loc, input) = source(dir.path());
        let spool_path = dir.path().join("spool");
        let spool = Arc::new(open(&spool_path));
        let mut map = open(&map_path(&spool_path));
        let view = SpoolView::new(loc.clone(), Codec::Gzip, CHUNK);
        assert!(
            view.load(spool.clone(), &mut map, Some(0), Some(0))
                .unwrap()
        );
        let mut whole = Vec::new();
        let mut compressed_bytes = 0;
        let mut c = ChunkCompressor::new();
        for (i, chunk) in input.chunks(CHUNK as usize).enumerate() {
            let mut out = Vec::new();
            let place = ChunkPlace {
                first: i == 0,
                before: &input[..i * CHUNK as usize],
            };
            let stored = c.compress_at(Codec::Gzip, chunk, place, &mut out).unwrap();
            assert_eq!(stored, i != 1, "chunk {i}");
            if !stored {
                compressed_bytes += out.len() as u64;
            }
            view.append(i as u64, stored, &out, &spool, &map).unwrap();
            whole.extend(out);
        }
        // The trailer: one more piece, in the spool.
        let trailer = gzip_trailer(zlib_rs::crc32::crc32(0, &input), input.len() as u64);
        view.append(3, false, &trailer, &spool, &map).unwrap();
        whole.extend(trailer);
        compressed_bytes += trailer.len() as u64;
        assert_eq!(read_all(&view), whole);
        let mut one = flate2::read::GzDecoder::new(&whole[..]);
        let mut back = Vec::new();
        one.read_to_end(&mut back).unwrap();
        assert!(
            back == input && one.into_inner().is_empty(),
            "one gzip member"
        );
        assert_eq!(spool.metadata().unwrap().len(), compressed_bytes);
        let lengths = map_lengths(&map_path(&spool_path)).unwrap();
        assert_eq!(
            lengths,
            MapLengths {
                chunks: 4,
                len: whole.len() as u64,
                spooled: compressed_bytes
            }
        );

        // A rerun that trusts two chunks: the third is cut off, the first two read the same.
        let two = view.read().entries[2].out_start;
        let again = SpoolView::new(loc.clone(), Codec::Gzip, CHUNK);
        assert!(
            again
                .load(spool.clone(), &mut map, Some(2), Some(two))
                .unwrap()
        );
        assert_eq!(read_all(&again), whole[..two as usize]);
        assert_eq!(map_lengths(&map_path(&spool_path)).unwrap().chunks, 2);

        // A spool file shorter than the map says (damaged by hand): the layer starts over,
        // both files emptied.
        let fresh = SpoolView::new(loc, Codec::Gzip, CHUNK);
        spool.set_len(1).unwrap();
        assert!(
            !fresh
                .load(spool.clone(), &mut map, Some(2), Some(two))
                .unwrap()
        );
        assert_eq!(fresh.read().len, 0);
        assert_eq!(spool.metadata().unwrap().len(), 0);
        assert_eq!(map.metadata().unwrap().len(), 0);
    }
}
