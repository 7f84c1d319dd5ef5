use super::*;
use crate::split::assign::tests::{EntryKind, layer};
use crate::split::assign::{Cut, assign};

const MIB: u64 = 1 << 20;

fn split(entries: &[Entry], part_bytes: u64) -> Vec<Vec<usize>> {
    let weights: Vec<u64> = entries.iter().map(Entry::bytes).collect();
    assign(
        entries,
        Cut {
            part_bytes,
            weights: &weights,
        },
    )
}

#[test]
fn the_splitters_parts_are_proven_on_the_issues_layers() {
    use EntryKind::{Dir, HardLink, Other};
    let layers = [
        layer(&[
            ("t", Other, MIB),
            ("filler1", Other, MIB),
            ("l", Other, MIB),
            ("filler2", Other, MIB),
            ("l", HardLink("t".into()), 0),
        ]),
        layer(&[
            ("x", Dir, 0),
            ("x/a", Other, MIB),
            ("filler", Other, MIB),
            ("x", Other, MIB),
            ("filler2", Other, MIB),
            ("x", Dir, 0),
            ("y", Dir, 0),
            ("y/.wh..wh..opq", Other, 0),
            ("y/b", Other, MIB),
            ("gone/.wh.z", Other, 0),
        ]),
    ];
    for e in &layers {
        let parts = split(e, MIB + 4096);
        assert!(parts.len() > 2, "{parts:?}");
        check(e, &parts, 2).unwrap();
    }
}

#[test]
fn a_link_moved_away_from_its_target_or_ahead_of_its_path_is_caught() {
    use EntryKind::{HardLink, Other};
    let e = layer(&[
        ("t", Other, MIB),
        ("l", Other, MIB),
        ("l2", HardLink("t".into()), 0),
    ]);
    // The link in another part than its target: overlay fails the part.
    let err = check(&e, &[vec![0, 1], vec![2]], 1).unwrap_err();
    assert!(err.contains("hard link l2"), "{err}");
    // A later entry of `l` moved ahead of an earlier one: the old file wins.
    let e = layer(&[
        ("t", Other, MIB),
        ("l", Other, MIB),
        ("l", HardLink("t".into()), 0),
    ]);
    let err = check(&e, &[vec![0, 2], vec![1]], 1).unwrap_err();
    assert!(err.starts_with("l: differs"), "{err}");
    check(&e, &[vec![0, 1, 2]], 1).unwrap();
}

#[test]
fn a_whiteout_of_a_path_its_own_layer_writes_is_caught() {
    use EntryKind::Other;
    let e = layer(&[("f", Other, MIB), ("x", Other, MIB), (".wh.x", Other, 0)]);
    let parts = split(&e, MIB + 4096);
    let err = check(&e, &parts, 2).unwrap_err();
    assert!(err.contains("x"), "{err}");
}

#[test]
fn a_directory_whose_copy_is_missing_from_its_last_part_is_caught() {
    use EntryKind::{Dir, Other};
    let mut e = layer(&[("d", Dir, 0), ("d/a", Other, MIB), ("d/b", Other, MIB)]);
    e[0].mode = 0o700;
    // Overlay: the second part makes `d` as a default directory, shown over the first's.
    let err = check(&e, &[vec![0, 1], vec![2]], 1).unwrap_err();
    assert!(err.starts_with("d: differs"), "{err}");
    check(&e, &[vec![0, 1], vec![0, 2]], 1).unwrap();
}

/// `cargo nextest run --run-ignored only -E 'test(/proof_of_a_big_layer/)'` (with
/// `--config 'profile.dev.package.hoist.opt-level=3'`): the proof's time on a layer of
/// `HOIST_PROOF_ENTRIES` entries (default 400 000) in 1000-file directories.
#[test]
#[ignore = "a measurement, not a check"]
fn proof_of_a_big_layer() {
    let n: usize = std::env::var("HOIST_PROOF_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let mut spec: Vec<(String, EntryKind, u64)> = Vec::with_capacity(n);
    while spec.len() < n {
        let d = spec.len() / 1000;
        spec.push((format!("usr/share/d{d:05}"), EntryKind::Dir, 0));
        for f in 0..999 {
            spec.push((
                format!("usr/share/d{d:05}/file-{f:04}.txt"),
                EntryKind::Other,
                3000,
            ));
        }
    }
    let refs: Vec<(&str, EntryKind, u64)> = spec
        .iter()
        .map(|(p, k, b)| (p.as_str(), k.clone(), *b))
        .collect();
    let e = layer(&refs);
    let parts = split(&e, 64 * MIB);
    let t = std::time::Instant::now();
    check(&e, &parts, 2).unwrap();
    eprintln!(
        "{} entries, {} parts: proven in {:?}",
        e.len(),
        parts.len(),
        t.elapsed()
    );
}

/// Random layers (paths reused with other types, hard links before and after their
/// targets, whiteouts and opaque markers, directories after their children) through the
/// splitter: every part of a layer that applies whole applies on its own (a hard link's
/// target is in its part). The proof rejects some splits (a whiteout moved ahead of the
/// layer's own entries under it can change what an applier keeps), and those layers stay
/// whole; the count and the first reasons are printed.
#[test]
fn random_layers_through_the_splitter() {
    use EntryKind::{Dir, HardLink, Other};
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let names = [
        "a",
        "b",
        "a/c",
        "a/d",
        "b/e",
        "a/c/f",
        ".wh.b",
        "a/.wh..wh..opq",
        "g",
    ];
    let (mut rejected, mut cases) = (0, 0);
    for _ in 0..600 {
        let n = 3 + next(12) as usize;
        let mut spec: Vec<(String, EntryKind, u64)> = Vec::new();
        for _ in 0..n {
            let name = names[next(names.len() as u64) as usize].to_string();
            let kind = match next(4) {
                0 if !name.contains(".wh.") => Dir,
                1 => HardLink(names[next(names.len() as u64) as usize].into()),
                _ => Other,
            };
            let bytes = if matches!(kind, Other) {
                next(3) * MIB / 2
            } else {
                0
            };
            spec.push((name, kind, bytes));
        }
        let refs: Vec<(&str, EntryKind, u64)> = spec
            .iter()
            .map(|(p, k, b)| (p.as_str(), k.clone(), *b))
            .collect();
        let e = layer(&refs);
        let parts = split(&e, MIB / 2 + 4096);
        if parts.len() < 2 {
            continue;
        }
        cases += 1;
        if let Err(why) = check(&e, &parts, 1) {
            if why.starts_with("the model cannot apply the whole layer") {
                continue;
            }
            assert!(!why.starts_with("the parts do not apply"), "{why}");
            rejected += 1;
            if rejected <= 5 {
                let shown: Vec<Vec<String>> = parts
                    .iter()
                    .map(|p| {
                        p.iter()
                            .map(|&i| format!("{}:{:?}", e[i].shown(), e[i].kind))
                            .collect()
                    })
                    .collect();
                eprintln!("{why}\n  {shown:?}");
            }
        }
    }
    eprintln!("{rejected} of {cases} splits of layers that apply whole rejected");
}
