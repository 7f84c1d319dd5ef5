//! Two independent models of applying layer tars, to check a split against: the tree each
//! gives is every path's type, mode, owner, mtime, content hash, link target and hard-link
//! group. Written from the appliers' code, not from hoist's: an oracle must not share the
//! implementation it checks.
//!
//! The tar reader ([`read_tar`]) reads as Go's `archive/tar` and GNU tar do: header-only
//! types (hard link, symlink, character and block device, directory, fifo) have no data
//! whatever their size field says; PAX `path`, `linkpath` and `size` records and GNU `L`/`K`
//! entries override the header; the ustar prefix is joined to the name; GNU's PAX sparse
//! formats 0.1 (`GNU.sparse.map`) and 1.0 (the map at the start of the data) are expanded
//! under their `GNU.sparse.name`; names stay bytes. What it cannot read exactly (PAX global
//! headers, old GNU sparse, multi-volume, sparse 0.0) is an error.
//!
//! **Overlay** ([`overlay`]), as containerd's overlay snapshotter applies a layer
//! (`archive.applyNaive` with `OverlayConvertWhiteout`, containerd 1.6), each layer into its
//! own empty directory:
//! - a missing parent directory is made (`mkparent`), mode and owner copied from the topmost
//!   lower layer that has it as a directory; when none has it, 0755 root, in the group of a
//!   setgid parent (`mkdir` then `chmod 0755`). Its mtime is the time of the apply (children
//!   are created in it), shown as `None`. A parent that exists in this layer and is not a
//!   directory fails the layer, and so does a lower layer's non-directory above the missing
//!   one (its `lstat` gives ENOTDIR);
//! - `.wh..wh..opq` marks its directory opaque; `.wh.NAME` makes a 0/0 character device at
//!   NAME, which fails the layer when NAME exists in this layer (`mknod`: EEXIST);
//! - an existing path is removed first unless it and the entry are both directories (then
//!   the entry's metadata applies to the existing one);
//! - a hard link's target must be in this layer, and not a directory, else the layer fails;
//!   the link's owner, mode and mtime apply to the shared inode;
//! - at the end, each directory entry's mtime is set again, in entry order, on whatever is at
//!   its path then (a missing path or a symlink there fails the layer).
//!
//! The merged view of the layers (upper over lower, as overlayfs shows them): a directory
//! merges with the directories beneath it, down to and including an opaque one, stopping at a
//! non-directory; a whiteout or a non-directory hides everything beneath it at that path.
//!
//! **One tree** ([`one_tree`]), as umoci 0.4.7's `TarExtractor.UnpackEntry` applies layers in
//! order into one directory:
//! - `.wh.NAME` removes NAME and everything under it that this layer did not write (a path
//!   this layer wrote, or an ancestor of one, survives; its other children are removed);
//!   `.wh..wh..opq` does the same to the directory's children, keeping the directory;
//! - missing parents are made (`MkdirAll`: 0755 root, setgid bit and group inherited from a
//!   setgid parent, mtime of the apply: `None`); a non-directory in the way fails the layer
//!   (later umoci versions remove it);
//! - the entry's parent directory gets its metadata back after each entry; any other
//!   directory something is made in or removed from carries the time of the apply;
//! - an existing path is removed first unless it and the entry are both directories (then the
//!   entry's mode, owner and mtime apply to it); last entry of a path wins;
//! - a hard link names an existing non-directory anywhere in the tree, else the layer fails;
//!   it leaves the inode's metadata alone.
//!
//! Both appliers resolve a symlink met on the way to an entry's parent (within the root); the
//! models do not follow it and fail the layer instead ("not modelled"), so such cases are
//! left out rather than checked wrongly.
//!
//! Both models read a hard link's header metadata differently, so the generator writes a
//! link with its target's metadata, as tar writers do.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher as _};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

use crate::layergen::BLOCK_BYTES;

/// The type of a tar entry, after the reader's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One tar entry as an applier sees it: the path normalised (no leading `/` or `./`, no
/// trailing `/`, no `.` components; empty for the root), content as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub content: u64,
    pub link: Vec<u8>,
}

fn number(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or("base-256 number too large")? + u64::from(b);
        }
        return Ok(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|&b| b != b' ' && b != 0)
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| "number not octal")?;
    u64::from_str_radix(text, 8).map_err(|e| format!("number {text:?}: {e}"))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// The path as appliers see it: components, without empty and `.` ones.
