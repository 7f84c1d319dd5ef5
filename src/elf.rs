//! ELF census of layer tars: which machine types the binaries in an image were built for.
//!
//! A config can say linux/amd64 while the binaries inside were built for arm64 (or the
//! reverse); Kubernetes then fails at start with `exec format error`, long after the push
//! "succeeded". While a layer streams through hoist, [`census_tar`] reads the first bytes of
//! every regular file, counts the ones that begin with the ELF magic by `e_machine`, and
//! [`check_platform`] compares the counts with the declared platform.
//!
//! # The threshold
//! An image is called mislabelled when, over all its layers, ELF files built for a *foreign*
//! architecture outnumber those built for the declared one (or a compatible one, such as i386
//! on amd64). A simple majority, with no minimum count, because:
//! - a native image with a few foreign binaries (firmware blobs, cross toolchains, test
//!   fixtures, a vendored arm64 helper) has far more native ELF files than foreign ones, so it
//!   passes however many layers it has;
//! - a mislabelled image is foreign almost throughout (every binary of its base layer), so it
//!   fails by a wide margin;
//! - an image with a single static binary is decided by that binary, which is exactly the
//!   binary that will hit `exec format error`.
//!
//! Images with no ELF files at all (scripts, data) have nothing to check and pass.

use std::collections::BTreeMap;
use std::io::Read;

use crate::platform::Platform;
use crate::tarscan::{Kind, Reader, ScanError, Seekable, Sequential, Source};

/// Bytes of a file's start needed to read its ELF machine type (`e_machine` ends at 20).
pub const ELF_HEADER_BYTES_MIN: usize = 20;

/// The architecture an ELF file was built for, named as OCI platforms name them.
pub fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.len() < ELF_HEADER_BYTES_MIN || &header[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = header[4] == 2;
    let little = header[5] != 2;
    let raw = [header[18], header[19]];
    let machine = if little {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    };
    Some(match machine {
        0x3e => "amd64",
        0xb7 => "arm64",
        0x03 => "386",
        0x28 => "arm",
        0xf3 if class64 => "riscv64",
        0xf3 => "riscv32",
        0x15 if little => "ppc64le",
        0x15 => "ppc64",
        0x14 => "ppc",
        0x16 => "s390x",
        0x08 if class64 && little => "mips64le",
        0x08 if class64 => "mips64",
        0x08 if little => "mipsle",
        0x08 => "mips",
        0x102 => "loong64",
        _ => "other",
    })
}

/// Architectures whose binaries also run on `arch` (and so are neither native nor foreign).
fn compatible(declared: &str, found: &str) -> bool {
    matches!(
        (declared, found),
        ("amd64", "386") | ("arm64", "arm") | ("ppc64le", "ppc")
    )
}

/// ELF files in one layer, counted by architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerCensus {
    /// Architecture name (see [`elf_arch`]) to number of ELF files.
    pub by_arch: BTreeMap<String, u64>,
    /// Why the layer was not counted: the tar reader cannot read it exactly (a damaged tar,
    /// or one GNU tar and Go read differently), so its files are unknown. Nothing is counted
    /// for it, and the check goes on with the other layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl LayerCensus {
    pub fn total(&self) -> u64 {
        self.by_arch.values().sum()
    }

    fn add(&mut self, arch: &str) {
        *self.by_arch.entry(arch.to_string()).or_default() += 1;
    }
}

/// Why a layer could not be read as a tar stream.
#[derive(Debug, thiserror::Error)]
#[error("layer is not a readable tar stream: {0}")]
pub struct CensusError(#[from] std::io::Error);

/// Counts the ELF files in an uncompressed layer tar, reading only each file's first bytes
/// (through the one tar reader, [`crate::tarscan`]). A tar it cannot read exactly gives a
/// census with [`LayerCensus::skipped`] set; only a failed read is an error.
pub fn census_tar<R: Read>(reader: R) -> Result<LayerCensus, CensusError> {
    census_entries(Reader::new(Sequential(reader)))
}

/// [`census_tar`] over a seekable (uncompressed) tar: file contents past their first bytes are
/// seeked over, not read, so a layer costs about its headers' reads.
pub fn census_tar_seek<R: Read + std::io::Seek>(reader: R) -> Result<LayerCensus, CensusError> {
    census_entries(Reader::new(Seekable::new(reader)?))
}

fn census_entries<S: Source>(mut tar: Reader<S>) -> Result<LayerCensus, CensusError> {
    let mut census = LayerCensus::default();
    let skipped = |e: ScanError| match e {
        ScanError::Io(e) => Err(CensusError(e)),
        inexact => Ok(LayerCensus {
            by_arch: BTreeMap::new(),
            skipped: Some(inexact.to_string()),
        }),
    };
    loop {
        let entry = match tar.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(census),
            Err(e) => return skipped(e),
        };
        // A sparse file's stored data does not start with its first bytes.
        if entry.kind != Kind::File
            || entry.sparse_size.is_some()
            || entry.data_len < ELF_HEADER_BYTES_MIN as u64
        {
            continue;
        }
        let mut head = [0u8; ELF_HEADER_BYTES_MIN];
        if let Err(e) = tar.read_data(&mut head) {
            return skipped(e);
        }
        if let Some(arch) = elf_arch(&head) {
            census.add(arch);
        }
        // The rest of the entry is skipped when the next one is asked for.
    }
}

