//! The SQL itself: synchronous functions over a connection, run only on the store thread.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{
    BlobRecord, CursorRecord, Durability, EVENTS_PER_JOB_MAX, EventRecord, JobRecord, NewBlob,
    Pushed, StoreError, state_durability,
};
use crate::api::{BlobState, EventKind, JobEnv, JobId, JobSpec, JobState};
use crate::digest::Digest;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `f` in a transaction committed with `durability`, then returns to `NORMAL`.
fn with_tx<T>(
    conn: &mut Connection,
    durability: Durability,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if durability == Durability::Full {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    let result = (|| {
        let tx = conn.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    })();
    if durability == Durability::Full {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    result
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn u64_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    Ok(v.max(0) as u64)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const JOB_COLUMNS: &str = "id, spec, state, reason, manifest_digest, created_ms, updated_ms, env";

type RawJob = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    u64,
    u64,
    Option<String>,
);

fn raw_job(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        u64_col(row, 5)?,
        u64_col(row, 6)?,
        row.get(7)?,
    ))
}

/// Parses a row read back: every value is checked again, as it was before writing.
fn job_of(raw: RawJob) -> Result<JobRecord, StoreError> {
    let (id, spec, state, reason, manifest, created_ms, updated_ms, env) = raw;
    Ok(JobRecord {
        id: id.parse().map_err(|e| corrupt("job id", e))?,
        spec: serde_json::from_str::<JobSpec>(&spec).map_err(|e| corrupt("job spec", e))?,
        state: state.parse().map_err(|e| corrupt("job state", e))?,
        reason,
        manifest_digest: manifest
            .map(|m| Digest::parse(&m))
            .transpose()
            .map_err(|e| corrupt("manifest digest", e))?,
        created_ms,
        updated_ms,
        env: env
            .map(|e| serde_json::from_str::<JobEnv>(&e))
            .transpose()
            .map_err(|e| corrupt("job environment", e))?,
    })
}

fn env_json(env: Option<&JobEnv>) -> Result<Option<String>, StoreError> {
    env.map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt("job environment", e))
}

pub(super) fn insert_job(
    conn: &mut Connection,
    id: &JobId,
    spec: &JobSpec,
    env: Option<&JobEnv>,
    event_body: &str,
) -> Result<(JobRecord, u64), StoreError> {
    let now = now_ms();
    let spec_json = serde_json::to_string(spec).map_err(|e| corrupt("job spec", e))?;
    let env_json = env_json(env)?;
    // Full: the client is about to be told the job's ID; the job must exist after a power loss.
    with_tx(conn, Durability::Full, |tx| {
        tx.execute(
            "INSERT INTO jobs (id, source, target, spec, state, created_ms, updated_ms, env)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![
                id.as_str(),
                spec.source,
                spec.target,
                spec_json,
                JobState::Queued.as_str(),
                i64_of(now),
                env_json
            ],
        )?;
        insert_event(tx, id, now, event_body, true)
    })
    .map(|seq| {
        (
            JobRecord {
                id: id.clone(),
                spec: spec.clone(),
                state: JobState::Queued,
                reason: None,
                manifest_digest: None,
                created_ms: now,
                updated_ms: now,
                env: env.cloned(),
            },
            seq,
        )
    })
}

pub(super) fn job(conn: &mut Connection, id: &JobId) -> Result<JobRecord, StoreError> {
    read_job(conn, id)
}

/// One job, read on a connection or inside a transaction.
fn read_job(conn: &Connection, id: &JobId) -> Result<JobRecord, StoreError> {
    let raw = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [id.as_str()],
            raw_job,
        )
        .optional()?
        .ok_or_else(|| StoreError::NoSuchJob(id.clone()))?;
    job_of(raw)
}

pub(super) fn jobs(conn: &mut Connection) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_ms, id"
    ))?;
    let raws = stmt
        .query_map([], raw_job)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(job_of).collect()
}

pub(super) fn set_state(
    conn: &mut Connection,
    id: &JobId,
    state: JobState,
    reason: Option<&str>,
    manifest_digest: Option<&Digest>,
    event_body: &str,
) -> Result<(u64, u64), StoreError> {
    let now = now_ms();
    with_tx(conn, state_durability(state), |tx| {
        let before: Option<String> = tx
            .query_row("SELECT state FROM jobs WHERE id = ?1", [id.as_str()], |r| {
                r.get(0)
            })
            .optional()?;
        let before = before.ok_or_else(|| StoreError::NoSuchJob(id.clone()))?;
        tx.execute(
            "UPDATE jobs SET state = ?2, reason = ?3,
                 manifest_digest = COALESCE(?4, manifest_digest), updated_ms = ?5
             WHERE id = ?1",
            params![
                id.as_str(),
                state.as_str(),
                reason,
                manifest_digest.map(|d| d.to_string()),
                i64_of(now)
            ],
        )?;
        // A change of state (and every final state) is the job's history; the same state
        // again only says what a running job waits for, which a long outage repeats.
        let essential = before != state.as_str() || state.is_final();
        Ok((insert_event(tx, id, now, event_body, essential)?, now))
    })
}

