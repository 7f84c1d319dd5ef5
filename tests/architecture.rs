//! The module rules of ARCHITECTURE.md ("Module rules"), checked: every `crate::`, `super::`
//! and `self::` path under `src/` (in `use` items and inline, `#[cfg(test)]` modules included)
//! and every `hoist::` path in the binaries must follow the tables below. A failure names the
//! file, the line, the path and the rule it breaks, for every violation at once.
//!
//! The check reads the source text: comments and string literals are skipped, inline `mod`
//! blocks are followed so `super::` resolves from where it is written.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What a module may name outside itself.
enum Allowed {
    /// Only these top-level modules.
    Only(&'static [&'static str]),
    /// Every top-level module except these.
    AllBut(&'static [&'static str]),
}

use Allowed::{AllBut, Only};

/// One row per top-level module of the library: the `crate::` modules it may depend on.
/// A module missing here fails the test: a new module states its dependencies when it lands.
const MODULE_RULES: &[(&str, Allowed)] = &[
    ("digest", Only(&[])),
    ("platform", Only(&[])),
    ("text", Only(&[])),
    ("units", Only(&[])),
    ("bandwidth", Only(&["text"])),
    ("chunk_size", Only(&["text"])),
    ("limits", Only(&[])),
    ("environ", Only(&[])),
    ("tarscan", Only(&[])),
    ("paths", Only(&["source", "text"])),
    ("image", Only(&["digest", "platform", "compress", "text"])),
    (
        "source",
        Only(&["digest", "platform", "image", "text", "environ", "tarscan"]),
    ),
    ("compress", Only(&["digest", "text"])),
    ("elf", Only(&["platform", "text", "tarscan"])),
    (
        "split",
        Only(&["digest", "source", "compress", "limits", "text", "tarscan"]),
    ),
    (
        "plan",
        Only(&[
            "digest", "platform", "image", "source", "compress", "limits", "split", "text",
            "environ",
        ]),
    ),
    (
        "registry",
        Only(&[
            "digest",
            "platform",
            "bandwidth",
            "chunk_size",
            "limits",
            "text",
            "image",
            "environ",
        ]),
    ),
    (
        "inspect",
        Only(&[
            "plan", "source", "elf", "compress", "image", "digest", "platform", "text",
        ]),
    ),
    (
        "api",
        Only(&[
            "digest",
            "platform",
            "chunk_size",
            "limits",
            "text",
            "units",
            "environ",
        ]),
    ),
    ("store", Only(&["api", "digest", "platform", "text"])),
    ("daemon", AllBut(&["cli"])),
    (
        "cli",
        Only(&[
            "api",
            "units",
            "paths",
            "inspect",
            "plan",
            "source",
            "registry",
            "digest",
            "platform",
            "bandwidth",
            "text",
            "image",
            "environ",
        ]),
    ),
];

/// The binaries (`src/bin/NAME.rs`) name the library as `hoist::`.
const BINARY_RULES: &[(&str, Allowed)] = &[
    // The client reaches the daemon through the socket only.
    ("hoist", AllBut(&["daemon", "store"])),
    // The daemon does not depend on the command-line client.
    ("hoistd", AllBut(&["cli"])),
];

/// Edges forbidden inside one module: (importing module, imported module, why).
const INNER_RULES: &[(&str, &str, &str)] = &[
    (
        "daemon::job",
        "daemon::scheduler",
        "the scheduler drives jobs; a job must not reach back into it",
    ),
    (
        "daemon::routes",
        "daemon::server",
        "the server serves the routes; the routes must not call back into it",
    ),
];

#[test]
fn every_crate_path_follows_the_module_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let text = fs::read_to_string(file).expect("read a source file");
        violations.extend(check_file(rel, &text));
    }
    assert!(
        violations.is_empty(),
        "{} module rule violations (see ARCHITECTURE.md, \"Module rules\"):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// `autotests = false` makes `tests/suite.rs` the only test binary, so a test file it does not
/// declare would silently never be compiled or run.
#[test]
fn every_test_file_is_a_module_of_the_suite() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = fs::read_to_string(tests.join("suite.rs")).expect("read tests/suite.rs");
    let declared: Vec<&str> = root
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in fs::read_dir(&tests).expect("list tests/") {
        let path = entry.expect("a tests/ entry").path();
        let name = if path.is_dir() {
            path.join("mod.rs").exists().then(|| path.file_name())
        } else {
            (path.extension() == Some("rs".as_ref())).then(|| path.file_stem())
        };
        let Some(Some(name)) = name else { continue };
        let name = name.to_string_lossy().into_owned();
        if name != "suite" && !declared.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/suite.rs does not declare `mod {};`: those tests would never run",
        missing.join(";`, `mod ")
    );
    assert!(
        declared.len() > 20,
        "only {} modules declared",
        declared.len()
    );
}

