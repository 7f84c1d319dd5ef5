//! `docker save` archives: the classic layout (`manifest.json`, `<id>/layer.tar`,
//! `<hex>.json`) and the Docker 25+ layout (an OCI layout plus `manifest.json`, whose paths
//! point into `blobs/sha256/`). Both are read through `manifest.json`, except a Docker 25+
//! archive of a multi-platform image, whose platform is chosen from its `index.json` as an OCI
//! layout's is.

use std::io::{self, Read};

use super::{
    BlobLocation, Check, Container, ResolvedImage, Source, SourceError, SourceLayer,
    VerifyingReader, normalise_name,
};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::image::doc::{self, Config, Descriptor, Doc, DockerArchiveEntry, Index, Manifest};
use crate::image::media::{self, Compression, DocumentKind, Family, sniff_unsupported};
use crate::image::{ImageError, select};
use crate::platform::Platform;

/// A blob of the platform asked for is not in a multi-platform archive: what `docker save`
/// does with the platforms its engine did not pull.
const PLATFORM_LEFT_OUT_HINT: &str = "docker save wrote only the platforms its engine holds: pull the platform wanted (docker pull --platform OS/ARCH IMAGE) and save again";

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

/// Streams a compressed layer once: hashes the compressed bytes with `algorithm` (returned as
/// its digest) and checks the decompressed bytes against `diff_id`.
pub fn check_compressed_layer(
    loc: &BlobLocation,
    compression: Compression,
    diff_id: &Digest,
    algorithm: Algorithm,
) -> Result<Digest, SourceError> {
    let what = loc.name.to_string();
    let map = |e: io::Error| {
        if e.get_ref().is_some_and(|i| i.is::<SourceError>()) {
            SourceError::from_io(&what, e)
        } else {
            SourceError::Decompress {
                what: what.clone(),
                detail: crate::text::detail(&e.to_string()),
            }
        }
    };
    let mut hr = HashRead {
        inner: loc.reader(),
        hasher: Hasher::new(algorithm),
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
pub(super) fn tag_matches(tag: &str, wanted: &str) -> bool {
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
    // Tags come from the archive: made fit for a one-line message.
    let available = if all.is_empty() {
        "no tags".to_string()
    } else {
        crate::text::detail(&all.join(", "))
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
                    crate::text::detail(all.first().map(String::as_str).unwrap_or("NAME:TAG"))
                ),
                available,
            }
            .into()),
        },
    }
}

/// Index entries visited at most when looking for the OCI manifest of a docker archive.
const OCI_ENTRIES_VISITED_MAX: usize = 256;

/// Looks in the OCI layout of a Docker 25+ archive for the image manifest whose config is
/// `config_digest` and whose layers are exactly `layers` (same digests, same compression).
/// Anything unreadable is skipped: `docker save` leaves out blobs of other platforms, and the
/// archive was already fully resolved through `manifest.json`.
fn find_oci_manifest(
    c: &Container,
    config_digest: &Digest,
    layers: &[SourceLayer],
) -> Option<(Doc<Manifest>, String, Family)> {
    if !c.contains("index.json") || !c.contains("oci-layout") {
        return None;
    }
    let what = format!("{}: index.json", c.display());
    let index: Doc<Index> = doc::parse(c.read_json("index.json", "").ok()?, &what, "index").ok()?;
    let mut stack: Vec<(Descriptor, usize)> =
        index.parsed.manifests.into_iter().map(|d| (d, 0)).collect();
    let mut visited = 0;
    while let Some((d, depth)) = stack.pop() {
        visited += 1;
        if visited > OCI_ENTRIES_VISITED_MAX {
            return None;
        }
        let Ok(bytes) = c.read_json_blob(&d.digest, d.size) else {
            continue;
        };
        match media::classify_document(&d.media_type) {
            DocumentKind::Index(_) if depth < select::INDEX_DEPTH_MAX => {
                if let Ok(ix) = doc::parse::<Index>(bytes, &what, "index") {
                    stack.extend(ix.parsed.manifests.into_iter().map(|d| (d, depth + 1)));
                }
            }
            DocumentKind::Manifest(_) => {
                let Ok(m) = doc::parse::<Manifest>(bytes, &what, "manifest") else {
                    continue;
                };
                let p = &m.parsed;
                let same_layers = p.layers.len() == layers.len()
                    && p.layers.iter().zip(layers).all(|(d, l)| {
                        d.digest == l.digest
                            && d.size == l.size
                            && media::classify_layer(&d.media_type)
                                .is_some_and(|t| t.compression == l.compression)
                    });
                if p.config.digest != *config_digest || !same_layers {
                    continue;
                }
                let media_type = p.media_type.clone().unwrap_or(d.media_type.clone());
                if let DocumentKind::Manifest(family) = media::classify_document(&media_type) {
                    return Some((m, media_type, family));
                }
            }
            _ => {}
        }
    }
    None
}

