//! Property tests: arbitrary and mutated input never panics; digests round-trip.

use super::helpers::*;
use hoist::image::doc::{self, Config, DockerArchiveEntry, Index, Manifest};
use proptest::prelude::*;
use std::sync::OnceLock;

/// A valid Docker 25+ archive, as bytes, to mutate.
fn base_archive() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let (_, entries) = docker25_entries(t.path());
        let f = t.path().join("base.tar");
        write_tar(&f, &regular(&entries));
        fs::read(f).unwrap()
    })
}

/// A valid OCI archive (index with two platforms and an attestation), as bytes, to mutate.
fn base_oci_archive() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let mut spec = mixed_spec(30);
        spec.layers = vec![
            LayerSpec::new(LayerContent::SmallFiles(2), SampleCompression::None),
            LayerSpec::new(LayerContent::SmallFiles(2), SampleCompression::Gzip),
        ];
        spec.index = Some(IndexSpec {
            extra_platforms: vec![arm64()],
            attestation: true,
        });
        sample(t.path(), &spec);
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", t.path()).unwrap();
        b.into_inner().unwrap()
    })
}

/// `base` with the bytes at `flips` set to their values, then cut at `cut`.
fn mutated(
    base: &[u8],
    flips: Vec<(proptest::sample::Index, u8)>,
    cut: Option<proptest::sample::Index>,
) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for (at, value) in flips {
        let i = at.index(bytes.len());
        bytes[i] = value;
    }
    if let Some(c) = cut {
        bytes.truncate(c.index(bytes.len()));
    }
    bytes
}

/// Plans `bytes` as every kind of archive; must not panic, errors must be one line.
fn plan_all_ways(bytes: &[u8]) {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("x.tar");
    fs::write(&f, bytes).unwrap();
    let _ = TarIndex::open(&f);
    for src in [
        format!("docker-archive:{}", f.display()),
        format!("oci-archive:{}", f.display()),
        f.display().to_string(),
    ] {
        match plan(&src) {
            Ok(p) => {
                if let Err(e) = p.verify_sources() {
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        plan_all_ways(&bytes);
    }

    #[test]
    fn mutated_archives_never_panic(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        plan_all_ways(&mutated(base_archive(), flips, cut));
    }

    #[test]
    fn mutated_oci_archives_never_panic(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        plan_all_ways(&mutated(base_oci_archive(), flips, cut));
    }

    #[test]
    fn json_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = doc::parse::<Manifest>(bytes.clone(), "f", "manifest");
        let _ = doc::parse::<Index>(bytes.clone(), "f", "index");
        let _ = doc::parse::<Config>(bytes.clone(), "f", "config");
        let _ = doc::parse::<Vec<DockerArchiveEntry>>(bytes, "f", "manifest.json");
    }

    #[test]
    fn mutated_manifests_never_panic(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":7,"annotations":{"a":"b"}}]}"#;
        let mut bytes = m.to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Err(e) = doc::parse::<Manifest>(bytes, "f", "manifest") {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn digest_round_trips(bytes in proptest::collection::vec(any::<u8>(), 32..=32), long in proptest::collection::vec(any::<u8>(), 64..=64)) {
        let s = format!("sha256:{}", hex::encode(&bytes));
        let d = Digest::parse(&s).unwrap();
        prop_assert_eq!(d.to_string(), s.clone());
        prop_assert_eq!(serde_json::from_str::<Digest>(&serde_json::to_string(&d).unwrap()).unwrap(), d);
        let s512 = format!("sha512:{}", hex::encode(&long));
        prop_assert_eq!(Digest::parse(&s512).unwrap().to_string(), s512);
        prop_assert!(Digest::parse(&s.to_uppercase()).is_err());
    }

    #[test]
    fn digest_parse_never_panics(s in ".{0,140}") {
        if let Ok(d) = Digest::parse(&s) {
            prop_assert_eq!(d.to_string(), s);
        }
    }
}

/// The archives the property tests mutate are valid to begin with.
#[test]
fn mutation_bases_plan() {
    for (base, src) in [
        (base_archive(), "docker-archive"),
        (base_oci_archive(), "oci-archive"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("base.tar");
        fs::write(&f, base).unwrap();
        let p = plan(&format!("{src}:{}", f.display())).unwrap();
        p.verify_sources().unwrap();
    }
}
