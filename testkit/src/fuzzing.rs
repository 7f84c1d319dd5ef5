//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`) so that CI replays every kept input through exactly the code
//! the fuzzer ran.
//!
//! Each function takes arbitrary bytes, must never panic, and asserts the properties hostile
//! input must not break: errors are one line without control characters (they reach terminals
//! and logs), located blobs lie inside the archive, redacted URLs keep no query or user info.
//! Not part of the stable API.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use url::Url;

use hoist::digest::Digest;
use hoist::image::doc::{self, DockerArchiveEntry, Probe};
use hoist::image::select::{self, Fetch};
use hoist::image::{Config, Descriptor, ImageError, Index, Manifest};
use hoist::plan::{PlanOptions, PushPlan};
use hoist::platform::Platform;
use hoist::registry::{self, Challenge, RegistryErrorBody};
use hoist::source::{Source, SourceRef, TarIndex};

/// Inputs larger than this are cut: libFuzzer's default `-max_len` is 4 KiB, corpora stay small.
pub const FUZZ_INPUT_BYTES_MAX: usize = 1 << 20;

/// Panics unless `msg` is one line of printable text: what every hoist error must be.
pub fn assert_one_line(msg: &str) {
    assert!(
        !msg.chars().any(|c| c.is_control()),
        "error message with a control character: {msg:?}"
    );
}

