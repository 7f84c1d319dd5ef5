//! Problems reading an image source. Each message is one line: the file (and entry), the
//! problem, and what to do.

use std::io;

use crate::digest::{Digest, DigestError};
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}: check the path and its permissions")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{path}: no such file or directory: check the image path")]
    NotFound { path: String },

    #[error(
        "{path}: not an image: expected a docker save archive, an OCI archive or an OCI layout directory (with oci-layout and index.json)"
    )]
    NotRecognised { path: String },

    #[error(
        "{input:?} is not an image reference ({detail}): use docker-archive:PATH, oci:DIR[:REF], oci-archive:PATH[:REF], docker-daemon:NAME[:TAG] or a plain path"
    )]
    BadRef { input: String, detail: String },

    #[error(
        "{what}: not a tar archive ({detail}): pass a docker save archive, an OCI archive or an OCI layout directory"
    )]
    NotTar { what: String, detail: String },

    #[error(
        "{what}: the archive is {codec}-compressed: decompress it first (hoist reads archives in place), e.g. with {tool}"
    )]
    CompressedArchive {
        what: String,
        codec: &'static str,
        tool: &'static str,
    },

    #[error("{what}: archive is damaged after entry {after:?} ({detail}): export the image again")]
    Corrupt {
        what: String,
        after: String,
        detail: String,
    },

    #[error(
        "{what}: archive is truncated: entry {entry:?} ends at byte {end} but the file has {len} bytes; export the image again"
    )]
    Truncated {
        what: String,
        entry: String,
        end: u64,
        len: u64,
    },

    #[error(
        "{what}: entry name {entry:?} is absolute or contains '..': refusing the archive; export the image again with docker save or skopeo"
    )]
    UnsafeName { what: String, entry: String },

    #[error(
        "{what}: entry name {entry:?} has control characters: refusing the archive; export the image again with docker save or skopeo"
    )]
    ControlInName { what: String, entry: String },

    #[error(
        "{what}: entry {entry:?} appears twice: the archive is ambiguous; export the image again"
    )]
    Duplicate { what: String, entry: String },

    #[error("{what}: more than {max} entries: this is not an image archive")]
    TooManyEntries { what: String, max: usize },

    #[error(
        "{what}: {entry} is a {kind} where a blob should be: hoist does not follow links; export the image again with docker save or skopeo"
    )]
    Link {
        what: String,
        entry: String,
        kind: &'static str,
    },

    #[error("{what}: {entry} is a {kind}, not a regular file: export the image again")]
    NotRegular {
        what: String,
        entry: String,
        kind: &'static str,
    },

    #[error("{what}: {entry} is missing: {hint}")]
    Missing {
        what: String,
        entry: String,
        hint: &'static str,
    },

    #[error(
        "{what}: {error}: the image references a digest hoist cannot trust; export the image again"
    )]
    BadDigest { what: String, error: DigestError },

    #[error(
        "{what}: content is {actual}, expected {expected}: the blob is corrupt or was changed; export the image again"
    )]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{what}: size is {actual} bytes, expected {expected}: the blob is corrupt or was changed; export the image again"
    )]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{what}: uncompressed content is {actual} but the config's diff_id is {expected}: the layer is corrupt; export the image again"
    )]
    DiffIdMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{what}: layer is {codec}-compressed, which registries do not accept: re-export with uncompressed, gzip or zstd layers"
    )]
    UnsupportedCompression { what: String, codec: &'static str },

    #[error(
        "{what}: cannot decompress the layer ({detail}): the layer is corrupt; export the image again"
    )]
    Decompress { what: String, detail: String },

    #[error(transparent)]
    Image(#[from] ImageError),

    #[error(transparent)]
    Engine(#[from] super::engine::EngineError),
}

impl SourceError {
    /// An error opening `path` (a file or its metadata): a missing one is `NotFound`.
    pub fn opening(path: &str, e: io::Error) -> SourceError {
        match e.kind() {
            io::ErrorKind::NotFound => SourceError::NotFound {
                path: path.to_string(),
            },
            _ => SourceError::Io {
                what: path.to_string(),
                source: e,
            },
        }
    }

    /// Recovers a `SourceError` carried through an `io::Error` (from a [`super::VerifyingReader`]);
    /// other I/O errors are wrapped with `what`.
    pub fn from_io(what: &str, e: io::Error) -> SourceError {
        if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
            if let Some(inner) = e.into_inner() {
                match inner.downcast::<SourceError>() {
                    Ok(se) => return *se,
                    Err(other) => {
                        return SourceError::Io {
                            what: what.to_string(),
                            source: io::Error::other(other),
                        };
                    }
                }
            }
            return SourceError::Io {
                what: what.to_string(),
                source: io::Error::other("unknown error"),
            };
        }
        SourceError::Io {
            what: what.to_string(),
            source: e,
        }
    }

    /// Wraps this error in an `io::Error`, for `Read` implementations.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}
