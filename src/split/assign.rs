//! Which entries of a layer go into which part. The rules (why each: `docs/SPLIT.md`):
//! - every whiteout and opaque marker goes into the first part;
//! - a hard link goes with its target, and a group of links to one file stays together;
//! - the rest fill parts in tar order, balanced by their estimated compressed bytes (their
//!   weights): of the ways to cut the tar into the wanted number of parts, the one whose
//!   heaviest part is lightest, each part within the part size in tar bytes (an entry or link
//!   group larger than that is a part alone);
//! - the part count is the layer's tar size over the part size, rounded up to a multiple of
//!   [`PARTS_ROUND`] when it is larger than that, so the upload connections carry equal shares;
//! - a directory entry is written, byte for byte the same, in the first and in the last part
//!   that holds anything under it (its own place when nothing is): the first so the directory exists (replacing what a
//!   lower layer had there) before its contents arrive; the last so its mode, owner and mtime
//!   are set after the last part that adds to it (an applier sets a directory's mtime when it
//!   finishes the layer). No directory entry is made up.
//!
//! Within a part, entries keep their order in the source tar.

use std::collections::{HashMap, HashSet};

use super::tar::{Entry, Kind};

/// Union-find root of `i` (the smallest index of its group).
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (a, b) = (root(parent, a), root(parent, b));
    let (lo, hi) = (a.min(b), a.max(b));
    parent[hi] = lo;
}

/// Paths the layer writes both as a directory and as something else (`tar -c` then `tar -r`
/// can): the last entry wins, so everything at and under such a path keeps its order.
fn mixed_paths(entries: &[Entry]) -> HashSet<&[u8]> {
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    let mut others: HashSet<&[u8]> = HashSet::new();
    for e in entries.iter().filter(|e| !e.is_whiteout()) {
        match e.kind {
            Kind::Dir => dirs.insert(e.path.as_slice()),
            _ => others.insert(e.path.as_slice()),
        };
    }
    dirs.intersection(&others).copied().collect()
}

/// The mixed path (see [`mixed_paths`]) at or above `path`, the highest one.
fn mixed_root<'a>(mixed: &HashSet<&[u8]>, path: &'a [u8]) -> Option<&'a [u8]> {
    let mut found = None;
    let mut p = path;
    loop {
        if mixed.contains(p) {
            found = Some(p);
        }
        if p.is_empty() {
            return found;
        }
        p = crate::tarscan::parent(p);
    }
}

/// Groups of entries that must share a part, in their tar order: a hard link and the entry it
/// names (the last entry of that path before the link); every entry of a path written more
/// than once (but a directory written again as a directory, which is spanned, see
/// [`assign`]); everything at and under a mixed path. Also which entries are directories
/// placed as units (at or under a mixed path) rather than spanned.
fn link_groups(entries: &[Entry]) -> (Vec<usize>, Vec<bool>) {
    let mut parent: Vec<usize> = (0..entries.len()).collect();
    let mut by_path: HashMap<&[u8], usize> = HashMap::new();
    let mixed = mixed_paths(entries);
    let mut mixed_first: HashMap<&[u8], usize> = HashMap::new();
    let mut unit = vec![false; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if e.kind == Kind::HardLink
            && let Some(&t) = by_path.get(e.link_path().as_slice())
        {
            union(&mut parent, i, t);
        }
        if let Some(&prev) = by_path.get(e.path.as_slice())
            && (e.kind != Kind::Dir || entries[prev].kind != Kind::Dir)
        {
            union(&mut parent, i, prev);
        }
        if !mixed.is_empty()
            && !e.is_whiteout()
            && let Some(m) = mixed_root(&mixed, &e.path)
        {
            let first = *mixed_first.entry(m).or_insert(i);
            union(&mut parent, i, first);
            unit[i] = true;
        }
        by_path.insert(e.path.as_slice(), i);
    }
    let groups = (0..entries.len()).map(|i| root(&mut parent, i)).collect();
    (groups, unit)
}

