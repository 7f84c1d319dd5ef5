//! Fuzzes the parsers of strings that come from users and registries: `Digest::parse` and
//! `Platform::from_str`. Both must never panic, and what they accept must print back to a
//! string that parses to the same value.
//!
//! The archive, document and registry parsers have their own targets (`index_tar`,
//! `plan_archive`, `parse_image`, `parse_registry`; see fuzz/README.md).
#![no_main]

use std::str::FromStr;

use hoist::digest::Digest;
use hoist::platform::Platform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Digest::parse(s) {
        // Accepted digests are canonical: printing gives back the input exactly.
        assert_eq!(d.to_string(), s);
        assert_eq!(Digest::parse(&d.to_string()).as_ref(), Ok(&d));
    }
    if let Ok(p) = Platform::from_str(s) {
        // Normalisation is idempotent: the printed form parses to the same platform.
        let again = Platform::from_str(&p.to_string()).expect("a printed platform parses");
        assert_eq!(again, p);
    }
});
