//! A search for split counterexamples: random layers (`hoist_testkit::layergen`) split by
//! hoist's splitter, the parts applied in order and the whole layer applied under two applier
//! models (`hoist_testkit::apply`: each layer into its own directory with overlay whiteouts,
//! and one tree as umoci does), the trees compared.
//!
//! The base seed is `HOIST_SPLIT_SEED` (else the day), the case count `HOIST_SPLIT_CASES`;
//! a failure prints the failing cases' seeds and the first few (`HOIST_SPLIT_SHOW`) shrunk to
//! the fewest entries that still fail:
//! `HOIST_SPLIT_SEED=<seed> HOIST_SPLIT_CASES=1` replays one.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use hoist::digest::Digest;
use hoist::source::BlobLocation;
use hoist_testkit::apply::{self, Entry, Tree};
use hoist_testkit::layergen::{self, GenCase, GenEntry, GenKind};

/// Cases per run: 12 to 20 s on the shared 2-core machine, the split tests about 60 s in all.
const CASES_DEFAULT: u64 = 3000;
/// Failing cases shrunk and printed (`HOIST_SPLIT_SHOW` for more): shrinking takes time.
const SHOWN_DEFAULT: u64 = 3;
/// The share of cases the splitter must cut into several parts, in percent: a splitter that
/// keeps every layer whole passes every other check.
const SPLIT_PERCENT_MIN: u64 = 30;

/// hoist's splitter on `layer`: each part's tar, or the layer alone when it stays whole.
/// The one place that calls into the splitter.
fn split_parts(layer: &[u8], part_bytes: u64) -> Result<Vec<Vec<u8>>, String> {
    let mut file = tempfile::tempfile().map_err(|e| e.to_string())?;
    file.write_all(layer).map_err(|e| e.to_string())?;
    let location = BlobLocation {
        file: Arc::new(file),
        offset: 0,
        len: layer.len() as u64,
        name: "generated layer".into(),
        splice: None,
    };
    let diff_id = Digest::sha256_of(layer);
    let candidate = hoist::split::Candidate {
        location: &location,
        diff_id: &diff_id,
        compression: None,
        foreign: false,
    };
    let split = hoist::split::split_layer(&candidate, part_bytes, 96).map_err(|e| e.to_string())?;
    let Some(split) = split else {
        return Ok(vec![layer.to_vec()]);
    };
    let mut parts = Vec::new();
    for part in split.locations(&location) {
        let mut tar = Vec::new();
        part.reader()
            .read_to_end(&mut tar)
            .map_err(|e| e.to_string())?;
        parts.push(tar);
    }
    Ok(parts)
}

/// What one case came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The models cannot apply the whole layer (an invalid layer for both): nothing to check.
    Invalid,
    /// The splitter refused the layer (an error), and the models that apply it whole.
    Refused(String, &'static str),
    Whole,
    Split(usize),
    /// A counterexample: what differs.
    Differs(String),
}

fn parse(tar: &[u8], what: &str) -> Result<Vec<Entry>, String> {
    apply::read_tar(tar).map_err(|e| format!("{what} does not read: {e}"))
}

/// Whole against parts under one model; `None` when they agree or the whole does not apply.
fn compare(
    name: &str,
    model: fn(&[Vec<Entry>]) -> Result<Tree, String>,
    whole: &[Vec<Entry>],
    split: &[Vec<Entry>],
) -> Option<Result<(), String>> {
    let want = model(whole).ok()?;
    Some(match model(split) {
        Err(e) => Err(format!("{name}: the parts do not apply: {e}")),
        Ok(mut got) => {
            // A directory that carries the time of the apply whole has no mtime a layer chose:
            // the split may give it any.
            for (path, w) in &want.nodes {
                if let (None, Some(g)) = (w.mtime, got.nodes.get_mut(path)) {
                    g.mtime = None;
                }
            }
            let d = apply::differences(&want, &got);
            if d.is_empty() {
                Ok(())
            } else {
                Err(format!("{name}: {}", d[..d.len().min(4)].join("; ")))
            }
        }
    })
}

/// Every part applies on its own in the overlay model (each into an empty directory).
fn parts_apply_alone(parts: &[Vec<Entry>]) -> Result<(), String> {
    for (i, p) in parts.iter().enumerate() {
        apply::overlay_layer(p, &[]).map_err(|e| format!("part {} alone: {e}", i + 1))?;
    }
    Ok(())
}

/// Splits `case`'s layer and checks the parts against the whole under both models.
fn run_case(case: &GenCase) -> Outcome {
    let (lower, layer) = (layergen::render(&case.lower), layergen::render(&case.layer));
    // Small parts: a few hundred bytes to a few KiB of tar each, so most layers cut.
    let part_bytes = (layer.len() as u64 / 4).max(1024);
    check_layer(&lower, &layer, &|l| split_parts(l, part_bytes))
}

/// The layer tars a split makes of a layer, or why it refuses.
type Splitter<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<Vec<u8>>, String>;

