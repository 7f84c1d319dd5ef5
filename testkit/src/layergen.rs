//! Layer tars written header by header, and random layers from a seed, for the tests that
//! search for split counterexamples.
//!
//! The writer sets every header byte itself: the `tar` crate refuses some legal oddities
//! (a size on a header-only entry, names that are not UTF-8 through its path API, GNU's PAX
//! sparse records), and those are what the search needs. A generated layer is a list of
//! [`GenEntry`] rendered by [`render`], so a failing case can be shrunk entry by entry.

use crate::testdata::{SplitMix64, random_bytes};

/// PAX records, key and value, in order.
pub type PaxRecords = Vec<(&'static str, Vec<u8>)>;

/// Bytes of a tar block.
pub const BLOCK_BYTES: usize = 512;

/// Mode, owner and mtime of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// How a name that does not fit the header's 100 bytes is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongName {
    /// A GNU `L` (or `K` for a link target) entry before the header.
    Gnu,
    /// A PAX `path` (or `linkpath`) record.
    Pax,
    /// The ustar prefix field, when the name splits at a `/` into 155 + 100 bytes; else PAX.
    Prefix,
}

/// How a sparse file is written (GNU tar's `--format=posix --sparse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseFormat {
    /// 0.1: the map in a `GNU.sparse.map` record.
    V0_1,
    /// 1.0: the map at the start of the entry's data.
    V1_0,
}

/// What one generated entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenKind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Fifo,
    /// A sparse file of `real_bytes`, with data `(offset, bytes)` and holes elsewhere.
    Sparse {
        format: SparseFormat,
        real_bytes: u64,
        chunks: Vec<(u64, Vec<u8>)>,
    },
}

/// One entry as written: `size_field` is the header's size for a header-only kind (a
/// directory, link or fifo, which has no data whatever the field says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenEntry {
    pub path: Vec<u8>,
    pub kind: GenKind,
    pub meta: Meta,
    pub long: LongName,
    pub size_field: u64,
}

