//! A `docker-daemon:` push whose image the target repository holds already, committed without
//! exporting it.
//!
//! ```text
//! engine inspect (manifests=1): the chosen platform's manifest descriptor (containerd store),
//!   else the manifest the daemon remembers pushing this image (its ID, the config digest, on
//!   the classic store) as to this repository with this platform, codec and split policy
//!   -> GET that manifest by digest from the target repository (digest checked), parsed:
//!      an image manifest, every layer compressed (the engine's blobs, pushed as stored), the
//!      size the engine names
//!   -> GET its config: the image's diff_ids and platform
//!   -> HEAD every blob it names (digest and size) -> the plan recorded, blobs `verified`
//!   -> commit: each tag PUT unless it resolves to the manifest already, read back
//! ```
//!
//! On the containerd store a push without splits uploads the engine's stored blobs as they
//! are, so the manifest it would commit is the engine's own: a repository that holds that
//! manifest and every blob it names holds the push's result. On the classic store the
//! manifest hoist pushed before (remembered when its push was committed) is that image too:
//! its config is the image (the ID is the config's digest), its layers hoist's compression. Anything missing or different
//! ends the probe with a note saying why, and the export runs as always: nothing is trusted
//! that the registry did not answer.

use super::commit::{self, TagWrite};
use super::export;
use super::{JobError, Reach};
use crate::api::{BlobAction, BlobState, JobState, SplitLayers};
use crate::daemon::job::JobContext;
use crate::digest::Digest;
use crate::image::doc::{self, Config, Descriptor, Manifest};
use crate::image::media::{self, Compression};
use crate::plan::{CompressedLayer, ManifestBytes};
use crate::platform::Platform;
use crate::registry::ImageRef;
use crate::registry::{CONFIG_BYTES_MAX, Reference, media_types};
use crate::source::engine::{Endpoint, Engine, ImageInspect, platforms};
use crate::store::{ImageKey, NewBlob, PushedManifest};

/// A manifest the repository holds that is the push's result, with the blobs it names.
struct Held {
    manifest: ManifestBytes,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Why the export must run after all: said in a note.
type Differs = String;

impl Reach {
    /// Commits `image` without exporting it when the repository holds it already (see the
    /// module); `None` when the export must run. A stop, or a failed commit of a manifest
    /// found whole, ends the run as the normal commit would.
    pub(super) async fn skip_export(&self, image: &str) -> Result<Option<Digest>, JobError> {
        let ctx = &self.ctx;
        let Some((inspect, named)) = self.engine_manifest(image).await? else {
            return Ok(None);
        };
        let held = match self.held(&inspect, &named).await? {
            Ok(held) => held,
            Err(why) => {
                ctx.note(format!(
                    "exporting the image from the engine: the repository does not hold its manifest {} whole ({why})",
                    named.digest.short()
                ))
                .await;
                return Ok(None);
            }
        };
        ctx.note(format!(
            "export skipped: the repository holds the image's manifest {} and every blob it names",
            held.manifest.digest
        ))
        .await;
        self.commit_held(&held).await.map(Some)
    }

    /// The engine's inspect and the manifest it names for the chosen platform; `None` when
    /// the engine names none (the classic store).
    async fn engine_manifest(
        &self,
        image: &str,
    ) -> Result<Option<(ImageInspect, CompressedLayer)>, JobError> {
        let image = crate::source::engine::parse_image_name(image).map_err(JobError::failed)?;
        let env = self.ctx.env().clone();
        let opts = crate::daemon::prepare::plan_options(self.ctx.spec(), env.clone(), Vec::new());
        let endpoint = Endpoint::from_env(&env).map_err(export::failed)?;
        let engine = Engine::connect(endpoint).await.map_err(export::failed)?;
        let (inspect, _, platform, _) = export::inspect_checked(&engine, &image, &opts).await?;
        // The engine's manifest is pushed only when no layer is split; a remembered one is
        // remembered with the split policy.
        let named = match chosen_manifest(&inspect, &platform) {
            Some(d) if splits_leave_compressed_layers(self.ctx.spec().split_layers) => {
                Some(compressed(&d))
            }
            Some(_) => None,
            None => self.remembered(&inspect).await,
        };
        Ok(named.map(|d| (inspect, d)))
    }

