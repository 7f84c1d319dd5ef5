//! Limits on what an archive may hold (the other limits: `bad_input.rs`).

use super::helpers::*;

/// An image archive has a few entries per layer; the index costs memory per entry, so more
/// than `TAR_ENTRIES_MAX` is refused (without indexing the rest).
#[test]
fn an_archive_with_too_many_entries_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("many.tar");
    let mut out = std::io::BufWriter::new(fs::File::create(&f).unwrap());
    for i in 0..=hoist::source::TAR_ENTRIES_MAX {
        out.write_all(&raw_entry(
            &format!("f{i}"),
            tar::EntryType::Regular,
            b"",
            None,
        ))
        .unwrap();
    }
    out.write_all(&[0u8; 1024]).unwrap();
    out.flush().unwrap();
    drop(out);
    let e = TarIndex::open(&f).unwrap_err().to_string();
    assert_has(&e, &["more than 100000 entries", "not an image archive"]);
}
