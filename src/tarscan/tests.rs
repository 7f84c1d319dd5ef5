use super::*;

/// A ustar header block: `name`, `typeflag`, the size field, the link name.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..107].copy_from_slice(b"0000644");
    b[108..115].copy_from_slice(b"0000000");
    b[116..123].copy_from_slice(b"0000000");
    b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    b[136..147].copy_from_slice(b"00000000000");
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

/// `data` padded to whole blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    d.resize(data.len().div_ceil(512) * 512, 0);
    d
}

/// A file entry with its data.
fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = header(name, b'0', data.len() as u64, b"");
    out.extend(padded(data));
    out
}

/// A PAX header carrying `records`.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut out = header(b"PaxHeaders/x", b'x', data.len() as u64, b"");
    out.extend(padded(&data));
    out
}

fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

fn scan_all<S: Source>(mut r: Reader<S>) -> Result<Vec<Entry>, ScanError> {
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

/// Every front end's entries for `tar`, checked equal to each other.
fn scan(tar: &[u8]) -> Result<Vec<Entry>, ScanError> {
    let positional = scan_all(Reader::new(Positional::new(tar.len() as u64, |at, buf| {
        buf.copy_from_slice(&tar[at as usize..at as usize + buf.len()]);
        Ok(())
    })));
    let streamed = scan_all(Reader::new(Sequential(tar)));
    let seeked = scan_all(Reader::new(
        Seekable::new(std::io::Cursor::new(tar)).unwrap(),
    ));
    let shown = |r: &Result<Vec<Entry>, ScanError>| format!("{r:?}");
    assert_eq!(shown(&positional), shown(&streamed));
    assert_eq!(shown(&positional), shown(&seeked));
    positional
}

fn paths(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(Entry::shown).collect()
}

#[test]
fn a_size_on_a_header_only_entry_has_no_data_behind_it() {
    // A tar stored as a file right after a hard link and a directory whose size fields say
    // 1024: read as data, the inner tar's headers would become entries.
    let inner = [file(b"inner-file", b"inner"), end()].concat();
    let tar = [
        file(b"t", b"target"),
        header(b"link", b'1', 1024, b"t"),
        header(b"dir/", b'5', 1024, b""),
        file(b"dir/inner.tar", &inner),
        file(b"after", b"x"),
        end(),
    ]
    .concat();
    let entries = scan(&tar).unwrap();
    assert_eq!(
        paths(&entries),
        ["t", "link", "dir", "dir/inner.tar", "after"]
    );
    assert_eq!(entries[1].kind, Kind::HardLink);
    assert_eq!((entries[1].data_len, entries[1].bytes()), (0, 512));
    assert_eq!(entries[2].kind, Kind::Dir);
    assert_eq!(entries[3].data_len, inner.len() as u64);
    // Back to back from byte 0, up to the end marker.
    let mut at = 0;
    for e in &entries {
        assert_eq!(e.start, at, "{e:?}");
        at = e.end;
    }
    assert_eq!(at as usize, tar.len() - 1024);
}

#[test]
fn pax_sparse_files_are_named_by_gnu_sparse_name() {
    for (version, tar) in [
        (
            "0.0",
            &include_bytes!("../../tests/data/tarscan/sparse-0.0.tar")[..],
        ),
        (
            "0.1",
            &include_bytes!("../../tests/data/tarscan/sparse-0.1.tar")[..],
        ),
        (
            "1.0",
            &include_bytes!("../../tests/data/tarscan/sparse-1.0.tar")[..],
        ),
    ] {
        let entries = scan(tar).unwrap();
        assert_eq!(
            paths(&entries),
            ["real", "real/sparse", "real/link"],
            "{version}"
        );
        assert_eq!(entries[1].sparse_size, Some(3 << 20), "{version}");
        assert!(
            entries[1].data_len < 16 << 10,
            "{version}: {:?}",
            entries[1]
        );
        assert_eq!(entries[2].link_path(), entries[1].path, "{version}");
    }
    // Crafted: sparse 1.0 records before a placeholder name.
    let tar = [
        pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"./opt/\xff/data"),
            ("GNU.sparse.realsize", b"99999"),
        ]),
        file(b"./GNUSparseFile.7/data", &[b'1'; 600]),
        end(),
    ]
    .concat();
    let entries = scan(&tar).unwrap();
    assert_eq!(entries[0].path, b"opt/\xff/data");
    assert_eq!(entries[0].sparse_size, Some(99999));
    assert_eq!(
        (entries[0].start, entries[0].end),
        (0, tar.len() as u64 - 1024)
    );
}