/// The violations in one file, `rel` being its path under `src/`.
fn check_file(rel: &Path, text: &str) -> Vec<String> {
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let shown = format!("src/{}", rel.display());
    if parts.first().is_some_and(|p| p == "bin") {
        let name = parts.last().expect("a binary's file name");
        let Some(rule) = lookup(BINARY_RULES, name) else {
            return vec![format!(
                "{shown}: binary `{name}` has no row in BINARY_RULES"
            )];
        };
        return paths_in(text, &[])
            .into_iter()
            .filter(|p| p.root == Root::Hoist)
            .filter_map(|p| check_edge(&shown, &format!("binary {name}"), rule, &p))
            .collect();
    }
    let mut module: Vec<String> = parts;
    if module.last().is_some_and(|p| p == "mod" || p == "lib") {
        module.pop();
    }
    if module.is_empty() {
        // lib.rs only declares the modules.
        return Vec::new();
    }
    let Some(rule) = lookup(MODULE_RULES, &module[0]) else {
        return vec![format!(
            "{shown}: module `{}` has no row in MODULE_RULES",
            module[0]
        )];
    };
    paths_in(text, &module)
        .into_iter()
        .filter(|p| p.root == Root::Crate)
        .filter_map(|p| {
            if p.from.first() == p.segments.first() {
                check_inner(&shown, &p)
            } else {
                check_edge(&shown, &module[0], rule, &p)
            }
        })
        .collect()
}

fn lookup<'a>(table: &'a [(&str, Allowed)], name: &str) -> Option<&'a Allowed> {
    table.iter().find(|(m, _)| *m == name).map(|(_, a)| a)
}

/// A path from `from` (a module outside `p`'s top-level module) to `p`, against `rule`.
fn check_edge(shown: &str, from: &str, rule: &Allowed, p: &FoundPath) -> Option<String> {
    let to = p.segments.first()?;
    let allowed = match rule {
        Only(list) => list.contains(&to.as_str()),
        AllBut(list) => !list.contains(&to.as_str()),
    };
    let rule_text = match rule {
        Only([]) => "may depend on no other module".to_string(),
        Only(list) => format!("may depend only on {}", list.join(", ")),
        AllBut(list) => format!("must not depend on {}", list.join(", ")),
    };
    (!allowed).then(|| {
        format!(
            "{shown}:{}: `{}` breaks the rule: {from} {rule_text}",
            p.line,
            p.segments.join("::")
        )
    })
}

/// A path inside one top-level module, against [`INNER_RULES`].
fn check_inner(shown: &str, p: &FoundPath) -> Option<String> {
    let from = p.from.join("::");
    let to = p.segments.join("::");
    INNER_RULES
        .iter()
        .find(|(a, b, _)| within(&from, a) && within(&to, b))
        .map(|(a, b, why)| {
            format!(
                "{shown}:{}: `{to}` breaks the rule: {a} must not import {b} ({why})",
                p.line
            )
        })
}

/// Whether module path `path` is `module` or inside it.
fn within(path: &str, module: &str) -> bool {
    path == module
        || path
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a directory under src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    /// `crate::`, `super::` or `self::`: resolved to a path from the crate root.
    Crate,
    /// `hoist::` (the binaries).
    Hoist,
}

/// A path found in the source, resolved from the crate root.
#[derive(Debug)]
struct FoundPath {
    root: Root,
    /// The module the path is written in.
    from: Vec<String>,
    /// The path from the crate root (without `crate`), or after `hoist::`.
    segments: Vec<String>,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    PathSep,
}

/// Tokens of `text` with their line numbers: identifiers and punctuation; comments, string,
/// character and number literals and lifetimes are dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i, &mut line);
        } else if c == '"' {
            i = skip_string(&chars, i + 1, 0, &mut line);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            i = skip_prefixed_string(&chars, i, &word, &mut line).unwrap_or_else(|| {
                out.push((Tok::Ident(word), line));
                i
            });
        } else if c == ':' && next == Some(':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push((Tok::Punct(c), line));
            }
            i += 1;
        }
    }
    out
}