/// The image index among the top-level entries of a Docker 25+ archive's `index.json` that
/// holds an image manifest whose config is `config_digest`; `None` for an archive without an
/// OCI layout or whose image is a single manifest. Blobs `docker save` left out (other
/// platforms the engine did not hold) are passed over.
fn index_holding(c: &Container, config_digest: &Digest) -> Option<Descriptor> {
    if !c.contains("index.json") || !c.contains("oci-layout") {
        return None;
    }
    let what = format!("{}: index.json", c.display());
    let index: Doc<Index> = doc::parse(c.read_json("index.json", "").ok()?, &what, "index").ok()?;
    let mut visited = 0;
    for top in &index.parsed.manifests {
        if !matches!(
            media::classify_document(&top.media_type),
            DocumentKind::Index(_)
        ) {
            continue;
        }
        let Some(children) = c
            .read_json_blob(&top.digest, top.size)
            .ok()
            .and_then(|bytes| doc::parse::<Index>(bytes, &what, "index").ok())
        else {
            continue;
        };
        for child in &children.parsed.manifests {
            visited += 1;
            if visited > OCI_ENTRIES_VISITED_MAX {
                return None;
            }
            let holds = c
                .read_json_blob(&child.digest, child.size)
                .ok()
                .and_then(|bytes| doc::parse::<Manifest>(bytes, &what, "manifest").ok())
                .is_some_and(|m| m.parsed.config.digest == *config_digest);
            if holds {
                return Some(top.clone());
            }
        }
    }
    None
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
    let config_digest = digest_of_path(&display, &config_name)?;
    // `manifest.json` names one platform of a multi-platform image: its index, in the
    // archive's OCI layout, is where the wanted one is chosen (and the others named).
    if let Some(index) = config_digest.as_ref().and_then(|d| index_holding(c, d)) {
        let index_what = format!("{display}: index.json");
        return super::oci::resolve_entries(source, &index_what, &[index], wanted).map_err(|e| {
            match e {
                SourceError::Missing { what, entry, .. } => SourceError::Missing {
                    what,
                    entry,
                    hint: PLATFORM_LEFT_OUT_HINT,
                },
                e => e,
            }
        });
    }
    let config_location = c.locate(&config_name, MANIFEST_HINT)?;
    let config_what = config_location.name.to_string();
    let config_bytes = super::read_json_at(&config_location, config_digest.as_ref())?;
    let config: Doc<Config> = doc::parse(config_bytes, &config_what, "image config")?;
    let platform = select::check_config_platform(&config_what, &config.parsed, wanted)?;

    let diff_ids = config.parsed.diff_ids_for(&what, entry.layers.len())?;
    let mut layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(raw, diff_id)| layer(c, &display, raw, diff_id))
        .collect::<Result<Vec<_>, _>>()?;
    let mut image = ResolvedImage {
        source: source.reference.to_string(),
        family: Family::Docker2,
        manifest: None,
        config_media_type: media::DOCKER_CONFIG.to_string(),
        config_location,
        platform,
        layers: Vec::new(),
        skipped: Vec::new(),
        config,
    };
    // Docker 25+ archives also hold the image's OCI manifest: when one matches this config and
    // these layers, push it byte for byte (keeping the digest docker/buildx gave the image).
    if let Some((manifest, media_type, family)) =
        find_oci_manifest(c, &image.config.digest, &layers)
    {
        for (l, d) in layers.iter_mut().zip(&manifest.parsed.layers) {
            l.media_type = d.media_type.clone();
            l.urls = d.urls.clone();
            l.annotations = d.annotations.clone();
            l.foreign = media::classify_layer(&d.media_type).is_some_and(|t| t.foreign);
        }
        image.config_media_type = match manifest.parsed.config.media_type.as_str() {
            "" => family.config_media_type().to_string(),
            mt => mt.to_string(),
        };
        image.family = family;
        image.manifest = Some((manifest, media_type));
    }
    image.layers = layers;
    Ok(image)
}

/// The layer at archive path `raw` whose uncompressed content is `diff_id`. Layers are checked
/// against their diff_id as they stream, so docker's own in-archive symlinks (a layer saved
/// twice) are safe to follow.
fn layer(
    c: &Container,
    display: &str,
    raw: &str,
    diff_id: &Digest,
) -> Result<SourceLayer, SourceError> {
    let name = entry_name(display, raw)?;
    let location = c.locate_following_symlink(&name, MANIFEST_HINT)?;
    let path_digest = digest_of_path(display, &name)?;
    let head = location.head(8)?;
    if let Some(codec) = sniff_unsupported(&head) {
        return Err(SourceError::UnsupportedCompression {
            what: location.name.to_string(),
            codec,
        });
    }
    let compression = Compression::sniff(&head);
    let digest = layer_digest(&location, compression, diff_id, path_digest)?;
    Ok(SourceLayer::docker(
        digest,
        compression,
        location,
        diff_id.clone(),
    ))
}

/// The blob digest of a layer, checked against the digest its path implies (if any).
fn layer_digest(
    location: &BlobLocation,
    compression: Compression,
    diff_id: &Digest,
    path_digest: Option<Digest>,
) -> Result<Digest, SourceError> {
    let layer_what = || location.name.to_string();
    match compression {
        // Uncompressed: the blob's digest is its diff_id; the bytes are checked against it as
        // they stream to the compressor.
        Compression::None => {
            if let Some(p) = path_digest
                && &p != diff_id
            {
                return Err(SourceError::DiffIdMismatch {
                    what: layer_what(),
                    expected: diff_id.clone(),
                    actual: p,
                });
            }
            Ok(diff_id.clone())
        }
        // Compressed: the archive does not record the compressed digest (classic layout) or
        // records it only in the path, so read the layer once now, checking the diff_id.
        Compression::Gzip | Compression::Zstd => {
            let algorithm = path_digest
                .as_ref()
                .map_or(Algorithm::Sha256, Digest::algorithm);
            let actual = check_compressed_layer(location, compression, diff_id, algorithm)?;
            if let Some(expected) = path_digest
                && expected != actual
            {
                return Err(SourceError::DigestMismatch {
                    what: layer_what(),
                    expected,
                    actual,
                });
            }
            Ok(actual)
        }
    }
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
