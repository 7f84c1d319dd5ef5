//! Proof before use: from the entry list alone, applying a layer's parts in order gives the
//! same tree as applying the whole layer, under both appliers' rules (written down in
//! `docs/SPLIT.md`, "The proof"):
//! - **overlay**: each layer applied into a directory of its own (containerd's overlay
//!   snapshotter, moby's overlay2): a whiteout becomes a 0/0 character device (which fails
//!   when the path exists in that layer), an opaque marker makes its directory opaque, a hard
//!   link's target must be in that same layer, link headers set the shared inode's metadata;
//!   the merged view is each layer over the ones below (a directory merges unless opaque,
//!   anything else hides what is below);
//! - **one tree** (the naive applier, umoci): a whiteout deletes its path, an opaque marker
//!   deletes what its directory holds from lower layers but not what this layer wrote; hard
//!   links keep their target's metadata.
//!
//! In both, the last entry of a path wins, a non-directory replacing a directory removes it,
//! a directory over a directory keeps its contents and takes the new metadata, missing parents
//! are made as directories. What is below is unknown, so each model runs over three lower
//! trees: empty; every path the layer names a directory holding a file; every such path a
//! file. Every path's type, mode, owner, mtime, content (the entry whose data it has), link
//! target and hard-link group are compared. A layer that fails to apply whole must fail split.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use super::tar::{Entry, Kind};
use crate::tarscan::{WHITEOUT_PREFIX, parent, shown};

/// Where a node's data or metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Entry(usize),
    Lower(usize),
    /// A parent directory an applier made because an entry needed it.
    Implicit,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    /// An overlay whiteout (a 0/0 character device in the layer's directory).
    whiteout: bool,
    opaque: bool,
    ino: usize,
}

#[derive(Debug, Clone, Copy)]
struct Inode {
    creator: Origin,
    attrs: Origin,
}

/// A file system tree: every path, cleaned (the root is `b""`), and its node.
#[derive(Clone, Default)]
struct Tree<'a> {
    nodes: BTreeMap<Cow<'a, [u8]>, Node>,
    inodes: Vec<Inode>,
}

/// How an applier treats a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Overlay,
    OneTree,
}

/// What is below the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum World {
    Empty,
    Dirs,
    Files,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

/// A whiteout's target path, or its directory for an opaque marker.
fn whiteout_target(e: &Entry) -> Vec<u8> {
    let dir = parent(&e.path);
    if e.is_opaque_marker() {
        return dir.to_vec();
    }
    join(dir, &e.base()[WHITEOUT_PREFIX.len()..])
}

/// Keys under `path` (not `path` itself): they sort right after `path/`.
fn under<'a>(tree: &Tree<'a>, path: &[u8]) -> Vec<Cow<'a, [u8]>> {
    let lo: Vec<u8> = if path.is_empty() {
        Vec::new()
    } else {
        [path, b"/"].concat()
    };
    let from = (Bound::Included(lo.as_slice()), Bound::Unbounded);
    tree.nodes
        .range::<[u8], _>(from)
        .take_while(|(k, _)| k.starts_with(&lo))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, _)| k.clone())
        .collect()
}

impl<'a> Tree<'a> {
    fn inode(&mut self, creator: Origin, attrs: Origin) -> usize {
        self.inodes.push(Inode { creator, attrs });
        self.inodes.len() - 1
    }

    fn insert(&mut self, path: Cow<'a, [u8]>, kind: Kind, origin: Origin) {
        let ino = self.inode(origin, origin);
        let node = Node {
            kind,
            whiteout: false,
            opaque: false,
            ino,
        };
        self.nodes.insert(path, node);
    }

    fn remove_all(&mut self, path: &[u8]) {
        for k in under(self, path) {
            self.nodes.remove(&k);
        }
        if !path.is_empty() {
            self.nodes.remove(path);
        }
    }

    /// Makes every missing parent of `path` a directory; fails under a non-directory.
    fn parents(&mut self, path: &'a [u8]) -> Result<(), String> {
        let mut missing = Vec::new();
        let mut p = path;
        while !p.is_empty() {
            p = parent(p);
            match self.nodes.get(p) {
                Some(n) if n.kind == Kind::Dir && !n.whiteout => break,
                Some(_) => return Err(format!("{}: under a non-directory", shown(path))),
                None => missing.push(p),
            }
        }
        for p in missing.into_iter().rev() {
            self.insert(Cow::Borrowed(p), Kind::Dir, Origin::Implicit);
        }
        Ok(())
    }

