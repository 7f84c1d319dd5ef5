//! The platform guard: resolve an image source to exactly one image manifest for the wanted
//! platform, checked against its config.
//!
//! Why: buildx pushes an index (image + `unknown/unknown` attestation) even for one platform, and
//! an image built on Apple Silicon is arm64. Both fail on an amd64 node only at pull or exec
//! time; hoist refuses them before anything is uploaded.

use super::doc::{self, Config, Descriptor, Doc, Index, Manifest, Probe};
use super::error::ImageError;
use super::media::{self, DocumentKind, Family};
use crate::digest::Digest;
use crate::platform::Platform;

/// Nested indexes deeper than this are refused (a cycle would otherwise recurse forever).
pub const INDEX_DEPTH_MAX: usize = 4;

/// Reads documents referenced by descriptors. Implemented by the sources.
pub trait Fetch {
    type Error: From<ImageError>;
    /// The bytes of the blob `desc` names, verified against its digest and size, refused above
    /// [`doc::JSON_BYTES_MAX`].
    fn fetch_json(&self, desc: &Descriptor) -> Result<Vec<u8>, Self::Error>;
    /// How messages name blob `digest` (`FILE: blobs/sha256/HEX`).
    fn what(&self, digest: &Digest) -> String;
}

/// The one image manifest chosen for a platform, with its config.
#[derive(Debug, Clone)]
pub struct Selected {
    pub manifest: Doc<Manifest>,
    /// The manifest's media type: its own `mediaType`, else the descriptor's.
    pub media_type: String,
    pub family: Family,
    pub config: Doc<Config>,
    /// The platform from the config (what the image really is).
    pub platform: Platform,
    /// The other entries of the index it was chosen from (`linux/arm64`,
    /// `unknown/unknown attestation`, ...): not pushed. Empty for a single manifest.
    pub skipped: Vec<String>,
}

/// Checks that a config's platform is the wanted one.
pub fn check_config_platform(
    what: &str,
    config: &Config,
    wanted: &Platform,
) -> Result<Platform, ImageError> {
    check_platform(what, config.platform(), wanted)
}

/// Checks that an image's platform (`have`, from its config or what an engine says of it) is
/// the wanted one; the error says how to rebuild.
pub fn check_platform(
    what: &str,
    have: Platform,
    wanted: &Platform,
) -> Result<Platform, ImageError> {
    if wanted.matches(&have) {
        Ok(have)
    } else {
        Err(ImageError::WrongPlatform {
            what: what.to_string(),
            have: have.to_string(),
            wanted: wanted.to_string(),
        })
    }
}