/// Splits `layer` with `split` and checks the parts against the whole, above `lower`, under
/// both models; every part must also apply alone in the overlay model.
fn check_layer(lower: &[u8], layer: &[u8], split: Splitter<'_>) -> Outcome {
    let entries = (parse(lower, "lower layer"), parse(layer, "layer"));
    let (Ok(lower), Ok(whole)) = entries else {
        return Outcome::Invalid;
    };
    let whole_stack = vec![lower.clone(), whole.clone()];
    let overlay_ok = apply::overlay(&whole_stack).is_ok();
    if !overlay_ok && apply::one_tree(&whole_stack).is_err() {
        return Outcome::Invalid;
    }
    let parts = match split(layer) {
        Err(e) => {
            let applies = match (overlay_ok, apply::one_tree(&whole_stack).is_ok()) {
                (true, true) => "both models apply it whole",
                (true, false) => "only overlay applies it whole",
                _ => "only one tree applies it whole",
            };
            return Outcome::Refused(e, applies);
        }
        Ok(p) if p.len() == 1 => return Outcome::Whole,
        Ok(p) => p,
    };
    let mut split_stack = vec![lower];
    for (i, p) in parts.iter().enumerate() {
        match parse(p, &format!("part {}", i + 1)) {
            Ok(e) => split_stack.push(e),
            Err(e) => return Outcome::Differs(e),
        }
    }
    let checks = [
        compare("overlay", apply::overlay, &whole_stack, &split_stack),
        compare("one tree", apply::one_tree, &whole_stack, &split_stack),
        overlay_ok.then(|| parts_apply_alone(&split_stack[1..])),
    ];
    let failed: Vec<String> = checks
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .collect();
    if failed.is_empty() {
        Outcome::Split(parts.len())
    } else {
        Outcome::Differs(failed.join(" | "))
    }
}

/// `entries` with as few of them as keep `case_of(entries)` differing (one removed at a time
/// while it does), and the last difference.
fn shrink_list(
    mut entries: Vec<GenEntry>,
    mut why: String,
    case_of: impl Fn(Vec<GenEntry>) -> GenCase,
) -> (Vec<GenEntry>, String) {
    let mut i = 0;
    while i < entries.len() {
        let mut smaller = entries.clone();
        smaller.remove(i);
        match run_case(&case_of(smaller.clone())) {
            Outcome::Differs(w) => (entries, why) = (smaller, w),
            _ => i += 1,
        }
    }
    (entries, why)
}

/// `case` with as few entries, in the layer and then in the lower layer, as still differ.
fn shrink(case: &GenCase) -> (GenCase, String) {
    let why = match run_case(case) {
        Outcome::Differs(w) => w,
        other => return (case.clone(), format!("{other:?}")),
    };
    let lower = case.lower.clone();
    let (layer, why) = shrink_list(case.layer.clone(), why, |layer| GenCase {
        lower: lower.clone(),
        layer,
    });
    let (lower, why) = shrink_list(case.lower.clone(), why, |lower| GenCase {
        lower,
        layer: layer.clone(),
    });
    (GenCase { lower, layer }, why)
}

fn describe(entries: &[GenEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                GenKind::File(d) => format!("file({} B)", d.len()),
                GenKind::HardLink(t) => format!("hard link to {}", apply::show(t)),
                GenKind::Symlink(t) => format!("symlink to {}", apply::show(t)),
                GenKind::Dir => "dir".into(),
                GenKind::Fifo => "fifo".into(),
                GenKind::Sparse {
                    format, real_bytes, ..
                } => {
                    format!("sparse {format:?} ({real_bytes} B)")
                }
            };
            let size = if e.size_field > 0 {
                format!(" size field {}", e.size_field)
            } else {
                String::new()
            };
            format!("  {} {kind} {:o}{size}", apply::show(&e.path), e.meta.mode)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The run's base seed: `HOIST_SPLIT_SEED`, else the day (fixed within a day, varied across).
fn base_seed() -> u64 {
    env_u64("HOIST_SPLIT_SEED").unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (secs / 86_400) << 20
    })
}