pub fn normalise(path: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    parts.join(&b'/')
}

fn pax_records(data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length")?;
        let rec = rest.get(sp + 1..len).ok_or("PAX record past its data")?;
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without =")?;
        let key = String::from_utf8_lossy(&rec[..eq]).into_owned();
        let value = rec[eq + 1..]
            .strip_suffix(b"\n")
            .ok_or("PAX record without newline")?;
        out.insert(key, value.to_vec());
        rest = &rest[len..];
    }
    Ok(out)
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

fn pax_number(pax: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<Option<u64>, String> {
    pax.get(key)
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(format!("PAX {key} is not a number"))
        })
        .transpose()
}

/// A sparse file's content from its entry data, or `None` when the entry is not sparse.
fn sparse_content(pax: &BTreeMap<String, Vec<u8>>, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let (major, minor) = (
        pax_number(pax, "GNU.sparse.major")?,
        pax_number(pax, "GNU.sparse.minor")?,
    );
    let (map, real, mut body): (Vec<u64>, u64, &[u8]) = match (major, minor) {
        (Some(1), Some(0)) => {
            let mut nums = Vec::new();
            let mut at = 0;
            let mut want = 1;
            while nums.len() < want {
                let nl = data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or("sparse map")?;
                let n: u64 = std::str::from_utf8(&data[at..at + nl])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("sparse map number")?;
                nums.push(n);
                want = 1 + 2 * nums[0] as usize;
                at += nl + 1;
            }
            let start = at.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
            let real = pax_number(pax, "GNU.sparse.realsize")?.ok_or("no realsize")?;
            (
                nums[1..].to_vec(),
                real,
                data.get(start..).ok_or("sparse map past data")?,
            )
        }
        (Some(0), Some(1)) | (None, None) if pax.contains_key("GNU.sparse.map") => {
            let text = String::from_utf8_lossy(&pax["GNU.sparse.map"]).into_owned();
            let map: Result<Vec<u64>, _> = text.split(',').map(str::parse).collect();
            let real = pax_number(pax, "GNU.sparse.size")?.ok_or("no GNU.sparse.size")?;
            (map.map_err(|_| "sparse map number")?, real, data)
        }
        (None, None) if pax.keys().any(|k| k.starts_with("GNU.sparse.")) => {
            return Err("GNU sparse 0.0".into());
        }
        (None, None) => return Ok(None),
        other => return Err(format!("GNU sparse {other:?}")),
    };
    let mut out = vec![0u8; real as usize];
    for pair in map.chunks(2) {
        let (off, len) = (
            pair[0] as usize,
            *pair.get(1).ok_or("odd sparse map")? as usize,
        );
        let chunk = body.get(..len).ok_or("sparse data short")?;
        out.get_mut(off..off + len)
            .ok_or("sparse chunk past realsize")?
            .copy_from_slice(chunk);
        body = &body[len..];
    }
    Ok(Some(out))
}

