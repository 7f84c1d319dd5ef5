//! `docker save` archives: the classic layout (`manifest.json`, `<id>/layer.tar`,
//! `<hex>.json`) and the Docker 25+ layout (an OCI layout plus `manifest.json`, whose paths
//! point into `blobs/sha256/`). Both are read through `manifest.json`.

use std::io::{self, Read};

use super::{
    BlobLocation, Check, Container, ResolvedImage, Source, SourceError, SourceLayer,
    VerifyingReader, normalise_name,
};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::image::doc::{self, Config, Doc, DockerArchiveEntry};
use crate::image::media::{self, Compression, Family, sniff_unsupported};
use crate::image::{ImageError, select};
use crate::platform::Platform;

const MANIFEST_HINT: &str = "not a docker save archive; export the image with docker save or skopeo copy ... docker-archive:FILE";

/// The digest a path in the archive implies: `blobs/ALG/HEX` or a classic `HEX.json` config.
fn digest_of_path(display: &str, name: &str) -> Result<Option<Digest>, SourceError> {
    let parts: Vec<&str> = name.split('/').collect();
    if let ["blobs", alg, hex] = parts.as_slice() {
        return Digest::parse(&format!("{alg}:{hex}"))
            .map(Some)
            .map_err(|error| SourceError::BadDigest {
                what: format!("{display}: {name}"),
                error,
            });
    }
    if let Some(hex) = name.strip_suffix(".json")
        && !hex.contains('/')
    {
        return Ok(Digest::parse(&format!("sha256:{hex}")).ok());
    }
    Ok(None)
}

fn entry_name(display: &str, raw: &str) -> Result<String, SourceError> {
    normalise_name(display, raw)?.ok_or_else(|| SourceError::UnsafeName {
        what: display.to_string(),
        entry: raw.to_string(),
    })
}

struct HashRead<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(chunk) = buf.get(..n) {
            self.hasher.update(chunk);
        }
        Ok(n)
    }
}

/// Streams a compressed layer once: hashes the compressed bytes (returned as its digest) and
/// checks the decompressed bytes against `diff_id`.
pub fn check_compressed_layer(
    loc: &BlobLocation,
    compression: Compression,
    diff_id: &Digest,
) -> Result<Digest, SourceError> {
    let what = loc.name.to_string();
    let map = |e: io::Error| {
        if e.get_ref().is_some_and(|i| i.is::<SourceError>()) {
            SourceError::from_io(&what, e)
        } else {
            SourceError::Decompress {
                what: what.clone(),
                detail: super::error::one_line(&e.to_string()),
            }
        }
    };
    let mut hr = HashRead {
        inner: loc.reader(),
        hasher: Hasher::new(Algorithm::Sha256),
    };
    {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hr)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut hr).map_err(map)?),
            Compression::None => Box::new(&mut hr),
        };
        let mut v =
            VerifyingReader::new(decoder, diff_id.clone(), None, what.clone(), Check::DiffId);
        io::copy(&mut v, &mut io::sink()).map_err(map)?;
    }
    io::copy(&mut hr, &mut io::sink()).map_err(|e| SourceError::from_io(&what, e))?;
    Ok(hr.hasher.finish())
}

/// Whether `RepoTags` entry `tag` names `wanted`, the way docker normalises names: skopeo
/// writes `docker.io/library/foo:v1` for `foo:v1`; a name without a tag means `:latest`.
fn tag_matches(tag: &str, wanted: &str) -> bool {
    let last = wanted.rsplit('/').next().unwrap_or(wanted);
    let wanted = if last.contains(':') || wanted.contains('@') {
        wanted.to_string()
    } else {
        format!("{wanted}:latest")
    };
    tag == wanted
        || tag.strip_prefix("docker.io/") == Some(wanted.as_str())
        || tag.strip_prefix("docker.io/library/") == Some(wanted.as_str())
}

fn pick<'a>(
    what: &str,
    entries: &'a [DockerArchiveEntry],
    reference: Option<&str>,
) -> Result<&'a DockerArchiveEntry, SourceError> {
    let tags = |e: &DockerArchiveEntry| e.repo_tags.clone().unwrap_or_default();
    let all: Vec<String> = entries.iter().flat_map(tags).collect();
    let available = if all.is_empty() {
        "no tags".to_string()
    } else {
        all.join(", ")
    };
    match reference {
        Some(r) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| tag_matches(t, r)))
            .ok_or_else(|| {
                ImageError::RefNotFound {
                    what: what.to_string(),
                    reference: r.to_string(),
                    available,
                }
                .into()
            }),
        None => match entries {
            [] => Err(ImageError::Empty {
                what: what.to_string(),
            }
            .into()),
            [only] => Ok(only),
            _ => Err(ImageError::Ambiguous {
                what: what.to_string(),
                count: entries.len(),
                example: format!(
                    "docker-archive:FILE:{}",
                    all.first().map(String::as_str).unwrap_or("NAME:TAG")
                ),
                available,
            }
            .into()),
        },
    }
}