/// A tar's bytes, built block by block.
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn put_bytes(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// One PAX record, `"LEN key=value\n"`, where LEN counts the whole record, itself included.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

impl TarWriter {
    pub fn new() -> TarWriter {
        TarWriter::default()
    }

    /// A raw header: `name` and `link` as stored (at most 100 bytes each; longer is cut),
    /// `prefix` in the ustar prefix field, GNU magic when `gnu`.
    #[allow(clippy::too_many_arguments)]
    pub fn header(
        &mut self,
        name: &[u8],
        prefix: &[u8],
        typeflag: u8,
        meta: Meta,
        size_field: u64,
        link: &[u8],
        gnu: bool,
    ) {
        let mut h = [0u8; BLOCK_BYTES];
        put_bytes(&mut h[0..100], name);
        put_octal(&mut h[100..108], u64::from(meta.mode));
        put_octal(&mut h[108..116], meta.uid);
        put_octal(&mut h[116..124], meta.gid);
        put_octal(&mut h[124..136], size_field);
        put_octal(&mut h[136..148], meta.mtime);
        h[156] = typeflag;
        put_bytes(&mut h[157..257], link);
        if gnu {
            h[257..265].copy_from_slice(b"ustar  \0");
        } else {
            h[257..265].copy_from_slice(b"ustar\x0000");
            put_bytes(&mut h[345..500], prefix);
        }
        put_bytes(&mut h[265..297], b"root");
        put_bytes(&mut h[297..329], b"root");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.out.extend_from_slice(&h);
    }

    /// Data, padded to a whole block.
    pub fn data(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        let pad = (BLOCK_BYTES - bytes.len() % BLOCK_BYTES) % BLOCK_BYTES;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// A GNU long name (`L`) or long link target (`K`) entry.
    pub fn gnu_long(&mut self, typeflag: u8, name: &[u8]) {
        let mut data = name.to_vec();
        data.push(0);
        let meta = Meta {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        self.header(
            b"././@LongLink",
            b"",
            typeflag,
            meta,
            data.len() as u64,
            b"",
            true,
        );
        self.data(&data);
    }

    /// A PAX extended header (`x`) holding `records`.
    pub fn pax(&mut self, records: &[(&str, Vec<u8>)]) {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        self.header(b"PaxHeader", b"", b'x', meta, data.len() as u64, b"", false);
        self.data(&data);
    }

    /// The end-of-archive blocks; the tar's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 2 * BLOCK_BYTES));
        self.out
    }
}

/// Where `name` splits into a ustar prefix (at most 155 bytes) and name (at most 100).
fn prefix_split(name: &[u8]) -> Option<usize> {
    (1..name.len())
        .rev()
        .find(|&i| name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i + 1 < name.len())
}

/// The header's name and prefix fields for `path`, after writing what a long one needs.
fn names(w: &mut TarWriter, e: &GenEntry, pax: &mut PaxRecords) -> (Vec<u8>, Vec<u8>) {
    let path = &e.path;
    if path.len() <= 100 {
        return (path.clone(), Vec::new());
    }
    match e.long {
        LongName::Gnu => w.gnu_long(b'L', path),
        LongName::Prefix => {
            if let Some(i) = prefix_split(path) {
                return (path[i + 1..].to_vec(), path[..i].to_vec());
            }
            pax.push(("path", path.clone()));
        }
        LongName::Pax => pax.push(("path", path.clone())),
    }
    (path[..100].to_vec(), Vec::new())
}

/// The link-target field for `target`, after writing what a long one needs.
fn link_field(w: &mut TarWriter, e: &GenEntry, target: &[u8], pax: &mut PaxRecords) -> Vec<u8> {
    if target.len() > 100 {
        if e.long == LongName::Gnu {
            w.gnu_long(b'K', target);
        } else {
            pax.push(("linkpath", target.to_vec()));
        }
    }
    target[..target.len().min(100)].to_vec()
}

/// A sparse file's PAX records, its placeholder name and its data (map first in 1.0).
fn sparse_parts(
    path: &[u8],
    format: SparseFormat,
    real_bytes: u64,
    chunks: &[(u64, Vec<u8>)],
) -> (PaxRecords, Vec<u8>, Vec<u8>) {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let mut placeholder = b"./GNUSparseFile.0/".to_vec();
    placeholder.extend_from_slice(base);
    let mut data = Vec::new();
    let map: Vec<String> = chunks
        .iter()
        .flat_map(|(o, d)| [o.to_string(), d.len().to_string()])
        .collect();
    let mut recs = vec![("GNU.sparse.name", path.to_vec())];
    match format {
        SparseFormat::V0_1 => {
            recs.push(("GNU.sparse.major", b"0".to_vec()));
            recs.push(("GNU.sparse.minor", b"1".to_vec()));
            recs.push(("GNU.sparse.size", real_bytes.to_string().into_bytes()));
            recs.push((
                "GNU.sparse.numblocks",
                chunks.len().to_string().into_bytes(),
            ));
            recs.push(("GNU.sparse.map", map.join(",").into_bytes()));
        }
        SparseFormat::V1_0 => {
            recs.push(("GNU.sparse.major", b"1".to_vec()));
            recs.push(("GNU.sparse.minor", b"0".to_vec()));
            recs.push(("GNU.sparse.realsize", real_bytes.to_string().into_bytes()));
            let mut text = format!("{}\n", chunks.len());
            for m in &map {
                text.push_str(m);
                text.push('\n');
            }
            data.extend_from_slice(text.as_bytes());
            data.resize(data.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES, 0);
        }
    }
    for (_, d) in chunks {
        data.extend_from_slice(d);
    }
    (recs, placeholder, data)
}

/// Writes one entry (with the GNU or PAX entries its names need).
pub fn write_entry(w: &mut TarWriter, e: &GenEntry) {
    let mut pax: PaxRecords = Vec::new();
    if let GenKind::Sparse {
        format,
        real_bytes,
        chunks,
    } = &e.kind
    {
        let (recs, placeholder, data) = sparse_parts(&e.path, *format, *real_bytes, chunks);
        w.pax(&recs);
        let (name, prefix) = match prefix_split(&placeholder) {
            Some(i) if placeholder.len() > 100 => {
                (placeholder[i + 1..].to_vec(), placeholder[..i].to_vec())
            }
            _ => (placeholder.clone(), Vec::new()),
        };
        w.header(&name, &prefix, b'0', e.meta, data.len() as u64, b"", false);
        w.data(&data);
        return;
    }
    let (mut name, prefix) = names(w, e, &mut pax);
    let (typeflag, link, data): (u8, Vec<u8>, &[u8]) = match &e.kind {
        GenKind::File(d) => (b'0', Vec::new(), d),
        GenKind::Dir => {
            if name.len() < 100 && !name.ends_with(b"/") {
                name.push(b'/');
            }
            (b'5', Vec::new(), &[])
        }
        GenKind::Symlink(t) => (b'2', link_field(w, e, t, &mut pax), &[]),
        GenKind::HardLink(t) => (b'1', link_field(w, e, t, &mut pax), &[]),
        GenKind::Fifo => (b'6', Vec::new(), &[]),
        GenKind::Sparse { .. } => unreachable!("written above"),
    };
    if !pax.is_empty() {
        w.pax(&pax);
    }
    let size = if typeflag == b'0' {
        data.len() as u64
    } else {
        e.size_field
    };
    let gnu = e.long == LongName::Gnu && (e.path.len() > 100 || link.len() >= 100);
    w.header(&name, &prefix, typeflag, e.meta, size, &link, gnu);
    if typeflag == b'0' {
        w.data(data);
    }
}

/// A layer tar of `entries`, in order.
pub fn render(entries: &[GenEntry]) -> Vec<u8> {
    let mut w = TarWriter::new();
    for e in entries {
        write_entry(&mut w, e);
    }
    w.finish()
}

/// A generated case: a lower layer and the layer to split, above it.
#[derive(Debug, Clone)]
pub struct GenCase {
    pub lower: Vec<GenEntry>,
    pub layer: Vec<GenEntry>,
}

/// Directory names the generator draws from: few, so paths repeat; two that differ only in
/// an invalid UTF-8 byte; long ones, so deep paths need long names.
const DIR_NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"d\xff",
    b"d\xfe",
    b"long-component-that-is-sixty-bytes-long-to-pass-the-header-limit",
    b"another-long-component-of-about-sixty-bytes-for-prefix-splits",
];

/// Names of files, links and fifos; a path is sometimes drawn from the other list, so the
/// same path comes back with another type.
const LEAF_NAMES: &[&[u8]] = &[b"l", b"t", b"x", b"f"];

struct Gen {
    rng: SplitMix64,
    /// What each path of the layer is so far, as far as the generator tracks it.
    files: Vec<(Vec<u8>, Meta)>,
}

impl Gen {
    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.rng.below(from.len() as u64) as usize]
    }

    /// A path of one to three components, its last one a directory name when `dir`, from the
    /// other list `cross` percent of the time.
    fn path(&mut self, dir: bool, cross: u64) -> Vec<u8> {
        let depth = self.rng.below(3);
        let mut p = Vec::new();
        for _ in 0..depth {
            let c: &[u8] = self.pick::<&[u8]>(DIR_NAMES);
            p.extend_from_slice(c);
            p.push(b'/');
        }
        let leaf = if dir != self.chance(cross) {
            DIR_NAMES
        } else {
            LEAF_NAMES
        };
        let c: &[u8] = self.pick::<&[u8]>(leaf);
        p.extend_from_slice(c);
        p
    }

    fn meta(&mut self) -> Meta {
        Meta {
            mode: *self.pick(&[0o644, 0o600, 0o755, 0o700, 0o4755, 0o2775]),
            uid: *self.pick(&[0, 1000]),
            gid: *self.pick(&[0, 1000]),
            mtime: 1_600_000_000 + self.rng.below(4),
        }
    }

    fn long(&mut self) -> LongName {
        *self.pick(&[LongName::Gnu, LongName::Pax, LongName::Prefix])
    }

    /// Mostly tiny file data, sometimes a few KiB so parts have weight.
    fn data(&mut self) -> Vec<u8> {
        let len = if self.chance(10) {
            1024 + self.rng.below(6 * 1024)
        } else {
            self.rng.below(300)
        };
        random_bytes(len as usize, self.rng.next_u64())
    }

    /// A small tar as a file's content: what a misread size would take for entries.
    fn inner_tar(&mut self) -> Vec<u8> {
        let entries: Vec<GenEntry> = (0..2)
            .map(|i| GenEntry {
                path: format!("inner/f{i}").into_bytes(),
                kind: GenKind::File(b"inner".to_vec()),
                meta: self.meta(),
                long: LongName::Pax,
                size_field: 0,
            })
            .collect();
        render(&entries)
    }

    fn sparse(&mut self) -> GenKind {
        let real_bytes = 4096 + self.rng.below(3 * 4096);
        let mut chunks = Vec::new();
        let mut at = self.rng.below(1024);
        while at + 600 < real_bytes && chunks.len() < 4 {
            let len = 1 + self.rng.below(512);
            chunks.push((at, random_bytes(len as usize, self.rng.next_u64())));
            at += len + 512 + self.rng.below(2048);
        }
        let format = *self.pick(&[SparseFormat::V0_1, SparseFormat::V1_0]);
        GenKind::Sparse {
            format,
            real_bytes,
            chunks,
        }
    }
}

