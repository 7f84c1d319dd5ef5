use super::*;
use crate::api::{BlobAction, Compression, JobOptions};
use crate::platform::Platform;

fn spec() -> JobSpec {
    JobSpec {
        source: "docker-archive:/tmp/a.tar".into(),
        target: "127.0.0.1:5000/a:1".into(),
        platform: Platform::linux_amd64(),
        compression: Compression::Zstd,
        chunk_size_bytes: crate::api::CHUNK_BYTES_DEFAULT,
        extra_tags: Vec::new(),
        split_layers: crate::api::SplitLayers::MaxBytes(1 << 20),
        options: JobOptions::default(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens the store in `dir` and checks that it reached the latest schema version.
async fn open_latest(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        schema::latest_version()
    );
    store
}

/// Inserts a job of `spec()` under `id`, with an empty state body.
async fn insert_plain_job(store: &Store, id: &JobId) {
    store
        .insert_job(id.clone(), spec(), None, "{}".into())
        .await
        .unwrap();
}

#[test]
fn migrates_fresh_and_reopens_and_refuses_newer() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = open_latest(dir.path()).await;
        store.integrity_check().await.unwrap();
    });
    // Reopening runs no migration twice (it would fail on CREATE TABLE).
    rt().block_on(async {
        open_latest(dir.path()).await;
    });
    let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
    conn.pragma_update(None, "user_version", schema::latest_version() + 1)
        .unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew { .. })
    ));
}

#[test]
fn migrates_from_every_older_version() {
    // A database left at version 0 (empty file) reaches the latest version with WAL on.
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join("hoist.db")).unwrap();
    rt().block_on(async {
        open_latest(dir.path()).await;
    });
    let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A database at schema `version`, written as that version's hoistd did, holding one
/// uploading job `id`.
fn older_database(dir: &std::path::Path, version: usize, id: &JobId) -> Connection {
    let mut conn = Connection::open(dir.join("hoist.db")).unwrap();
    for (done, migration) in schema::MIGRATIONS[..version].iter().enumerate() {
        let tx = conn.transaction().unwrap();
        tx.execute_batch(migration).unwrap();
        tx.pragma_update(None, "user_version", done as i64 + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    conn.execute(
        "INSERT INTO jobs (id, source, target, spec, state, created_ms, updated_ms)
         VALUES (?1, 's', 't', ?2, 'uploading', 1, 2)",
        rusqlite::params![id.as_str(), serde_json::to_string(&spec()).unwrap()],
    )
    .unwrap();
    conn
}

#[test]
fn version_1_rows_survive_the_migration_to_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    let digest = Digest::sha256_of(b"layer");
    {
        let conn = older_database(dir.path(), 1, &id);
        conn.execute(
            "INSERT INTO blobs (job_id, digest, position, size_bytes, media_type, action, state)
             VALUES (?1, ?2, 0, 10, 'm', 'compress', 'uploading')",
            rusqlite::params![id.as_str(), digest.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO upload_cursors (job_id, digest, session_url, offset_bytes, updated_ms)
             VALUES (?1, ?2, 'http://r/u/1', 4, 3)",
            rusqlite::params![id.as_str(), digest.to_string()],
        )
        .unwrap();
    }
    rt().block_on(async {
        let store = open_latest(dir.path()).await;
        let job = store.job(id.clone()).await.unwrap();
        assert_eq!((job.state, job.created_ms), (JobState::Uploading, 1));
        let blobs = store.blobs(id.clone()).await.unwrap();
        assert_eq!(blobs[0].cursor.as_ref().unwrap().offset_bytes, 4);
        assert_eq!(blobs[0].pushed, None);
        assert_eq!(blobs[0].upload_size_bytes(), 10);
        let pushed = Pushed {
            digest: Digest::sha256_of(b"compressed"),
            size_bytes: 7,
        };
        store
            .set_blob_pushed(id.clone(), digest.clone(), pushed.clone())
            .await
            .unwrap();
        let blobs = store.blobs(id.clone()).await.unwrap();
        assert_eq!(blobs[0].pushed, Some(pushed));
        assert_eq!(blobs[0].upload_size_bytes(), 7);
        store.integrity_check().await.unwrap();
    });
}

fn layer(d: &Digest) -> NewBlob {
    NewBlob {
        digest: d.clone(),
        size_bytes: 10,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        action: BlobAction::Compress,
    }
}

/// A queued job (its first event's body `{}`) with `blobs` planned; returns its ID and the
/// first event's seq.
async fn planned_job(store: &Store, blobs: Vec<NewBlob>) -> (JobId, u64) {
    let id = JobId::random();
    let (job, seq) = store
        .insert_job(id.clone(), spec(), None, "{}".into())
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(store.job(id.clone()).await.unwrap(), job);
    store.put_blobs(id.clone(), blobs).await.unwrap();
    (id, seq)
}

fn cursor_at(offset_bytes: u64) -> CursorRecord {
    CursorRecord {
        session_url: "http://r/v2/a/blobs/uploads/x".into(),
        offset_bytes,
    }
}

/// Every event of the job, paged through as a follower reads them.
async fn all_events(store: &Store, id: &JobId) -> Vec<EventRecord> {
    let mut all: Vec<EventRecord> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store.events_after(id.clone(), after, 100).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[test]
fn blobs_keep_their_progress_when_planned_again() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let (id, _) = planned_job(&store, vec![layer(&a), layer(&b)]).await;
        let cursor = cursor_at(5);
        store
            .save_cursor(id.clone(), a.clone(), cursor.clone())
            .await
            .unwrap();
        store
            .save_compress_progress(id.clone(), a.clone(), 2, 7)
            .await
            .unwrap();
        store
            .set_blob_state(id.clone(), b.clone(), BlobState::Existed)
            .await
            .unwrap();
        // Planning again keeps progress of blobs still planned and drops the others.
        store.put_blobs(id.clone(), vec![layer(&a)]).await.unwrap();
        let blobs = store.blobs(id.clone()).await.unwrap();
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].cursor, Some(cursor.clone()));
        assert_eq!((blobs[0].chunks_done, blobs[0].compressed_bytes), (2, 7));
        // A cursor for a blob outside the plan is refused, not stored.
        let err = store.save_cursor(id.clone(), b, cursor).await.unwrap_err();
        assert!(err.to_string().contains("no blob"), "{err}");
    });
}

