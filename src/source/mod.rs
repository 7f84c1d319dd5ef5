//! Image sources: `docker save` archives (classic and Docker 25+), OCI layouts and OCI
//! archives, read in place.
//!
//! [`SourceRef`] names a source (`docker-archive:PATH`, `oci:DIR[:REF]`,
//! `oci-archive:PATH[:REF]`, `docker-daemon:NAME[:TAG]`, or a bare path that is detected). [`Source::open`] indexes it
//! (archives by offset, never extracted), and [`Source::resolve`] applies the platform guard
//! and returns a [`ResolvedImage`]: one image manifest's config and layers, each with a
//! [`BlobLocation`] that any thread can read with [`BlobLocation::reader`].
//!
//! # Archives as tools write them
//! - `docker save` before 25: `manifest.json`, `<hex>.json` config, `<id>/layer.tar`
//!   (uncompressed); a layer saved twice is a relative symlink to the first copy, which is
//!   followed (one hop, inside the archive) because layers are checked against their diff_id.
//! - `docker save` 25+ (and the containerd store, `buildx --output type=docker`): an OCI layout
//!   (`oci-layout`, `index.json`, `blobs/sha256/`) plus `manifest.json` whose paths point into
//!   `blobs/`; layers may be gzip or zstd. Read through `manifest.json`; when `index.json` holds
//!   the matching OCI manifest, its bytes are pushed unchanged. `manifest.json` names one
//!   platform only: when that image is a platform of an index in `index.json` (a multi-platform
//!   image), the platform is chosen from the index as for `oci-archive:`.
//! - skopeo 1.9 `docker-archive:`: `<diff_id hex>.tar` layers (uncompressed) and `<hex>.json`
//!   at the top, legacy `<id>/layer.tar` symlinks to them (never used: `manifest.json` names the
//!   regular files), `RepoTags` normalised to `docker.io/library/NAME:TAG`.
//! - skopeo 1.9 `oci:` / `oci-archive:`: gzips uncompressed layers on the way in; writes Docker
//!   schema 2 manifests into the layout with `--format v2s2`.
//! - `tar -cf x.tar -C layout .`: entries named `./blobs/...`; names are normalised.

mod archive;
mod blob;
mod docker;
pub mod engine;
mod error;
mod image_name;
mod oci;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub use archive::{TAR_ENTRIES_MAX, TarIndex, normalise_name};
pub use blob::{BlobLocation, BlobReader, Check, Splice, SplicePiece, VerifyingReader};
pub use docker::check_compressed_layer;
pub use error::SourceError;
pub use image_name::bare_image_source;

use crate::digest::Digest;
use crate::environ::CallerEnv;
use crate::image::media::{self, Compression, Family};
use crate::image::{Config, Doc, JSON_BYTES_MAX, Manifest};
use crate::platform::Platform;

/// A named image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A `docker save` archive; `reference` picks an image by its `RepoTags` when it holds several.
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// An OCI image layout directory; `reference` matches `org.opencontainers.image.ref.name`.
    Oci {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// A tar of an OCI image layout.
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// An image in a Docker engine (or podman's Docker-compatible API), named as skopeo does:
    /// `NAME[:TAG]`, `NAME@sha256:HEX` or an image ID. Read by a push over the Engine API
    /// ([`engine`]), never opened as a file.
    DockerDaemon { image: String },
}