/// The name of the whiteout of `path` (`dir/.wh.NAME`), or of its opaque marker.
fn whiteout_name(path: &[u8], opaque: bool) -> Vec<u8> {
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    let mut out = dir.to_vec();
    if opaque {
        out.extend_from_slice(base);
        out.extend_from_slice(b"/.wh..wh..opq");
    } else {
        out.extend_from_slice(b".wh.");
        out.extend_from_slice(base);
    }
    out
}

/// One random entry of the layer to split.
fn layer_entry(g: &mut Gen) -> GenEntry {
    let roll = g.rng.below(100);
    let dir = matches!(roll, 35..55 | 81..85) || (matches!(roll, 73..81) && g.chance(50));
    let path = g.path(dir, 6);
    let meta = g.meta();
    let long = g.long();
    let size_field = if g.chance(10) {
        1 + g.rng.below(3000)
    } else {
        0
    };
    let entry = |path, kind, meta, size_field| GenEntry {
        path,
        kind,
        meta,
        long,
        size_field,
    };
    let kind = match roll {
        0..35 => GenKind::File(g.data()),
        35..55 => GenKind::Dir,
        55..66 if !g.files.is_empty() => {
            let (target, tmeta) = g.pick(&g.files.clone()).clone();
            if target == path {
                return entry(path, GenKind::File(g.data()), meta, 0);
            }
            return entry(path, GenKind::HardLink(target), tmeta, size_field);
        }
        66..73 => GenKind::Symlink(g.pick(&[&b"../a"[..], b"/t", b"x/\xffy"]).to_vec()),
        73..81 => {
            return entry(
                whiteout_name(&path, false),
                GenKind::File(Vec::new()),
                meta,
                0,
            );
        }
        81..85 => {
            return entry(
                whiteout_name(&path, true),
                GenKind::File(Vec::new()),
                meta,
                0,
            );
        }
        85..88 => GenKind::Fifo,
        88..93 => g.sparse(),
        93..97 => GenKind::File(g.inner_tar()),
        _ => GenKind::File(g.data()),
    };
    g.files.retain(|(p, _)| *p != path);
    if matches!(kind, GenKind::File(_) | GenKind::Sparse { .. }) {
        g.files.push((path.clone(), meta));
    }
    let size_field = if matches!(kind, GenKind::Dir | GenKind::Symlink(_) | GenKind::Fifo) {
        size_field
    } else {
        0
    };
    let path = if g.chance(10) {
        [&b"./"[..], &path].concat()
    } else {
        path
    };
    entry(path, kind, meta, size_field)
}

/// A random case from `seed`: a lower layer of directories, files and symlinks, and a layer
/// to split of 5 to 40 entries with every oddity the split rules must survive.
pub fn random_case(seed: u64) -> GenCase {
    let mut g = Gen {
        rng: SplitMix64(seed),
        files: Vec::new(),
    };
    let lower_count = 3 + g.rng.below(12);
    let lower = (0..lower_count)
        .map(|_| {
            let roll = g.rng.below(10);
            let path = g.path(matches!(roll, 5..9), 0);
            let kind = match roll {
                0..5 => GenKind::File(g.data()),
                5..9 => GenKind::Dir,
                _ => GenKind::Symlink(b"a".to_vec()),
            };
            GenEntry {
                path,
                kind,
                meta: g.meta(),
                long: g.long(),
                size_field: 0,
            }
        })
        .collect();
    let count = 5 + g.rng.below(36);
    let layer = (0..count).map(|_| layer_entry(&mut g)).collect();
    GenCase { lower, layer }
}