#[test]
fn names_are_bytes_and_two_that_differ_in_an_invalid_byte_stay_two() {
    let tar = [
        file(b"d\xff/f", b"a"),
        file(b"d\xfe/f", b"b"),
        header(b"./d\xfe/l", b'1', 0, b"/d\xfe/f"),
        pax(&[
            ("path", b"p\xc3\x28/long"),
            ("mtime", b"1700000000.5"),
            ("uid", b"1234567"),
        ]),
        file(b"ignored", b""),
        end(),
    ]
    .concat();
    let entries = scan(&tar).unwrap();
    assert_ne!(entries[0].path, entries[1].path);
    assert_eq!(
        paths(&entries),
        ["d\\xff/f", "d\\xfe/f", "d\\xfe/l", "p\\xc3(/long"]
    );
    assert_eq!(entries[2].link_path(), entries[1].path);
    assert_eq!(
        entries[3].mtime,
        Mtime {
            secs: 1_700_000_000,
            nanos: 500_000_000
        }
    );
    assert_eq!(entries[3].uid, 1_234_567);
}

#[test]
fn what_cannot_be_read_exactly_is_named() {
    let inexact = |tar: Vec<u8>| match scan(&tar) {
        Err(ScanError::Inexact { entry, why }) => format!("{entry}: {why}"),
        other => panic!("{other:?}"),
    };
    let old_sparse = [file(b"a", b"x"), header(b"old-sparse", b'S', 0, b""), end()].concat();
    assert_eq!(inexact(old_sparse), "old-sparse: an old GNU sparse file");
    let global = [header(b"g", b'g', 0, b""), file(b"a", b""), end()].concat();
    assert!(inexact(global).contains("global"));
    let multi = [header(b"m", b'M', 0, b""), end()].concat();
    assert!(inexact(multi).contains("multi-volume"));
    let mut bad = file(b"a", b"x");
    bad[0] = b'b';
    assert!(inexact(bad).contains("checksum"));
    let whole = [file(b"a", b"x"), file(b"big", &[7; 2000])].concat();
    assert_eq!(
        inexact(whole[..2048].to_vec()),
        "big: the tar ends inside its data"
    );
    let lone = [file(b"a", b"x"), vec![0; 512], file(b"b", b"y")].concat();
    assert!(inexact(lone).contains("single zero block"));
    let regular_slash = [file(b"a/", b""), end()].concat();
    assert!(inexact(regular_slash).contains("named like a directory"));
}

#[test]
fn paths_are_cleaned_like_appliers_clean_them() {
    assert_eq!(clean(b"./a//b/./c/"), b"a/b/c");
    assert_eq!(clean(b"/../x/../y"), b"y");
    assert_eq!(clean(b"./"), b"");
    assert_eq!(parent(b"a/b"), b"a");
    assert_eq!(parent(b"a"), b"");
}

#[test]
fn the_streaming_reader_reads_data() {
    let tar = [file(b"a", b"hello"), header(b"l", b'1', 99, b"a"), end()].concat();
    let mut r = Reader::new(Sequential(&tar[..]));
    let a = r.next_entry().unwrap().unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(r.read_data(&mut buf).unwrap(), 3);
    assert_eq!(&buf, b"hel");
    let l = r.next_entry().unwrap().unwrap();
    assert_eq!((a.data_len, l.data_len), (5, 0));
    assert_eq!(r.read_data(&mut buf).unwrap(), 0);
    assert!(r.next_entry().unwrap().is_none());
}

#[test]
fn data_is_lent_as_a_read_of_its_size_and_names_stay_as_written() {
    use std::io::Read;
    let long = [b"x/".repeat(60).as_slice(), b"../../../etc/passwd"].concat();
    let tar = [
        file(b"./a", b"hello"),
        pax(&[("path", &long)]),
        file(b"p", b"pax"),
        file(b"cut", &[7u8; 600]),
    ]
    .concat();
    // The last entry's data is cut short: 600 bytes said, 100 there.
    let tar = &tar[..tar.len() - 1024 + 100];
    let mut r = Reader::new(Sequential(tar));
    let a = r.next_entry().unwrap().unwrap();
    assert_eq!(
        (a.path.as_slice(), r.written_path()),
        (&b"a"[..], &b"./a"[..])
    );
    let mut bytes = Vec::new();
    r.data().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"hello");
    let p = r.next_entry().unwrap().unwrap();
    assert_eq!(r.written_path(), long.as_slice());
    assert_eq!(p.path, clean(&long));
    // Data left unread is skipped by the next entry.
    r.next_entry().unwrap().unwrap();
    let e = r.data().read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("cut: the tar ends inside its data"),
        "{e}"
    );
}