#[derive(Debug, Default)]
struct Tally {
    invalid: u64,
    refused: u64,
    whole: u64,
    split: u64,
    parts: u64,
    differs: Vec<u64>,
    refusals: Vec<(u64, String)>,
    /// Refusals by the proof's reason and by which models apply the layer whole.
    refusal_kinds: std::collections::BTreeMap<((&'static str, &'static str), &'static str), u64>,
}

/// The kind of a proof's refusal, without the paths it names, and the model it names.
fn refusal_kind(why: &str) -> (&'static str, &'static str) {
    const KINDS: &[(&str, &str)] = &[
        (
            "apply the whole layer: whiteout",
            "whole fails: a whiteout of a path its layer writes",
        ),
        (
            "apply the whole layer: hard link",
            "whole fails: a hard link's target not in its layer",
        ),
        ("under a non-directory", "an entry under a non-directory"),
        ("apply the whole layer", "whole fails: other"),
        ("the parts do not apply", "the parts fail"),
        ("would take too long", "too costly"),
    ];
    let kind = KINDS
        .iter()
        .find(|(k, _)| why.contains(k))
        .map_or("the trees differ", |(_, kind)| kind);
    let model = if why.contains("(overlay)") {
        "overlay"
    } else {
        "one tree"
    };
    (kind, model)
}

#[test]
fn split_parts_apply_to_the_same_tree_as_the_whole_layer() {
    let base = base_seed();
    let cases = env_u64("HOIST_SPLIT_CASES").unwrap_or(CASES_DEFAULT);
    let started = std::time::Instant::now();
    let mut t = Tally::default();
    for seed in base..base + cases {
        match run_case(&layergen::random_case(seed)) {
            Outcome::Invalid => t.invalid += 1,
            Outcome::Refused(why, applies) => {
                t.refused += 1;
                *t.refusal_kinds
                    .entry((refusal_kind(&why), applies))
                    .or_default() += 1;
                t.refusals.push((seed, why));
            }
            Outcome::Whole => t.whole += 1,
            Outcome::Split(n) => {
                t.split += 1;
                t.parts += n as u64;
            }
            Outcome::Differs(_) => t.differs.push(seed),
        }
    }
    let checked = cases - t.invalid;
    eprintln!(
        "split search: base seed {base}, {cases} cases in {:.1} s: {} invalid for both models, {} refused, {} whole, {} split ({} parts), {} differ",
        started.elapsed().as_secs_f64(),
        t.invalid,
        t.refused,
        t.whole,
        t.split + t.differs.len() as u64,
        t.parts,
        t.differs.len()
    );
    for (((kind, model), applies), n) in &t.refusal_kinds {
        eprintln!("refused {n}: {kind}, in the proof's {model} model; {applies}");
    }
    for (seed, why) in t.refusals.iter().take(3) {
        eprintln!("refused (seed {seed}): {why}");
    }
    let shown = env_u64("HOIST_SPLIT_SHOW").unwrap_or(SHOWN_DEFAULT) as usize;
    for &seed in t.differs.iter().take(shown) {
        let (small, why) = shrink(&layergen::random_case(seed));
        eprintln!(
            "seed {seed} differs, shrunk to {} entries over a lower layer of {}: {why}\n lower:\n{}\n layer:\n{}",
            small.layer.len(),
            small.lower.len(),
            describe(&small.lower),
            describe(&small.layer)
        );
    }
    assert!(
        t.differs.is_empty(),
        "{} cases differ: seeds {:?}",
        t.differs.len(),
        &t.differs[..t.differs.len().min(20)]
    );
    let split = (t.split + t.differs.len() as u64) * 100;
    assert!(
        split >= SPLIT_PERCENT_MIN * checked,
        "only {} of {checked} valid cases split: the splitter must cut at least {SPLIT_PERCENT_MIN} %",
        t.split
    );
}

/// The fixed cases (`tests/data/split/`, written by its `make.sh`), split at 1 MiB.
pub const FIXED_CASES: &[&str] = &[
    "reused-path",
    "dir-file-dir",
    "header-only-size",
    "sparse-0.1",
    "sparse-1.0",
    "non-utf8",
];

/// A fixed case's layer tar.
pub fn fixed_layer(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/split/{name}.tar.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

#[test]
fn the_fixed_cases_split_apply_to_the_same_tree_as_the_whole_layer() {
    let empty = layergen::render(&[]);
    let mut failed = Vec::new();
    for name in FIXED_CASES {
        let outcome = check_layer(&empty, &fixed_layer(name), &|l| split_parts(l, 1 << 20));
        eprintln!("{name}: {outcome:?}");
        // Every fixed case can be split at 1 MiB: one kept whole is a failure here.
        if !matches!(outcome, Outcome::Split(_)) {
            failed.push(format!("{name}: {outcome:?}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_check_passes_splits_that_change_nothing_and_fails_one_that_does() {
    let empty = layergen::render(&[]);
    let (mut passed, mut caught) = (0, 0);
    for seed in 0..300 {
        let case = layergen::random_case(seed);
        let (lower, layer) = (layergen::render(&case.lower), layergen::render(&case.layer));
        // The layer then an empty one, or the other way round: the same tree.
        for parts in [
            [layer.clone(), empty.clone()],
            [empty.clone(), layer.clone()],
        ] {
            match check_layer(&lower, &layer, &|_| Ok(parts.to_vec())) {
                Outcome::Split(_) => passed += 1,
                Outcome::Invalid => {}
                other => panic!("seed {seed}: a split that changes nothing fails: {other:?}"),
            }
        }
        // The layer's entries in reverse order, one part each: a different tree, mostly.
        let mut reversed: Vec<Vec<u8>> = case
            .layer
            .iter()
            .map(|e| layergen::render(std::slice::from_ref(e)))
            .collect();
        reversed.reverse();
        if let Outcome::Differs(_) = check_layer(&lower, &layer, &|_| Ok(reversed.clone())) {
            caught += 1;
        }
    }
    eprintln!("{passed} splits that change nothing passed, {caught} reversed layers caught");
    assert!(
        passed > 300 && caught > 150,
        "{passed} passed, {caught} reversed caught"
    );
}