/// After a `b`, `c`, `r`, `br` or `cr` prefix ending before `i`: skips the string literal it
/// opens and returns the index after it; `None` when no string follows (an identifier).
fn skip_prefixed_string(chars: &[char], i: usize, prefix: &str, line: &mut usize) -> Option<usize> {
    let next = chars.get(i).copied();
    match prefix {
        "b" | "c" if next == Some('"') => Some(skip_string(chars, i + 1, 0, line)),
        "r" | "br" | "cr" if matches!(next, Some('"' | '#')) => {
            let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
            (chars.get(i + hashes) == Some(&'"'))
                .then(|| skip_string(chars, i + hashes + 1, hashes, line))
        }
        _ => None,
    }
}

fn skip_block_comment(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            (c, _) => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips a string body starting at `i` up to its closing quote followed by `hashes` `#`.
fn skip_string(chars: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if hashes == 0 => i += 2,
            '"' if chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|c| **c == '#')
                .count()
                == hashes =>
            {
                return i + 1 + hashes;
            }
            c => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips `'x'`, `'\n'`, `'\u{..}'` or a lifetime `'a` starting at the quote at `i`.
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    if chars.get(i + 1) == Some(&'\\') {
        let close = chars[i + 2..].iter().position(|c| *c == '\'');
        return close.map_or(chars.len(), |p| i + 2 + p + 1);
    }
    if chars.get(i + 2) == Some(&'\'') {
        return i + 3;
    }
    // A lifetime: the quote only; its name is skipped as an identifier nobody checks.
    i + 1
}

/// Every `crate::`/`super::`/`self::`/`hoist::` path in `text`, written in a file whose module
/// is `file_module` (empty for a binary).
fn paths_in(text: &str, file_module: &[String]) -> Vec<FoundPath> {
    let toks = tokens(text);
    let mut found = Vec::new();
    // The inline modules we are in: (brace depth at which the block closes, name).
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let current: Vec<String> = file_module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(_, n)| n.clone()))
            .collect();
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((depth + 1, name.clone()));
                }
            }
            // `use` items (not `impl Trait + use<'a>`).
            Tok::Ident(k)
                if k == "use" && toks.get(i + 1).is_some_and(|t| t.0 != Tok::Punct('<')) =>
            {
                let end = toks[i..]
                    .iter()
                    .position(|(t, _)| *t == Tok::Punct(';'))
                    .map_or(toks.len(), |p| i + p);
                let mut trees = Vec::new();
                use_tree(&toks[i + 1..end], &[], &mut trees);
                for (path, line) in trees {
                    found.extend(resolve(&current, &path, line));
                }
                i = end;
            }
            Tok::Ident(k) if is_root(k) && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) => {
                let (path, next) = inline_path(&toks, i);
                found.extend(resolve(&current, &path, toks[i].1));
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn is_root(word: &str) -> bool {
    matches!(word, "crate" | "super" | "self" | "hoist")
}

/// The path `a::b::c` starting at token `i`, and the index after it.
fn inline_path(toks: &[(Tok, usize)], mut i: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    while let Some((Tok::Ident(name), _)) = toks.get(i) {
        path.push(name.clone());
        if toks.get(i + 1).map(|t| &t.0) != Some(&Tok::PathSep) {
            return (path, i + 1);
        }
        i += 2;
    }
    (path, i)
}

/// Expands a `use` tree (`a::{b, c::d as e, f::*}`) into full paths, each with its line.
fn use_tree(toks: &[(Tok, usize)], prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix.to_vec();
    let mut line = toks.first().map_or(0, |t| t.1);
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            // `x as y`: the alias names nothing.
            Tok::Ident(name) if name == "as" => i += 1,
            Tok::Ident(name) => {
                path.push(name.clone());
                line = toks[i].1;
            }
            Tok::Punct('{') => {
                let close = matching_brace(toks, i);
                for part in split_top_level(&toks[i + 1..close]) {
                    use_tree(part, &path, out);
                }
                return;
            }
            _ => {}
        }
        i += 1;
    }
    if path.len() > prefix.len() {
        out.push((path, line));
    }
}