/// What the extension entries before a header said.
#[derive(Default)]
struct Pending {
    pax: BTreeMap<String, Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn kind_of(typeflag: u8) -> Result<EntryKind, String> {
    Ok(match typeflag {
        b'0' | 0 | b'7' => EntryKind::File,
        b'1' => EntryKind::HardLink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::Char,
        b'4' => EntryKind::Block,
        b'5' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        t => return Err(format!("entry type {:?} is not read here", t as char)),
    })
}

/// One header's entry, with what `pending` said.
fn entry_of(h: &[u8], p: &Pending, data: &[u8]) -> Result<Entry, String> {
    let kind = kind_of(h[156])?;
    let mut name = cstr(&h[0..100]).to_vec();
    if &h[257..263] == b"ustar\0" && h[345] != 0 {
        name = [cstr(&h[345..500]), b"/", &name].concat();
    }
    let name = p.pax.get("path").or(p.long_name.as_ref()).unwrap_or(&name);
    let link = cstr(&h[157..257]).to_vec();
    let link = p
        .pax
        .get("linkpath")
        .or(p.long_link.as_ref())
        .unwrap_or(&link);
    let sparse = sparse_content(&p.pax, data)?;
    let path = match (&sparse, p.pax.get("GNU.sparse.name")) {
        (Some(_), Some(n)) => n.clone(),
        _ => name.clone(),
    };
    Ok(Entry {
        path: normalise(&path),
        kind,
        mode: number(&h[100..108])? as u32 & 0o7777,
        uid: number(&h[108..116])?,
        gid: number(&h[116..124])?,
        mtime: number(&h[136..148])?,
        content: hash(sparse.as_deref().unwrap_or(data)),
        link: if kind == EntryKind::HardLink {
            normalise(link)
        } else {
            link.clone()
        },
    })
}

fn checksum_ok(h: &[u8]) -> bool {
    let sum: u64 = h
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
    number(&h[148..156]).is_ok_and(|c| c == sum)
}

/// Every entry of a tar, as GNU tar and Go's `archive/tar` read it (rules: the module doc).
pub fn read_tar(tar: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut p = Pending::default();
    while let Some(h) = tar.get(pos..pos + BLOCK_BYTES) {
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        if !checksum_ok(h) {
            return Err(format!("bad header checksum at {pos}"));
        }
        let typeflag = h[156];
        let header_only = matches!(typeflag, b'1'..=b'6');
        let mut size = number(&h[124..136])?;
        if let Some(s) = pax_number(&p.pax, "size")? {
            size = s;
        }
        let size = if header_only { 0 } else { size as usize };
        let data = tar
            .get(pos + BLOCK_BYTES..pos + BLOCK_BYTES + size)
            .ok_or(format!("entry at {pos} runs past the end"))?;
        pos += BLOCK_BYTES + size.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        match typeflag {
            b'x' => p.pax.extend(pax_records(data)?),
            b'L' => p.long_name = Some(cstr(data).to_vec()),
            b'K' => p.long_link = Some(cstr(data).to_vec()),
            b'g' => return Err("PAX global header".into()),
            b'S' | b'M' | b'V' => return Err(format!("GNU entry type {}", typeflag as char)),
            _ => {
                out.push(entry_of(h, &p, data)?);
                p = Pending::default();
            }
        }
    }
    Err("no end-of-archive blocks".into())
}

/// What a path is in an applied tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    /// An overlay whiteout (a 0/0 character device in a layer's directory).
    Whiteout,
}

/// One path of an applied tree; `mtime` is `None` for a directory the applier made itself
/// (it carries the time of the apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Option<u64>,
    pub content: u64,
    pub link: Vec<u8>,
}

/// An applied file system: every path but the root, and the groups of paths that share an
/// inode (hard links), each group sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
    pub link_groups: BTreeSet<Vec<Vec<u8>>>,
}

/// Paths to inodes, as one directory holds them.
#[derive(Debug, Clone, Default)]
pub struct Fs {
    paths: BTreeMap<Vec<u8>, usize>,
    inodes: Vec<Node>,
    opaque: BTreeSet<Vec<u8>>,
}

/// `parent/child` (`child` when the parent is the root).
fn join(parent: &[u8], child: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        child.to_vec()
    } else {
        [parent, b"/", child].concat()
    }
}

/// The parent and the last component of a non-empty normalised path.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn implicit_dir(mode: u32, uid: u64, gid: u64) -> Node {
    Node {
        kind: NodeKind::Dir,
        mode,
        uid,
        gid,
        mtime: None,
        content: 0,
        link: Vec::new(),
    }
}

impl Fs {
    fn get(&self, path: &[u8]) -> Option<&Node> {
        self.paths.get(path).map(|&i| &self.inodes[i])
    }

    fn is_dir(&self, path: &[u8]) -> bool {
        self.get(path).is_some_and(|n| n.kind == NodeKind::Dir)
    }

    /// Every path strictly under `dir`.
    fn under(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        if dir.is_empty() {
            return self.paths.keys().cloned().collect();
        }
        let lo = [dir, b"/"].concat();
        let hi = [dir, b"0"].concat();
        self.paths.range(lo..hi).map(|(k, _)| k.clone()).collect()
    }

    /// The direct children of `dir`.
    fn children(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        let depth = |p: &[u8]| p.iter().filter(|&&b| b == b'/').count();
        let want = if dir.is_empty() { 0 } else { depth(dir) + 1 };
        self.under(dir)
            .into_iter()
            .filter(|p| depth(p) == want)
            .collect()
    }

