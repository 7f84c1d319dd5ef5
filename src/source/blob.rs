//! Blob bytes read in place: a (file, offset, length) range of a descriptor opened once, and
//! readers that verify digest and size as the bytes stream.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::error::SourceError;
use crate::digest::{Digest, Hasher};

/// Where a blob's bytes are: a range of a file that is already open.
///
/// Cloning is cheap (the descriptor is shared). Reads use `pread` (`FileExt::read_at`), which
/// does not move the file cursor, so any number of threads can read any ranges concurrently.
#[derive(Clone)]
pub struct BlobLocation {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
    /// How messages name this blob: `FILE: ENTRY`.
    pub name: Arc<str>,
    /// When set, the blob is these pieces in order (ranges of `file`, zero runs, small
    /// in-memory documents) and `offset`/`len` are positions in that sequence, not in `file`.
    pub splice: Option<Arc<Splice>>,
}

/// One piece of a [`Splice`].
#[derive(Debug, Clone)]
pub enum SplicePiece {
    /// `len` bytes of the location's file from `offset`.
    File { offset: u64, len: u64 },
    /// `len` zero bytes (a tar's end-of-archive blocks).
    Zeros { len: u64 },
    /// Bytes held in memory (a document hoist wrote, never layer data).
    Bytes(Arc<[u8]>),
}

impl SplicePiece {
    pub fn len(&self) -> u64 {
        match self {
            SplicePiece::File { len, .. } | SplicePiece::Zeros { len } => *len,
            SplicePiece::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A blob assembled from pieces, read in place: a layer part made of byte ranges of the
/// source layer plus its end-of-archive blocks, or a rewritten document.
#[derive(Debug)]
pub struct Splice {
    pieces: Vec<SplicePiece>,
    /// Where each piece starts in the assembled blob.
    starts: Vec<u64>,
    len: u64,
}

impl Splice {
    pub fn new(pieces: Vec<SplicePiece>) -> Splice {
        let pieces: Vec<SplicePiece> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0;
        for p in &pieces {
            starts.push(len);
            len += p.len();
        }
        Splice {
            pieces,
            starts,
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads from `pos` within one piece (a short read at a piece's end, 0 at the end).
    fn read_at(&self, file: &File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
        let (Some(piece), Some(&start)) = (self.pieces.get(i), self.starts.get(i)) else {
            return Ok(0);
        };
        let rel = pos.saturating_sub(start);
        if rel >= piece.len() {
            return Ok(0);
        }
        let n = ((piece.len() - rel) as usize).min(buf.len());
        let buf = buf.get_mut(..n).unwrap_or_default();
        match piece {
            SplicePiece::File { offset, .. } => file.read_at(buf, offset + rel),
            SplicePiece::Zeros { .. } => {
                buf.fill(0);
                Ok(n)
            }
            SplicePiece::Bytes(b) => {
                let from = b.get(rel as usize..rel as usize + n).unwrap_or_default();
                buf.copy_from_slice(from);
                Ok(n)
            }
        }
    }
}

impl fmt::Debug for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} @{}+{}", self.name, self.offset, self.len)
    }
}

impl BlobLocation {
    /// The blob `splice` assembles; `file` is the file its ranges are of.
    pub fn spliced(file: Arc<File>, name: Arc<str>, splice: Splice) -> BlobLocation {
        BlobLocation {
            file,
            offset: 0,
            len: splice.len(),
            name,
            splice: Some(Arc::new(splice)),
        }
    }

    /// A reader over the whole blob.
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            loc: self.clone(),
            pos: 0,
        }
    }

    /// A reader starting `start` bytes into the blob (e.g. to resume an upload).
    pub fn reader_at(&self, start: u64) -> BlobReader {
        BlobReader {
            loc: self.clone(),
            pos: start.min(self.len),
        }
    }

    /// The sub-range `[start, start + len)` of this blob (clamped to it), e.g. one chunk for a
    /// parallel compressor.
    pub fn slice(&self, start: u64, len: u64) -> BlobLocation {
        let start = start.min(self.len);
        BlobLocation {
            file: self.file.clone(),
            offset: self.offset + start,
            len: len.min(self.len - start),
            name: self.name.clone(),
            splice: self.splice.clone(),
        }
    }

    /// Reads into `buf` from `start` bytes into the blob; returns the count read (0 at the end).
    pub fn read_at(&self, start: u64, buf: &mut [u8]) -> io::Result<usize> {
        if start >= self.len {
            return Ok(0);
        }
        let want = (self.len - start).min(buf.len() as u64) as usize;
        let buf = buf.get_mut(..want).unwrap_or_default();
        let n = match &self.splice {
            Some(s) => s.read_at(&self.file, self.offset + start, buf)?,
            None => self.file.read_at(buf, self.offset + start)?,
        };
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: file ended inside the blob: the archive was truncated",
                    self.name
                ),
            ));
        }
        Ok(n)
    }

    /// Fills `buf` from `start` bytes into the blob; fails if the blob ends first.
    pub fn read_exact_at(&self, mut start: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(start, buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: read past the end of the blob", self.name),
                ));
            }
            start += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Reads up to the first `n` bytes (for sniffing the compression).
    pub fn head(&self, n: usize) -> Result<Vec<u8>, SourceError> {
        let mut buf = vec![0u8; n.min(self.len as usize)];
        let mut filled = 0;
        while filled < buf.len() {
            let rest = buf.get_mut(filled..).unwrap_or_default();
            let got = self
                .read_at(filled as u64, rest)
                .map_err(|e| SourceError::from_io(&self.name, e))?;
            filled += got;
        }
        Ok(buf)
    }

    /// Reads the whole blob into memory. Callers bound `len` first (JSON documents only).
    pub fn read_all(&self) -> Result<Vec<u8>, SourceError> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.reader()
            .read_to_end(&mut out)
            .map_err(|e| SourceError::from_io(&self.name, e))?;
        Ok(out)
    }

    /// A reader over the whole blob that fails at EOF unless the bytes have `digest` and
    /// exactly `self.len` bytes.
    pub fn verifying_reader(&self, digest: &Digest) -> VerifyingReader<BlobReader> {
        VerifyingReader::new(
            self.reader(),
            digest.clone(),
            Some(self.len),
            self.name.to_string(),
            Check::Digest,
        )
    }

    /// Streams the whole blob and checks it against `digest` (and the size of the range).
    pub fn verify(&self, digest: &Digest) -> Result<(), SourceError> {
        let mut r = self.verifying_reader(digest);
        io::copy(&mut r, &mut io::sink()).map_err(|e| SourceError::from_io(&self.name, e))?;
        Ok(())
    }
}

