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
//! target and hard-link group are compared. A layer a model cannot apply whole (a hard link
//! to a lower layer's file, an entry under a symlink) is not proven.
//!
//! Cost: the paths are interned once (a hash map and a child list, linear in the entries);
//! each run is then array updates, and removing a subtree walks what the layer names under
//! it. A layer whose removals would walk more than [`PROOF_STEPS_PER_PATH`] times its paths
//! is not proven (it stays whole).

use std::collections::HashMap;

use super::tar::{Entry, Kind};
use crate::tarscan::{Mtime, WHITEOUT_PREFIX, parent, shown};

/// Subtree walks a proof may take, per path the layer names, before it gives up.
pub const PROOF_STEPS_PER_PATH: u64 = 64;

/// No path: an entry with no target.
const NONE: u32 = u32::MAX;

/// Every path the layer names (entries, their targets, their parents), as numbers.
struct Paths<'a> {
    names: Vec<&'a [u8]>,
    parent: Vec<u32>,
    /// Children of path `p`: `children[child_start[p]..child_start[p + 1]]`.
    child_start: Vec<u32>,
    children: Vec<u32>,
    /// Each entry's path, and its whiteout's or hard link's target ([`NONE`] for others).
    at: Vec<u32>,
    target: Vec<u32>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

/// A whiteout's target path, or its directory for an opaque marker; a hard link's target.
fn target_of(e: &Entry) -> Option<Vec<u8>> {
    if e.is_whiteout() {
        let dir = parent(&e.path);
        if e.is_opaque_marker() {
            return Some(dir.to_vec());
        }
        return Some(join(dir, &e.base()[WHITEOUT_PREFIX.len()..]));
    }
    (e.kind == Kind::HardLink).then(|| e.link_path())
}

impl<'a> Paths<'a> {
    fn new(entries: &'a [Entry], targets: &'a [Option<Vec<u8>>]) -> Paths<'a> {
        let mut ids: HashMap<&'a [u8], u32> = HashMap::new();
        let mut p = Paths {
            names: Vec::new(),
            parent: Vec::new(),
            child_start: Vec::new(),
            children: Vec::new(),
            at: Vec::with_capacity(entries.len()),
            target: Vec::with_capacity(entries.len()),
        };
        p.intern(&mut ids, b"");
        for (e, t) in entries.iter().zip(targets) {
            let at = p.intern(&mut ids, &e.path);
            p.at.push(at);
            let t = t.as_deref().map_or(NONE, |t| p.intern(&mut ids, t));
            p.target.push(t);
        }
        let n = p.names.len();
        let mut count = vec![0u32; n + 1];
        for &q in &p.parent[1..] {
            count[q as usize + 1] += 1;
        }
        for k in 0..n {
            count[k + 1] += count[k];
        }
        let mut fill = count.clone();
        p.children = vec![0; n.saturating_sub(1)];
        for (c, &q) in p.parent.iter().enumerate().skip(1) {
            p.children[fill[q as usize] as usize] = c as u32;
            fill[q as usize] += 1;
        }
        p.child_start = count;
        p
    }

    /// The number of `path`, its parents numbered first.
    fn intern(&mut self, ids: &mut HashMap<&'a [u8], u32>, path: &'a [u8]) -> u32 {
        if let Some(&id) = ids.get(path) {
            return id;
        }
        let up = match path.is_empty() {
            true => 0,
            false => self.intern(ids, parent(path)),
        };
        let id = self.names.len() as u32;
        self.names.push(path);
        self.parent.push(up);
        ids.insert(path, id);
        id
    }

    fn children(&self, p: u32) -> &[u32] {
        let (a, b) = (
            self.child_start[p as usize],
            self.child_start[p as usize + 1],
        );
        &self.children[a as usize..b as usize]
    }
}

/// Where a node's data or metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Entry(u32),
    /// The lower tree's node at that path.
    Lower(u32),
    /// A parent directory an applier made because an entry needed it.
    Implicit,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    /// An overlay whiteout (a 0/0 character device in the layer's directory).
    whiteout: bool,
    opaque: bool,
    /// A directory that still holds a lower file the layer does not name.
    lower_child: bool,
    ino: u32,
}

#[derive(Debug, Clone, Copy)]
struct Inode {
    creator: Origin,
    attrs: Origin,
}

/// A file system tree over the layer's paths.
#[derive(Clone)]
struct Tree {
    nodes: Vec<Option<Node>>,
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

/// One run's paths and work left.
struct Run<'a> {
    paths: &'a Paths<'a>,
    entries: &'a [Entry],
    steps_left: u64,
}