    fn remove_tree(&mut self, path: &[u8]) {
        for p in self.under(path) {
            self.paths.remove(&p);
            self.opaque.remove(&p);
        }
        self.paths.remove(path);
        self.opaque.remove(path);
    }

    fn insert(&mut self, path: Vec<u8>, node: Node) {
        self.inodes.push(node);
        self.paths.insert(path, self.inodes.len() - 1);
    }

    /// Creates `e` at its path (already cleared, or a directory when `e` is one).
    fn create(&mut self, e: &Entry) -> Result<(), String> {
        let node = Node {
            kind: match e.kind {
                EntryKind::File => NodeKind::File,
                EntryKind::Dir => NodeKind::Dir,
                EntryKind::Symlink => NodeKind::Symlink,
                EntryKind::Char => NodeKind::Char,
                EntryKind::Block => NodeKind::Block,
                EntryKind::Fifo => NodeKind::Fifo,
                EntryKind::HardLink => {
                    let &ino = self.paths.get(&e.link).ok_or_else(|| {
                        format!("hard link {} to missing {}", show(&e.path), show(&e.link))
                    })?;
                    if self.inodes[ino].kind == NodeKind::Dir {
                        return Err(format!("hard link {} to a directory", show(&e.path)));
                    }
                    self.paths.insert(e.path.clone(), ino);
                    return Ok(());
                }
            },
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: Some(e.mtime),
            content: if e.kind == EntryKind::File {
                e.content
            } else {
                0
            },
            link: if e.kind == EntryKind::Symlink {
                e.link.clone()
            } else {
                Vec::new()
            },
        };
        match self.paths.get(&e.path) {
            Some(&i) if e.kind == EntryKind::Dir => {
                let n = &mut self.inodes[i];
                (n.mode, n.uid, n.gid, n.mtime) = (node.mode, node.uid, node.gid, node.mtime);
            }
            _ => self.insert(e.path.clone(), node),
        }
        Ok(())
    }

    /// The tree this directory shows (nodes and hard-link groups).
    pub fn tree(&self) -> Tree {
        let mut t = Tree::default();
        let mut by_inode: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for (p, &i) in &self.paths {
            t.nodes.insert(p.clone(), self.inodes[i].clone());
            by_inode.entry(i).or_default().push(p.clone());
        }
        t.link_groups = by_inode.into_values().filter(|g| g.len() > 1).collect();
        t
    }
}

/// A path for messages: bytes that are not UTF-8 escaped.
pub fn show(path: &[u8]) -> String {
    path.escape_ascii().to_string()
}

fn whiteout_of(base: &[u8]) -> Option<&[u8]> {
    base.strip_prefix(b".wh.")
}

const OPAQUE: &[u8] = b".wh..wh..opq";

/// The mode bit a directory's new subdirectories inherit, with its group (Linux).
const SETGID: u32 = 0o2000;

/// The group a new directory in `parent` gets: the parent's when it is setgid, else root's.
fn inherited_gid(fs: &Fs, parent: &[u8]) -> u64 {
    fs.get(parent)
        .filter(|n| n.mode & SETGID != 0)
        .map_or(0, |n| n.gid)
}

/// The deepest ancestor of `path` that exists in `fs`, when it is not a directory.
fn non_dir_above<'a>(fs: &Fs, path: &'a [u8]) -> Option<&'a [u8]> {
    let mut p = split_last(path).0;
    while !p.is_empty() {
        if let Some(n) = fs.get(p) {
            return (n.kind != NodeKind::Dir).then_some(p);
        }
        p = split_last(p).0;
    }
    None
}

/// Attributes of a directory containerd's `mkparent` makes at `dir`: copied from the topmost
/// lower layer that has the directory; its lookup fails on a non-directory above `dir` in a
/// lower layer (`lstat`: ENOTDIR).
fn mkparent_node(fs: &Fs, dir: &[u8], lowers: &[&Fs]) -> Result<Node, String> {
    for l in lowers {
        match l.get(dir) {
            Some(n) if n.kind == NodeKind::Dir => return Ok(implicit_dir(n.mode, n.uid, n.gid)),
            Some(n) if n.kind == NodeKind::Symlink => {
                return Err(format!("{} is a symlink below (not modelled)", show(dir)));
            }
            Some(_) => break,
            None => {
                if let Some(a) = non_dir_above(l, dir) {
                    return Err(format!("{} is not a directory below", show(a)));
                }
            }
        }
    }
    // `mkdir` then `chmod 0755`: the setgid bit goes, the inherited group stays.
    Ok(implicit_dir(0o755, 0, inherited_gid(fs, split_last(dir).0)))
}