#[test]
fn a_cursor_past_the_end_is_refused_when_written() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let a = Digest::sha256_of(b"a");
        let (id, _) = planned_job(&store, vec![layer(&a)]).await;
        let cursor = cursor_at(5);
        store
            .save_cursor(id.clone(), a.clone(), cursor.clone())
            .await
            .unwrap();
        let pushed = Pushed {
            digest: Digest::sha256_of(b"gz"),
            size_bytes: 8,
        };
        store
            .set_blob_pushed(id.clone(), a.clone(), pushed)
            .await
            .unwrap();
        let err = store
            .save_cursor(id.clone(), a.clone(), cursor_at(9))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        assert_eq!(store.blobs(id).await.unwrap()[0].cursor, Some(cursor));
    });
}

#[test]
fn states_and_events_round_trip_and_a_delete_cascades() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let (id, seq1) = planned_job(&store, vec![layer(&Digest::sha256_of(b"a"))]).await;
        let digest = Digest::sha256_of(b"manifest");
        let (seq2, _) = store
            .set_state(
                id.clone(),
                JobState::Done,
                None,
                Some(digest.clone()),
                "{}".into(),
            )
            .await
            .unwrap();
        assert!(seq2 > seq1);
        let job = store.job(id.clone()).await.unwrap();
        assert_eq!(
            (job.state, job.manifest_digest),
            (JobState::Done, Some(digest))
        );
        let seqs = |events: Vec<EventRecord>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        let events = store.events_after(id.clone(), 0, 10).await.unwrap();
        assert_eq!(seqs(events), vec![seq1, seq2]);
        // Pages: at most the number asked for, continuing after the last seq given.
        let first = store.events_after(id.clone(), 0, 1).await.unwrap();
        assert_eq!(seqs(first), vec![seq1]);
        let rest = store.events_after(id.clone(), seq1, 10).await.unwrap();
        assert_eq!(seqs(rest), vec![seq2]);
        assert_eq!(
            store.count_by_state().await.unwrap(),
            vec![(JobState::Done, 1)]
        );

        store.delete_job(id.clone()).await.unwrap();
        assert!(matches!(
            store.job(id.clone()).await,
            Err(StoreError::NoSuchJob(_))
        ));
        assert!(store.blobs(id.clone()).await.unwrap().is_empty());
        assert!(store.events_after(id, 0, 10).await.unwrap().is_empty());
        store.integrity_check().await.unwrap();
    });
}

fn body(kind: &crate::api::EventKind) -> String {
    String::from_utf8(crate::api::encode(kind)).unwrap()
}

fn state_body(state: JobState, reason: Option<&str>) -> String {
    body(&crate::api::EventKind::State {
        state,
        reason: reason.map(String::from),
        manifest_digest: None,
    })
}

