//! A compressed layer unpacked so it can be split: decompressed once into a file, checked
//! against its diff_id as it is written, then split like any uncompressed layer (the parts are
//! ranges of that file).
//!
//! A kept file (a push's, in its job's spool) is named by the layer's diff_id and its length,
//! written under a temporary name, synced and renamed: a file under the final name is whole,
//! and a later run of the same job (a restart, a resume) reads the parts' recorded ranges from
//! it instead of decompressing again. A file that is not kept (`hoist inspect`'s) is unlinked
//! as soon as it is made, so nothing is left behind whatever ends the process.
//!
//! The decompressed size is not known before the end (a gzip stream records it modulo 4 GiB,
//! a zstd frame only optionally), so the free space is checked before the first byte (at least
//! the compressed size must fit) and again before every write: the file never takes the space
//! kept free for others ([`UnpackDir::reserve_bytes`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Candidate, SplitError};
use crate::compress::{Codec, read_full};
use crate::digest::Hasher;
use crate::source::BlobLocation;

/// Bytes decompressed and written at a time; the free space is checked before each write.
const UNPACK_WRITE_BYTES: usize = 1 << 20;

/// Where compressed layers to split are decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackDir {
    pub dir: PathBuf,
    /// Free space a decompressed file never takes (what others on that disk need).
    pub reserve_bytes: u64,
    /// Keep the file under a name a later run finds; else it is unlinked at once and goes
    /// when the plan is dropped.
    pub keep: bool,
}

/// Bytes an unprivileged user may still write on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether a write failed because the disk (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The name of `layer`'s kept decompressed file of `len` bytes: `<algorithm>-<hex>.<len>.tar`.
fn kept_name(layer: &Candidate<'_>, len: u64) -> String {
    format!("{}.{len}.tar", name_stem(layer))
}

fn name_stem(layer: &Candidate<'_>) -> String {
    layer.diff_id.to_string().replace(':', "-")
}

/// A kept file of `layer` in `dir` that is whole: its length is the one in its name.
fn find_kept(layer: &Candidate<'_>, dir: &Path) -> Option<(File, u64)> {
    let prefix = format!("{}.", name_stem(layer));
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(len) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix)?.strip_suffix(".tar"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let file = File::open(entry.path()).ok()?;
        if file.metadata().ok()?.len() == len {
            return Some((file, len));
        }
    }
    None
}

/// The uncompressed tar of `layer` (a compressed layer to split) as a location: a whole kept
/// file of it in `to.dir` when there is one, else decompressed there now and checked against
/// its diff_id (blocking).
pub fn unpack(layer: &Candidate<'_>, to: &UnpackDir) -> Result<BlobLocation, SplitError> {
    let loc = layer.location;
    let name: Arc<str> = format!("{} (decompressed)", loc.name).into();
    let located = |file: File, len: u64| BlobLocation {
        file: Arc::new(file),
        offset: 0,
        len,
        name: name.clone(),
        splice: None,
    };
    if to.keep
        && let Some((file, len)) = find_kept(layer, &to.dir)
    {
        return Ok(located(file, len));
    }
    let write_failed = |path: &Path, source: io::Error| SplitError::Unpack {
        layer: loc.name.to_string(),
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&to.dir).map_err(|e| write_failed(&to.dir, e))?;
    // A kept file's temporary name is the same for every run, so a run cut short leaves at
    // most one partial copy (truncated by the next); another's is unique to this process.
    let tmp = match to.keep {
        true => to.dir.join(format!("{}.partial", name_stem(layer))),
        false => to.dir.join(format!(
            "{}.{}.partial",
            name_stem(layer),
            std::process::id()
        )),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| write_failed(&tmp, e))?;
    if !to.keep {
        std::fs::remove_file(&tmp).map_err(|e| write_failed(&tmp, e))?;
    }
    let written = match decompress(layer, to, &mut file) {
        Ok(n) => n,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if to.keep {
        let path = to.dir.join(kept_name(layer, written));
        file.sync_all()
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| File::open(&to.dir)?.sync_all())
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                write_failed(&path, e)
            })?;
    }
    Ok(located(file, written))
}