const TOO_COSTLY: &str = "proving it would take too long";

impl Tree {
    fn new(paths: &Paths<'_>) -> Tree {
        Tree {
            nodes: vec![None; paths.names.len()],
            inodes: Vec::new(),
        }
    }

    fn set(&mut self, p: u32, kind: Kind, creator: Origin, attrs: Origin) {
        self.inodes.push(Inode { creator, attrs });
        let ino = (self.inodes.len() - 1) as u32;
        self.nodes[p as usize] = Some(Node {
            kind,
            whiteout: false,
            opaque: false,
            lower_child: false,
            ino,
        });
    }

    fn get(&self, p: u32) -> Option<Node> {
        self.nodes[p as usize]
    }

    /// Removes `p` and everything under it (the root stays, emptied).
    fn remove_all(&mut self, run: &mut Run<'_>, p: u32) -> Result<(), String> {
        // Most removals are of nothing, or of a path with nothing named under it.
        if self.get(p).is_none() {
            return Ok(());
        }
        if p != 0 && run.paths.children(p).is_empty() {
            self.nodes[p as usize] = None;
            return Ok(());
        }
        let mut stack = vec![p];
        while let Some(q) = stack.pop() {
            run.steps_left = run.steps_left.checked_sub(1).ok_or(TOO_COSTLY)?;
            if self.nodes[q as usize].take().is_none() {
                continue;
            }
            stack.extend_from_slice(run.paths.children(q));
        }
        if p == 0 {
            self.set(0, Kind::Dir, Origin::Implicit, Origin::Implicit);
        }
        Ok(())
    }

    /// Makes every missing parent of `p` a directory; fails under a non-directory.
    fn parents(&mut self, run: &Run<'_>, p: u32) -> Result<(), String> {
        let up = run.paths.parent[p as usize];
        if p == 0
            || self
                .get(up)
                .is_some_and(|n| n.kind == Kind::Dir && !n.whiteout)
        {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut q = p;
        while q != 0 {
            q = run.paths.parent[q as usize];
            match self.get(q) {
                Some(n) if n.kind == Kind::Dir && !n.whiteout => break,
                Some(_) => {
                    let name = shown(run.paths.names[p as usize]);
                    return Err(format!("{name}: under a non-directory"));
                }
                None => missing.push(q),
            }
        }
        for q in missing.into_iter().rev() {
            self.set(q, Kind::Dir, Origin::Implicit, Origin::Implicit);
        }
        Ok(())
    }

    /// Writes entry `i` at its path: the applier's rules common to both models.
    fn write(&mut self, run: &mut Run<'_>, i: usize, model: Model) -> Result<(), String> {
        let (e, p) = (&run.entries[i], run.paths.at[i]);
        let existing = self.get(p);
        if e.kind == Kind::Dir
            && let Some(n) = existing.filter(|n| n.kind == Kind::Dir && !n.whiteout)
        {
            self.inodes[n.ino as usize].attrs = Origin::Entry(i as u32);
            return Ok(());
        }
        let linked = match run.paths.target[i] {
            t if e.kind == Kind::HardLink => match self.get(t) {
                Some(n) if n.kind != Kind::Dir && !n.whiteout => Some(n),
                _ => {
                    let (l, t) = (e.shown(), shown(run.paths.names[t as usize]));
                    return Err(format!("hard link {l}: its target {t} is not in its layer"));
                }
            },
            _ => None,
        };
        self.remove_all(run, p)?;
        let Some(t) = linked else {
            let me = Origin::Entry(i as u32);
            self.set(p, e.kind, me, me);
            return Ok(());
        };
        // containerd sets a link header's owner, mode and times on the inode; umoci does not.
        if model == Model::Overlay {
            self.inodes[t.ino as usize].attrs = Origin::Entry(i as u32);
        }
        self.nodes[p as usize] = Some(t);
        Ok(())
    }
}

/// Applies `members` as one layer onto `tree` (the one-tree model). `written[p] == stamp`
/// marks the paths this layer wrote and their parents.
fn apply_one_tree(
    tree: &mut Tree,
    run: &mut Run<'_>,
    members: &[usize],
    written: &mut [u32],
    stamp: u32,
) -> Result<(), String> {
    for &i in members {
        let e = &run.entries[i];
        if e.is_whiteout() {
            let t = run.paths.target[i];
            match e.is_opaque_marker() {
                true => clear_lower(tree, run, t, written, stamp)?,
                false => tree.remove_all(run, t)?,
            }
            continue;
        }
        let p = run.paths.at[i];
        tree.parents(run, p)?;
        tree.write(run, i, Model::OneTree)?;
        let mut q = p as usize;
        while written[q] != stamp {
            written[q] = stamp;
            if q == 0 {
                break;
            }
            q = run.paths.parent[q] as usize;
        }
    }
    Ok(())
}

/// An opaque marker in one tree: everything under `dir` this layer did not write goes.
fn clear_lower(
    tree: &mut Tree,
    run: &mut Run<'_>,
    dir: u32,
    written: &[u32],
    stamp: u32,
) -> Result<(), String> {
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Some(n) = tree.nodes[d as usize].as_mut() else {
            continue;
        };
        if n.kind != Kind::Dir {
            continue;
        }
        n.lower_child = false;
        for &c in run.paths.children(d) {
            run.steps_left = run.steps_left.checked_sub(1).ok_or(TOO_COSTLY)?;
            if written[c as usize] == stamp {
                stack.push(c);
            } else if tree.get(c).is_some() {
                tree.remove_all(run, c)?;
            }
        }
    }
    Ok(())
}