/// Part counts above this are rounded up to a multiple of it: the daemon's default number of
/// upload connections, so that with `n * PARTS_ROUND` parts every connection carries `n` parts
/// of equal weight instead of one connection carrying an extra part after the others are done.
/// A constant, not the daemon's configured count: the layout is a function of the layer and
/// the part size only.
pub const PARTS_ROUND: usize = crate::limits::UPLOADS_IN_FLIGHT_MAX_DEFAULT;

/// How to cut a layer: parts of at most about `part_bytes` of tar, balanced by `weights` (each
/// entry's estimated compressed bytes, in entry order).
#[derive(Debug, Clone, Copy)]
pub struct Cut<'a> {
    pub part_bytes: u64,
    pub weights: &'a [u64],
}

impl Cut<'_> {
    /// How many parts the cut aims at: the tar size over the part size, rounded up to a
    /// multiple of [`PARTS_ROUND`] above it.
    fn parts_wanted(&self, total_bytes: u64) -> usize {
        let n = total_bytes.div_ceil(self.part_bytes.max(1)).max(1) as usize;
        if n > PARTS_ROUND {
            n.div_ceil(PARTS_ROUND) * PARTS_ROUND
        } else {
            n
        }
    }
}

/// The units a layer's entries are placed as: link groups, with their tar bytes and weight.
struct Units {
    /// Each entry's group (see [`link_groups`]).
    groups: Vec<usize>,
    /// Directories placed as units, not spanned (see [`link_groups`]).
    unit: Vec<bool>,
    /// Each group's (tar bytes, weight), directories left out.
    sizes: HashMap<usize, (u64, u64)>,
    /// The whiteouts' (tar bytes, weight): they open the first part.
    first: (u64, u64),
}

impl Units {
    fn new(entries: &[Entry], cut: Cut<'_>) -> Units {
        let (groups, unit) = link_groups(entries);
        let weight_of = |i: usize| cut.weights.get(i).copied().unwrap_or(entries[i].bytes());
        let mut sizes: HashMap<usize, (u64, u64)> = HashMap::new();
        let mut first = (0, 0);
        for (i, e) in entries.iter().enumerate() {
            // Directories are not units: each is written where the flow is (see `assign`).
            let s = if e.is_whiteout() {
                &mut first
            } else if e.kind == Kind::Dir && !unit[i] {
                continue;
            } else {
                sizes.entry(groups[i]).or_default()
            };
            (s.0, s.1) = (s.0 + e.bytes(), s.1 + weight_of(i));
        }
        Units {
            groups,
            unit,
            sizes,
            first,
        }
    }

    /// Whether entry `i` is a directory spanned over the parts that hold what is under it.
    fn spanned(&self, entries: &[Entry], i: usize) -> bool {
        entries[i].kind == Kind::Dir && !self.unit[i]
    }

    /// Tar bytes and weight of everything that is not a directory.
    fn totals(&self) -> (u64, u64) {
        self.sizes
            .values()
            .fold(self.first, |t, &(b, w)| (t.0 + b, t.1 + w))
    }
}

/// The part of every entry that is not a directory, and the part the flow was in at each
/// directory (its own place), filling each part in tar order up to `part_bytes` of tar and
/// `max_weight` of weight (a unit larger than either is a part alone).
fn pack(entries: &[Entry], units: &Units, part_bytes: u64, max_weight: u64) -> Vec<usize> {
    let mut part_of = vec![0usize; entries.len()];
    let mut group_part: HashMap<usize, usize> = HashMap::new();
    let (mut part, (mut bytes, mut weight)) = (0usize, units.first);
    for (i, e) in entries.iter().enumerate() {
        if e.is_whiteout() {
            continue;
        }
        if units.spanned(entries, i) {
            part_of[i] = part;
            continue;
        }
        let g = units.groups[i];
        if let Some(&p) = group_part.get(&g) {
            part_of[i] = p;
            continue;
        }
        let (b, w) = units.sizes.get(&g).copied().unwrap_or_default();
        if bytes > 0 && (bytes + b > part_bytes || weight + w > max_weight) {
            (part, bytes, weight) = (part + 1, 0, 0);
        }
        (bytes, weight) = (bytes + b, weight + w);
        group_part.insert(g, part);
        part_of[i] = part;
    }
    part_of
}