fn matching_brace(toks: &[(Tok, usize)], open: usize) -> usize {
    let mut depth = 0;
    for (j, (t, _)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The comma-separated parts of a brace group's content, nested groups kept whole.
fn split_top_level(toks: &[(Tok, usize)]) -> Vec<&[(Tok, usize)]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (j, (t, _)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(&toks[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts.retain(|p| !p.is_empty());
    parts
}

/// `path` as written in module `current`, resolved from the crate root; `None` for paths that
/// do not start at `crate`, `super`, `self` or `hoist` (std, dependencies, local names).
fn resolve(current: &[String], path: &[String], line: usize) -> Option<FoundPath> {
    let (root, mut resolved) = match path.first()?.as_str() {
        "hoist" if current.is_empty() => (Root::Hoist, Vec::new()),
        "crate" => (Root::Crate, Vec::new()),
        "self" | "super" => (Root::Crate, current.to_vec()),
        _ => return None,
    };
    // A leading `super` is walked like any other `super`; `crate`, `self`, `hoist` are roots.
    let skip = usize::from(path[0] != "super");
    for seg in &path[skip..] {
        match seg.as_str() {
            "super" => {
                resolved.pop();
            }
            "self" => {}
            s => resolved.push(s.to_string()),
        }
    }
    (!resolved.is_empty()).then(|| FoundPath {
        root,
        from: current.to_vec(),
        segments: resolved,
        line,
    })
}

/// Checks the checker: each kind of path it must see, and what it must not mistake for one.
#[test]
fn the_checker_finds_paths_in_every_form() {
    let module = |m: &str| m.split("::").map(String::from).collect::<Vec<_>>();
    let src = r#"
use crate::{digest::Digest, image::{media, Manifest as M}};
use super::scheduler::Event;
// use crate::cli::Nope;
/* use crate::cli::Nope2; */
const S: &str = "crate::cli::Nope3";
fn f<'a>(x: &'a str) -> char { let _ = crate::store::open(); 'c' }
#[cfg(test)]
mod tests {
    use super::*;
    use super::super::server::stopped;
}
"#;
    let found: BTreeSet<(String, String, usize)> = paths_in(src, &module("daemon::job"))
        .into_iter()
        .map(|p| (p.from.join("::"), p.segments.join("::"), p.line))
        .collect();
    let want: BTreeSet<(String, String, usize)> = [
        ("daemon::job", "digest::Digest", 2),
        ("daemon::job", "image::media", 2),
        ("daemon::job", "image::Manifest", 2),
        ("daemon::job", "daemon::scheduler::Event", 3),
        ("daemon::job", "store::open", 7),
        ("daemon::job::tests", "daemon::job", 10),
        ("daemon::job::tests", "daemon::server::stopped", 11),
    ]
    .into_iter()
    .map(|(a, b, l)| (a.to_string(), b.to_string(), l))
    .collect();
    assert_eq!(found, want);
}

/// Checks the rules: each kind of violation is reported with its file and line.
#[test]
fn violations_name_the_file_line_and_rule() {
    let v = check_file(
        Path::new("image/doc.rs"),
        "use crate::source::one_line;\nuse crate::digest::Digest;\n",
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("src/image/doc.rs:1: `source::one_line`"),
        "{v:?}"
    );
    let v = check_file(Path::new("daemon/job.rs"), "use super::scheduler::Event;\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("daemon::job must not import daemon::scheduler"),
        "{v:?}"
    );
    let v = check_file(
        Path::new("daemon/routes.rs"),
        "fn f() { super::server::stopped(); }\n",
    );
    assert_eq!(v.len(), 1, "{v:?}");
    let v = check_file(Path::new("cli/push.rs"), "use crate::daemon::paths;\n");
    assert_eq!(v.len(), 1, "{v:?}");
    let v = check_file(
        Path::new("bin/hoistd.rs"),
        "use hoist::cli::parse_duration;\n",
    );
    assert_eq!(v.len(), 1, "{v:?}");
    let v = check_file(Path::new("newmod.rs"), "");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        check_file(
            Path::new("daemon/scheduler.rs"),
            "use super::job::JobBody;\n"
        )
        .is_empty()
    );
}

/// Calls and paths that exist only on Linux (or Android): each must sit in an item gated by
/// `#[cfg(target_os = "linux")]` (or `any(..., "android")`), with a portable fallback beside it,
/// so the crate builds on macOS. This machine has no macOS standard library to type-check
/// against, so the sources are scanned instead.
const LINUX_ONLY: &[&str] = &[
    "gettid",
    "tcp_user_timeout",
    "std::os::linux",
    "from_abstract_name",
    "/proc/",
    "SO_PEERCRED",
    "socket_peercred",
    "prctl",
    "pidfd",
    "inotify",
    "statx",
    "O_TMPFILE",
    "fallocate",
    "memfd",
    "sched_setaffinity",
    "copy_file_range",
    "splice(",
    "epoll",
    "eventfd",
    "timerfd",
    "signalfd",
    "netlink",
    "MSG_NOSIGNAL",
    "SOCK_CLOEXEC",
    "accept4",
];

#[test]
fn linux_only_calls_are_gated_for_macos() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        if module_gated_for_linux(&src, rel) {
            continue;
        }
        let text = fs::read_to_string(file).expect("read a source file");
        found.extend(ungated_linux_calls(&text).into_iter().map(|(line, api)| {
            format!(
                "src/{}:{line}: {api} is Linux-only: gate it with #[cfg(target_os = \"linux\")] and add a fallback",
                rel.display()
            )
        }));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The Linux-only names on lines of `text` outside every Linux-gated item, with their
/// 1-based line numbers. Comments do not count.
fn ungated_linux_calls(text: &str) -> Vec<(usize, &'static str)> {
    let lines: Vec<&str> = text.lines().collect();
    let gated = linux_gated_lines(&lines);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") || gated[i] {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        out.extend(
            LINUX_ONLY
                .iter()
                .filter(|api| code.contains(*api))
                .map(|api| (i + 1, *api)),
        );
    }
    out
}