/// containerd's `mkparent`: the missing ancestors of `dir` made ([`mkparent_node`]).
fn mkparent(fs: &mut Fs, dir: &[u8], lowers: &[&Fs]) -> Result<(), String> {
    if dir.is_empty() {
        return Ok(());
    }
    match fs.get(dir).map(|n| n.kind) {
        Some(NodeKind::Dir) => return Ok(()),
        Some(NodeKind::Symlink) => {
            return Err(format!("parent {} is a symlink (not modelled)", show(dir)));
        }
        Some(_) => return Err(format!("parent {} is not a directory", show(dir))),
        None => {}
    }
    mkparent(fs, split_last(dir).0, lowers)?;
    let node = mkparent_node(fs, dir, lowers)?;
    fs.insert(dir.to_vec(), node);
    Ok(())
}

/// One layer applied into its own empty directory, as containerd's overlay snapshotter does
/// (rules: the module doc); `lowers` are the layers beneath, top first.
pub fn overlay_layer(entries: &[Entry], lowers: &[&Fs]) -> Result<Fs, String> {
    let mut fs = Fs::default();
    let mut dirs: Vec<(&[u8], u64)> = Vec::new();
    for e in entries.iter().filter(|e| !e.path.is_empty()) {
        let (parent, base) = split_last(&e.path);
        mkparent(&mut fs, parent, lowers)?;
        if base == OPAQUE {
            fs.opaque.insert(parent.to_vec());
            continue;
        }
        if let Some(name) = whiteout_of(base) {
            let target = join(parent, name);
            if fs.get(&target).is_some() {
                return Err(format!(
                    "whiteout of {} made in the same layer",
                    show(&target)
                ));
            }
            let mut node = implicit_dir(0, e.uid, e.gid);
            (node.kind, node.mtime) = (NodeKind::Whiteout, Some(0));
            fs.insert(target, node);
            continue;
        }
        if fs.get(&e.path).is_some() && !(fs.is_dir(&e.path) && e.kind == EntryKind::Dir) {
            fs.remove_tree(&e.path);
        }
        fs.create(e)?;
        if e.kind == EntryKind::HardLink {
            let &ino = fs.paths.get(&e.path).ok_or("link vanished")?;
            let n = &mut fs.inodes[ino];
            (n.uid, n.gid, n.mode, n.mtime) = (e.uid, e.gid, e.mode, Some(e.mtime));
        }
        if e.kind == EntryKind::Dir {
            dirs.push((&e.path, e.mtime));
        }
    }
    for (path, mtime) in dirs {
        let &ino = fs
            .paths
            .get(path)
            .ok_or_else(|| format!("directory {} is gone at the end", show(path)))?;
        if fs.inodes[ino].kind == NodeKind::Symlink {
            return Err(format!("directory {} ends a symlink", show(path)));
        }
        fs.inodes[ino].mtime = Some(mtime);
    }
    Ok(fs)
}

/// The children of `dir` as overlayfs merges `stack` (layer indices, top first, each holding
/// `dir` as a directory, down to an opaque one), into `out`.
fn merge_dir(
    layers: &[Fs],
    dir: &[u8],
    stack: &[usize],
    out: &mut Tree,
    inodes: &mut BTreeMap<(usize, usize), Vec<Vec<u8>>>,
) {
    let names: BTreeSet<Vec<u8>> = stack
        .iter()
        .flat_map(|&l| layers[l].children(dir))
        .collect();
    for path in names {
        let mut sub = Vec::new();
        let mut found = None;
        for &l in stack {
            let Some(&ino) = layers[l].paths.get(&path) else {
                continue;
            };
            match layers[l].inodes[ino].kind {
                NodeKind::Whiteout => break,
                NodeKind::Dir => {
                    sub.push(l);
                    if layers[l].opaque.contains(&path) {
                        break;
                    }
                }
                _ => {
                    if sub.is_empty() {
                        found = Some((l, ino));
                    }
                    break;
                }
            }
        }
        if let Some(node) = sub.first().and_then(|&top| layers[top].get(&path)) {
            out.nodes.insert(path.clone(), node.clone());
            merge_dir(layers, &path, &sub, out, inodes);
        } else if let Some((l, ino)) = found {
            out.nodes
                .insert(path.clone(), layers[l].inodes[ino].clone());
            inodes.entry((l, ino)).or_default().push(path);
        }
    }
}