    /// The manifest the daemon remembers pushing the engine's image as, to this repository:
    /// on the classic store, whose image ID is the config's digest.
    async fn remembered(&self, inspect: &ImageInspect) -> Option<CompressedLayer> {
        let config = Digest::parse(&inspect.id).ok()?;
        let key = image_key(&self.ctx, &self.target, &config);
        let m = self.ctx.pushed_image(key).await?;
        Some(CompressedLayer {
            digest: m.digest,
            size: m.size_bytes,
        })
    }

    /// The manifest `named` and its config from the repository, checked against the engine's
    /// image, and every blob it names present.
    async fn held(
        &self,
        inspect: &ImageInspect,
        named: &CompressedLayer,
    ) -> Result<Result<Held, Differs>, JobError> {
        let (client, repository) = (&self.client, &self.target.repository);
        let reference = Reference::Digest(named.digest.clone());
        let got = self
            .patience
            .call("GET the image's manifest", || {
                client.get_manifest(repository, &reference)
            })
            .await?;
        let held = match got {
            Ok((media_type, bytes, digest)) => {
                parse_held(named, media_type, bytes.to_vec(), digest)
            }
            Err(e) if e.status() == Some(404) => Err("it is not there".into()),
            Err(e) => Err(e.to_string()),
        };
        let held = match held {
            Ok(held) => held,
            Err(why) => return Ok(Err(why)),
        };
        // The classic store's image ID is its config's digest.
        if inspect.manifests().is_empty() && held.config.digest.to_string() != inspect.id {
            return Ok(Err(format!("its config is not the image {}", inspect.id)));
        }
        if let Err(why) = self.config_is_the_image(&held.config, inspect).await? {
            return Ok(Err(why));
        }
        let blobs: Vec<CompressedLayer> = blobs_of(&held).map(compressed).collect();
        let present = commit::blobs_present(&self.patience, client, repository, &blobs).await?;
        match blobs.iter().zip(present).find(|(_, p)| !p) {
            Some((b, _)) => Ok(Err(format!(
                "blob {} ({} bytes) is not in it",
                b.digest.short(),
                b.size
            ))),
            None => Ok(Ok(held)),
        }
    }