/// Which lines belong to an item under a `#[cfg(...)]` that names Linux or Android and not
/// `not(...)`: from the attribute to the end of the item (its closing brace, or its `;`).
fn linux_gated_lines(lines: &[&str]) -> Vec<bool> {
    let mut gated = vec![false; lines.len()];
    for (start, line) in lines.iter().enumerate() {
        let attr = line.trim_start();
        let linux = attr.contains("\"linux\"") || attr.contains("\"android\"");
        if !(attr.starts_with("#[cfg(") && linux && !attr.contains("not(")) {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (i, l) in lines.iter().enumerate().skip(start) {
            gated[i] = true;
            let code = if i == start { "" } else { *l };
            for c in code.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let ends_without_body = !opened && code.trim_end().ends_with(';');
            if (opened && depth <= 0) || ends_without_body {
                break;
            }
        }
    }
    gated
}

/// Whether the whole file `rel` is Linux-only: an inner `#![cfg(...)]` naming Linux, or its
/// `mod` line in the parent module under such an attribute.
fn module_gated_for_linux(src: &Path, rel: &Path) -> bool {
    let is_linux_cfg = |l: &str| {
        let l = l.trim_start();
        (l.starts_with("#[cfg(") || l.starts_with("#![cfg("))
            && (l.contains("\"linux\"") || l.contains("\"android\""))
            && !l.contains("not(")
    };
    let text = fs::read_to_string(src.join(rel)).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("#![cfg(") && is_linux_cfg(l))
    {
        return true;
    }
    let name = match rel.file_stem().and_then(|s| s.to_str()) {
        Some("mod") => rel.parent().and_then(|p| p.file_name()),
        _ => rel.file_stem(),
    };
    let Some(name) = name.and_then(|n| n.to_str()) else {
        return false;
    };
    let dir = if rel.file_stem().is_some_and(|s| s == "mod") {
        rel.parent().and_then(Path::parent)
    } else {
        rel.parent()
    }
    .unwrap_or(Path::new(""));
    let parents = [
        dir.join("mod.rs"),
        dir.join("lib.rs"),
        dir.with_extension("rs"),
    ];
    parents.iter().any(|p| {
        let text = fs::read_to_string(src.join(p)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines.iter().enumerate().any(|(i, l)| {
            let decl = l
                .trim_start()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            (decl == format!("mod {name};"))
                && lines[..i]
                    .iter()
                    .rev()
                    .take_while(|p| p.trim_start().starts_with("#["))
                    .any(|p| is_linux_cfg(p))
        })
    })
}

#[test]
fn the_linux_scan_sees_gates_and_misses() {
    let text = r#"
fn portable() {
    let tid = rustix::thread::gettid(); // flagged
}
#[cfg(target_os = "linux")]
fn linux() {
    let tid = rustix::thread::gettid();
    if x { y(); }
}
#[cfg(not(target_os = "linux"))]
fn elsewhere() { std::fs::read("/proc/self/stat"); }
#[cfg(any(target_os = "linux", target_os = "android"))]
let b = b.tcp_user_timeout(t);
let c = c.tcp_user_timeout(t);
// gettid in a comment is fine
"#;
    assert_eq!(
        ungated_linux_calls(text),
        [(3, "gettid"), (11, "/proc/"), (14, "tcp_user_timeout")]
    );
}