/// The merged view of `layers` (bottom first), as an overlay mount shows it.
pub fn merged(layers: &[Fs]) -> Tree {
    let mut stack = Vec::new();
    for l in (0..layers.len()).rev() {
        stack.push(l);
        if layers[l].opaque.contains(&b""[..]) {
            break;
        }
    }
    let mut out = Tree::default();
    let mut inodes = BTreeMap::new();
    merge_dir(layers, b"", &stack, &mut out, &mut inodes);
    out.link_groups = inodes.into_values().filter(|g| g.len() > 1).collect();
    out
}

/// Layers applied each into its own directory and merged (the overlay model); the first layer
/// that fails to apply fails the whole, naming its index.
pub fn overlay(layers: &[Vec<Entry>]) -> Result<Tree, String> {
    let mut dirs: Vec<Fs> = Vec::new();
    for (i, entries) in layers.iter().enumerate() {
        let lowers: Vec<&Fs> = dirs.iter().rev().collect();
        let fs = overlay_layer(entries, &lowers).map_err(|e| format!("layer {i}: {e}"))?;
        dirs.push(fs);
    }
    Ok(merged(&dirs))
}

/// A directory's mtime after something in it changed, unless umoci restores it (`restored`:
/// the entry's parent, whose metadata umoci puts back after each entry).
fn touch(fs: &mut Fs, dir: &[u8], restored: &[u8]) {
    if dir != restored
        && let Some(&i) = fs.paths.get(dir)
    {
        fs.inodes[i].mtime = None;
    }
}

/// umoci's whiteout: `path` (or, `opaque`, its children) removed, but not what this layer
/// wrote (`upper`: its paths and their ancestors).
fn remove_unless_upper(
    fs: &mut Fs,
    path: &[u8],
    opaque: bool,
    upper: &BTreeSet<Vec<u8>>,
    restored: &[u8],
) {
    if fs.get(path).is_none() && !(opaque && path.is_empty()) {
        return;
    }
    if !opaque && !upper.contains(path) {
        fs.remove_tree(path);
        touch(fs, split_last(path).0, restored);
        return;
    }
    if opaque || fs.is_dir(path) {
        for child in fs.children(path) {
            remove_unless_upper(fs, &child, false, upper, restored);
        }
    }
}

/// umoci 0.4.7's `MkdirAll(dir, 0777)`: every missing ancestor made (0755 under umask 022, the
/// setgid bit and group inherited), the directory it is made in touched; a non-directory in
/// the way fails the layer (later umoci versions remove it).
fn mkdir_all(fs: &mut Fs, dir: &[u8]) -> Result<(), String> {
    if dir.is_empty() || fs.is_dir(dir) {
        return Ok(());
    }
    match fs.get(dir).map(|n| n.kind) {
        Some(NodeKind::Symlink) => {
            return Err(format!("parent {} is a symlink (not modelled)", show(dir)));
        }
        Some(_) => return Err(format!("parent {} is not a directory", show(dir))),
        None => {}
    }
    let parent = split_last(dir).0;
    mkdir_all(fs, parent)?;
    let setgid = fs.get(parent).map_or(0, |n| n.mode & SETGID);
    let node = implicit_dir(0o755 | setgid, 0, inherited_gid(fs, parent));
    touch(fs, parent, b"");
    fs.insert(dir.to_vec(), node);
    Ok(())
}

/// Whether an ancestor of `path` is a symlink: umoci resolves it, the model does not.
fn through_symlink(fs: &Fs, path: &[u8]) -> bool {
    let mut p = split_last(path).0;
    while !p.is_empty() {
        if fs.get(p).is_some_and(|n| n.kind == NodeKind::Symlink) {
            return true;
        }
        p = split_last(p).0;
    }
    false
}