/// Whether an index entry's platform and a config's platform describe the same thing
/// (a variant missing on either side is not a disagreement).
fn agrees(entry: &Platform, config: &Platform) -> bool {
    entry.os == config.os
        && entry.architecture == config.architecture
        && match (&entry.variant, &config.variant) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// Resolves `entries` (the `manifests` of `index.json` or of an image index, already filtered
/// by reference name) to one image manifest for `wanted`.
pub fn select<F: Fetch>(
    f: &F,
    what: &str,
    entries: &[Descriptor],
    wanted: &Platform,
) -> Result<Selected, F::Error> {
    if entries.is_empty() {
        return Err(ImageError::Empty {
            what: what.to_string(),
        }
        .into());
    }
    // A single manifest (not an index): its platform is whatever its config says.
    if let [only] = entries {
        let kind = kind_of(f, only)?;
        if let DocumentKind::Manifest(family) = kind {
            let sel = open_manifest(f, only, family)?;
            check_entry(f, only, &sel)?;
            check_config_platform(&f.what(&only.digest), &sel.config.parsed, wanted)?;
            return Ok(sel);
        }
    }
    let mut present = Vec::new();
    let found = search(f, entries, wanted, 0, &mut present)?;
    let mut seen = Vec::new();
    for p in present {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    match found {
        Some(mut sel) => {
            sel.skipped = seen;
            Ok(sel)
        }
        None => Err(ImageError::NoMatchingPlatform {
            what: what.to_string(),
            wanted: wanted.to_string(),
            present: if seen.is_empty() {
                "no images".to_string()
            } else {
                seen.join(", ")
            },
        }
        .into()),
    }
}

fn kind_of<F: Fetch>(f: &F, d: &Descriptor) -> Result<DocumentKind, F::Error> {
    let kind = media::classify_document(&d.media_type);
    if !d.media_type.is_empty() {
        return Ok(kind);
    }
    // No media type on the descriptor: look at the document itself.
    let bytes = f.fetch_json(d)?;
    let probe: Doc<Probe> = doc::parse(bytes, &f.what(&d.digest), "manifest or index")?;
    Ok(match probe.parsed.media_type.as_deref() {
        Some(mt) => media::classify_document(mt),
        None if probe.parsed.manifests.is_some() => DocumentKind::Index(Family::Oci),
        None if probe.parsed.config.is_some() => DocumentKind::Manifest(Family::Oci),
        None => DocumentKind::Unknown,
    })
}

fn search<F: Fetch>(
    f: &F,
    entries: &[Descriptor],
    wanted: &Platform,
    depth: usize,
    present: &mut Vec<String>,
) -> Result<Option<Selected>, F::Error> {
    for (i, d) in entries.iter().enumerate() {
        match kind_of(f, d)? {
            DocumentKind::Index(_) => {
                let what = f.what(&d.digest);
                if depth >= INDEX_DEPTH_MAX {
                    return Err(ImageError::TooDeep {
                        what,
                        max: INDEX_DEPTH_MAX,
                    }
                    .into());
                }
                let index: Doc<Index> = doc::parse(f.fetch_json(d)?, &what, "image index")?;
                if let Some(found) = search(f, &index.parsed.manifests, wanted, depth + 1, present)?
                {
                    present.extend(entries.iter().skip(i + 1).map(describe));
                    return Ok(Some(found));
                }
            }
            DocumentKind::Manifest(family) => {
                let entry = d.platform.as_ref().map(|p| p.platform());
                if d.is_attestation() {
                    let p = entry
                        .map(|p| p.to_string())
                        .unwrap_or("unknown/unknown".into());
                    present.push(format!("{p} attestation"));
                    continue;
                }
                if let Some(p) = &entry
                    && !wanted.matches(p)
                {
                    present.push(p.to_string());
                    continue;
                }
                let sel = open_manifest(f, d, family)?;
                check_entry(f, d, &sel)?;
                if wanted.matches(&sel.platform) {
                    present.extend(entries.iter().skip(i + 1).map(describe));
                    return Ok(Some(sel));
                }
                present.push(sel.platform.to_string());
            }
            DocumentKind::Schema1 => {
                return Err(ImageError::Schema1 {
                    what: f.what(&d.digest),
                }
                .into());
            }
            // Artifacts and unknown documents are not images: skip them.
            DocumentKind::Unknown => {
                present.push(format!("{} ({})", d.digest.short(), d.media_type))
            }
        }
    }
    Ok(None)
}

/// What an index's `entries` hold besides the image pushed for `pushed` (the first image entry
/// of that platform), each named as [`select`] names what it passes over, once; empty when no
/// entry is that image. For a source that lists an index's entries but chooses the platform
/// itself (an engine's image inspect).
pub fn left_out_of(entries: &[Descriptor], pushed: &Platform) -> Vec<String> {
    let mut chosen = false;
    let mut out: Vec<String> = Vec::new();
    for d in entries {
        let platform = d.platform.as_ref().map(|p| p.platform());
        if !chosen && !d.is_attestation() && platform.is_some_and(|p| pushed.matches(&p)) {
            chosen = true;
            continue;
        }
        let name = describe(d);
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if chosen { out } else { Vec::new() }
}

/// Names an index entry without reading it (for the entries after the chosen one).
fn describe(d: &Descriptor) -> String {
    let platform = d.platform.as_ref().map(|p| p.platform().to_string());
    if d.is_attestation() {
        return format!(
            "{} attestation",
            platform.as_deref().unwrap_or("unknown/unknown")
        );
    }
    match (platform, media::classify_document(&d.media_type)) {
        (Some(p), _) => p,
        (None, DocumentKind::Index(_)) => format!("index {}", d.digest.short()),
        (None, _) => format!("{} ({})", d.digest.short(), d.media_type),
    }
}

/// An index entry that names a platform must agree with the config it points to.
fn check_entry<F: Fetch>(f: &F, d: &Descriptor, sel: &Selected) -> Result<(), F::Error> {
    if let Some(p) = &d.platform {
        let entry = p.platform();
        if !agrees(&entry, &sel.platform) {
            return Err(ImageError::Mislabelled {
                what: f.what(&d.digest),
                entry: entry.to_string(),
                config: sel.platform.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// Reads and parses the manifest `d` and its config.
pub fn open_manifest<F: Fetch>(
    f: &F,
    d: &Descriptor,
    family: Family,
) -> Result<Selected, F::Error> {
    let what = f.what(&d.digest);
    let manifest: Doc<Manifest> = doc::parse(f.fetch_json(d)?, &what, "image manifest")?;
    let (media_type, family) = match manifest.parsed.media_type.clone() {
        Some(mt) => match media::classify_document(&mt) {
            DocumentKind::Manifest(fam) => (mt, fam),
            DocumentKind::Schema1 => return Err(ImageError::Schema1 { what }.into()),
            _ => {
                return Err(ImageError::UnsupportedDocument {
                    what,
                    media_type: mt,
                }
                .into());
            }
        },
        None if d.media_type.is_empty() => {
            let fam = if manifest.parsed.config.media_type == media::DOCKER_CONFIG {
                Family::Docker2
            } else {
                Family::Oci
            };
            (fam.manifest_media_type().to_string(), fam)
        }
        None => (d.media_type.clone(), family),
    };
    let config_what = f.what(&manifest.parsed.config.digest);
    let config: Doc<Config> = doc::parse(
        f.fetch_json(&manifest.parsed.config)?,
        &config_what,
        "image config",
    )?;
    let platform = config.parsed.platform();
    Ok(Selected {
        manifest,
        media_type,
        family,
        config,
        platform,
        skipped: Vec::new(),
    })
}