pub(super) fn set_job_bandwidth(
    conn: &mut Connection,
    id: &JobId,
    bytes_per_s: Option<u64>,
) -> Result<JobRecord, StoreError> {
    change_options(conn, id, |o| o.bandwidth_bytes_per_s = bytes_per_s)
}

pub(super) fn set_job_deadline(
    conn: &mut Connection,
    id: &JobId,
    deadline_unix_s: Option<u64>,
) -> Result<JobRecord, StoreError> {
    change_options(conn, id, |o| o.deadline_unix_s = deadline_unix_s)
}

/// Changes a job's options in its spec. Read, change and write in one transaction: the spec
/// is JSON, and it is checked again on the way out like on the way in.
fn change_options(
    conn: &mut Connection,
    id: &JobId,
    change: impl FnOnce(&mut crate::api::JobOptions),
) -> Result<JobRecord, StoreError> {
    let now = now_ms();
    with_tx(conn, Durability::Full, |tx| {
        let mut job = read_job(tx, id)?;
        change(&mut job.spec.options);
        job.updated_ms = now;
        let spec_json = serde_json::to_string(&job.spec).map_err(|e| corrupt("job spec", e))?;
        tx.execute(
            "UPDATE jobs SET spec = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id.as_str(), spec_json, i64_of(now)],
        )?;
        Ok(job)
    })
}

pub(super) fn set_job_env(
    conn: &mut Connection,
    id: &JobId,
    env: Option<&JobEnv>,
) -> Result<(), StoreError> {
    let env_json = env_json(env)?;
    with_tx(conn, Durability::Full, |tx| {
        let n = tx.execute(
            "UPDATE jobs SET env = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id.as_str(), env_json, i64_of(now_ms())],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchJob(id.clone()));
        }
        Ok(())
    })
}

pub(super) fn delete_job(conn: &mut Connection, id: &JobId) -> Result<(), StoreError> {
    // Full: a deleted job must not come back after a power loss and run again.
    with_tx(conn, Durability::Full, |tx| {
        let n = tx.execute("DELETE FROM jobs WHERE id = ?1", [id.as_str()])?;
        if n == 0 {
            return Err(StoreError::NoSuchJob(id.clone()));
        }
        Ok(())
    })
}