/// Decompresses `layer` into `out`, hashing what it writes; checks the diff_id at the end and
/// the free space before every write. Returns the bytes written.
fn decompress(layer: &Candidate<'_>, to: &UnpackDir, out: &mut File) -> Result<u64, SplitError> {
    let loc = layer.location;
    let what = || loc.name.to_string();
    let read_failed = |source: io::Error| SplitError::Read {
        layer: what(),
        source,
    };
    let codec: Codec = layer
        .compression
        .unwrap_or_default()
        .parse()
        .map_err(|e| read_failed(io::Error::other(e)))?;
    let mut decoder: Box<dyn Read> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(
            loc.reader(),
        ))),
        Codec::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(loc.reader()).map_err(read_failed)?)
        }
    };
    let mut room = Room {
        layer: what(),
        to,
        written: 0,
    };
    // The decompressed tar is at least about as large as the compressed layer.
    room.check(loc.len)?;
    let mut hasher = Hasher::new(layer.diff_id.algorithm());
    let mut buf = vec![0u8; UNPACK_WRITE_BYTES];
    loop {
        let n = read_full(&mut decoder, &mut buf).map_err(read_failed)?;
        if n == 0 {
            break;
        }
        room.check(n as u64)?;
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| room.write_failed(e))?;
        room.written += n as u64;
    }
    let actual = hasher.finish();
    if &actual != layer.diff_id {
        return Err(SplitError::DiffId {
            layer: what(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(room.written)
}

/// The free space a decompression may still take.
struct Room<'a> {
    layer: String,
    to: &'a UnpackDir,
    written: u64,
}

impl Room<'_> {
    fn no_room(&self, free: u64) -> SplitError {
        SplitError::NoRoom {
            layer: self.layer.clone(),
            dir: self.to.dir.display().to_string(),
            written: self.written,
            free,
            reserve: self.to.reserve_bytes,
        }
    }

    /// Fails when writing `bytes` more would eat into the reserve.
    fn check(&self, bytes: u64) -> Result<(), SplitError> {
        let free = free_bytes(&self.to.dir).map_err(|e| self.write_failed(e))?;
        if free < self.to.reserve_bytes.saturating_add(bytes) {
            return Err(self.no_room(free));
        }
        Ok(())
    }

    fn write_failed(&self, e: io::Error) -> SplitError {
        if is_disk_full(&e) {
            return self.no_room(free_bytes(&self.to.dir).unwrap_or(0));
        }
        SplitError::Unpack {
            layer: self.layer.clone(),
            path: self.to.dir.display().to_string(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};
    use std::os::unix::fs::MetadataExt as _;

    /// A layer (a small tar of text) compressed with `codec` in a file, and its diff_id.
    fn layer(codec: Codec) -> (BlobLocation, Digest) {
        let mut b = ::tar::Builder::new(Vec::new());
        let data = Digest::sha256_of(b"seed").hex().repeat(40_000);
        let mut h = ::tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", data.as_bytes()).unwrap();
        let tar = b.into_inner().unwrap();
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&tar);
        let compressed = match codec {
            Codec::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                gz.finish().unwrap()
            }
            Codec::Zstd => zstd::encode_all(&tar[..], 1).unwrap(),
        };
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&compressed).unwrap();
        let loc = BlobLocation {
            file: Arc::new(f),
            offset: 0,
            len: compressed.len() as u64,
            name: format!("t: layer.{codec}").into(),
            splice: None,
        };
        (loc, h.finish())
    }

    fn gzip_layer() -> (BlobLocation, Digest) {
        layer(Codec::Gzip)
    }

    fn candidate<'a>(loc: &'a BlobLocation, diff_id: &'a Digest) -> Candidate<'a> {
        Candidate {
            location: loc,
            diff_id,
            compression: Some(if loc.name.ends_with("zstd") {
                "zstd"
            } else {
                "gzip"
            }),
            foreign: false,
        }
    }

    fn kept(dir: &Path) -> UnpackDir {
        UnpackDir {
            dir: dir.to_path_buf(),
            reserve_bytes: 0,
            keep: true,
        }
    }

    #[test]
    fn a_kept_file_is_reused_when_whole_and_made_again_when_cut() {
        let (loc, diff_id) = gzip_layer();
        let layer = candidate(&loc, &diff_id);
        let dir = tempfile::tempdir().unwrap();
        let first = unpack(&layer, &kept(dir.path())).unwrap();
        assert!(first.len > loc.len);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let ino = |l: &BlobLocation| l.file.metadata().unwrap().ino();
        let again = unpack(&layer, &kept(dir.path())).unwrap();
        assert_eq!((ino(&again), again.len), (ino(&first), first.len));
        // A cut file is not trusted: decompressed again, the same bytes.
        let path = dir.path().join(kept_name(&layer, first.len));
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(first.len / 2)
            .unwrap();
        let remade = unpack(&layer, &kept(dir.path())).unwrap();
        assert_eq!(remade.len, first.len);
        let read = io::copy(&mut remade.verifying_reader(&diff_id), &mut io::sink());
        assert_eq!(read.unwrap(), first.len);
    }

    #[test]
    fn a_wrong_diff_id_or_a_full_disk_leaves_nothing() {
        let (loc, _) = gzip_layer();
        let wrong = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&candidate(&loc, &wrong), &kept(dir.path())).unwrap_err();
        assert!(matches!(err, SplitError::DiffId { .. }), "{err}");
        let no_room = UnpackDir {
            reserve_bytes: u64::MAX / 2,
            ..kept(dir.path())
        };
        let err = unpack(&candidate(&loc, &wrong), &no_room).unwrap_err();
        assert!(matches!(err, SplitError::NoRoom { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Not kept: unlinked at once, readable through the location; zstd too.
        let gone = UnpackDir {
            keep: false,
            ..kept(dir.path())
        };
        for codec in [Codec::Gzip, Codec::Zstd] {
            let (loc, diff_id) = layer(codec);
            let l = unpack(&candidate(&loc, &diff_id), &gone).unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            let read = io::copy(&mut l.verifying_reader(&diff_id), &mut io::sink());
            assert_eq!(read.unwrap(), l.len);
            assert!(l.len > loc.len, "{codec}");
        }
    }
}
