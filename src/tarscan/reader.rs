//! The walk over a tar's entries, on any [`Source`].

use std::io::{self, Read, Seek, SeekFrom};

use super::header::{self, BLOCK_BYTES, Header};
use super::pax::Records;
use super::{Entry, Kind, Mtime, ScanError, clean, shown};

/// Largest PAX header or GNU long name read into memory (Go's limit too).
const RECORD_BYTES_MAX: u64 = 1 << 20;

/// Where a tar's bytes come from.
pub trait Source {
    /// Fills `buf`, fewer bytes only at the end of the tar.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Skips `n` bytes; fewer only at the end of the tar.
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A tar read at offsets (`read_at(offset, buf)` fills `buf` or fails), `len` bytes long:
/// skipping costs nothing.
pub struct Positional<F> {
    read_at: F,
    pos: u64,
    len: u64,
}

impl<F: FnMut(u64, &mut [u8]) -> io::Result<()>> Positional<F> {
    pub fn new(len: u64, read_at: F) -> Self {
        Positional {
            read_at,
            pos: 0,
            len,
        }
    }
}

impl<F: FnMut(u64, &mut [u8]) -> io::Result<()>> Source for Positional<F> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        (self.read_at)(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.len - self.pos);
        self.pos += n;
        Ok(n)
    }
}

/// A stream: skipped bytes are read and dropped.
pub struct Sequential<R>(pub R);

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl<R: Read> Source for Sequential<R> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_full(&mut self.0, buf)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// A seekable file or buffer: data is seeked over (short skips, within a read buffer, are
/// read instead).
pub struct Seekable<R> {
    inner: R,
    pos: u64,
    len: u64,
}

/// Skips this short are read, not seeked: a seek drops a `BufReader`'s buffer.
const SEEK_BYTES_MIN: u64 = 8 << 10;

impl<R: Read + Seek> Seekable<R> {
    pub fn new(mut inner: R) -> io::Result<Self> {
        let pos = inner.stream_position()?;
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(pos))?;
        Ok(Seekable { inner, pos, len })
    }
}

impl<R: Read + Seek> Source for Seekable<R> {
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_full(&mut self.inner, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.len.saturating_sub(self.pos));
        if n < SEEK_BYTES_MIN {
            let read = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            self.pos += read;
            return Ok(read);
        }
        self.inner.seek(SeekFrom::Current(n as i64))?;
        self.pos += n;
        Ok(n)
    }
}

/// What the records before an entry said about it.
#[derive(Default)]
struct Pending {
    start: Option<u64>,
    pax: Option<Records>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The entries of a tar, one at a time; the current entry's data can be read in between.
pub struct Reader<S> {
    src: S,
    /// Offset of the next unread byte.
    pos: u64,
    /// Data of the current entry not read yet, and its padding.
    data_left: u64,
    pad_left: u64,
    /// The last entry's path, for a message about what follows it.
    last: Vec<u8>,
    /// The last entry's path as written, before cleaning.
    written: Vec<u8>,
    done: bool,
}

impl<S: Source> Reader<S> {
    pub fn new(src: S) -> Self {
        Reader {
            src,
            pos: 0,
            data_left: 0,
            pad_left: 0,
            last: Vec::new(),
            written: Vec::new(),
            done: false,
        }
    }

    fn inexact(&self, entry: &[u8], why: impl Into<String>) -> ScanError {
        let entry = if entry.is_empty() {
            format!("the header at byte {}", self.pos)
        } else {
            shown(entry)
        };
        ScanError::Inexact {
            entry,
            why: why.into(),
        }
    }

    /// Reads the current entry's data into `buf`: 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ScanError> {
        let want = (buf.len() as u64).min(self.data_left) as usize;
        let n = self.src.read_full(&mut buf[..want])?;
        self.pos += n as u64;
        self.data_left -= n as u64;
        if n < want {
            return Err(self.inexact(&self.last.clone(), "the tar ends inside its data"));
        }
        Ok(n)
    }