/// The declared platform disagrees with the binaries in the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "config says {declared} but {foreign} of {total} ELF files in layer {layer} are {arch}: the image was built for {built_for}; rebuild with --platform {declared} (or pass --allow-arch-mismatch)"
)]
pub struct ArchMismatch {
    pub declared: Platform,
    /// 1-based layer number with the most foreign ELF files.
    pub layer: usize,
    pub foreign: u64,
    pub total: u64,
    /// The foreign architecture as `e_machine` calls it (`aarch64`, `x86-64`, ...).
    pub arch: String,
    /// The same as a platform (`linux/arm64`).
    pub built_for: String,
}

/// How `e_machine` names an architecture, for messages people match against `file(1)` output.
fn machine_name(arch: &str) -> &str {
    match arch {
        "amd64" => "x86-64",
        "arm64" => "aarch64",
        "386" => "i386",
        other => other,
    }
}

/// Checks the layers' censuses against the declared platform (see the module doc for the rule).
pub fn check_platform(
    declared: &Platform,
    layers: &[LayerCensus],
) -> Result<(), Box<ArchMismatch>> {
    let want = declared.architecture.as_str();
    let mut native = 0u64;
    let mut foreign: BTreeMap<&str, u64> = BTreeMap::new();
    for layer in layers {
        for (arch, n) in &layer.by_arch {
            if arch == want || compatible(want, arch) {
                native += n;
            } else if arch != "other" {
                *foreign.entry(arch.as_str()).or_default() += n;
            }
        }
    }
    let foreign_total: u64 = foreign.values().sum();
    if foreign_total <= native {
        return Ok(());
    }
    let (arch, _) = foreign
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(a, n)| (*a, *n))
        .unwrap_or(("other", 0));
    let (layer_idx, layer) = layers
        .iter()
        .enumerate()
        // `max_by_key` keeps the last of equals: reversed, that is the first layer.
        .rev()
        .max_by_key(|(_, l)| l.by_arch.get(arch).copied().unwrap_or(0))
        .unwrap_or((0, &layers[0]));
    Err(Box::new(ArchMismatch {
        declared: declared.clone(),
        layer: layer_idx + 1,
        foreign: layer.by_arch.get(arch).copied().unwrap_or(0),
        total: layer.total(),
        arch: machine_name(arch).to_string(),
        built_for: format!("{}/{}", declared.os, arch),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header for `machine` (64-bit, little-endian unless `big`).
    pub(crate) fn elf_header(machine: u16, big: bool) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = if big { 2 } else { 1 };
        h[6] = 1;
        let m = if big {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    fn layer(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut hdr = tar::Header::new_gnu();
            hdr.set_size(data.len() as u64);
            hdr.set_mode(0o755);
            hdr.set_cksum();
            b.append_data(&mut hdr, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_machine_types() {
        assert_eq!(elf_arch(&elf_header(0x3e, false)), Some("amd64"));
        assert_eq!(elf_arch(&elf_header(0xb7, false)), Some("arm64"));
        assert_eq!(elf_arch(&elf_header(0x16, true)), Some("s390x"));
        assert_eq!(elf_arch(&elf_header(0x15, true)), Some("ppc64"));
        assert_eq!(elf_arch(&elf_header(0x15, false)), Some("ppc64le"));
        assert_eq!(elf_arch(b"#!/bin/sh\necho hello world\n"), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
    }

    #[test]
    fn census_and_check() {
        let amd = elf_header(0x3e, false);
        let arm = elf_header(0xb7, false);
        let native = layer(&[
            ("bin/a", amd.clone()),
            ("bin/b", amd.clone()),
            ("bin/c", amd.clone()),
            ("opt/fw", arm.clone()),
            ("run.sh", b"#!/bin/sh\nexec /bin/a \"$@\"\n".to_vec()),
        ]);
        let c = census_tar(native.as_slice()).unwrap();
        assert_eq!(c.by_arch.get("amd64"), Some(&3));
        assert_eq!(c.by_arch.get("arm64"), Some(&1));
        let amd64 = Platform::linux_amd64();
        assert!(check_platform(&amd64, std::slice::from_ref(&c)).is_ok());

        let foreign =
            census_tar(layer(&[("a", arm.clone()), ("b", arm.clone())]).as_slice()).unwrap();
        let err = check_platform(&amd64, &[c.clone(), foreign.clone(), foreign]).unwrap_err();
        assert_eq!(err.layer, 2);
        assert!(
            err.to_string().starts_with(
                "config says linux/amd64 but 2 of 2 ELF files in layer 2 are aarch64: the image was built for linux/arm64"
            ),
            "{err}"
        );

        let scripts =
            census_tar(layer(&[("x.sh", b"#!/bin/sh\ntrue\n".to_vec())]).as_slice()).unwrap();
        assert_eq!(scripts.total(), 0);
        assert!(check_platform(&amd64, &[scripts]).is_ok());
    }

    #[test]
    fn seeking_census_matches_the_streaming_one() {
        let amd = elf_header(0x3e, false);
        let arm = elf_header(0xb7, false);
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..30 {
            let data = if i % 3 == 0 { arm.clone() } else { amd.clone() };
            files.push((format!("bin/tool-{i}"), data));
        }
        files.push(("big.bin".into(), vec![7u8; 100_000]));
        files.push(("tiny".into(), b"\x7fEL".to_vec()));
        let long = format!("{}/x", "d".repeat(200));
        files.push((long, amd.clone()));
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let tar = layer(&refs);
        let streamed = census_tar(tar.as_slice()).unwrap();
        let seeking = census_tar_seek(std::io::Cursor::new(&tar)).unwrap();
        assert_eq!(seeking, streamed);
        assert_eq!(seeking.by_arch.get("amd64"), Some(&21));
        assert_eq!(seeking.by_arch.get("arm64"), Some(&10));
        let junk = vec![0x55u8; 4096];
        let c = census_tar_seek(std::io::Cursor::new(junk)).unwrap();
        assert!(c.skipped.is_some());
    }

    #[test]
    fn not_a_tar_is_skipped_not_a_panic() {
        let junk = vec![0x55u8; 1024];
        let c = census_tar(junk.as_slice()).unwrap();
        assert!(c.skipped.unwrap().contains("checksum"));
    }

    #[test]
    fn a_size_on_a_hard_link_does_not_hide_the_files_after_it() {
        let amd = elf_header(0x3e, false);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(amd.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/a", amd.as_slice()).unwrap();
        // A hard link whose size field says 1024, with no data behind it (as Go and GNU tar
        // read it), then a second binary.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "bin/l", "bin/a").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(amd.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/b", amd.as_slice()).unwrap();
        let mut bytes = b.into_inner().unwrap();
        let link = 1024;
        bytes[link + 124..link + 136].copy_from_slice(b"00000002000\0");
        let sum: u32 = (0..512)
            .map(|i| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(bytes[link + i])
                }
            })
            .sum();
        bytes[link + 148..link + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        for c in [
            census_tar(bytes.as_slice()).unwrap(),
            census_tar_seek(std::io::Cursor::new(&bytes)).unwrap(),
        ] {
            assert_eq!(c.by_arch.get("amd64"), Some(&2), "{c:?}");
            assert_eq!(c.skipped, None);
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `HOIST_CENSUS_TAR=FILE cargo test --lib --config
    /// 'profile.dev.package.hoist.opt-level=2' -- --ignored --nocapture census_speed`: the
    /// seeking census through `tarscan` against the `tar` crate's seeking walk (what the
    /// census used before), on the same uncompressed tar, alternated three times.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn census_speed() {
        let Ok(path) = std::env::var("HOIST_CENSUS_TAR") else {
            return;
        };
        let open = || std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let ours = census_tar_seek(open()).unwrap();
            let ours_time = t.elapsed();
            let t = std::time::Instant::now();
            let mut n = 0u64;
            let mut archive = tar::Archive::new(open());
            for entry in archive.entries_with_seek().unwrap() {
                let mut entry = entry.unwrap();
                if entry.header().entry_type().is_file() && entry.size() >= 20 {
                    let mut head = [0u8; ELF_HEADER_BYTES_MIN];
                    entry.read_exact(&mut head).unwrap();
                    n += u64::from(elf_arch(&head).is_some());
                }
            }
            eprintln!(
                "tarscan {ours_time:?} ({} ELF), tar crate {:?} ({n} ELF)",
                ours.total(),
                t.elapsed()
            );
        }
    }
}