pub(super) fn resolve(
    source: &Source,
    reference: Option<&str>,
    wanted: &Platform,
) -> Result<ResolvedImage, SourceError> {
    let c: &Container = &source.container;
    let display = c.display().to_string();
    let what = format!("{display}: manifest.json");
    let bytes = c.read_json("manifest.json", MANIFEST_HINT)?;
    let entries: Doc<Vec<DockerArchiveEntry>> =
        doc::parse(bytes, &what, "docker save manifest.json")?;
    let entry = pick(&what, &entries.parsed, reference)?;

    let config_name = entry_name(&display, &entry.config)?;
    let config_location = c.locate(&config_name, MANIFEST_HINT)?;
    let config_what = config_location.name.to_string();
    if config_location.len > doc::JSON_BYTES_MAX {
        return Err(ImageError::TooLarge {
            what: config_what,
            size: config_location.len,
            max: doc::JSON_BYTES_MAX,
        }
        .into());
    }
    let config_bytes = config_location.read_all()?;
    if let Some(expected) = digest_of_path(&display, &config_name)? {
        let mut h = Hasher::new(expected.algorithm());
        h.update(&config_bytes);
        let actual = h.finish();
        if actual != expected {
            return Err(SourceError::DigestMismatch {
                what: config_what,
                expected,
                actual,
            });
        }
    }
    let config: Doc<Config> = doc::parse(config_bytes, &config_what, "image config")?;
    let platform = select::check_config_platform(&config_what, &config.parsed, wanted)?;

    let diff_ids = &config.parsed.rootfs.diff_ids;
    if entry.layers.len() != diff_ids.len() {
        return Err(ImageError::LayerCountMismatch {
            what,
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        }
        .into());
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (raw, diff_id) in entry.layers.iter().zip(diff_ids) {
        let name = entry_name(&display, raw)?;
        // Layers are checked against their diff_id as they stream, so docker's own
        // in-archive symlinks (a layer saved twice) are safe to follow.
        let location = c.locate_following_symlink(&name, MANIFEST_HINT)?;
        let layer_what = location.name.to_string();
        let path_digest = digest_of_path(&display, &name)?;
        let head = location.head(8)?;
        if let Some(codec) = sniff_unsupported(&head) {
            return Err(SourceError::UnsupportedCompression {
                what: layer_what,
                codec,
            });
        }
        let compression = Compression::sniff(&head);
        let digest = match compression {
            // Uncompressed: the blob's digest is its diff_id; the bytes are checked against it
            // as they stream to the compressor.
            Compression::None => {
                if let Some(p) = &path_digest
                    && p != diff_id
                {
                    return Err(SourceError::DiffIdMismatch {
                        what: layer_what,
                        expected: diff_id.clone(),
                        actual: p.clone(),
                    });
                }
                diff_id.clone()
            }
            // Compressed: the archive does not record the compressed digest (classic layout) or
            // records it only in the path, so read the layer once now, checking the diff_id.
            Compression::Gzip | Compression::Zstd => {
                let actual = check_compressed_layer(&location, compression, diff_id)?;
                if let Some(expected) = path_digest
                    && expected.algorithm() == Algorithm::Sha256
                    && expected != actual
                {
                    return Err(SourceError::DigestMismatch {
                        what: layer_what,
                        expected,
                        actual,
                    });
                }
                actual
            }
        };
        layers.push(SourceLayer {
            digest,
            size: location.len,
            media_type: media::layer_media_type(Family::Docker2, compression, false).to_string(),
            compression,
            foreign: false,
            location,
            diff_id: diff_id.clone(),
            urls: None,
            annotations: None,
        });
    }
    Ok(ResolvedImage {
        source: source.reference.to_string(),
        family: Family::Docker2,
        manifest: None,
        config,
        config_media_type: media::DOCKER_CONFIG.to_string(),
        config_location,
        platform,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::tag_matches;

    #[test]
    fn tags() {
        assert!(tag_matches("docker.io/library/foo:v1", "foo:v1"));
        assert!(tag_matches("docker.io/library/foo:latest", "foo"));
        assert!(tag_matches("example.com/a/b:2", "example.com/a/b:2"));
        assert!(tag_matches("docker.io/me/app:1", "me/app:1"));
        assert!(!tag_matches("docker.io/library/foo:v1", "foo:v2"));
        assert!(!tag_matches(
            "localhost:5000/foo:latest",
            "localhost:5000/foo:v1"
        ));
        assert!(tag_matches(
            "localhost:5000/foo:latest",
            "localhost:5000/foo"
        ));
    }
}