#[test]
fn a_long_outage_keeps_the_log_bounded_with_every_state_change() {
    use crate::api::EventKind;
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let id = JobId::random();
        let queued = state_body(JobState::Queued, None);
        store
            .insert_job(id.clone(), spec(), None, queued)
            .await
            .unwrap();
        let warning = body(&EventKind::Warning {
            message: "other platforms are not pushed".into(),
        });
        store
            .append_event(id.clone(), warning.clone())
            .await
            .unwrap();
        let up = state_body(JobState::Uploading, None);
        let uploading = |b: String| store.set_state(id.clone(), JobState::Uploading, None, None, b);
        uploading(up.clone()).await.unwrap();
        // What one retry of a push leaves: the retry, the reason while waiting, its end.
        let retries = EVENTS_PER_JOB_MAX;
        for attempt in 0..retries {
            let retry = body(&EventKind::Retry {
                what: "PATCH chunk at 0".into(),
                reason: format!("attempt {attempt}: connection refused"),
            });
            store.append_event(id.clone(), retry).await.unwrap();
            let waiting = state_body(JobState::Uploading, Some("waiting for network"));
            uploading(waiting).await.unwrap();
            uploading(up.clone()).await.unwrap();
        }
        let failed = state_body(JobState::Failed, Some("deadline passed"));
        store
            .set_state(id.clone(), JobState::Failed, None, None, failed.clone())
            .await
            .unwrap();
        let events = all_events(&store, &id).await;
        assert!(
            events.len() as u64 <= EVENTS_PER_JOB_MAX,
            "{}",
            events.len()
        );
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        // The state changes and the warning stay, in order; the newest retries are kept.
        let queued = state_body(JobState::Queued, None);
        assert_eq!(
            bodies[..3],
            [queued.as_str(), warning.as_str(), up.as_str()]
        );
        assert_eq!(bodies.last(), Some(&failed.as_str()));
        let last_retry = format!("attempt {}: connection refused", retries - 1);
        assert!(bodies.iter().any(|b| b.contains(&last_retry)));
        assert!(!bodies.iter().any(|b| b.contains("attempt 0:")));
    });
}

#[test]
fn the_migration_marks_old_progress_and_retries_as_trimmable() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    {
        let conn = older_database(dir.path(), 2, &id);
        let retry = r#"{"type":"retry","what":"w","reason":"r"}"#;
        for b in [r#"{"type":"state","state":"queued"}"#, "not json", retry] {
            conn.execute(
                "INSERT INTO events (job_id, time_ms, body) VALUES (?1, 0, ?2)",
                rusqlite::params![id.as_str(), b],
            )
            .unwrap();
        }
    }
    rt().block_on(async {
        Store::open(dir.path()).unwrap();
    });
    let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT essential FROM events ORDER BY seq")
        .unwrap();
    let kept: Vec<bool> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, [true, true, false]);
}

#[test]
fn integrity_check_finds_dangling_rows() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        store.integrity_check().await.unwrap();
    });
    // Write a dangling event behind the store's back, with foreign keys off.
    let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.execute(
        "INSERT INTO events (job_id, time_ms, body) VALUES ('jffffffffffffffff', 0, '{}')",
        [],
    )
    .unwrap();
    drop(conn);
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let err = store.integrity_check().await.unwrap_err();
        assert!(err.to_string().contains("events"), "{err}");
    });
}

#[test]
fn cursor_debug_leaves_the_query_out() {
    let c = CursorRecord {
        session_url: "https://r.example/v2/a/blobs/uploads/u1?_state=SECRET&X-Amz-Signature=S"
            .into(),
        offset_bytes: 3,
    };
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("SECRET") && !shown.contains("Signature"),
        "{shown}"
    );
    assert!(shown.contains("/v2/a/blobs/uploads/u1?REDACTED"), "{shown}");
}

#[test]
fn a_cursor_past_the_end_is_refused_when_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    let digest = Digest::sha256_of(b"as is");
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        insert_plain_job(&store, &id).await;
        let blob = NewBlob {
            digest: digest.clone(),
            size_bytes: 10,
            media_type: "m".into(),
            action: BlobAction::AsIs,
        };
        store.put_blobs(id.clone(), vec![blob]).await.unwrap();
    });
    // Written behind the store's back, as a bug or a damaged file would.
    let conn = Connection::open(dir.path().join("hoist.db")).unwrap();
    conn.execute(
        "INSERT INTO upload_cursors (job_id, digest, session_url, offset_bytes, updated_ms)
         VALUES (?1, ?2, 'http://r/u', 11, 0)",
        rusqlite::params![id.as_str(), digest.to_string()],
    )
    .unwrap();
    drop(conn);
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let err = store.blobs(id.clone()).await.unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    });
}