    /// Writes entry `i` at its path: the applier's rules common to both models.
    fn write(&mut self, entries: &'a [Entry], i: usize, model: Model) -> Result<(), String> {
        let e = &entries[i];
        let existing = self.nodes.get(e.path.as_slice()).copied();
        if e.kind == Kind::Dir
            && let Some(n) = existing.filter(|n| n.kind == Kind::Dir && !n.whiteout)
        {
            self.inodes[n.ino].attrs = Origin::Entry(i);
            return Ok(());
        }
        let target = (e.kind == Kind::HardLink).then(|| e.link_path());
        let linked = match &target {
            Some(t) => match self.nodes.get(t.as_slice()) {
                Some(n) if n.kind != Kind::Dir && !n.whiteout => Some(*n),
                _ => {
                    return Err(format!(
                        "hard link {}: its target {} is not in its layer",
                        e.shown(),
                        shown(t)
                    ));
                }
            },
            None => None,
        };
        self.remove_all(&e.path);
        let Some(t) = linked else {
            self.insert(Cow::Borrowed(&e.path), e.kind, Origin::Entry(i));
            return Ok(());
        };
        // containerd sets a link header's owner, mode and times on the inode; umoci does not.
        if model == Model::Overlay {
            self.inodes[t.ino].attrs = Origin::Entry(i);
        }
        self.nodes.insert(Cow::Borrowed(&e.path), t);
        Ok(())
    }
}

/// Applies `members` as one layer onto `tree` (the one-tree model).
fn apply_one_tree<'a>(
    tree: &mut Tree<'a>,
    entries: &'a [Entry],
    members: &[usize],
) -> Result<(), String> {
    let mut written: HashSet<&[u8]> = HashSet::new();
    for &i in members {
        let e = &entries[i];
        if e.is_whiteout() {
            let target = whiteout_target(e);
            if !e.is_opaque_marker() {
                tree.remove_all(&target);
                continue;
            }
            for k in under(tree, &target) {
                if !written.contains(k.as_ref()) {
                    tree.nodes.remove(&k);
                }
            }
            continue;
        }
        tree.parents(&e.path)?;
        tree.write(entries, i, Model::OneTree)?;
        let mut p = e.path.as_slice();
        while written.insert(p) && !p.is_empty() {
            p = parent(p);
        }
    }
    Ok(())
}

/// The directory of one layer applied on its own (the overlay model's upper directory).
fn upper<'a>(entries: &'a [Entry], members: &[usize]) -> Result<Tree<'a>, String> {
    let mut tree = Tree::default();
    tree.insert(Cow::Borrowed(b""), Kind::Dir, Origin::Implicit);
    for &i in members {
        let e = &entries[i];
        tree.parents(&e.path)?;
        if !e.is_whiteout() {
            tree.write(entries, i, Model::Overlay)?;
            continue;
        }
        let target = whiteout_target(e);
        if e.is_opaque_marker() {
            if let Some(n) = tree.nodes.get_mut(target.as_slice()) {
                n.opaque = true;
            }
            continue;
        }
        if tree.nodes.contains_key(target.as_slice()) {
            return Err(format!("whiteout {}: its path is in its layer", e.shown()));
        }
        let ino = tree.inode(Origin::Entry(i), Origin::Entry(i));
        let node = Node {
            kind: Kind::Char,
            whiteout: true,
            opaque: false,
            ino,
        };
        tree.nodes.insert(Cow::Owned(target), node);
    }
    Ok(tree)
}

/// The merged view of `layer` over `below`.
fn merge<'a>(below: &mut Tree<'a>, layer: Tree<'a>) {
    let mut inos: HashMap<usize, usize> = HashMap::new();
    for (path, node) in layer.nodes {
        let inode = layer.inodes[node.ino];
        if node.whiteout {
            below.remove_all(&path);
            continue;
        }
        if let Some(n) = below.nodes.get(path.as_ref()).copied()
            && node.kind == Kind::Dir
            && n.kind == Kind::Dir
            && !node.opaque
        {
            below.inodes[n.ino].attrs = inode.attrs;
            continue;
        }
        below.remove_all(&path);
        let ino = *inos
            .entry(node.ino)
            .or_insert_with(|| below.inode(inode.creator, inode.attrs));
        below.nodes.insert(path, Node { ino, ..node });
    }
}

/// The tree below the layer in `world`.
fn lower<'a>(entries: &'a [Entry], world: World) -> Tree<'a> {
    let mut tree = Tree::default();
    tree.insert(Cow::Borrowed(b""), Kind::Dir, Origin::Lower(0));
    if world == World::Empty {
        return tree;
    }
    let mut named: Vec<Cow<'a, [u8]>> = Vec::new();
    for e in entries {
        named.push(match e.is_whiteout() {
            true => Cow::Owned(whiteout_target(e)),
            false => Cow::Borrowed(e.path.as_slice()),
        });
        if e.kind == Kind::HardLink {
            named.push(Cow::Owned(e.link_path()));
        }
    }
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    for p in &named {
        let mut a = p.as_ref();
        while !a.is_empty() {
            a = parent(a);
            if !dirs.insert(a.to_vec()) {
                break;
            }
        }
    }
    let mut k = 1;
    for p in named.into_iter().chain(dirs.iter().map(|d| Cow::Owned(d.clone()))) {
        if tree.nodes.contains_key(p.as_ref()) || p.is_empty() {
            continue;
        }
        let dir = world == World::Dirs || dirs.contains(p.as_ref());
        if dir {
            tree.insert(Cow::Owned(join(&p, b"\0")), Kind::File, Origin::Lower(k));
            k += 1;
        }
        let kind = if dir { Kind::Dir } else { Kind::File };
        tree.insert(p, kind, Origin::Lower(k));
        k += 1;
    }
    tree
}