/// One layer applied onto `fs`, as umoci does (rules: the module doc).
pub fn one_tree_layer(fs: &mut Fs, entries: &[Entry]) -> Result<(), String> {
    let mut upper: BTreeSet<Vec<u8>> = BTreeSet::new();
    for e in entries.iter().filter(|e| !e.path.is_empty()) {
        let (parent, base) = split_last(&e.path);
        if through_symlink(fs, &e.path) {
            return Err(format!(
                "{} is under a symlink (not modelled)",
                show(&e.path)
            ));
        }
        if base == OPAQUE {
            if parent.is_empty() || fs.is_dir(parent) {
                remove_unless_upper(fs, parent, true, &upper, parent);
            }
            continue;
        }
        if let Some(name) = whiteout_of(base) {
            if parent.is_empty() || fs.is_dir(parent) {
                remove_unless_upper(fs, &join(parent, name), false, &upper, parent);
            }
            continue;
        }
        mkdir_all(fs, parent)?;
        if fs.get(&e.path).is_some() && !(fs.is_dir(&e.path) && e.kind == EntryKind::Dir) {
            fs.remove_tree(&e.path);
        }
        fs.create(e)?;
        let mut p: &[u8] = &e.path;
        while !p.is_empty() {
            upper.insert(p.to_vec());
            p = split_last(p).0;
        }
    }
    Ok(())
}

/// Layers applied in order into one tree (the umoci model).
pub fn one_tree(layers: &[Vec<Entry>]) -> Result<Tree, String> {
    let mut fs = Fs::default();
    for (i, entries) in layers.iter().enumerate() {
        one_tree_layer(&mut fs, entries).map_err(|e| format!("layer {i}: {e}"))?;
    }
    Ok(fs.tree())
}

/// The first few differences between two trees, one line each (empty when equal).
pub fn differences(want: &Tree, got: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in &want.nodes {
        match got.nodes.get(path) {
            None => out.push(format!("{}: missing", show(path))),
            Some(g) if g != w => out.push(format!("{}: {w:?} became {g:?}", show(path))),
            Some(_) => {}
        }
    }
    for path in got.nodes.keys().filter(|p| !want.nodes.contains_key(*p)) {
        out.push(format!("{}: not in the whole layer's tree", show(path)));
    }
    if want.link_groups != got.link_groups {
        let groups = |t: &Tree| -> Vec<Vec<String>> {
            t.link_groups
                .iter()
                .map(|g| g.iter().map(|p| show(p)).collect())
                .collect()
        };
        out.push(format!(
            "hard links {:?} became {:?}",
            groups(want),
            groups(got)
        ));
    }
    out
}

/// A real directory's file system as a [`Tree`] (its root left out), to hold a model's tree
/// against what a real applier made: mode without the type bits, mtime in whole seconds,
/// hard-link groups by inode.
pub fn read_dir_tree(root: &std::path::Path) -> std::io::Result<Tree> {
    let mut tree = Tree::default();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(root.join(std::ffi::OsStr::from_bytes(&dir)))? {
            let e = e?;
            let path = join(&dir, e.file_name().as_bytes());
            let node = match real_node(&e.path()) {
                Ok(node) => node,
                // Overlayfs lists a whiteout in an opaque directory of the same layer, and its
                // lookup finds nothing: no file there.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    let at = e.path().display().to_string();
                    return Err(std::io::Error::new(err.kind(), format!("{at}: {err}")));
                }
            };
            if node.kind == NodeKind::Dir {
                todo.push(path.clone());
            } else {
                let m = std::fs::symlink_metadata(e.path())?;
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(path.clone());
            }
            tree.nodes.insert(path, node);
        }
    }
    tree.link_groups = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    Ok(tree)
}

fn real_node(path: &std::path::Path) -> std::io::Result<Node> {
    let m = std::fs::symlink_metadata(path)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_file() {
        NodeKind::File
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Char
    } else {
        NodeKind::Block
    };
    Ok(Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: u64::from(m.uid()),
        gid: u64::from(m.gid()),
        mtime: Some(m.mtime() as u64),
        content: if ft.is_file() {
            hash(&std::fs::read(path)?)
        } else {
            0
        },
        link: if ft.is_symlink() {
            std::fs::read_link(path)?.into_os_string().into_vec()
        } else {
            Vec::new()
        },
    })
}
