//! The socket API, driven through the socket: route/document parity, the job life cycle,
//! controls, events, metrics and error bodies.
use crate::daemon_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use daemon_support::*;
use hoist::api::{self, EventKind, JobState};
use hoist::cli::client::{Client, ClientError};
use hoist::daemon::Config;
use http::{Method, StatusCode};

/// `(METHOD, path)` pairs of `proto/openapi.yaml`: path keys at indent 2 under `paths:`,
/// method keys at indent 4 below them.
fn document_routes() -> BTreeSet<(String, String)> {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/openapi.yaml"))
        .unwrap();
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None::<String>;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ")
            && !m.starts_with(' ')
        {
            let key = m.trim_end().trim_end_matches(':');
            if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&key) {
                routes.insert((
                    key.to_uppercase(),
                    path.clone().expect("method before any path"),
                ));
            }
        }
    }
    routes
}

#[test]
fn route_table_and_openapi_document_agree() {
    let code: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let doc = document_routes();
    assert!(!doc.is_empty(), "no routes parsed from proto/openapi.yaml");
    let missing_in_doc: Vec<_> = code.difference(&doc).collect();
    let missing_in_code: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing_in_doc.is_empty() && missing_in_code.is_empty(),
        "routes in code but not in proto/openapi.yaml: {missing_in_doc:?}; in the document but not in code: {missing_in_code:?}"
    );
}

/// The `type` values the document lists for `Event` (its `type: { ... enum: [...] }` line).
fn document_event_types() -> BTreeSet<String> {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/openapi.yaml"))
        .unwrap();
    let event = yaml
        .split("\n    Event:\n")
        .nth(1)
        .expect("proto/openapi.yaml has an Event schema");
    let line = event
        .lines()
        .find(|l| l.trim_start().starts_with("type: { type: string, enum: ["))
        .expect("Event lists its types");
    let list = line
        .split_once("enum: [")
        .unwrap()
        .1
        .split_once(']')
        .unwrap()
        .0;
    list.split(',').map(|t| t.trim().to_string()).collect()
}

/// The event kinds that carry only texts.
fn text_event_kinds() -> [EventKind; 3] {
    [
        EventKind::Retry {
            what: "w".into(),
            reason: "r".into(),
        },
        EventKind::Warning {
            message: "m".into(),
        },
        EventKind::Note {
            message: "n".into(),
        },
    ]
}

/// One value of every event kind, as the daemon sends them. The match below stops compiling
/// when a kind is added, as a reminder to add it here (and so to the document check).
fn every_event_kind() -> Vec<EventKind> {
    let digest = hoist::digest::Digest::sha256_of(b"blob");
    let mut kinds = vec![
        EventKind::State {
            state: JobState::Done,
            reason: None,
            manifest_digest: None,
        },
        EventKind::Blob {
            digest: digest.clone(),
            size_bytes: 1,
            media_type: "m".into(),
            action: api::BlobAction::AsIs,
        },
        EventKind::Compress {
            digest: digest.clone(),
            chunks_done: 1,
            bytes_done: 1,
        },
        EventKind::Progress {
            digest: digest.clone(),
            offset_bytes: 1,
            size_bytes: 2,
        },
        EventKind::Resumed {
            digest: digest.clone(),
            offset_bytes: 1,
            size_bytes: 2,
        },
        EventKind::Restarted {
            digest: digest.clone(),
            offset_bytes: 1,
            size_bytes: 2,
            reason: "r".into(),
        },
        EventKind::BlobDone {
            digest,
            state: api::BlobState::Uploaded,
        },
        EventKind::Export {
            bytes_done: 1,
            size_bytes: 2,
            layers_done: 0,
            layers_total: 1,
        },
        EventKind::Deleted {},
    ];
    kinds.extend(text_event_kinds());
    for kind in &kinds {
        match kind {
            EventKind::State { .. }
            | EventKind::Blob { .. }
            | EventKind::Compress { .. }
            | EventKind::Export { .. }
            | EventKind::Progress { .. }
            | EventKind::Resumed { .. }
            | EventKind::Restarted { .. }
            | EventKind::BlobDone { .. }
            | EventKind::Retry { .. }
            | EventKind::Warning { .. }
            | EventKind::Note { .. }
            | EventKind::Deleted {} => {}
        }
    }
    kinds
}