    /// Whether the repository's config `config` is the engine's image's: its diff_ids and
    /// platform.
    async fn config_is_the_image(
        &self,
        config: &Descriptor,
        inspect: &ImageInspect,
    ) -> Result<Result<(), Differs>, JobError> {
        let (client, repository) = (&self.client, &self.target.repository);
        let got = self
            .patience
            .call("GET the image's config", || {
                client.get_blob(repository, &config.digest, CONFIG_BYTES_MAX)
            })
            .await?;
        let bytes = match got {
            Ok(b) => b.to_vec(),
            Err(e) => return Ok(Err(format!("its config: {e}"))),
        };
        let parsed: Config = match doc::parse(bytes, "the repository's config", "image config") {
            Ok(d) => d.parsed,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if parsed.rootfs.diff_ids != inspect.rootfs.layers {
            return Ok(Err(
                "its config lists other layers than the engine's image".into()
            ));
        }
        if !parsed.platform().matches(&inspect.platform()) {
            return Ok(Err(format!(
                "its config is {}, the engine's image {}",
                parsed.platform(),
                inspect.platform()
            )));
        }
        Ok(Ok(()))
    }

    /// Records the held manifest's blobs as the plan, each `verified` (the probe's HEADs
    /// found them), then commits the manifest's exact bytes.
    async fn commit_held(&self, held: &Held) -> Result<Digest, JobError> {
        let ctx = &self.ctx;
        let blobs = blobs_of(held)
            .map(|d| NewBlob {
                digest: d.digest.clone(),
                size_bytes: d.size,
                media_type: d.media_type.clone(),
                action: BlobAction::AsIs,
            })
            .collect();
        ctx.plan(blobs).await?;
        ctx.enter(JobState::Verifying).await?;
        for d in blobs_of(held) {
            ctx.blob_state(&d.digest, BlobState::Verified).await?;
        }
        let (client, target) = (&self.client, &self.target);
        commit::commit_manifest(
            &self.patience,
            client,
            target,
            &held.manifest,
            TagWrite::IfDifferent,
        )
        .await?;
        remember(ctx, target, &held.config.digest, &held.manifest).await;
        Ok(held.manifest.digest.clone())
    }
}

/// What the daemon remembers a push of the image with config `config` to `target` by: the
/// job's platform, codec and split policy shape the manifest too.
fn image_key(ctx: &JobContext, target: &ImageRef, config: &Digest) -> ImageKey {
    let spec = ctx.spec();
    ImageKey {
        registry: target.host.clone(),
        repository: target.repository.clone(),
        source_key: config.clone(),
        platform: spec.platform.to_string(),
        codec: spec.compression.as_str().to_string(),
        split: spec.split_layers.to_string(),
    }
}

/// Remembers a committed push of the image with config `config` to `target` as `manifest`.
pub(super) async fn remember(
    ctx: &JobContext,
    target: &ImageRef,
    config: &Digest,
    manifest: &ManifestBytes,
) {
    let pushed = PushedManifest {
        digest: manifest.digest.clone(),
        size_bytes: manifest.bytes.len() as u64,
    };
    ctx.remember_pushed_image(image_key(ctx, target, config), pushed)
        .await;
}

/// Whether `split` leaves every compressed layer whole (then the containerd store's blobs
/// are pushed as stored, and the manifest is the engine's).
fn splits_leave_compressed_layers(split: SplitLayers) -> bool {
    match split {
        SplitLayers::Off | SplitLayers::Auto => true,
        SplitLayers::MaxBytes(_) => false,
    }
}

/// The descriptor of the image manifest the engine holds for `platform`.
fn chosen_manifest(inspect: &ImageInspect, platform: &Platform) -> Option<Descriptor> {
    inspect
        .manifests()
        .iter()
        .filter(|m| m.kind == platforms::KIND_IMAGE && m.available)
        .find(|m| {
            m.image_data
                .as_ref()
                .and_then(|d| d.platform.as_ref())
                .is_some_and(|p| platform.matches(p))
        })
        .and_then(|m| m.descriptor.clone())
}

/// The repository's answer for the manifest `named`, checked: the digest and size the engine
/// names, an image manifest whose layers are all compressed (as the engine stores them).
fn parse_held(
    named: &CompressedLayer,
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
) -> Result<Held, Differs> {
    if digest != named.digest || bytes.len() as u64 != named.size {
        return Err(format!(
            "the registry answered {digest} of {} bytes, the engine names {} of {} bytes",
            bytes.len(),
            named.digest,
            named.size
        ));
    }
    if !media_types::is_manifest(&media_type) {
        return Err(format!("it is a {media_type:?}, not an image manifest"));
    }
    let parsed: Manifest = doc::parse(bytes.clone(), "the repository's manifest", "manifest")
        .map_err(|e| e.to_string())?
        .parsed;
    let stored_as_is = |d: &Descriptor| {
        media::classify_layer(&d.media_type)
            .is_some_and(|t| !t.foreign && t.compression != Compression::None)
    };
    if let Some(d) = parsed.layers.iter().find(|d| !stored_as_is(d)) {
        return Err(format!(
            "layer {} is {:?}, which hoist would compress itself",
            d.digest.short(),
            d.media_type
        ));
    }
    Ok(Held {
        manifest: ManifestBytes {
            media_type,
            bytes,
            digest,
        },
        config: parsed.config,
        layers: parsed.layers,
    })
}

/// The config, then each layer once, in the manifest's order.
fn blobs_of(held: &Held) -> impl Iterator<Item = &Descriptor> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(&held.config)
        .chain(held.layers.iter())
        .filter(move |d| seen.insert(d.digest.clone()))
}

fn compressed(d: &Descriptor) -> CompressedLayer {
    CompressedLayer {
        digest: d.digest.clone(),
        size: d.size,
    }
}
