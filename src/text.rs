//! Text from outside hoist (a registry's error body, another library's error message) made fit
//! for a one-line error on a terminal. Neither source is trusted to send printable text.
//! Also the grammar of a tag, which both the API (tags given at submission) and the registry
//! client (references it parses) check.

/// Details from other libraries (serde_json, tar) are cut to this many characters.
pub const DETAIL_CHARS_MAX: usize = 120;

/// `s` on one line: trimmed, control characters (newlines, ANSI escapes) become spaces, and at
/// most `chars_max` characters are kept (the last one `…` when cut).
pub fn one_line(s: &str, chars_max: usize) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .take(chars_max + 1)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.chars().count() > chars_max {
        out = out.chars().take(chars_max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// A detail from another library, on one line and at most [`DETAIL_CHARS_MAX`] characters.
pub fn detail(s: &str) -> String {
    one_line(s, DETAIL_CHARS_MAX)
}

/// Longest tag the OCI Distribution grammar allows.
pub const TAG_CHARS_MAX: usize = 128;

/// An OCI tag: `[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}`.
pub fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_CHARS_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_spaces_and_long_text_is_cut() {
        assert_eq!(one_line(" a\nb\x1b[0m ", 10), "a b [0m");
        let cut = one_line(&"x".repeat(20), 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("short", 10), "short");
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        for ok in ["1", "latest", "_x", "v1.2-rc_3", &"a".repeat(TAG_CHARS_MAX)] {
            assert!(is_tag(ok), "{ok}");
        }
        let long = "a".repeat(TAG_CHARS_MAX + 1);
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", "é", long.as_str()] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