/// Splits `PATH[:REF]` at the first colon, the way containers/image does.
fn split_ref(input: &str, rest: &str) -> Result<(PathBuf, Option<String>), SourceError> {
    let (path, reference) = match rest.split_once(':') {
        Some((p, r)) => (p, Some(r.to_string()).filter(|r| !r.is_empty())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(SourceError::BadRef {
            input: input.to_string(),
            detail: "the path is empty".into(),
        });
    }
    Ok((PathBuf::from(path), reference))
}

impl SourceRef {
    /// Detects the kind of source at a bare `path`: a directory with `index.json` is an OCI
    /// layout; a tar with `manifest.json` is a docker archive; a tar with `index.json` (and no
    /// `manifest.json`) is an OCI archive.
    pub fn detect(path: &Path) -> Result<SourceRef, SourceError> {
        let display = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| SourceError::opening(&display, e))?;
        if meta.is_dir() {
            if path.join("index.json").is_file() || path.join("oci-layout").is_file() {
                return Ok(SourceRef::Oci {
                    dir: path.to_path_buf(),
                    reference: None,
                });
            }
            return Err(SourceError::NotRecognised { path: display });
        }
        let index = TarIndex::open(path)?;
        if index.contains("manifest.json") {
            Ok(SourceRef::DockerArchive {
                path: path.to_path_buf(),
                reference: None,
            })
        } else if index.contains("index.json") {
            Ok(SourceRef::OciArchive {
                path: path.to_path_buf(),
                reference: None,
            })
        } else {
            Err(SourceError::Missing {
                what: display,
                entry: "manifest.json".into(),
                hint: "the tar has neither manifest.json (docker save) nor index.json (OCI archive); export the image with docker save or skopeo",
            })
        }
    }

    /// The file or directory read; `None` for an image in an engine.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SourceRef::DockerArchive { path, .. } | SourceRef::OciArchive { path, .. } => {
                Some(path)
            }
            SourceRef::Oci { dir, .. } => Some(dir),
            SourceRef::DockerDaemon { .. } => None,
        }
    }

    pub fn reference(&self) -> Option<&str> {
        match self {
            SourceRef::DockerArchive { reference, .. }
            | SourceRef::Oci { reference, .. }
            | SourceRef::OciArchive { reference, .. } => reference.as_deref(),
            SourceRef::DockerDaemon { image } => Some(image),
        }
    }
}