/// A scratch file per process (and thread) the archive targets write their input to: the
/// indexer works on a `File` (it keeps the descriptor and reads blobs with `pread`), so the
/// fuzzer feeds it a real file rather than weakening it to a generic reader.
fn scratch_file(data: &[u8]) -> (File, PathBuf) {
    let dir = std::env::var_os("HOIST_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "hoist-fuzz-{}-{:?}.tar",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("scratch file");
    f.write_all(&data[..data.len().min(FUZZ_INPUT_BYTES_MAX)])
        .expect("write scratch file");
    f.seek(SeekFrom::Start(0)).expect("seek scratch file");
    (f, path)
}

/// `index_tar`: indexes `data` as a tar archive; whatever it locates lies inside the file.
pub fn index_tar(data: &[u8]) {
    let (file, _path) = scratch_file(data);
    let len = file.metadata().expect("metadata").len();
    match TarIndex::from_file(file, "fuzz.tar".into()) {
        Err(e) => assert_one_line(&e.to_string()),
        Ok(index) => {
            assert!(!index.is_empty());
            assert_eq!(index.file_len(), len);
            for name in [
                "manifest.json",
                "index.json",
                "oci-layout",
                "repositories",
                "a",
                "a/layer.tar",
                "blobs/sha256",
            ] {
                for loc in [
                    index.locate(name, "fuzz"),
                    index.locate_following_symlink(name, "fuzz"),
                ] {
                    match loc {
                        Ok(loc) => {
                            assert!(loc.offset.checked_add(loc.len).is_some_and(|e| e <= len));
                            let bytes = loc.read_all().expect("a located entry reads");
                            assert_eq!(bytes.len() as u64, loc.len);
                        }
                        Err(e) => assert_one_line(&e.to_string()),
                    }
                }
            }
        }
    }
}

/// `plan_archive`: `data` as a docker-archive and as an OCI archive, opened, resolved for
/// linux/amd64, planned, viewed and verified end to end.
pub fn plan_archive(data: &[u8]) {
    let (_file, path) = scratch_file(data);
    let detected = SourceRef::detect(&path);
    if let Err(e) = &detected {
        assert_one_line(&e.to_string());
    }
    for reference in [
        SourceRef::DockerArchive {
            path: path.clone(),
            reference: None,
        },
        SourceRef::OciArchive {
            path: path.clone(),
            reference: None,
        },
    ] {
        let source = match Source::open(&reference) {
            Ok(s) => s,
            Err(e) => {
                assert_one_line(&e.to_string());
                continue;
            }
        };
        let image = match source.resolve(&Platform::linux_amd64()) {
            Ok(i) => i,
            Err(e) => {
                assert_one_line(&e.to_string());
                continue;
            }
        };
        // The platform guard held: what resolved is linux/amd64 by its config.
        assert!(Platform::linux_amd64().matches(&image.config.parsed.platform()));
        match PushPlan::from_resolved(image, &PlanOptions::default()) {
            Ok(plan) => {
                let _ = plan.view();
                if let Err(e) = plan.verify_sources() {
                    assert_one_line(&e.to_string());
                }
            }
            Err(e) => assert_one_line(&e.to_string()),
        }
    }
}

/// Serves documents for [`select::select`] from the pieces of a fuzz input, by digest.
struct Pieces(Vec<Vec<u8>>);

impl Fetch for Pieces {
    type Error = ImageError;
    fn fetch_json(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        self.0
            .iter()
            .find(|p| Digest::sha256_of(p) == desc.digest && p.len() as u64 == desc.size)
            .cloned()
            .ok_or_else(|| ImageError::Empty {
                what: format!("fuzz: {} is not among the pieces", desc.digest),
            })
    }
    fn what(&self, digest: &Digest) -> String {
        format!("fuzz: blobs/{}", digest.hex())
    }
}

/// Pieces of a multi-document input are separated by this byte (never in UTF-8 JSON).
pub const PIECE_SEPARATOR: u8 = 0xff;

/// `parse_image`: every document parser on every piece of `data` (split at
/// [`PIECE_SEPARATOR`]); then the platform guard with the first piece as the index (or the
/// single manifest) and the other pieces as the blobs it can fetch (by digest).
pub fn parse_image(data: &[u8]) {
    let pieces: Vec<Vec<u8>> = data
        .split(|b| *b == PIECE_SEPARATOR)
        .map(<[u8]>::to_vec)
        .collect();
    let amd64 = Platform::linux_amd64();
    for p in &pieces {
        let check = |r: Result<(), ImageError>| {
            if let Err(e) = r {
                assert_one_line(&e.to_string());
            }
        };
        check(doc::parse::<Manifest>(p.clone(), "fuzz", "image manifest").map(|_| ()));
        check(doc::parse::<Index>(p.clone(), "fuzz", "image index").map(|_| ()));
        check(doc::parse::<Probe>(p.clone(), "fuzz", "document").map(|_| ()));
        check(
            doc::parse::<Vec<DockerArchiveEntry>>(p.clone(), "fuzz", "manifest.json").map(|_| ()),
        );
        match doc::parse::<Config>(p.clone(), "fuzz", "image config") {
            Ok(c) => {
                let r = select::check_config_platform("fuzz", &c.parsed, &amd64);
                if let Ok(have) = &r {
                    assert!(amd64.matches(have));
                }
                check(r.map(|_| ()));
            }
            Err(e) => assert_one_line(&e.to_string()),
        }
    }
    let first = &pieces[0];
    let entries: Vec<Descriptor> =
        if let Ok(index) = doc::parse::<Index>(first.clone(), "fuzz", "image index") {
            index.parsed.manifests
        } else {
            // A single manifest: its descriptor, as a layout's index.json would hold it.
            vec![Descriptor {
                media_type: String::new(),
                digest: Digest::sha256_of(first),
                size: first.len() as u64,
                urls: None,
                annotations: None,
                platform: None,
                artifact_type: None,
            }]
        };
    match select::select(&Pieces(pieces.clone()), "fuzz", &entries, &amd64) {
        Ok(sel) => {
            // The guard's promise: one image manifest whose config says linux/amd64.
            assert!(amd64.matches(&sel.config.parsed.platform()));
            assert_eq!(sel.manifest.digest, Digest::sha256_of(&sel.manifest.bytes));
        }
        Err(e) => assert_one_line(&e.to_string()),
    }
}

/// `parse_registry`: the parsers of what a registry sends: `WWW-Authenticate`, `Range`,
/// `Location` (resolved and checked as an upload session URL), `Retry-After`, ECR's 416
/// message, the OCI error envelope, URL redaction.
pub fn parse_registry(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match registry::parse_challenge(&s) {
        Some(Challenge::Bearer { realm, .. }) => assert!(!realm.is_empty(), "empty realm"),
        Some(Challenge::Basic { .. }) | None => {}
    }
    if let Some((n, m)) = registry::parse_first_byte_message(&s) {
        assert!(s.contains(&n.to_string()) && s.contains(&m.to_string()));
    }
    let _ = registry::parse_range_end(&s);
    let _ = registry::parse_retry_after(&s);

    let body = RegistryErrorBody::parse(data);
    for text in [&body.code, &body.message, &body.detail]
        .into_iter()
        .flatten()
    {
        assert_one_line(text);
        assert!(text.chars().count() <= registry::ERROR_TEXT_CHARS_MAX);
    }

    for base in [
        "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/app/blobs/uploads/",
        "http://127.0.0.1:5000/v2/a/b/blobs/uploads/",
    ] {
        let base = Url::parse(base).expect("base URL");
        if let Ok(loc) = base.join(s.trim()) {
            check_redacted(&registry::redact_url(&loc));
            match registry::check_upload_location(&base, &loc) {
                Ok(()) => {
                    assert_eq!(loc.scheme(), base.scheme());
                    assert_eq!(loc.host_str(), base.host_str());
                    assert_eq!(loc.port_or_known_default(), base.port_or_known_default());
                }
                Err(e) => assert_one_line(&e.to_string()),
            }
        }
    }
    check_redacted(&registry::redact_url_str(&s));
}

fn check_redacted(r: &str) {
    if let Ok(u) = Url::parse(r) {
        assert!(u.password().is_none(), "password kept: {r}");
        assert!(u.username().is_empty(), "user kept: {r}");
        assert!(
            matches!(u.query(), None | Some("REDACTED")),
            "query kept: {r}"
        );
    }
}