/// Deletes the jobs in one of `states` whose last change is older than `ended_before_ms`,
/// except `spare`, with their blobs, cursors, progress and events; returns their IDs.
pub(super) fn prune_jobs(
    conn: &mut Connection,
    states: &[JobState],
    ended_before_ms: u64,
    spare: &[JobId],
) -> Result<Vec<JobId>, StoreError> {
    // Normal: a prune lost to a power loss is done again by the next one.
    with_tx(conn, Durability::Normal, |tx| {
        let mut old = Vec::new();
        let mut stmt = tx.prepare("SELECT id FROM jobs WHERE state = ?1 AND updated_ms < ?2")?;
        for state in states {
            let ids = stmt
                .query_map(params![state.as_str(), i64_of(ended_before_ms)], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for id in ids {
                old.push(id.parse::<JobId>().map_err(|e| corrupt("job id", e))?);
            }
        }
        old.retain(|id| !spare.contains(id));
        for id in &old {
            tx.execute("DELETE FROM jobs WHERE id = ?1", [id.as_str()])?;
        }
        Ok(old)
    })
}

pub(super) fn put_blobs(
    conn: &mut Connection,
    id: &JobId,
    blobs: &[NewBlob],
) -> Result<(), StoreError> {
    // Normal: a lost plan is made again from the source on resume.
    with_tx(conn, Durability::Normal, |tx| {
        let keep: Vec<String> = blobs.iter().map(|b| b.digest.to_string()).collect();
        {
            let mut existing = tx.prepare("SELECT digest FROM blobs WHERE job_id = ?1")?;
            let old = existing
                .query_map([id.as_str()], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for digest in old.iter().filter(|d| !keep.contains(d)) {
                tx.execute(
                    "DELETE FROM blobs WHERE job_id = ?1 AND digest = ?2",
                    params![id.as_str(), digest],
                )?;
            }
        }
        for (position, blob) in blobs.iter().enumerate() {
            insert_blob(
                tx,
                id,
                position,
                blob,
                "DO UPDATE SET position = excluded.position, size_bytes = excluded.size_bytes,
                     media_type = excluded.media_type, action = excluded.action",
            )?;
        }
        Ok(())
    })
}

/// Inserts one pending blob at `position`; `on_conflict` says what a row the job has already
/// for the digest gets (`DO ...` of SQLite's upsert).
fn insert_blob(
    tx: &Transaction<'_>,
    id: &JobId,
    position: usize,
    blob: &NewBlob,
    on_conflict: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO blobs (job_id, digest, position, size_bytes, media_type, action, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (job_id, digest) {on_conflict}"
        ),
        params![
            id.as_str(),
            blob.digest.to_string(),
            position as i64,
            i64_of(blob.size_bytes),
            blob.media_type,
            blob.action.as_str(),
            BlobState::Pending.as_str()
        ],
    )?;
    Ok(())
}

/// A blob row as read, before its values are checked.
struct RawBlob {
    digest: String,
    size: u64,
    media_type: String,
    action: String,
    state: String,
    session_url: Option<String>,
    offset: Option<i64>,
    chunks: Option<i64>,
    bytes: Option<i64>,
    pushed_digest: Option<String>,
    pushed_size: Option<i64>,
}

/// Records one blob at `position` unless the job has it already (then it keeps its
/// position, state and cursor until the whole plan is recorded by [`put_blobs`]).
pub(super) fn add_blob(
    conn: &mut Connection,
    id: &JobId,
    position: usize,
    blob: &NewBlob,
) -> Result<(), StoreError> {
    // Normal, as put_blobs: a lost row is recorded again from the spool on resume.
    with_tx(conn, Durability::Normal, |tx| {
        insert_blob(tx, id, position, blob, "DO NOTHING")
    })
}

pub(super) fn blobs(conn: &mut Connection, id: &JobId) -> Result<Vec<BlobRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT b.digest, b.size_bytes, b.media_type, b.action, b.state,
                c.session_url, c.offset_bytes, p.chunks_done, p.bytes_done,
                b.pushed_digest, b.pushed_size_bytes
         FROM blobs b
         LEFT JOIN upload_cursors c ON c.job_id = b.job_id AND c.digest = b.digest
         LEFT JOIN compress_progress p ON p.job_id = b.job_id AND p.digest = b.digest
         WHERE b.job_id = ?1 ORDER BY b.position",
    )?;
    let raws = stmt
        .query_map([id.as_str()], |r| {
            Ok(RawBlob {
                digest: r.get(0)?,
                size: u64_col(r, 1)?,
                media_type: r.get(2)?,
                action: r.get(3)?,
                state: r.get(4)?,
                session_url: r.get(5)?,
                offset: r.get(6)?,
                chunks: r.get(7)?,
                bytes: r.get(8)?,
                pushed_digest: r.get(9)?,
                pushed_size: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(blob_of).collect()
}

/// Checks a blob row read back, as it was checked before writing.
fn blob_of(raw: RawBlob) -> Result<BlobRecord, StoreError> {
    let non_negative = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let record = BlobRecord {
        digest: Digest::parse(&raw.digest).map_err(|e| corrupt("blob digest", e))?,
        size_bytes: raw.size,
        media_type: raw.media_type,
        action: raw.action.parse().map_err(|e| corrupt("blob action", e))?,
        state: raw.state.parse().map_err(|e| corrupt("blob state", e))?,
        cursor: match (raw.session_url, raw.offset) {
            (Some(session_url), Some(offset)) => Some(CursorRecord {
                session_url,
                offset_bytes: offset.max(0) as u64,
            }),
            _ => None,
        },
        chunks_done: non_negative(raw.chunks),
        compressed_bytes: non_negative(raw.bytes),
        pushed: match (raw.pushed_digest, raw.pushed_size) {
            (Some(d), Some(size)) => Some(Pushed {
                digest: Digest::parse(&d).map_err(|e| corrupt("pushed digest", e))?,
                size_bytes: size.max(0) as u64,
            }),
            _ => None,
        },
    };
    // The pair of the check in `save_cursor`.
    if let Some(c) = &record.cursor {
        let limit = match (&record.pushed, record.action) {
            (Some(p), _) => Some(p.size_bytes),
            (None, crate::api::BlobAction::AsIs) => Some(record.size_bytes),
            (None, crate::api::BlobAction::Compress) => None,
        };
        if limit.is_some_and(|l| c.offset_bytes > l) {
            return Err(corrupt(
                "upload cursor",
                format!(
                    "offset {} past the end of blob {}",
                    c.offset_bytes, record.digest
                ),
            ));
        }
    }
    Ok(record)
}

fn blob_exists(tx: &Transaction<'_>, id: &JobId, digest: &Digest) -> Result<(), StoreError> {
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM blobs WHERE job_id = ?1 AND digest = ?2",
            params![id.as_str(), digest.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} has no blob {digest} in its plan")))
}

/// The size an upload of the blob cannot exceed, when it is known: the pushed size of a
/// compressed blob, the source size of a blob pushed as is.
fn upload_size_limit(
    tx: &Transaction<'_>,
    id: &JobId,
    digest: &Digest,
) -> Result<Option<u64>, StoreError> {
    let (size, action, pushed): (i64, String, Option<i64>) = tx.query_row(
        "SELECT size_bytes, action, pushed_size_bytes FROM blobs WHERE job_id = ?1 AND digest = ?2",
        params![id.as_str(), digest.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(match (pushed, action.as_str()) {
        (Some(p), _) => Some(p.max(0) as u64),
        (None, "as_is") => Some(size.max(0) as u64),
        // Compressed bytes may be larger than the source (incompressible data): no limit yet.
        (None, _) => None,
    })
}

pub(super) fn set_blob_state(
    conn: &mut Connection,
    id: &JobId,
    digest: &Digest,
    state: BlobState,
) -> Result<(), StoreError> {
    with_tx(conn, Durability::Normal, |tx| {
        blob_exists(tx, id, digest)?;
        tx.execute(
            "UPDATE blobs SET state = ?3 WHERE job_id = ?1 AND digest = ?2",
            params![id.as_str(), digest.to_string(), state.as_str()],
        )?;
        Ok(())
    })
}

pub(super) fn set_blob_pushed(
    conn: &mut Connection,
    id: &JobId,
    digest: &Digest,
    pushed: &Pushed,
) -> Result<(), StoreError> {
    with_tx(conn, Durability::Normal, |tx| {
        blob_exists(tx, id, digest)?;
        tx.execute(
            "UPDATE blobs SET pushed_digest = ?3, pushed_size_bytes = ?4
             WHERE job_id = ?1 AND digest = ?2",
            params![
                id.as_str(),
                digest.to_string(),
                pushed.digest.to_string(),
                i64_of(pushed.size_bytes)
            ],
        )?;
        Ok(())
    })
}

/// Records how the job splits a layer; the first record of a layer stays (a rerun of the same
/// job computes the same layout).
pub(super) fn save_split(
    conn: &mut Connection,
    id: &JobId,
    layer: &Digest,
    layout: &str,
) -> Result<(), StoreError> {
    with_tx(conn, Durability::Normal, |tx| {
        tx.execute(
            "INSERT INTO layer_splits (job_id, layer_digest, layout) VALUES (?1, ?2, ?3)
             ON CONFLICT (job_id, layer_digest) DO NOTHING",
            params![id.as_str(), layer.to_string(), layout],
        )?;
        Ok(())
    })
}

/// The job's recorded layer splits: (layer diff_id, layout JSON).
pub(super) fn splits(
    conn: &mut Connection,
    id: &JobId,
) -> Result<Vec<(Digest, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT layer_digest, layout FROM layer_splits WHERE job_id = ?1 ORDER BY layer_digest",
    )?;
    let rows = stmt
        .query_map([id.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(d, layout)| {
            let d = Digest::parse(&d).map_err(|e| corrupt("split layer digest", e))?;
            Ok((d, layout))
        })
        .collect()
}

pub(super) fn save_cursor(
    conn: &mut Connection,
    id: &JobId,
    digest: &Digest,
    cursor: &CursorRecord,
) -> Result<(), StoreError> {
    // Normal: see Store::save_cursor. Committed before the next chunk is sent.
    with_tx(conn, Durability::Normal, |tx| {
        blob_exists(tx, id, digest)?;
        // Checked before writing (and again by `blob_of` after reading): an offset past the
        // end of the bytes being uploaded is a bug upstream, never something to resume from.
        if let Some(size) = upload_size_limit(tx, id, digest)?
            && cursor.offset_bytes > size
        {
            return Err(StoreError::Corrupt(format!(
                "an upload cursor at {} bytes is past the end of blob {digest} ({size} bytes)",
                cursor.offset_bytes
            )));
        }
        tx.execute(
            "INSERT INTO upload_cursors (job_id, digest, session_url, offset_bytes, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id, digest) DO UPDATE SET session_url = excluded.session_url,
                 offset_bytes = excluded.offset_bytes, updated_ms = excluded.updated_ms",
            params![
                id.as_str(),
                digest.to_string(),
                cursor.session_url,
                i64_of(cursor.offset_bytes),
                i64_of(now_ms())
            ],
        )?;
        Ok(())
    })
}

pub(super) fn clear_cursor(
    conn: &mut Connection,
    id: &JobId,
    digest: &Digest,
) -> Result<(), StoreError> {
    with_tx(conn, Durability::Normal, |tx| {
        tx.execute(
            "DELETE FROM upload_cursors WHERE job_id = ?1 AND digest = ?2",
            params![id.as_str(), digest.to_string()],
        )?;
        Ok(())
    })
}

pub(super) fn save_compress_progress(
    conn: &mut Connection,
    id: &JobId,
    digest: &Digest,
    chunks_done: u64,
    bytes_done: u64,
) -> Result<(), StoreError> {
    with_tx(conn, Durability::Normal, |tx| {
        blob_exists(tx, id, digest)?;
        tx.execute(
            "INSERT INTO compress_progress (job_id, digest, chunks_done, bytes_done)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job_id, digest) DO UPDATE SET chunks_done = excluded.chunks_done,
                 bytes_done = excluded.bytes_done",
            params![
                id.as_str(),
                digest.to_string(),
                i64_of(chunks_done),
                i64_of(bytes_done)
            ],
        )?;
        Ok(())
    })
}

/// Appends an event and trims the job's log to [`EVENTS_PER_JOB_MAX`]: the oldest events
/// that are not `essential` go first, so state changes and the final state always stay.
fn insert_event(
    tx: &Transaction<'_>,
    id: &JobId,
    time_ms: u64,
    body: &str,
    essential: bool,
) -> Result<u64, StoreError> {
    tx.execute(
        "INSERT INTO events (job_id, time_ms, body, essential) VALUES (?1, ?2, ?3, ?4)",
        params![id.as_str(), i64_of(time_ms), body, essential],
    )?;
    let seq = tx.last_insert_rowid().max(0) as u64;
    let count: i64 = tx.query_row(
        "SELECT COUNT(*) FROM events WHERE job_id = ?1",
        [id.as_str()],
        |r| r.get(0),
    )?;
    let excess = count - i64_of(EVENTS_PER_JOB_MAX);
    if excess > 0 {
        tx.execute(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events WHERE job_id = ?1 AND essential = 0
                 ORDER BY seq LIMIT ?2)",
            params![id.as_str(), excess],
        )?;
    }
    Ok(seq)
}

/// Whether an event appended outside a state change stays when the log is trimmed: the
/// plan's blobs, finished blobs and warnings are few; progress and retries are what a long
/// push or a long outage repeats. A body that does not decode is kept.
fn is_essential(body: &str) -> bool {
    !matches!(
        crate::api::decode::<EventKind>("event", body.as_bytes()),
        Ok(EventKind::Progress { .. }
            | EventKind::Compress { .. }
            | EventKind::Export { .. }
            | EventKind::Retry { .. })
    )
}

pub(super) fn append_event(
    conn: &mut Connection,
    id: &JobId,
    body: &str,
) -> Result<(u64, u64), StoreError> {
    let now = now_ms();
    // Normal: events are a log for people; the job's state row is what matters.
    with_tx(conn, Durability::Normal, |tx| {
        Ok((insert_event(tx, id, now, body, is_essential(body))?, now))
    })
}

pub(super) fn events_after(
    conn: &mut Connection,
    id: &JobId,
    after: u64,
    page_events_max: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, time_ms, body FROM events WHERE job_id = ?1 AND seq > ?2
         ORDER BY seq LIMIT ?3",
    )?;
    let page = i64::try_from(page_events_max).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![id.as_str(), i64_of(after), page], |r| {
            Ok(EventRecord {
                seq: u64_col(r, 0)?,
                job: id.clone(),
                time_ms: u64_col(r, 1)?,
                body: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn count_by_state(conn: &mut Connection) -> Result<Vec<(JobState, u64)>, StoreError> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let raws = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, u64_col(r, 1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|(s, n)| Ok((s.parse().map_err(|e| corrupt("job state", e))?, n)))
        .collect()
}

pub(super) fn integrity_check(conn: &mut Connection) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if lines != ["ok"] {
        return Err(StoreError::Integrity(lines.join("; ")));
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let broken = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if !broken.is_empty() {
        return Err(StoreError::Integrity(format!(
            "rows with dangling references in {}",
            broken.join(", ")
        )));
    }
    Ok(())
}