#[test]
fn event_types_and_openapi_document_agree() {
    let code: BTreeSet<String> = every_event_kind()
        .iter()
        .map(|k| {
            let json = String::from_utf8(api::encode(k)).unwrap();
            let tag = json.split_once("\"type\":\"").expect("tagged by type").1;
            tag.split_once('"').unwrap().0.to_string()
        })
        .collect();
    let doc = document_event_types();
    assert_eq!(
        code, doc,
        "event types in code and in proto/openapi.yaml's Event differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_table_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(1, 1)));
    let client = daemon.client();
    let id = api::JobId::random();
    for route in api::ROUTES {
        let path = route.path.replace("{id}", id.as_str());
        let method: Method = route.method.parse().unwrap();
        let body = (route.method == "POST" && !path.contains(id.as_str())).then(|| b"{}".to_vec());
        let err = client.call(method, &path, body).await.err();
        // Served means: not "no such endpoint" and not "method not allowed".
        if let Some(ClientError::Api { status, message }) = &err {
            assert!(
                *status != StatusCode::METHOD_NOT_ALLOWED && !message.contains("no such endpoint"),
                "{} {} is in the route table but not served: {status} {message}",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_to_done_with_events_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let body = Scripted::new(5, 10);
    let daemon = TestDaemon::start(dir.path(), Arc::new(body.clone()));
    let client = daemon.client();
    let job = client
        .submit(&submit_request("docker-archive:/x.tar"))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.spec.chunk_size_bytes, api::CHUNK_BYTES_DEFAULT);

    let events = follow_live(&client, &job.id).await;
    check_live_events(&events);
    check_replay(&client, &job.id, &events).await;

    let job = client.job(&job.id).await.unwrap();
    assert_eq!(job.state, JobState::Done);
    // The spool of a finished job is removed.
    assert!(
        !daemon
            .state_dir
            .join("spool")
            .join(job.id.as_str())
            .exists()
    );
    assert_eq!(job.manifest_digest, Some(manifest_digest()));
    assert_eq!(job.blobs.len(), 1);
    assert_eq!(job.blobs[0].state, api::BlobState::Verified);
    assert_eq!(job.blobs[0].uploaded_bytes, 5 * CHUNK);
    assert_eq!(job.blobs[0].compressed_chunks, 5);
    assert_eq!(job.blobs[0].digest, layer_digest());
    assert_eq!(job.blobs[0].pushed_digest, Some(compressed_digest()));
    assert_eq!(job.blobs[0].pushed_size_bytes, Some(5 * CHUNK));

    check_done_metrics(&client).await;
    assert_eq!(client.jobs().await.unwrap().len(), 1);
    assert_eq!(body.starts(), vec![0]);
}

/// Follows a job live from the start: the stream ends by itself after the final event.
async fn follow_live(client: &Client, id: &api::JobId) -> Vec<api::Event> {
    let mut stream = client.events(id, 0, true).await.unwrap();
    let mut events = Vec::new();
    let collect = async {
        while let Some(ev) = stream.next().await {
            events.push(ev.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_millis(WAIT_MS_MAX), collect)
        .await
        .expect("the event stream ended by itself");
    events
}

/// The events of the scripted five-chunk job: every state in order, increasing `seq`, one
/// progress event per chunk boundary, the manifest digest in the last one.
fn check_live_events(events: &[api::Event]) {
    let states: Vec<JobState> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::State { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    use JobState::*;
    assert_eq!(
        states,
        vec![
            Queued, Preparing, Uploading, Verifying, Committing, Verified, Done
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {seqs:?}"
    );
    let offsets: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Progress { offset_bytes, .. } => Some(*offset_bytes),
            _ => None,
        })
        .collect();
    assert_eq!(offsets, (0..=5).map(|i| i * CHUNK).collect::<Vec<_>>());
    match &events.last().unwrap().kind {
        EventKind::State {
            manifest_digest: d, ..
        } => assert_eq!(d.as_ref(), Some(&manifest_digest())),
        other => panic!("last event is {other:?}"),
    }
}

/// A late follower replays the same log and ends; `after` skips what it saw.
async fn check_replay(client: &Client, id: &api::JobId, events: &[api::Event]) {
    let mut replay = client.events(id, 0, true).await.unwrap();
    let mut n = 0;
    while let Some(ev) = replay.next().await {
        assert_eq!(ev.unwrap(), events[n]);
        n += 1;
    }
    assert_eq!(n, events.len());
    let mut tail = client
        .events(id, events[events.len() - 2].seq, false)
        .await
        .unwrap();
    assert_eq!(tail.next().await.unwrap().unwrap(), *events.last().unwrap());
    assert!(tail.next().await.is_none());
}

/// The metrics after the scripted five-chunk job is done.
async fn check_done_metrics(client: &Client) {
    let metrics = client.metrics().await.unwrap();
    let bytes_total = format!("hoist_upload_bytes_total {}", 5 * CHUNK);
    let lines = [
        "hoist_upload_chunks_total 5",
        &bytes_total,
        "hoist_retries_total 0",
        "hoist_resumes_total 0",
        "hoist_jobs{state=\"done\"} 1",
        "hoist_jobs{state=\"queued\"} 0",
        "hoist_upload_slots_in_use 0",
        "hoist_jobs_running 0",
    ];
    assert_lines(&metrics, &lines, "metrics");
    assert!(metrics.contains("# TYPE hoist_upload_bytes_total counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_cancel_delete() {
    let dir = tempfile::tempdir().unwrap();
    let body = Scripted::new(400, 20);
    let daemon = TestDaemon::start(dir.path(), Arc::new(body.clone()));
    let client = daemon.client();
    let id = submit_uploading(&client, "oci:/img", 2).await;
    let paused_at = pause_and_check(&daemon, &client, &id).await;

    // Resume: continues from the saved cursor, not from zero.
    // The reply shows the job queued, or already started again.
    let state = client.control(&id, "resume").await.unwrap().state;
    assert!(
        matches!(state, JobState::Queued | JobState::Preparing),
        "{state}"
    );
    wait_job(&client, &id, "uploading again", |j| uploaded(j) > paused_at).await;
    let starts = body.starts();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(
        starts[1], paused_at,
        "resumed from {starts:?}, paused at {paused_at}"
    );

    cancel_and_delete_running(&daemon, &client, &id).await;
}

/// The caller's environment sent with a job: the job shows its public values and the secret
/// variables' names, never their values; a resume that sends another replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_env_shows_secret_names_only_and_a_resume_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(400, 20)));
    let client = daemon.client();
    let env = |pairs: &[(&str, &str)]| {
        api::EnvVars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let request = api::SubmitRequest {
        env: Some(env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_SESSION_TOKEN", "t0k3n-in-memory"),
        ])),
        ..submit_request("oci:/img")
    };
    let id = client.submit(&request).await.unwrap().id;
    wait_state(&client, &id, JobState::Uploading).await;
    let raw = client
        .call(Method::GET, &api::job_path(&id, ""), None)
        .await
        .unwrap();
    let job: api::Job = api::decode("job", &raw).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("t0k3n-in-memory"));
    let kept = job.env.expect("the job keeps its env");
    assert_eq!(
        kept.vars.get("AWS_REGION").map(String::as_str),
        Some("eu-west-1")
    );
    assert_eq!(kept.secret_names, ["AWS_SESSION_TOKEN"]);

    client.control(&id, "pause").await.unwrap();
    let again = api::ControlRequest {
        env: Some(env(&[("AWS_REGION", "us-east-1")])),
    };
    let job = client
        .control_with(&id, "resume", Some(&again))
        .await
        .unwrap();
    let kept = job.env.expect("the job keeps its env");
    assert_eq!(
        kept.vars.get("AWS_REGION").map(String::as_str),
        Some("us-east-1")
    );
    assert!(kept.secret_names.is_empty());
}

/// A body that records the session token each run sees, then: fails quoting it while it has
/// one (as a credential helper run with `set -x` would), is refused without it, and pushes
/// once the third run has it again.
struct EnvProbe {
    seen: std::sync::Mutex<Vec<Option<String>>>,
}

impl hoist::daemon::job::JobBody for EnvProbe {
    fn run(&self, ctx: hoist::daemon::job::JobContext) -> hoist::daemon::job::JobFuture {
        let token = ctx.env().get("AWS_SESSION_TOKEN").map(str::to_string);
        let runs = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(token.clone());
            seen.len()
        };
        Box::pin(async move {
            use hoist::daemon::job::{JobError, JobOutput};
            match (token, runs) {
                (Some(t), 1) => Err(JobError::failed(format!("helper: + export T={t}"))),
                (None, _) => Err(JobError::Refused {
                    reason: "the registry answered 401".into(),
                }),
                _ => Ok(JobOutput {
                    manifest_digest: manifest_digest(),
                }),
            }
        })
    }
}

/// A job forgets its secrets when it ends (here: failed), and blanks them out of what it
/// stores: its reason holds the variable's name, not its value. A retry without them runs
/// without them, and the refusal that follows pauses it naming what it lacks; a resume that
/// sends them again finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_forgets_its_secrets_and_a_refusal_without_them_waits_for_them() {
    const TOKEN: &str = "probe-Session-Token-5150";
    let dir = tempfile::tempdir().unwrap();
    let probe = Arc::new(EnvProbe {
        seen: Default::default(),
    });
    let daemon = TestDaemon::start(dir.path(), probe.clone());
    let client = daemon.client();
    let shell = || {
        let mut vars = crate::common::shell_env_vars();
        vars.0.insert("AWS_SESSION_TOKEN".into(), TOKEN.into());
        vars
    };
    let request = api::SubmitRequest {
        env: Some(shell()),
        ..submit_request("oci:/img")
    };
    let id = client.submit(&request).await.unwrap().id;
    let failed = wait_state(&client, &id, JobState::Failed).await;
    assert_eq!(
        failed.reason.as_deref(),
        Some("helper: + export T=<AWS_SESSION_TOKEN redacted>")
    );

    client
        .retry(&id, &api::RetryRequest::default())
        .await
        .unwrap();
    let paused = wait_state(&client, &id, JobState::Paused).await;
    let reason = paused.reason.unwrap_or_default();
    assert!(
        reason.starts_with("waiting for credentials: the registry answered 401; the job no longer holds AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN")
            && reason.contains(&format!("run hoist resume {id} from a shell that has them")),
        "{reason}"
    );
    let again = api::ControlRequest { env: Some(shell()) };
    client
        .control_with(&id, "resume", Some(&again))
        .await
        .unwrap();
    wait_state(&client, &id, JobState::Done).await;
    let seen = probe.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [Some(TOKEN.to_string()), None, Some(TOKEN.to_string())]
    );
    let events = String::from_utf8_lossy(
        &client
            .call(
                Method::GET,
                &format!("{}?follow=false", api::job_path(&id, "events")),
                None,
            )
            .await
            .unwrap(),
    )
    .into_owned();
    assert!(
        !events.contains(TOKEN) && events.contains("redacted"),
        "{events}"
    );
}

/// Pauses a running job and checks it stops at a chunk boundary, stays still, keeps its spool
/// and refuses a retry; returns the bytes uploaded when it stopped.
async fn pause_and_check(daemon: &TestDaemon, client: &Client, id: &api::JobId) -> u64 {
    assert_eq!(
        client.control(id, "pause").await.unwrap().state,
        JobState::Paused
    );
    // The job's task has stopped once no job runs.
    let deadline = std::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while client.health().await.unwrap().jobs_running > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the paused job's task never stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let paused_at = uploaded(&client.job(id).await.unwrap());
    // The spool of an unfinished job stays for its resumption.
    assert!(
        daemon
            .state_dir
            .join("spool")
            .join(id.as_str())
            .join("chunks")
            .is_file()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = client.job(id).await.unwrap();
    assert_eq!((job.state, uploaded(&job)), (JobState::Paused, paused_at));
    // Wrong transitions are refused with 409 and a JSON error that says why.
    match client.control(id, "retry").await {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert!(
                message.contains("is paused: only a failed or cancelled job can be retried"),
                "{message}"
            );
        }
        other => panic!("retry of a paused job: {other:?}"),
    }
    paused_at
}

/// A running job cannot be deleted; once cancelled (twice is refused) its follower ends, and
/// the delete removes it and its spool.
async fn cancel_and_delete_running(daemon: &TestDaemon, client: &Client, id: &api::JobId) {
    match client.delete(id).await {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert!(message.contains("cancel it first"), "{message}");
        }
        other => panic!("delete of a running job: {other:?}"),
    }
    assert_eq!(
        client.control(id, "cancel").await.unwrap().state,
        JobState::Cancelled
    );
    let job = client.job(id).await.unwrap();
    assert_eq!(job.reason.as_deref(), Some("cancelled by the user"));
    assert!(matches!(
        client.control(id, "cancel").await,
        Err(ClientError::Api {
            status: StatusCode::CONFLICT,
            ..
        })
    ));
    // The follower of a cancelled job ends.
    let mut stream = client.events(id, 0, true).await.unwrap();
    let mut last = None;
    while let Some(ev) = stream.next().await {
        last = Some(ev.unwrap());
    }
    assert!(last.unwrap().kind.is_final());

    client.delete(id).await.unwrap();
    assert!(matches!(
        client.job(id).await,
        Err(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            ..
        })
    ));
    assert!(!daemon.state_dir.join("spool").join(id.as_str()).exists());
    assert!(client.jobs().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_is_retried_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let body = Scripted::new(3, 5).failing_first("registry said 500: retry later");
    let daemon = TestDaemon::start(dir.path(), Arc::new(body.clone()));
    let client = daemon.client();
    let id = client.submit(&submit_request("x.tar")).await.unwrap().id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    assert_eq!(
        job.reason.as_deref(),
        Some("registry said 500: retry later")
    );
    let state = client.control(&id, "retry").await.unwrap().state;
    assert!(
        matches!(state, JobState::Queued | JobState::Preparing),
        "{state}"
    );
    let job = wait_state(&client, &id, JobState::Done).await;
    assert_eq!(job.manifest_digest, Some(manifest_digest()));
    assert_eq!(job.reason, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_beyond_the_running_limit_wait_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let body = Scripted::new(200, 20);
    let daemon = TestDaemon::start_with(
        dir.path(),
        Config {
            jobs_running_max: 1,
            job_body: Arc::new(body),
            ..Config::default()
        },
    );
    let client = daemon.client();
    let first = client.submit(&submit_request("a.tar")).await.unwrap().id;
    let second = client.submit(&submit_request("b.tar")).await.unwrap().id;
    wait_state(&client, &first, JobState::Uploading).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.job(&second).await.unwrap().state, JobState::Queued);
    assert_eq!(client.health().await.unwrap().jobs_running, 1);
    client.control(&first, "cancel").await.unwrap();
    wait_state(&client, &second, JobState::Uploading).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_body_plans_for_real_then_refuses_a_bad_target() {
    let dir = tempfile::tempdir().unwrap();
    let source = sample_source(dir.path());
    let sample = hoist_testkit::sample::write_oci_layout(
        &dir.path().join("again"),
        &hoist_testkit::sample::SampleSpec::small(1),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(dir.path(), Config::default());
    let client = daemon.client();
    let id = client.submit(&bad_target(&source)).await.unwrap().id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    assert!(
        job.reason.as_deref().unwrap().contains("Not-Valid"),
        "{job:?}"
    );
    assert!(job.manifest_digest.is_none());
    // The real plan: the config as is, then every (uncompressed) layer to compress, keyed by
    // its diff_id.
    let digests: Vec<_> = job.blobs.iter().map(|b| b.digest.clone()).collect();
    let mut want = vec![sample.config.clone()];
    want.extend(sample.layers.iter().map(|l| l.diff_id.clone()));
    assert_eq!(digests, want);
    assert_eq!(job.blobs[0].action, api::BlobAction::AsIs);
    assert!(
        job.blobs[1..]
            .iter()
            .all(|b| b.action == api::BlobAction::Compress)
    );
    assert!(
        job.blobs.iter().all(|b| b.uploaded_bytes == 0),
        "nothing was uploaded"
    );

    // A source that is not there fails the job with the source's own explanation.
    let id = client
        .submit(&submit_request("oci:/nonexistent/layout"))
        .await
        .unwrap()
        .id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    let reason = job.reason.unwrap();
    assert!(reason.contains("/nonexistent/layout"), "{reason}");
    assert!(job.blobs.is_empty());
    // Another platform than the image's is refused by the platform guard.
    let mut arm = submit_request(&source);
    arm.platform = Some("linux/arm64".into());
    let id = client.submit(&arm).await.unwrap().id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    let reason = job.reason.unwrap();
    assert!(reason.contains("arm64"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_fitting_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(1, 1)));
    let client = daemon.client();
    let unknown = api::JobId::random();
    let cases = routing_error_cases(&unknown)
        .into_iter()
        .chain(submit_error_cases())
        .chain(job_error_cases(&unknown));
    let mut n = 0;
    for case in cases {
        check_error_case(&client, case).await;
        n += 1;
    }
    assert_eq!(n, 17);
}

/// method, path, body, expected status, text the error must contain
type ErrorCase = (
    Method,
    String,
    Option<&'static [u8]>,
    StatusCode,
    &'static str,
);

/// Unknown endpoints, methods, ids and jobs.
fn routing_error_cases(unknown: &api::JobId) -> Vec<ErrorCase> {
    vec![
        (
            Method::GET,
            "/v1/nothing".into(),
            None,
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            Method::PUT,
            "/v1/jobs".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "allowed are",
        ),
        (
            Method::GET,
            "/v1/jobs/not-an-id".into(),
            None,
            StatusCode::BAD_REQUEST,
            "hoist ls",
        ),
        (
            Method::GET,
            api::job_path(unknown, ""),
            None,
            StatusCode::NOT_FOUND,
            "no job",
        ),
        (
            Method::POST,
            api::job_path(unknown, "pause"),
            None,
            StatusCode::NOT_FOUND,
            "no job",
        ),
    ]
}

/// Submit requests the daemon refuses.
fn submit_error_cases() -> Vec<ErrorCase> {
    vec![
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(b"{not json"),
            StatusCode::BAD_REQUEST,
            "submit request",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(br#"{"source":"a","target":"b","password":"x"}"#),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(br#"{"source":"a","target":"b","chunk_size_bytes":1024}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "5 MiB",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(br#"{"source":"a","target":"b","platform":"linux"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "OS/ARCH",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(br#"{"source":"a","target":"b","env":{"EDITOR":"vi"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "EDITOR",
        ),
    ]
}

/// Bad event and bandwidth requests for a job.
fn job_error_cases(unknown: &api::JobId) -> Vec<ErrorCase> {
    vec![
        (
            Method::GET,
            format!("{}?after=x", api::job_path(unknown, "events")),
            None,
            StatusCode::BAD_REQUEST,
            "after=x",
        ),
        (
            Method::PUT,
            api::job_path(unknown, "bandwidth"),
            Some(br#"{"bytes_per_s":1000}"#),
            StatusCode::NOT_FOUND,
            "no job",
        ),
        (
            Method::PUT,
            api::job_path(unknown, "bandwidth"),
            Some(br#"{"bytes_per_s":0}"#),
            StatusCode::BAD_REQUEST,
            "null to remove",
        ),
        (
            Method::PUT,
            api::job_path(unknown, "bandwidth"),
            Some(b"{}"),
            StatusCode::BAD_REQUEST,
            "bytes_per_s",
        ),
        (
            Method::PUT,
            api::job_path(unknown, "bandwidth"),
            Some(br#"{"bytes_per_s":"5MiB/s"}"#),
            StatusCode::BAD_REQUEST,
            "job bandwidth",
        ),
        (
            Method::POST,
            api::job_path(unknown, "resume"),
            Some(br#"{"env":{"AWS_REGION":"x"},"password":"y"}"#),
            StatusCode::BAD_REQUEST,
            "control request",
        ),
        (
            Method::POST,
            api::job_path(unknown, "retry"),
            Some(br#"{"env":{"AWS_REGION":"x"}}"#),
            StatusCode::NOT_FOUND,
            "no job",
        ),
    ]
}

/// Sends one request and checks the answer is a one-line JSON error with the fitting status.
async fn check_error_case(client: &Client, case: ErrorCase) {
    let (method, path, body, want_status, want_text) = case;
    let resp = client
        .send(method.clone(), &path, body.map(|b| b.to_vec()))
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let err: api::ErrorBody = api::decode("error", &bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not an error JSON ({e}): {bytes:?}"));
    assert_eq!(status, want_status, "{method} {path}: {}", err.error);
    assert_eq!(ct, api::CONTENT_TYPE_JSON);
    assert!(
        err.error.contains(want_text),
        "{method} {path}: {:?} lacks {want_text:?}",
        err.error
    );
    assert!(
        !err.error.contains('\n'),
        "error is not one line: {:?}",
        err.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_paused_job_ends_its_followers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(500, 20)));
    let client = daemon.client();
    let id = submit_paused(&client, "a.tar").await;
    let mut stream = client.events(&id, 0, true).await.unwrap();
    let follower = tokio::spawn(async move {
        let mut last = None;
        while let Some(ev) = stream.next().await {
            last = Some(ev.unwrap().kind);
        }
        last
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !follower.is_finished(),
        "the follower of a paused job ended early"
    );
    client.delete(&id).await.unwrap();
    let last = tokio::time::timeout(Duration::from_millis(WAIT_MS_MAX), follower)
        .await
        .expect("the follower ended after the delete")
        .unwrap();
    assert_eq!(last, Some(EventKind::Deleted {}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_connection_cap_is_shared_by_all_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(
        dir.path(),
        Config {
            uploads_in_flight_max: 1,
            jobs_running_max: 2,
            job_body: Arc::new(Scripted::new(100, 10)),
            ..Config::default()
        },
    );
    let client = daemon.client();
    let first = submit_uploading(&client, "a.tar", 1).await;
    let second = client.submit(&submit_request("b.tar")).await.unwrap().id;
    // Both run, but the second waits for the only upload slot.
    wait_state(&client, &second, JobState::Uploading).await;
    assert_eq!(client.health().await.unwrap().jobs_running, 2);
    // Long enough for several chunks, had the second job a slot.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let metrics = client.metrics().await.unwrap();
    assert_lines(
        &metrics,
        &["hoist_upload_slots_in_use 1", "hoist_jobs_running 2"],
        "metrics",
    );
    let job = client.job(&second).await.unwrap();
    assert!(
        job.blobs[0].uploaded_bytes == 0
            && client.job(&first).await.unwrap().state != JobState::Done,
        "the second job uploaded while the first held the only slot"
    );
    wait_state(&client, &first, JobState::Done).await;
    wait_state(&client, &second, JobState::Done).await;
}

/// A body that announces phases out of order.
struct Backwards;

impl hoist::daemon::job::JobBody for Backwards {
    fn run(&self, ctx: hoist::daemon::job::JobContext) -> hoist::daemon::job::JobFuture {
        Box::pin(async move {
            ctx.enter(JobState::Verifying).await?;
            ctx.enter(JobState::Uploading).await?;
            Err(hoist::daemon::job::JobError::failed("unreachable"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cannot_move_a_job_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Backwards));
    let client = daemon.client();
    let id = client.submit(&submit_request("a.tar")).await.unwrap().id;
    let job = wait_state(&client, &id, JobState::Failed).await;
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("cannot go from verifying to uploading"),
        "{reason}"
    );
}

/// A body that takes its run's bandwidth bucket, shows it to the test, and "uploads" until
/// it is stopped: what the production body's uploads pay is this same bucket.
#[derive(Clone, Default)]
struct BucketProbe {
    runs: Arc<std::sync::Mutex<Vec<Arc<hoist::bandwidth::Bucket>>>>,
}

impl BucketProbe {
    fn bucket(&self, run: usize) -> Option<Arc<hoist::bandwidth::Bucket>> {
        self.runs.lock().unwrap().get(run).cloned()
    }
}

impl hoist::daemon::job::JobBody for BucketProbe {
    fn run(&self, ctx: hoist::daemon::job::JobContext) -> hoist::daemon::job::JobFuture {
        let runs = self.runs.clone();
        Box::pin(async move {
            runs.lock().unwrap().push(ctx.bandwidth().clone());
            ctx.enter(JobState::Uploading).await?;
            ctx.stop_requested().await;
            Err(hoist::daemon::job::JobError::Stopped)
        })
    }
}

/// The job's own limit as the daemon reports it.
async fn stored_limit(client: &hoist::cli::client::Client, id: &hoist::api::JobId) -> Option<u64> {
    client
        .job(id)
        .await
        .unwrap()
        .spec
        .options
        .bandwidth_bytes_per_s
}

/// `PUT /v1/jobs/{id}/bandwidth` stores the limit in the job's spec, changes the running
/// run's bucket at once, is kept across a pause (the next run starts at it) and a restart,
/// and is refused for a done job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_limit_changes_the_running_bucket_and_is_kept_for_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let probe = BucketProbe::default();
    let daemon = TestDaemon::start(dir.path(), Arc::new(probe.clone()));
    let client = daemon.client();
    let mut req = submit_request("x.tar");
    req.options.bandwidth_bytes_per_s = Some(1_000_000);
    let id = client.submit(&req).await.unwrap().id;
    wait_state(&client, &id, JobState::Uploading).await;
    let first = probe.bucket(0).expect("the first run started");
    assert_eq!(first.rate(), Some(1_000_000));

    let job = client
        .set_job_bandwidth(&id, Some(2_000_000))
        .await
        .unwrap();
    assert_eq!(job.id, id);
    assert_eq!(job.state, JobState::Uploading);
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(2_000_000));
    // Applied by the time the response is sent.
    assert_eq!(first.rate(), Some(2_000_000));
    let job = client.set_job_bandwidth(&id, None).await.unwrap();
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, None);
    assert_eq!(first.rate(), None);
    assert_eq!(stored_limit(&client, &id).await, None);

    // Paused: stored for the next run, which starts at it.
    client.control(&id, "pause").await.unwrap();
    wait_state(&client, &id, JobState::Paused).await;
    let job = client
        .set_job_bandwidth(&id, Some(3_000_000))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Paused);
    client.control(&id, "resume").await.unwrap();
    wait_state(&client, &id, JobState::Uploading).await;
    let second = probe.bucket(1).expect("the second run started");
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.rate(), Some(3_000_000));

    // A restart keeps it.
    daemon.stop().unwrap();
    let probe = BucketProbe::default();
    let daemon = TestDaemon::start(dir.path(), Arc::new(probe.clone()));
    let client = daemon.client();
    wait_state(&client, &id, JobState::Uploading).await;
    assert_eq!(probe.bucket(0).unwrap().rate(), Some(3_000_000));
    assert_eq!(stored_limit(&client, &id).await, Some(3_000_000));

    // Cancelled (final, but retryable): allowed, for the retry.
    client.control(&id, "cancel").await.unwrap();
    let job = client
        .set_job_bandwidth(&id, Some(4_000_000))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(4_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_job_refuses_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(1, 1)));
    let client = daemon.client();
    let id = client.submit(&submit_request("x.tar")).await.unwrap().id;
    wait_state(&client, &id, JobState::Done).await;
    let err = client
        .set_job_bandwidth(&id, Some(1_000_000))
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, message } => {
            assert_eq!(status, StatusCode::CONFLICT, "{message}");
            assert!(message.contains("is done"), "{message}");
        }
        other => panic!("not an API error: {other}"),
    }
    assert_eq!(stored_limit(&client, &id).await, None);
}
