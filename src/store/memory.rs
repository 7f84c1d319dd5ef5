//! Re-push memory: which image manifest a source image became in a registry's repository.
//! Only a hint: whoever reads it asks the registry before trusting it.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError, ops::now_ms};
use crate::digest::Digest;

/// Rows kept; the oldest are forgotten beyond it.
pub const PUSHED_IMAGES_MAX: usize = 65_536;

/// What a pushed manifest was made from: the target and the source image with everything
/// else that shapes the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKey {
    pub registry: String,
    pub repository: String,
    /// The source image's config digest.
    pub source_key: Digest,
    pub platform: String,
    pub codec: String,
    pub split: String,
}

/// The image manifest pushed for an [`ImageKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    pub digest: Digest,
    pub size_bytes: u64,
}

/// The key's columns, in the table's order.
fn key_columns(key: &ImageKey) -> [String; 6] {
    [
        key.registry.clone(),
        key.repository.clone(),
        key.source_key.to_string(),
        key.platform.clone(),
        key.codec.clone(),
        key.split.clone(),
    ]
}

fn remember(
    conn: &mut Connection,
    key: &ImageKey,
    manifest: &PushedManifest,
) -> Result<(), StoreError> {
    let [registry, repository, source_key, platform, codec, split] = key_columns(key);
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO pushed_images (registry, repository, source_key, platform, codec, split,
                                    manifest_digest, manifest_size, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (registry, repository, source_key, platform, codec, split) DO UPDATE SET
             manifest_digest = excluded.manifest_digest,
             manifest_size = excluded.manifest_size, updated_ms = excluded.updated_ms",
        params![
            registry,
            repository,
            source_key,
            platform,
            codec,
            split,
            manifest.digest.to_string(),
            i64::try_from(manifest.size_bytes).unwrap_or(i64::MAX),
            i64::try_from(now_ms()).unwrap_or(i64::MAX),
        ],
    )?;
    tx.execute(
        "DELETE FROM pushed_images WHERE rowid IN (
             SELECT rowid FROM pushed_images ORDER BY updated_ms DESC LIMIT -1 OFFSET ?1)",
        [PUSHED_IMAGES_MAX as i64],
    )?;
    tx.commit()?;
    Ok(())
}

fn recall(conn: &mut Connection, key: &ImageKey) -> Result<Option<PushedManifest>, StoreError> {
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT manifest_digest, manifest_size FROM pushed_images
             WHERE registry = ?1 AND repository = ?2 AND source_key = ?3 AND platform = ?4
               AND codec = ?5 AND split = ?6",
            rusqlite::params_from_iter(key_columns(key)),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((digest, size)) = row else {
        return Ok(None);
    };
    let digest = Digest::parse(&digest)
        .map_err(|e| StoreError::Corrupt(format!("pushed manifest digest: {e}")))?;
    Ok(Some(PushedManifest {
        digest,
        size_bytes: size.max(0) as u64,
    }))
}

impl Store {
    /// Remembers that `key`'s image was pushed as `manifest` (`Normal` durability: a lost row
    /// only costs the next re-push its export).
    pub async fn remember_pushed_image(
        &self,
        key: ImageKey,
        manifest: PushedManifest,
    ) -> Result<(), StoreError> {
        self.call(move |c| remember(c, &key, &manifest)).await
    }

    /// The manifest `key`'s image was last pushed as, if remembered.
    pub async fn pushed_image(&self, key: ImageKey) -> Result<Option<PushedManifest>, StoreError> {
        self.call(move |c| recall(c, &key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(repository: &str) -> ImageKey {
        ImageKey {
            registry: "r.example".into(),
            repository: repository.into(),
            source_key: Digest::sha256_of(b"config"),
            platform: "linux/amd64".into(),
            codec: "gzip".into(),
            split: "off".into(),
        }
    }

    #[tokio::test]
    async fn remembers_per_repository_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let m = |b: &[u8], size_bytes| PushedManifest {
            digest: Digest::sha256_of(b),
            size_bytes,
        };
        assert_eq!(store.pushed_image(key("a")).await.expect("recall"), None);
        store
            .remember_pushed_image(key("a"), m(b"one", 10))
            .await
            .expect("remember");
        store
            .remember_pushed_image(key("a"), m(b"two", 20))
            .await
            .expect("remember");
        let got = store.pushed_image(key("a")).await.expect("recall");
        assert_eq!(got, Some(m(b"two", 20)));
        assert_eq!(store.pushed_image(key("b")).await.expect("recall"), None);
        let mut other = key("a");
        other.codec = "zstd".into();
        assert_eq!(store.pushed_image(other).await.expect("recall"), None);
    }
}