/// Parses a transport-prefixed reference; a bare path is detected by looking at the file
/// system (so parsing a bare path reads it).
impl FromStr for SourceRef {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, reference) = split_ref(s, rest)?;
            Ok(SourceRef::DockerArchive { path, reference })
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, reference) = split_ref(s, rest)?;
            Ok(SourceRef::OciArchive { path, reference })
        } else if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, reference) = split_ref(s, rest)?;
            Ok(SourceRef::Oci { dir, reference })
        } else if let Some(rest) = s.strip_prefix(engine::TRANSPORT_PREFIX) {
            let image = engine::parse_image_name(rest).map_err(|detail| SourceError::BadRef {
                input: s.into(),
                detail,
            })?;
            Ok(SourceRef::DockerDaemon { image })
        } else if s.is_empty() {
            Err(SourceError::BadRef {
                input: s.into(),
                detail: "it is empty".into(),
            })
        } else if let Some((transport, _)) = s.split_once(':')
            && !transport.contains('/')
            && !Path::new(s).exists()
        {
            Err(SourceError::BadRef {
                input: s.into(),
                detail: format!("unknown transport {transport:?}"),
            })
        } else {
            SourceRef::detect(Path::new(s))
        }
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, path, reference) = match self {
            SourceRef::DockerArchive { path, reference } => ("docker-archive", path, reference),
            SourceRef::Oci { dir, reference } => ("oci", dir, reference),
            SourceRef::OciArchive { path, reference } => ("oci-archive", path, reference),
            SourceRef::DockerDaemon { image } => {
                return write!(f, "{}{image}", engine::TRANSPORT_PREFIX);
            }
        };
        write!(f, "{transport}:{}", path.display())?;
        if let Some(r) = reference {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

/// The files of a source: a directory, or a tar indexed by offset.
#[derive(Debug)]
pub enum Container {
    Dir { dir: PathBuf, display: String },
    Tar(TarIndex),
}

impl Container {
    pub fn display(&self) -> &str {
        match self {
            Container::Dir { display, .. } => display,
            Container::Tar(t) => t.display(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Container::Dir { dir, .. } => dir.join(name).is_file(),
            Container::Tar(t) => t.contains(name),
        }
    }

    /// Where file `name` (relative, already validated) is; links are refused.
    pub fn locate(&self, name: &str, hint: &'static str) -> Result<BlobLocation, SourceError> {
        match self {
            Container::Tar(t) => t.locate(name, hint),
            Container::Dir { dir, display } => {
                let path = dir.join(name);
                let what = || display.clone();
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SourceError::Missing {
                            what: what(),
                            entry: name.to_string(),
                            hint,
                        });
                    }
                    Err(e) => {
                        return Err(SourceError::Io {
                            what: format!("{display}: {name}"),
                            source: e,
                        });
                    }
                };
                if meta.file_type().is_symlink() {
                    return Err(SourceError::Link {
                        what: what(),
                        entry: name.to_string(),
                        kind: "symlink",
                    });
                }
                if !meta.is_file() {
                    return Err(SourceError::NotRegular {
                        what: what(),
                        entry: name.to_string(),
                        kind: if meta.is_dir() {
                            "directory"
                        } else {
                            "special file"
                        },
                    });
                }
                let file = File::open(&path).map_err(|e| SourceError::Io {
                    what: format!("{display}: {name}"),
                    source: e,
                })?;
                // Size from the open descriptor, not the earlier lstat: what we read is this file.
                let len = file
                    .metadata()
                    .map_err(|e| SourceError::Io {
                        what: format!("{display}: {name}"),
                        source: e,
                    })?
                    .len();
                Ok(BlobLocation {
                    file: Arc::new(file),
                    offset: 0,
                    len,
                    name: format!("{display}: {name}").into(),
                    splice: None,
                })
            }
        }
    }

    /// Like [`Container::locate`], but follows one in-archive symlink to a regular file (see
    /// [`TarIndex::locate_following_symlink`]).
    pub fn locate_following_symlink(
        &self,
        name: &str,
        hint: &'static str,
    ) -> Result<BlobLocation, SourceError> {
        match self {
            Container::Tar(t) => t.locate_following_symlink(name, hint),
            Container::Dir { .. } => self.locate(name, hint),
        }
    }

    /// Reads a JSON document, refusing it before reading if it is over [`JSON_BYTES_MAX`].
    pub fn read_json(&self, name: &str, hint: &'static str) -> Result<Vec<u8>, SourceError> {
        read_json_at(&self.locate(name, hint)?, None)
    }

    /// Where blob `digest` is (`blobs/ALG/HEX`), checked to be `size` bytes.
    pub fn locate_blob(&self, digest: &Digest, size: u64) -> Result<BlobLocation, SourceError> {
        let loc = self.locate(
            &blob_path(digest),
            "the layout does not have this blob; export the image again (a layout written for another platform may lack it)",
        )?;
        if loc.len != size {
            return Err(SourceError::SizeMismatch {
                what: loc.name.to_string(),
                expected: size,
                actual: loc.len,
            });
        }
        Ok(loc)
    }

    /// Reads a JSON blob and checks its digest and size.
    pub fn read_json_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, SourceError> {
        check_json_size(&format!("{}: {}", self.display(), blob_path(digest)), size)?;
        read_json_at(&self.locate_blob(digest, size)?, Some(digest))
    }
}