#[test]
fn a_job_limit_is_stored_in_the_spec_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        insert_plain_job(&store, &id).await;
        let job = store
            .set_job_bandwidth(id.clone(), Some(3 << 20))
            .await
            .unwrap();
        assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(3 << 20));
        // Nothing else of the spec changes.
        let mut want = spec();
        want.options.bandwidth_bytes_per_s = Some(3 << 20);
        assert_eq!(job.spec, want);
        assert!(matches!(
            store.set_job_bandwidth(JobId::random(), None).await,
            Err(StoreError::NoSuchJob(_))
        ));
    });
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let job = store.job(id.clone()).await.unwrap();
        assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(3 << 20));
        let job = store.set_job_bandwidth(id.clone(), None).await.unwrap();
        assert_eq!(job.spec, spec());
        assert_eq!(store.job(id).await.unwrap(), job);
    });
}

#[test]
fn extra_tags_and_env_are_stored_with_the_job_and_survive_a_limit_change_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    let want = JobSpec {
        extra_tags: vec!["2".into(), "stable".into()],
        ..spec()
    };
    // What the store keeps of a caller's environment: public values and secret names.
    let env = crate::api::JobEnv {
        vars: [("AWS_REGION".to_string(), "eu-west-1".to_string())].into(),
        secret_names: vec!["AWS_SESSION_TOKEN".into()],
        caller: Some(crate::api::Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![27, 998],
        }),
    };
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_job(id.clone(), want.clone(), Some(env.clone()), "{}".into())
            .await
            .unwrap();
        let job = store.set_job_bandwidth(id.clone(), None).await.unwrap();
        assert_eq!(job.spec, want);
        assert_eq!(job.env.as_ref(), Some(&env));
    });
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let job = store.job(id.clone()).await.unwrap();
        assert_eq!((job.spec, job.env), (want, Some(env)));
        store.set_job_env(id.clone(), None).await.unwrap();
        assert_eq!(store.job(id).await.unwrap().env, None);
    });
}

#[test]
fn prune_removes_old_jobs_in_the_given_states_with_their_rows_and_spares_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let a = Digest::sha256_of(b"a");
        let (done, _) = planned_job(&store, vec![layer(&a)]).await;
        store
            .save_cursor(done.clone(), a.clone(), cursor_at(5))
            .await
            .unwrap();
        let (failed, _) = planned_job(&store, vec![layer(&a)]).await;
        let (spared, _) = planned_job(&store, vec![layer(&a)]).await;
        let (young, _) = planned_job(&store, vec![layer(&a)]).await;
        for (id, state) in [
            (&done, JobState::Done),
            (&failed, JobState::Failed),
            (&spared, JobState::Done),
        ] {
            store
                .set_state(id.clone(), state, None, None, "{}".into())
                .await
                .unwrap();
        }
        let cutoff = now_ms() + 1;
        // `young` ends after the cutoff.
        std::thread::sleep(std::time::Duration::from_millis(2));
        store
            .set_state(young.clone(), JobState::Done, None, None, "{}".into())
            .await
            .unwrap();
        let pruned = store
            .prune_jobs(vec![JobState::Done], cutoff, vec![spared.clone()])
            .await
            .unwrap();
        assert_eq!(pruned, vec![done.clone()]);
        assert!(matches!(
            store.job(done.clone()).await,
            Err(StoreError::NoSuchJob(_))
        ));
        assert!(store.blobs(done.clone()).await.unwrap().is_empty());
        assert!(store.events_after(done, 0, 100).await.unwrap().is_empty());
        for id in [failed, spared, young] {
            store.job(id).await.unwrap();
        }
        store.integrity_check().await.unwrap();
    });
}

#[test]
fn layer_splits_are_kept_once_per_layer_and_go_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId::random();
    let layer = Digest::sha256_of(b"layer");
    rt().block_on(async {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_job(id.clone(), spec(), None, "{}".into())
            .await
            .unwrap();
        store
            .save_split(id.clone(), layer.clone(), "first".into())
            .await
            .unwrap();
        store
            .save_split(id.clone(), layer.clone(), "second".into())
            .await
            .unwrap();
        assert_eq!(
            store.splits(id.clone()).await.unwrap(),
            vec![(layer.clone(), "first".to_string())]
        );
        assert_eq!(store.job(id.clone()).await.unwrap().spec, spec());
        store.delete_job(id.clone()).await.unwrap();
        assert!(store.splits(id).await.unwrap().is_empty());
    });
}