fn count(part_of: &[usize]) -> usize {
    part_of.iter().max().map_or(1, |m| m + 1)
}

/// The part of every entry that is not a directory, and the part the flow was in at each
/// directory (its own place): the [`Cut::parts_wanted`] parts (or fewer) whose heaviest part
/// is as light as it can be, found by a binary search on that weight. More parts only where
/// `part_bytes` forces them.
fn flow(entries: &[Entry], units: &Units, cut: Cut<'_>) -> Vec<usize> {
    let (total_bytes, total_weight) = units.totals();
    let wanted = cut.parts_wanted(total_bytes);
    let (mut lo, mut hi) = (total_weight.div_ceil(wanted as u64), total_weight.max(1));
    // `hi` always fits in `wanted` parts unless the tar-byte limit alone needs more.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count(&pack(entries, units, cut.part_bytes, mid)) <= wanted {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    pack(entries, units, cut.part_bytes, hi)
}

/// The entries of each part, in tar order.
pub fn assign(entries: &[Entry], cut: Cut<'_>) -> Vec<Vec<usize>> {
    let units = Units::new(entries, cut);
    let part_of = flow(entries, &units, cut);
    let count = part_of.iter().max().map_or(1, |m| m + 1);
    // Each directory's first and last part: its own place, and every part under it.
    let mut dirs: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if units.spanned(entries, i) {
            dirs.entry(e.path.as_slice()).or_default().push(i);
        }
    }
    let mut span: HashMap<usize, (usize, usize)> = HashMap::new();
    let widen = |span: &mut HashMap<usize, (usize, usize)>, path: &[u8], p: usize| {
        let mut path = path;
        while !path.is_empty() {
            path = crate::tarscan::parent(path);
            for &d in dirs.get(path).map(Vec::as_slice).unwrap_or_default() {
                let s = span.entry(d).or_insert((p, p));
                *s = (s.0.min(p), s.1.max(p));
            }
        }
    };
    for (i, e) in entries.iter().enumerate() {
        if !units.spanned(entries, i) {
            widen(&mut span, &e.path, part_of[i]);
        }
    }
    // A directory with nothing but directories under it (or nothing) stays at its own place,
    // and its parents must reach there too.
    for (i, e) in entries.iter().enumerate() {
        if units.spanned(entries, i) && !span.contains_key(&i) {
            span.insert(i, (part_of[i], part_of[i]));
            widen(&mut span, &e.path, part_of[i]);
        }
    }
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); count];
    for i in 0..entries.len() {
        match span.get(&i) {
            Some(&(first, last)) if units.spanned(entries, i) => {
                parts[first].push(i);
                if last != first {
                    parts[last].push(i);
                }
            }
            _ => parts[part_of[i]].push(i),
        }
    }
    parts
}

/// [`assign`] with at most `parts_max` parts: the part size grows (by a quarter at a time, a
/// function of the layer alone) until they fit. `None` when the layer makes one part.
pub fn fit(entries: &[Entry], cut: Cut<'_>, parts_max: usize) -> Option<Vec<Vec<usize>>> {
    if parts_max < 2 {
        return None;
    }
    let total: u64 = entries.iter().map(Entry::bytes).sum();
    let mut size = cut.part_bytes.max(1);
    loop {
        let parts = assign(
            entries,
            Cut {
                part_bytes: size,
                ..cut
            },
        );
        if parts.len() < 2 {
            return None;
        }
        if parts.len() <= parts_max {
            return Some(parts);
        }
        size = (size + size / 4 + 1).max(total.div_ceil(parts_max as u64));
    }
}