/// Applies `members` into the empty directory `up` (the overlay model's layer directory);
/// the paths it may have set, parents first.
fn apply_upper(up: &mut Tree, run: &mut Run<'_>, members: &[usize]) -> Result<Vec<u32>, String> {
    let mut touched: Vec<u32> = vec![0];
    up.set(0, Kind::Dir, Origin::Implicit, Origin::Implicit);
    for &i in members {
        let e = &run.entries[i];
        let p = run.paths.at[i];
        let mut q = p;
        while q != 0 && up.get(q).is_none() {
            touched.push(q);
            q = run.paths.parent[q as usize];
        }
        up.parents(run, p)?;
        if !e.is_whiteout() {
            up.write(run, i, Model::Overlay)?;
            continue;
        }
        let t = run.paths.target[i];
        if e.is_opaque_marker() {
            if let Some(n) = up.nodes[t as usize].as_mut() {
                n.opaque = true;
            }
            continue;
        }
        if up.get(t).is_some() {
            return Err(format!("whiteout {}: its path is in its layer", e.shown()));
        }
        let me = Origin::Entry(i as u32);
        up.set(t, Kind::Char, me, me);
        if let Some(n) = up.nodes[t as usize].as_mut() {
            n.whiteout = true;
        }
        touched.push(t);
    }
    touched.sort_unstable();
    touched.dedup();
    Ok(touched)
}

/// The merged view of the layer directory `up` (its paths `touched`, parents first) over
/// `below`; `up` is emptied for the next layer.
fn merge(
    below: &mut Tree,
    up: &mut Tree,
    run: &mut Run<'_>,
    touched: &[u32],
) -> Result<(), String> {
    let mut inos: HashMap<u32, u32> = HashMap::new();
    for &p in touched {
        let Some(node) = up.nodes[p as usize].take() else {
            continue;
        };
        let inode = up.inodes[node.ino as usize];
        if node.whiteout {
            below.remove_all(run, p)?;
            continue;
        }
        if let Some(n) = below.get(p)
            && node.kind == Kind::Dir
            && n.kind == Kind::Dir
            && !node.opaque
        {
            below.inodes[n.ino as usize].attrs = inode.attrs;
            continue;
        }
        below.remove_all(run, p)?;
        let ino = *inos.entry(node.ino).or_insert_with(|| {
            below.inodes.push(inode);
            (below.inodes.len() - 1) as u32
        });
        below.nodes[p as usize] = Some(Node { ino, ..node });
    }
    up.inodes.clear();
    Ok(())
}

/// The tree below the layer in `world`: every path the layer names, or none.
fn lower(paths: &Paths<'_>, world: World) -> Tree {
    let mut tree = Tree::new(paths);
    let n = if world == World::Empty {
        1
    } else {
        paths.names.len()
    };
    for p in 0..n as u32 {
        let inner = !paths.children(p).is_empty() || p == 0;
        let dir = world == World::Dirs || inner;
        let kind = if dir { Kind::Dir } else { Kind::File };
        tree.set(p, kind, Origin::Lower(p), Origin::Lower(p));
        if let Some(node) = tree.nodes[p as usize].as_mut() {
            node.lower_child = dir && world != World::Empty;
        }
    }
    tree
}

/// What is compared of a node: its type, its metadata's values, for anything but a
/// directory the entry (or lower file) that made its inode (content and hard-link group),
/// and for a directory whether a lower file is still in it.
#[derive(Debug, PartialEq, Eq)]
struct Seen<'a> {
    kind: Kind,
    attrs: Attrs<'a>,
    creator: Option<Origin>,
    lower_child: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Attrs<'a> {
    Header {
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: Mtime,
        link: &'a [u8],
        dev: (u32, u32),
    },
    Other(Origin),
}