    /// The current entry's data as a stream, from where [`Reader::read_data`] left it: a
    /// failed read of the source is its own error, a tar that cannot be read exactly an
    /// [`io::ErrorKind::InvalidData`] error carrying the [`ScanError`].
    pub fn data(&mut self) -> Data<'_, S> {
        Data(self)
    }

    /// The current entry's path as written (PAX path and GNU long name applied), before
    /// [`clean`]: for a scan that refuses what an applier would clean (`/`, `..`).
    pub fn written_path(&self) -> &[u8] {
        &self.written
    }

    /// Skips what is left of the current entry.
    fn skip_rest(&mut self) -> Result<(), ScanError> {
        let n = self.data_left + self.pad_left;
        let skipped = self.src.skip(n)?;
        self.pos += skipped;
        (self.data_left, self.pad_left) = (0, 0);
        if skipped < n {
            return Err(self.inexact(&self.last.clone(), "the tar ends inside its data"));
        }
        Ok(())
    }

    /// Reads a block; `None` at the end of the tar, `Err` for a partial block.
    fn block(&mut self, block: &mut [u8; 512]) -> Result<Option<()>, ScanError> {
        let n = self.src.read_full(block)?;
        self.pos += n as u64;
        match n {
            0 => Ok(None),
            512 => Ok(Some(())),
            _ => Err(self.inexact(b"", "the tar ends inside a header")),
        }
    }

    /// The next entry, `None` at the end of the tar.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ScanError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut pending = Pending::default();
        let mut block = [0u8; 512];
        loop {
            let at = self.pos;
            if self.block(&mut block)?.is_none() {
                return self.end(&pending);
            }
            if block.iter().all(|&b| b == 0) {
                self.end_marker(&mut block)?;
                return self.end(&pending);
            }
            if !header::checksum_ok(&block) {
                self.pos = at;
                return Err(self.inexact(b"", "its checksum is wrong"));
            }
            let hdr = header::decode(&block).map_err(|field| {
                self.inexact(
                    header::cstr(&block[..100]),
                    format!("its {field} is not a number"),
                )
            })?;
            if self.record(&hdr, at, &mut pending)? {
                continue;
            }
            let entry = self.entry(hdr, pending, at)?;
            self.data_left = entry.data_len;
            self.pad_left = entry.end - entry.data_start - entry.data_len;
            self.last.clone_from(&entry.path);
            return Ok(Some(entry));
        }
    }

    /// After a zero block: a second one (or the end of the tar) ends it; anything else is
    /// read differently by GNU tar (the end) and Go (an error).
    fn end_marker(&mut self, block: &mut [u8; 512]) -> Result<(), ScanError> {
        self.done = true;
        if self.block(block)?.is_some() && block.iter().any(|&b| b != 0) {
            return Err(self.inexact(b"", "a header follows a single zero block"));
        }
        Ok(())
    }

    fn end(&mut self, pending: &Pending) -> Result<Option<Entry>, ScanError> {
        self.done = true;
        if pending.start.is_some() {
            return Err(self.inexact(b"", "the tar ends after a record without its entry"));
        }
        Ok(None)
    }

    /// Takes a PAX header or GNU long name or link into `pending` (`true`), refuses the
    /// types hoist cannot read exactly, and leaves the rest to be entries (`false`).
    fn record(&mut self, hdr: &Header, at: u64, pending: &mut Pending) -> Result<bool, ScanError> {
        let why = match hdr.typeflag {
            b'x' | b'L' | b'K' => None,
            b'g' => Some("a PAX global header (it applies to every later entry)"),
            b'S' => Some("an old GNU sparse file"),
            b'M' => Some("a GNU multi-volume continuation"),
            b'V' => Some("a GNU volume label"),
            b'N' => Some("an old GNU long-names record"),
            b'X' => Some("a Solaris extended header (GNU tar and Go read it differently)"),
            _ => return Ok(false),
        };
        if let Some(why) = why {
            return Err(self.inexact(&hdr.name, why));
        }
        if hdr.size > RECORD_BYTES_MAX {
            return Err(self.inexact(&hdr.name, format!("a {}-byte record", hdr.size)));
        }
        let mut data = vec![0u8; hdr.size as usize];
        if self.src.read_full(&mut data)? < data.len() {
            return Err(self.inexact(&hdr.name, "the tar ends inside it"));
        }
        let pad = hdr.size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES - hdr.size;
        if self.src.skip(pad)? < pad {
            return Err(self.inexact(&hdr.name, "the tar ends inside it"));
        }
        self.pos += hdr.size + pad;
        pending.start.get_or_insert(at);
        let twice = match hdr.typeflag {
            b'x' => {
                let records = Records::parse(&data)
                    .map_err(|why| self.inexact(&hdr.name, format!("its PAX header has {why}")))?;
                pending.pax.replace(records).is_some()
            }
            b'L' => pending
                .long_name
                .replace(header::cstr(&data).to_vec())
                .is_some(),
            _ => pending
                .long_link
                .replace(header::cstr(&data).to_vec())
                .is_some(),
        };
        if twice {
            return Err(self.inexact(&hdr.name, "two records of one kind for one entry"));
        }
        Ok(true)
    }

    /// The entry whose header `hdr` is at `at`, with what the records before it said.
    fn entry(&mut self, mut hdr: Header, pending: Pending, at: u64) -> Result<Entry, ScanError> {
        let pax = pending.pax.unwrap_or_default();
        let original = hdr.name.clone();
        let bad = |why: &str| self.inexact(&original, why.to_string());
        let sparse_size = apply_pax(&mut hdr, &pax).map_err(|why| bad(&why))?;
        if let Some(name) = pending.long_name {
            if pax.get("path").is_some_and(|p| p != name.as_slice()) {
                return Err(bad("a GNU long name and a PAX path that differ"));
            }
            hdr.name = name;
        }
        if let Some(link) = pending.long_link {
            hdr.link = link;
        }
        let kind = match hdr.typeflag {
            0 if hdr.name.ends_with(b"/") => Kind::Dir,
            b'0' if hdr.name.ends_with(b"/") => {
                return Err(bad("a regular file named like a directory"));
            }
            t => Kind::of(t),
        };
        let data_len = if kind.header_only() { 0 } else { hdr.size };
        let data_start = at + BLOCK_BYTES;
        let mtime = pax_mtime(&pax).map_err(bad)?.unwrap_or(Mtime {
            secs: hdr.mtime,
            nanos: 0,
        });
        self.written.clone_from(&hdr.name);
        Ok(Entry {
            start: pending.start.unwrap_or(at),
            end: data_start + data_len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES,
            path: clean(&hdr.name),
            kind,
            mode: hdr.mode,
            uid: hdr.uid,
            gid: hdr.gid,
            mtime,
            link: hdr.link,
            devmajor: hdr.devmajor,
            devminor: hdr.devminor,
            data_start,
            data_len,
            sparse_size,
        })
    }
}