/// A part's byte ranges: its entries' ranges, adjacent ones merged.
pub fn ranges(entries: &[Entry], members: &[usize]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &i in members {
        let e = &entries[i];
        match out.last_mut() {
            Some(last) if last.1 == e.start => last.1 = e.end,
            _ => out.push((e.start, e.end)),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a test entry is.
    #[derive(Clone)]
    pub(crate) enum EntryKind {
        Dir,
        HardLink(String),
        Other,
    }

    /// Entries laid out back to back: (path, kind, data bytes).
    pub(crate) fn layer(spec: &[(&str, EntryKind, u64)]) -> Vec<Entry> {
        let mut at = 0;
        spec.iter()
            .map(|(path, kind, data)| {
                let start = at;
                at += 512 + data.div_ceil(512) * 512;
                let (kind, link) = match kind {
                    EntryKind::Dir => (Kind::Dir, Vec::new()),
                    EntryKind::HardLink(t) => (Kind::HardLink, t.as_bytes().to_vec()),
                    EntryKind::Other => (Kind::File, Vec::new()),
                };
                Entry {
                    start,
                    end: at,
                    path: path.as_bytes().to_vec(),
                    kind,
                    link,
                    data_start: start + 512,
                    data_len: *data,
                    ..Entry::default()
                }
            })
            .collect()
    }

    fn paths<'a>(entries: &'a [Entry], parts: &[Vec<usize>]) -> Vec<Vec<&'a str>> {
        parts
            .iter()
            .map(|p| {
                p.iter()
                    .map(|&i| std::str::from_utf8(&entries[i].path).unwrap())
                    .collect()
            })
            .collect()
    }

    const MIB: u64 = 1 << 20;

    /// Weights equal to tar bytes: every byte compresses alike.
    fn even(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(Entry::bytes).collect()
    }

    fn plain(entries: &[Entry], part_bytes: u64) -> Vec<Vec<usize>> {
        assign(
            entries,
            Cut {
                part_bytes,
                weights: &even(entries),
            },
        )
    }

    fn fit_plain(entries: &[Entry], part_bytes: u64, parts_max: usize) -> Option<Vec<Vec<usize>>> {
        let w = even(entries);
        fit(
            entries,
            Cut {
                part_bytes,
                weights: &w,
            },
            parts_max,
        )
    }

    #[test]
    fn whiteouts_go_first_and_directories_span_their_contents() {
        use EntryKind::{Dir, Other};
        let e = layer(&[
            ("d", Dir, 0),
            ("d/a", Other, MIB),
            ("d/b", Other, MIB),
            ("e", Dir, 0),
            ("e/.wh.gone", Other, 0),
            ("d/c", Other, MIB),
            ("d/.wh..wh..opq", Other, 0),
        ]);
        let parts = plain(&e, MIB + 4096);
        assert_eq!(
            paths(&e, &parts),
            vec![
                vec!["d", "d/a", "e", "e/.wh.gone", "d/.wh..wh..opq"],
                vec!["d/b"],
                vec!["d", "d/c"],
            ]
        );
    }

    #[test]
    fn hard_links_stay_with_their_target_however_far_apart() {
        use EntryKind::{HardLink, Other};
        let e = layer(&[
            ("target", Other, MIB),
            ("filler1", Other, MIB),
            ("filler2", Other, MIB),
            ("link1", HardLink("target".into()), 0),
            ("link2", HardLink("link1".into()), 0),
            ("lower-link", HardLink("not/in/this/layer".into()), 0),
        ]);
        let parts = plain(&e, MIB + 4096);
        assert_eq!(
            paths(&e, &parts),
            vec![
                vec!["target", "link1", "link2"],
                vec!["filler1"],
                vec!["filler2", "lower-link"],
            ]
        );
    }

    #[test]
    fn a_big_file_is_a_part_alone_and_the_layout_is_deterministic() {
        use EntryKind::Other;
        let e = layer(&[
            ("small1", Other, 100),
            ("big", Other, 10 * MIB),
            ("small2", Other, 100),
        ]);
        let parts = plain(&e, MIB);
        assert_eq!(
            paths(&e, &parts),
            vec![vec!["small1"], vec!["big"], vec!["small2"]]
        );
        assert_eq!(plain(&e, MIB), parts);
        assert_eq!(fit_plain(&e, MIB, 3).map(|p| p.len()), Some(3));
        assert!(fit_plain(&e, MIB, 2).is_none_or(|p| p.len() <= 2));
        assert_eq!(fit_plain(&e, MIB, 1), None);
        assert_eq!(fit_plain(&e, 100 * MIB, 10), None);
        assert_eq!(ranges(&e, &[0, 1]), vec![(0, e[1].end)]);
    }

    #[test]
    fn parts_balance_their_estimated_compressed_bytes_not_their_tar_bytes() {
        use EntryKind::Other;
        // Eight 1 MiB files: the first four compress to a tenth, the last four not at all.
        let names: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        let spec: Vec<(&str, EntryKind, u64)> =
            names.iter().map(|n| (n.as_str(), Other, MIB)).collect();
        let e = layer(&spec);
        let weights: Vec<u64> = e
            .iter()
            .enumerate()
            .map(|(i, x)| if i < 4 { x.bytes() / 10 } else { x.bytes() })
            .collect();
        let parts = assign(
            &e,
            Cut {
                part_bytes: 6 * MIB + 64 * 1024,
                weights: &weights,
            },
        );
        // By tar bytes it would be 4 + 4 files (weights 0.4 and 4 MiB); by weight the first
        // part takes the light files and two heavy ones.
        let weight_of = |p: &Vec<usize>| p.iter().map(|&i| weights[i]).sum::<u64>();
        assert_eq!(parts.len(), 2, "{:?}", paths(&e, &parts));
        assert_eq!(parts[0].len(), 6, "{:?}", paths(&e, &parts));
        let (a, b) = (weight_of(&parts[0]), weight_of(&parts[1]));
        assert!(a.abs_diff(b) <= MIB / 2, "weights {a} and {b}");
    }

    #[test]
    fn a_part_count_above_the_connections_is_a_multiple_of_them() {
        use EntryKind::Other;
        let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let spec: Vec<(&str, EntryKind, u64)> =
            names.iter().map(|n| (n.as_str(), Other, MIB / 2)).collect();
        let e = layer(&spec);
        // 20 MiB at 4 MiB a part: 5 parts by size, rounded up to 8.
        assert_eq!(plain(&e, 4 * MIB + 64 * 1024).len(), 2 * PARTS_ROUND);
        // 20 MiB at 8 MiB a part: 3, at most one per connection, stays 3.
        assert_eq!(plain(&e, 8 * MIB).len(), 3);
    }

    #[test]
    fn a_path_written_twice_keeps_its_last_entry_last() {
        use EntryKind::{Dir, HardLink, Other};
        // `l` a file, then a hard link `l` to an earlier `t`: both stay in `t`'s part, in order.
        let e = layer(&[
            ("t", Other, MIB),
            ("filler1", Other, MIB),
            ("l", Other, MIB),
            ("filler2", Other, MIB),
            ("l", HardLink("t".into()), 0),
        ]);
        let parts = plain(&e, MIB + 4096);
        let with_t = parts.iter().find(|p| p.contains(&0)).unwrap();
        assert!(
            with_t.contains(&2) && with_t.contains(&4),
            "{:?}",
            paths(&e, &parts)
        );
        // `x` a directory with content, then a file, then an empty directory: all of `x` in
        // one part, in tar order.
        let e = layer(&[
            ("x", Dir, 0),
            ("x/a", Other, MIB),
            ("filler", Other, MIB),
            ("x", Other, MIB),
            ("filler2", Other, MIB),
            ("x", Dir, 0),
        ]);
        let parts = plain(&e, MIB + 4096);
        let with_x = parts.iter().find(|p| p.contains(&0)).unwrap();
        assert_eq!(
            with_x
                .iter()
                .filter(|&&i| e[i].path.starts_with(b"x"))
                .count(),
            4,
            "{:?}",
            paths(&e, &parts)
        );
    }
}