/// What is compared of a node: its type, its metadata's values, and for anything but a
/// directory the entry (or lower file) that made its inode (content and hard-link group).
#[derive(Debug, PartialEq, Eq)]
struct Seen<'a> {
    kind: Kind,
    attrs: Attrs<'a>,
    creator: Option<Origin>,
}

#[derive(Debug, PartialEq, Eq)]
enum Attrs<'a> {
    Header {
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: crate::tarscan::Mtime,
        link: &'a [u8],
        dev: (u32, u32),
    },
    Other(Origin),
}

fn seen<'a>(entries: &'a [Entry], tree: &Tree<'_>, node: &Node) -> Seen<'a> {
    let inode = tree.inodes[node.ino];
    let attrs = match inode.attrs {
        Origin::Entry(i) => {
            let e = &entries[i];
            Attrs::Header {
                mode: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                link: if e.kind == Kind::Symlink { &e.link } else { b"" },
                dev: (e.devmajor, e.devminor),
            }
        }
        other => Attrs::Other(other),
    };
    Seen {
        kind: node.kind,
        attrs,
        creator: (node.kind != Kind::Dir).then_some(inode.creator),
    }
}

/// The first path where `a` and `b` differ.
fn first_difference(entries: &[Entry], a: &Tree<'_>, b: &Tree<'_>) -> Option<String> {
    let mut ia = a.nodes.iter();
    let mut ib = b.nodes.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return None,
            (Some((pa, na)), Some((pb, nb))) if pa == pb => {
                if seen(entries, a, na) != seen(entries, b, nb) {
                    return Some(format!("{}: differs", shown(pa)));
                }
            }
            (Some((pa, _)), Some((pb, _))) => {
                let p = if pa < pb { pa } else { pb };
                return Some(format!("{}: only in one of them", shown(p)));
            }
            (Some((p, _)), None) | (None, Some((p, _))) => {
                return Some(format!("{}: only in one of them", shown(p)));
            }
        }
    }
}

/// The tree (or the failure) of `layers` applied in order over `world` under `model`.
fn apply<'a>(
    entries: &'a [Entry],
    layers: &[&[usize]],
    model: Model,
    base: &Tree<'a>,
) -> Result<Tree<'a>, String> {
    let mut tree = base.clone();
    for members in layers {
        match model {
            Model::OneTree => apply_one_tree(&mut tree, entries, members)?,
            Model::Overlay => merge(&mut tree, upper(entries, members)?),
        }
    }
    Ok(tree)
}

/// Checks one model over one lower tree: `Err` says where the split differs.
fn check_one(entries: &[Entry], parts: &[Vec<usize>], model: Model, world: World) -> Result<(), String> {
    let base = lower(entries, world);
    let all: Vec<usize> = (0..entries.len()).collect();
    let whole = apply(entries, &[&all], model, &base);
    let layers: Vec<&[usize]> = parts.iter().map(Vec::as_slice).collect();
    let split = apply(entries, &layers, model, &base);
    let why = match (whole, split) {
        (Err(_), Err(_)) => return Ok(()),
        (Ok(_), Err(e)) => format!("the parts do not apply: {e}"),
        (Err(e), Ok(_)) => format!("the whole layer does not apply ({e}) but its parts do"),
        (Ok(w), Ok(s)) => match first_difference(entries, &w, &s) {
            None => return Ok(()),
            Some(d) => d,
        },
    };
    let model = match model {
        Model::Overlay => "an applier of each layer into its own directory (overlay)",
        Model::OneTree => "an applier into one tree",
    };
    let world = match world {
        World::Empty => "nothing",
        World::Dirs => "directories",
        World::Files => "files",
    };
    Err(format!("{why} (under {model}, over lower layers with {world} at its paths)"))
}

/// Whether `parts` (entry indices, in order) apply to the same tree as the whole layer
/// under both models over every lower tree; `Err` names the first path that differs.
pub fn check(entries: &[Entry], parts: &[Vec<usize>], threads: usize) -> Result<(), String> {
    let cases: Vec<(Model, World)> = [Model::Overlay, Model::OneTree]
        .into_iter()
        .flat_map(|m| [World::Empty, World::Dirs, World::Files].map(|w| (m, w)))
        .collect();
    let done = super::run_tasks(cases.len(), threads, |k| {
        check_one(entries, parts, cases[k].0, cases[k].1)
    });
    for r in done {
        r.unwrap_or_else(|| Err("a proof thread ended early".into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