/// A `Read` over a [`BlobLocation`]; each reader has its own position.
#[derive(Debug, Clone)]
pub struct BlobReader {
    loc: BlobLocation,
    pos: u64,
}

impl BlobReader {
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.loc.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Seeking only moves the position (clamped to the blob's end); the tar reader of the ELF
/// census seeks over file contents instead of reading them.
impl io::Seek for BlobReader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::End(d) => self.loc.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the blob",
            ));
        };
        self.pos = target.min(self.loc.len);
        Ok(self.pos)
    }
}

/// What a [`VerifyingReader`] checks the digest against (for the error it reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The blob's content digest.
    Digest,
    /// A layer's uncompressed digest (`rootfs.diff_ids` of the config).
    DiffId,
}

/// Passes bytes through while hashing and counting them; at EOF, returns an error (kind
/// `InvalidData`, carrying a [`SourceError`]) if the digest or size is not the expected one.
/// Reading past the expected size fails at once.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Digest,
    expected_len: Option<u64>,
    seen: u64,
    what: String,
    check: Check,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(
        inner: R,
        expected: Digest,
        expected_len: Option<u64>,
        what: String,
        check: Check,
    ) -> Self {
        VerifyingReader {
            inner,
            hasher: Hasher::new(expected.algorithm()),
            expected,
            expected_len,
            seen: 0,
            what,
            check,
            verified: false,
        }
    }

    /// Bytes passed through so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn size_error(&self) -> io::Error {
        SourceError::SizeMismatch {
            what: self.what.clone(),
            expected: self.expected_len.unwrap_or(0),
            actual: self.seen,
        }
        .into_io()
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !self.verified {
                if let Some(len) = self.expected_len
                    && len != self.seen
                {
                    return Err(self.size_error());
                }
                let actual =
                    std::mem::replace(&mut self.hasher, Hasher::new(self.expected.algorithm()))
                        .finish();
                if actual != self.expected {
                    let what = self.what.clone();
                    let expected = self.expected.clone();
                    return Err(match self.check {
                        Check::Digest => SourceError::DigestMismatch {
                            what,
                            expected,
                            actual,
                        },
                        Check::DiffId => SourceError::DiffIdMismatch {
                            what,
                            expected,
                            actual,
                        },
                    }
                    .into_io());
                }
                self.verified = true;
            }
            return Ok(0);
        }
        self.seen += n as u64;
        if let Some(len) = self.expected_len
            && self.seen > len
        {
            return Err(self.size_error());
        }
        let chunk = buf
            .get(..n)
            .ok_or_else(|| io::Error::other("reader returned too many bytes"))?;
        self.hasher.update(chunk);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn loc_of(bytes: &[u8], offset: u64) -> BlobLocation {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; offset as usize]).unwrap();
        f.write_all(bytes).unwrap();
        f.write_all(b"trailing").unwrap();
        BlobLocation {
            file: Arc::new(f),
            offset,
            len: bytes.len() as u64,
            name: "t: blob".into(),
            splice: None,
        }
    }

    #[test]
    fn reads_range_and_verifies() {
        let loc = loc_of(b"hello world", 5);
        let mut s = String::new();
        loc.reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        let mut s = String::new();
        loc.reader_at(6).read_to_string(&mut s).unwrap();
        assert_eq!(s, "world");
        loc.verify(&Digest::sha256_of(b"hello world")).unwrap();
        let e = loc.verify(&Digest::sha256_of(b"hello")).unwrap_err();
        assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
        assert!(
            e.to_string().starts_with("t: blob: content is sha256:"),
            "{e}"
        );
    }

    #[test]
    fn concurrent_ranges() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let loc = loc_of(&data, 3);
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                let loc = loc.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    loc.reader_at(k * 25_000)
                        .take(25_000)
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                })
            })
            .collect();
        let joined: Vec<u8> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn spliced_blobs_read_their_pieces_in_order() {
        let loc = loc_of(b"0123456789", 4);
        let spliced = BlobLocation::spliced(
            loc.file.clone(),
            "t: part".into(),
            Splice::new(vec![
                SplicePiece::File {
                    offset: 4 + 7,
                    len: 3,
                },
                SplicePiece::Zeros { len: 0 },
                SplicePiece::File { offset: 4, len: 2 },
                SplicePiece::Zeros { len: 2 },
                SplicePiece::Bytes(Arc::from(&b"xy"[..])),
            ]),
        );
        let mut out = Vec::new();
        spliced.reader().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"78901\0\0xy");
        let mut out = Vec::new();
        spliced.slice(4, 4).reader().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"1\0\0x");
    }

    #[test]
    fn slices_clamp() {
        let loc = loc_of(b"0123456789", 4);
        let mut s = String::new();
        loc.slice(3, 4).reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "3456");
        assert_eq!(loc.slice(8, 100).len, 2);
        assert_eq!(loc.slice(100, 1).len, 0);
    }

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<BlobLocation>();
        send_sync::<SourceError>();
    }

    #[test]
    fn size_checked() {
        let loc = loc_of(b"hello world", 0);
        let mut r = VerifyingReader::new(
            loc.reader(),
            Digest::sha256_of(b"hello world"),
            Some(5),
            "x".into(),
            Check::Digest,
        );
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        let e = SourceError::from_io("x", e);
        assert!(
            matches!(e, SourceError::SizeMismatch { expected: 5, .. }),
            "{e}"
        );
    }
}
