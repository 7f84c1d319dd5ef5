//! Which entries of a layer go into which part. The rules (why each: `docs/SPLIT.md`):
//! - every whiteout and opaque marker goes into the first part;
//! - a hard link goes with its target, and a group of links to one file stays together;
//! - the rest fill parts in tar order, a part closing before the entry that would take it
//!   over the part size (an entry or link group larger than that is a part alone);
//! - a directory entry is written, byte for byte the same, in the first and in the last part
//!   that holds anything under it (its own place when nothing is): the first so the directory exists (replacing what a
//!   lower layer had there) before its contents arrive; the last so its mode, owner and mtime
//!   are set after the last part that adds to it (an applier sets a directory's mtime when it
//!   finishes the layer). No directory entry is made up.
//!
//! Within a part, entries keep their order in the source tar.

use std::collections::HashMap;

use super::tar::{Entry, EntryKind};

/// Union-find root of `i` (the smallest index of its group).
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Groups of entries that must share a part: a hard link and the entry it names (the last
/// entry of that path before the link).
fn link_groups(entries: &[Entry]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..entries.len()).collect();
    let mut by_path: HashMap<&str, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let EntryKind::HardLink(target) = &e.kind
            && let Some(&t) = by_path.get(target.as_str())
        {
            let (a, b) = (root(&mut parent, i), root(&mut parent, t));
            let (lo, hi) = (a.min(b), a.max(b));
            parent[hi] = lo;
        }
        by_path.insert(e.path.as_str(), i);
    }
    (0..entries.len()).map(|i| root(&mut parent, i)).collect()
}

/// The part of every entry that is not a directory, and the part the flow was in at each
/// directory (its own place).
fn flow(entries: &[Entry], part_bytes: u64) -> Vec<usize> {
    let groups = link_groups(entries);
    let mut group_bytes: HashMap<usize, u64> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        *group_bytes.entry(groups[i]).or_default() += e.bytes();
    }
    let mut part_of = vec![0usize; entries.len()];
    let mut group_part: HashMap<usize, usize> = HashMap::new();
    let (mut part, mut bytes) = (0usize, 0u64);
    bytes += entries
        .iter()
        .filter(|e| e.is_whiteout())
        .map(Entry::bytes)
        .sum::<u64>();
    for (i, e) in entries.iter().enumerate() {
        if e.is_whiteout() {
            part_of[i] = 0;
            continue;
        }
        if e.kind == EntryKind::Dir {
            part_of[i] = part;
            continue;
        }
        if let Some(&p) = group_part.get(&groups[i]) {
            part_of[i] = p;
            continue;
        }
        let unit = group_bytes.get(&groups[i]).copied().unwrap_or_default();
        if bytes > 0 && bytes + unit > part_bytes {
            part += 1;
            bytes = 0;
        }
        bytes += unit;
        group_part.insert(groups[i], part);
        part_of[i] = part;
    }
    part_of
}

/// The entries of each part, in tar order: parts of about `part_bytes`.
pub fn assign(entries: &[Entry], part_bytes: u64) -> Vec<Vec<usize>> {
    let part_of = flow(entries, part_bytes);
    let count = part_of.iter().max().map_or(1, |m| m + 1);
    // Each directory's first and last part: its own place, and every part under it.
    let mut dirs: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind == EntryKind::Dir {
            dirs.entry(e.path.as_str()).or_default().push(i);
        }
    }
    let mut span: HashMap<usize, (usize, usize)> = HashMap::new();
    let widen = |span: &mut HashMap<usize, (usize, usize)>, path: &str, p: usize| {
        let mut path = path;
        while let Some((parent, _)) = path.rsplit_once('/') {
            for &d in dirs.get(parent).map(Vec::as_slice).unwrap_or_default() {
                let s = span.entry(d).or_insert((p, p));
                *s = (s.0.min(p), s.1.max(p));
            }
            path = parent;
        }
    };
    for (i, e) in entries.iter().enumerate() {
        if e.kind != EntryKind::Dir {
            widen(&mut span, &e.path, part_of[i]);
        }
    }
    // A directory with nothing but directories under it (or nothing) stays at its own place,
    // and its parents must reach there too.
    for (i, e) in entries.iter().enumerate() {
        if e.kind == EntryKind::Dir && !span.contains_key(&i) {
            span.insert(i, (part_of[i], part_of[i]));
            widen(&mut span, &e.path, part_of[i]);
        }
    }
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, e) in entries.iter().enumerate() {
        match span.get(&i) {
            Some(&(first, last)) if e.kind == EntryKind::Dir => {
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
pub fn fit(entries: &[Entry], part_bytes: u64, parts_max: usize) -> Option<Vec<Vec<usize>>> {
    if parts_max < 2 {
        return None;
    }
    let total: u64 = entries.iter().map(Entry::bytes).sum();
    let mut size = part_bytes.max(1);
    loop {
        let parts = assign(entries, size);
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
mod tests {
    use super::*;

    /// Entries laid out back to back: (path, kind, data bytes).
    fn layer(spec: &[(&str, EntryKind, u64)]) -> Vec<Entry> {
        let mut at = 0;
        spec.iter()
            .map(|(path, kind, data)| {
                let start = at;
                at += 512 + data.div_ceil(512) * 512;
                Entry {
                    start,
                    end: at,
                    path: (*path).to_string(),
                    kind: kind.clone(),
                }
            })
            .collect()
    }

    fn paths<'a>(entries: &'a [Entry], parts: &[Vec<usize>]) -> Vec<Vec<&'a str>> {
        parts
            .iter()
            .map(|p| p.iter().map(|&i| entries[i].path.as_str()).collect())
            .collect()
    }

    const MIB: u64 = 1 << 20;

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
        let parts = assign(&e, MIB + 4096);
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
        let parts = assign(&e, MIB + 4096);
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
        let parts = assign(&e, MIB);
        assert_eq!(
            paths(&e, &parts),
            vec![vec!["small1"], vec!["big"], vec!["small2"]]
        );
        assert_eq!(assign(&e, MIB), parts);
        assert_eq!(fit(&e, MIB, 3).map(|p| p.len()), Some(3));
        assert!(fit(&e, MIB, 2).is_none_or(|p| p.len() <= 2));
        assert_eq!(fit(&e, MIB, 1), None);
        assert_eq!(fit(&e, 100 * MIB, 10), None);
        assert_eq!(ranges(&e, &[0, 1]), vec![(0, e[1].end)]);
    }
}
