//! One tar reader for every scan of a tar (the splitter's, the ELF census', the archive
//! index's, the engine export's walk), reading a tar the way GNU tar and Go's `archive/tar`
//! (which containerd, moby and umoci use) read it, so hoist sees the entries an applier will
//! apply (rules: `docs/SPLIT.md`, "Reading a layer"):
//! - entry types that carry no data (hard link, symlink, devices, directory, fifo) have none,
//!   whatever their size field says;
//! - PAX records apply to the next entry (`path`, `linkpath`, `size`, `uid`, `gid`, `mtime`,
//!   and GNU's PAX sparse formats 0.0, 0.1 and 1.0, whose real name is `GNU.sparse.name`);
//!   GNU long names and links (`L`, `K`) too; numbers in octal or base-256;
//! - names are bytes, never converted, cleaned like `filepath.Clean` (no `./`, `/`, `//`,
//!   `..` that leaves the root);
//! - what the readers disagree on or hoist cannot read exactly (old GNU sparse `S`, a PAX
//!   global header `g`, multi-volume `M`, a bad checksum, truncation) is
//!   [`ScanError::Inexact`], naming the entry.
//!
//! [`Reader`] walks a tar through a [`Source`]: [`Positional`] (a file read at offsets: data
//! is skipped, never read), [`Seekable`] (data seeked over) or [`Sequential`] (a stream:
//! data read and dropped). Each [`Entry`] gives its byte range, so a scan can cut a layer at
//! entry boundaries; [`Reader::data`] lends the current entry's data as a `Read`.

mod header;
mod pax;
mod reader;

pub use header::BLOCK_BYTES;
pub use reader::{Data, Positional, Reader, Seekable, Sequential, Source};

/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE_BYTES: u64 = 2 * BLOCK_BYTES;

/// An entry's type, as an applier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// A regular file (`0`, `\0`, contiguous `7`), sparse or not.
    #[default]
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// A type no applier knows (it has data, as its size says).
    Other(u8),
}

impl Kind {
    fn of(typeflag: u8) -> Kind {
        match typeflag {
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            t => Kind::Other(t),
        }
    }

    /// Types whose entries never have data, whatever their size field says (Go's
    /// `isHeaderOnlyType`, GNU tar alike).
    pub fn header_only(self) -> bool {
        matches!(
            self,
            Kind::HardLink | Kind::Symlink | Kind::Char | Kind::Block | Kind::Dir | Kind::Fifo
        )
    }
}

/// A modification time: whole seconds since the epoch, and nanoseconds (from a PAX `mtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// One entry of a tar, with PAX records and GNU long names applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Where the entry's first record starts (its PAX header or GNU long name when it has
    /// one).
    pub start: u64,
    /// Past its data's padding.
    pub end: u64,
    /// The path, cleaned ([`clean`]), as bytes.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// The mode field (permissions and set-id bits; some writers add the file type's).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Mtime,
    /// A symlink's or hard link's target as written (a hard link's, cleaned, is
    /// [`Entry::link_path`]).
    pub link: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    /// Where its data starts in the tar, and its bytes there (0 for header-only types).
    pub data_start: u64,
    pub data_len: u64,
    /// A PAX sparse file's real size (its data holds only the parts that are not holes).
    pub sparse_size: Option<u64>,
}

impl Entry {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    /// The last component of the path.
    pub fn base(&self) -> &[u8] {
        base(&self.path)
    }

    /// A whiteout (`.wh.NAME`) or an opaque marker (`.wh..wh..opq`).
    pub fn is_whiteout(&self) -> bool {
        self.base().starts_with(WHITEOUT_PREFIX)
    }

    /// The opaque marker: the directory hides what lower layers have in it.
    pub fn is_opaque_marker(&self) -> bool {
        self.base() == OPAQUE_MARKER
    }

    /// A hard link's target, cleaned like a path.
    pub fn link_path(&self) -> Vec<u8> {
        clean(&self.link)
    }

    /// The path for a message: invalid UTF-8 shown as escapes, so two names that differ in
    /// one byte read differently.
    pub fn shown(&self) -> String {
        shown(&self.path)
    }
}

/// The name prefix of a whiteout.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of an opaque marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// The last component of a cleaned path.
pub fn base(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The parent of a cleaned path (`b""`, the root, for a top-level name).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// A path as appliers resolve it inside their root: `./a//b/../c/` -> `a/c`; `..` never
/// leaves the root; the root itself is empty.
pub fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join(&b'/')
}

/// Bytes for a message: valid UTF-8 as it is, any other byte as `\xNN`.
pub fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why a tar could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The tar is damaged, or uses something the readers disagree on: hoist cannot know what
    /// an applier will make of it.
    #[error("cannot read exactly: {entry}: {why}")]
    Inexact { entry: String, why: String },

    #[error("reading the tar failed: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests;