/// An entry's data as a stream ([`Reader::data`]).
pub struct Data<'a, S>(&'a mut Reader<S>);

impl<S: Source> Read for Data<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf).map_err(|e| match e {
            ScanError::Io(e) => e,
            inexact => io::Error::new(io::ErrorKind::InvalidData, inexact),
        })
    }
}

fn pax_mtime(pax: &Records) -> Result<Option<Mtime>, &'static str> {
    Ok(pax
        .time("mtime")?
        .map(|(secs, nanos)| Mtime { secs, nanos }))
}

/// Applies `pax` to `hdr` as Go's `mergePAX` and its sparse handling do; the real size of a
/// PAX sparse file.
fn apply_pax(hdr: &mut Header, pax: &Records) -> Result<Option<u64>, String> {
    let unsigned = |key: &str| -> Result<Option<u64>, String> {
        match pax.number(key)? {
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| format!("a negative PAX {key}")),
            None => Ok(None),
        }
    };
    if let Some(p) = pax.get("path") {
        hdr.name = p.to_vec();
    }
    if let Some(l) = pax.get("linkpath") {
        hdr.link = l.to_vec();
    }
    hdr.size = unsigned("size")?.unwrap_or(hdr.size);
    hdr.uid = unsigned("uid")?.unwrap_or(hdr.uid);
    hdr.gid = unsigned("gid")?.unwrap_or(hdr.gid);
    pax_mtime(pax)?;
    let (major, minor) = (pax.get("GNU.sparse.major"), pax.get("GNU.sparse.minor"));
    let sparse = match (major, minor) {
        (Some(b"0"), Some(b"0" | b"1")) | (Some(b"1"), Some(b"0")) => true,
        (None, None) => pax.get("GNU.sparse.map").is_some(),
        _ => return Err("an unknown GNU sparse version".into()),
    };
    if !sparse {
        return Ok(None);
    }
    if let Some(name) = pax.get("GNU.sparse.name").filter(|n| !n.is_empty()) {
        hdr.name = name.to_vec();
    }
    let real = match unsigned("GNU.sparse.size")? {
        Some(s) => s,
        None => unsigned("GNU.sparse.realsize")?.unwrap_or(hdr.size),
    };
    Ok(Some(real))
}