/// Reads the JSON document at `loc`, refusing it before reading if it is over
/// [`JSON_BYTES_MAX`], and checks its bytes against `expected` when the name implies a digest.
fn read_json_at(loc: &BlobLocation, expected: Option<&Digest>) -> Result<Vec<u8>, SourceError> {
    check_json_size(&loc.name, loc.len)?;
    let bytes = loc.read_all()?;
    if let Some(expected) = expected {
        let mut h = crate::digest::Hasher::new(expected.algorithm());
        h.update(&bytes);
        let actual = h.finish();
        if &actual != expected {
            return Err(SourceError::DigestMismatch {
                what: loc.name.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(bytes)
}

fn check_json_size(what: &str, size: u64) -> Result<(), SourceError> {
    if size > JSON_BYTES_MAX {
        return Err(crate::image::ImageError::TooLarge {
            what: what.to_string(),
            size,
            max: JSON_BYTES_MAX,
        }
        .into());
    }
    Ok(())
}

/// The path of a blob in an OCI layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// An opened source.
#[derive(Debug)]
pub struct Source {
    pub reference: SourceRef,
    pub container: Container,
}

/// One layer of the resolved image, as it is in the source.
#[derive(Debug, Clone)]
pub struct SourceLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
    /// Docker foreign / OCI non-distributable.
    pub foreign: bool,
    pub location: BlobLocation,
    /// The config's `rootfs.diff_ids` entry for this layer.
    pub diff_id: Digest,
    pub urls: Option<Vec<String>>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl SourceLayer {
    /// A layer of a docker archive (or of an engine's export): Docker v2 media types, never
    /// foreign, no URLs or annotations.
    pub fn docker(
        digest: Digest,
        compression: Compression,
        location: BlobLocation,
        diff_id: Digest,
    ) -> SourceLayer {
        SourceLayer {
            digest,
            size: location.len,
            media_type: media::layer_media_type(Family::Docker2, compression, false).to_string(),
            compression,
            foreign: false,
            location,
            diff_id,
            urls: None,
            annotations: None,
        }
    }
}

/// The one image manifest chosen from a source, with where all its blobs are.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `transport:path[:ref]` of the source.
    pub source: String,
    pub family: Family,
    /// The source's image manifest and its media type; `None` for docker archives (they have
    /// no registry manifest).
    pub manifest: Option<(Doc<Manifest>, String)>,
    pub config: Doc<Config>,
    pub config_media_type: String,
    pub config_location: BlobLocation,
    /// The image's platform, from its config.
    pub platform: Platform,
    pub layers: Vec<SourceLayer>,
    /// Other manifests of the index the image was chosen from (not pushed).
    pub skipped: Vec<String>,
}

impl Source {
    /// Opens `reference` with this process's environment (callers without a job).
    pub fn open(reference: &SourceRef) -> Result<Source, SourceError> {
        Source::open_in(reference, &CallerEnv::from_process())
    }

    /// Opens `reference`: indexes an archive (headers only) or checks a layout directory.
    /// `env` is the environment of the job it is opened for (the caller's): a source that
    /// reaches outside its files (an engine's socket) finds it there, never in the daemon's
    /// own environment. Archives and layouts need nothing from it.
    pub fn open_in(reference: &SourceRef, _env: &CallerEnv) -> Result<Source, SourceError> {
        let container = match reference {
            SourceRef::DockerArchive { path, .. } | SourceRef::OciArchive { path, .. } => {
                Container::Tar(TarIndex::open(path)?)
            }
            SourceRef::DockerDaemon { image } => {
                return Err(engine::EngineError::NotAFile {
                    image: image.clone(),
                }
                .into());
            }
            SourceRef::Oci { dir, .. } => {
                let display = dir.display().to_string();
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(SourceError::NotRecognised { path: display }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SourceError::NotFound { path: display });
                    }
                    Err(e) => {
                        return Err(SourceError::Io {
                            what: display,
                            source: e,
                        });
                    }
                }
                Container::Dir {
                    dir: dir.clone(),
                    display,
                }
            }
        };
        Ok(Source {
            reference: reference.clone(),
            container,
        })
    }

    /// Applies the platform guard: exactly one image manifest for `wanted`, checked against
    /// its config, with every blob located.
    pub fn resolve(&self, wanted: &Platform) -> Result<ResolvedImage, SourceError> {
        match &self.reference {
            SourceRef::DockerArchive { reference, .. } => {
                docker::resolve(self, reference.as_deref(), wanted)
            }
            SourceRef::Oci { reference, .. } | SourceRef::OciArchive { reference, .. } => {
                oci::resolve(self, reference.as_deref(), wanted)
            }
            SourceRef::DockerDaemon { image } => Err(engine::EngineError::NotAFile {
                image: image.clone(),
            }
            .into()),
        }
    }
}

/// Opens and resolves `reference` for `wanted` in one call.
pub fn resolve(reference: &SourceRef, wanted: &Platform) -> Result<ResolvedImage, SourceError> {
    Source::open(reference)?.resolve(wanted)
}

/// [`resolve`] with the environment of the job it is for ([`Source::open_in`]).
pub fn resolve_in(
    reference: &SourceRef,
    wanted: &Platform,
    env: &CallerEnv,
) -> Result<ResolvedImage, SourceError> {
    Source::open_in(reference, env)?.resolve(wanted)
}
