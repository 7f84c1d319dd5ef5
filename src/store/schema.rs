//! Schema migrations, tracked in SQLite's `user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`. Entries are never
//! edited once released: a change is a new entry. `migrate` runs the missing ones in one
//! transaction each, so a crash leaves the database at a whole version.

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` takes the schema from `user_version = i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: jobs, their blobs, upload cursors, compression progress, the event log.
    "
    CREATE TABLE jobs (
        id              TEXT PRIMARY KEY,
        source          TEXT NOT NULL,
        target          TEXT NOT NULL,
        -- the whole validated JobSpec as JSON (platform, compression, chunk size, options);
        -- it never holds credentials: no field of JobSpec can carry one.
        spec            TEXT NOT NULL,
        state           TEXT NOT NULL,
        reason          TEXT,
        manifest_digest TEXT,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE blobs (
        job_id     TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        digest     TEXT NOT NULL,
        position   INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        action     TEXT NOT NULL,
        state      TEXT NOT NULL,
        PRIMARY KEY (job_id, digest)
    ) STRICT;

    -- The registry's upload session and the offset it acknowledged. Written before the next
    -- chunk is sent, so a restart resumes from here (and asks the registry to confirm).
    CREATE TABLE upload_cursors (
        job_id       TEXT NOT NULL,
        digest       TEXT NOT NULL,
        session_url  TEXT NOT NULL,
        offset_bytes INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        PRIMARY KEY (job_id, digest),
        FOREIGN KEY (job_id, digest) REFERENCES blobs(job_id, digest) ON DELETE CASCADE
    ) STRICT;

    CREATE TABLE compress_progress (
        job_id      TEXT NOT NULL,
        digest      TEXT NOT NULL,
        chunks_done INTEGER NOT NULL,
        bytes_done  INTEGER NOT NULL,
        PRIMARY KEY (job_id, digest),
        FOREIGN KEY (job_id, digest) REFERENCES blobs(job_id, digest) ON DELETE CASCADE
    ) STRICT;

    -- AUTOINCREMENT: a sequence number is never reused, even after the newest event of a
    -- deleted job is gone, so a follower's `after=SEQ` never skips a new event.
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        time_ms INTEGER NOT NULL,
        body    TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_by_job ON events(job_id, seq);
    ",
    // 2: what is actually pushed for a blob that is compressed first: its digest and size are
    // known only after compressing, and the upload session is for those bytes.
    "
    ALTER TABLE blobs ADD COLUMN pushed_digest TEXT;
    ALTER TABLE blobs ADD COLUMN pushed_size_bytes INTEGER;
    ",
    // 3: which events survive when a job's log is trimmed to `EVENTS_PER_JOB_MAX` (`ops`
    // says which are essential). Existing progress, compression and retry events are not.
    "
    ALTER TABLE events ADD COLUMN essential INTEGER NOT NULL DEFAULT 1;
    UPDATE events SET essential = 0
     WHERE CASE WHEN json_valid(body) THEN json_extract(body, '$.type') END
           IN ('progress', 'compress', 'retry');
    CREATE INDEX events_trimmed ON events(job_id, essential, seq);
    ",
    // 4: the caller's environment a job runs with, as JSON (`api::JobEnv`): public values
    // and the names of secret variables, never their values (those stay in the daemon's
    // memory). NULL: the daemon's own environment.
    "
    ALTER TABLE jobs ADD COLUMN env TEXT;
    ",
    // 5: how a job splits a layer into parts (the plan's layout as JSON, opaque here): the
    // first run scans and hashes the layer once; later runs rebuild the same parts from it.
    "
    CREATE TABLE layer_splits (
        job_id       TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        layer_digest TEXT NOT NULL,
        layout       TEXT NOT NULL,
        PRIMARY KEY (job_id, layer_digest)
    ) STRICT;
    ",
    // 6: what hoist pushed, per registry and repository: the image manifest a source image
    // (its config's digest) became, for a platform, codec and split policy. A hint for a
    // re-push, which asks the registry before it uses it; not tied to a job.
    "
    CREATE TABLE pushed_images (
        registry        TEXT NOT NULL,
        repository      TEXT NOT NULL,
        source_key      TEXT NOT NULL,
        platform        TEXT NOT NULL,
        codec           TEXT NOT NULL,
        split           TEXT NOT NULL,
        manifest_digest TEXT NOT NULL,
        manifest_size   INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,
        PRIMARY KEY (registry, repository, source_key, platform, codec, split)
    ) STRICT;
    CREATE INDEX pushed_images_by_age ON pushed_images (updated_ms);
    ",
];

/// The schema version this build writes.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the schema to [`latest_version`]. Refuses a database from a newer hoist.
pub(super) fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > latest_version() {
        return Err(StoreError::TooNew {
            found: version,
            supported: latest_version(),
        });
    }
    while version < latest_version() {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        version += 1;
    }
    Ok(version)
}