fn seen<'a>(entries: &'a [Entry], tree: &Tree, node: &Node) -> Seen<'a> {
    let inode = tree.inodes[node.ino as usize];
    let attrs = match inode.attrs {
        Origin::Entry(i) => {
            let e = &entries[i as usize];
            Attrs::Header {
                mode: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                link: if e.kind == Kind::Symlink {
                    &e.link
                } else {
                    b""
                },
                dev: (e.devmajor, e.devminor),
            }
        }
        other => Attrs::Other(other),
    };
    Seen {
        kind: node.kind,
        attrs,
        creator: (node.kind != Kind::Dir).then_some(inode.creator),
        lower_child: node.lower_child,
    }
}

/// The first path (in the order the layer names them) where `a` and `b` differ.
fn first_difference(run: &Run<'_>, a: &Tree, b: &Tree) -> Option<String> {
    for (p, (na, nb)) in a.nodes.iter().zip(&b.nodes).enumerate() {
        let same = match (na, nb) {
            (None, None) => true,
            (Some(x), Some(y)) => seen(run.entries, a, x) == seen(run.entries, b, y),
            _ => false,
        };
        if !same {
            let name = shown(run.paths.names[p]);
            let name = if name.is_empty() { "/".into() } else { name };
            return Some(match (na, nb) {
                (Some(_), Some(_)) => format!("{name}: differs"),
                (Some(_), None) => format!("{name}: missing once split"),
                _ => format!("{name}: there only once split"),
            });
        }
    }
    None
}

/// The tree (or the failure) of `layers` applied in order over `base` under `model`.
fn apply(
    run: &mut Run<'_>,
    layers: &[&[usize]],
    model: Model,
    base: &Tree,
) -> Result<Tree, String> {
    let mut tree = base.clone();
    match model {
        Model::OneTree => {
            let mut written = vec![0u32; run.paths.names.len()];
            for (k, members) in layers.iter().enumerate() {
                apply_one_tree(&mut tree, run, members, &mut written, k as u32 + 1)?;
            }
        }
        Model::Overlay => {
            let mut up = Tree::new(run.paths);
            for members in layers {
                let touched = apply_upper(&mut up, run, members)?;
                merge(&mut tree, &mut up, run, &touched)?;
            }
        }
    }
    Ok(tree)
}

/// Checks one model over one lower tree: `Err` says where the split differs.
fn check_one(
    run: &mut Run<'_>,
    parts: &[Vec<usize>],
    model: Model,
    world: World,
) -> Result<(), String> {
    let base = lower(run.paths, world);
    let all: Vec<usize> = (0..run.entries.len()).collect();
    let whole = apply(run, &[&all], model, &base);
    let layers: Vec<&[usize]> = parts.iter().map(Vec::as_slice).collect();
    let split = apply(run, &layers, model, &base);
    // A layer the model cannot apply whole is not proven even when its parts fail too: a
    // real applier may still apply it (through a symlink the model does not follow), and
    // its parts differently.
    let why = match (whole, split) {
        (Err(e), _) => format!("the model cannot apply the whole layer: {e}"),
        (Ok(_), Err(e)) => format!("the parts do not apply: {e}"),
        (Ok(w), Ok(s)) => match first_difference(run, &w, &s) {
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
    Err(format!(
        "{why} (under {model}, over lower layers with {world} at its paths)"
    ))
}

/// Whether `parts` (entry indices, in order) apply to the same tree as the whole layer
/// under both models over every lower tree; `Err` names the first path that differs.
pub fn check(entries: &[Entry], parts: &[Vec<usize>], threads: usize) -> Result<(), String> {
    let targets: Vec<Option<Vec<u8>>> = entries.iter().map(target_of).collect();
    let paths = Paths::new(entries, &targets);
    let budget = PROOF_STEPS_PER_PATH * (paths.names.len() as u64 + entries.len() as u64);
    let cases: Vec<(Model, World)> = [Model::Overlay, Model::OneTree]
        .into_iter()
        .flat_map(|m| [World::Empty, World::Dirs, World::Files].map(|w| (m, w)))
        .collect();
    let done = super::run_tasks(cases.len(), threads, |k| {
        let mut run = Run {
            paths: &paths,
            entries,
            steps_left: budget,
        };
        check_one(&mut run, parts, cases[k].0, cases[k].1)
    });
    for r in done {
        r.unwrap_or_else(|| Err("a proof thread ended early".into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
