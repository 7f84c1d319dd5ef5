//! Request handlers: decode with `api`, ask the scheduler or the store, encode with `api`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::warn;

use super::metrics::Counters;
use super::scheduler::{Control, SchedError, SchedulerHandle};
use crate::api::{self, Endpoint, JobId};
use crate::store::{EventRecord, JobRecord, Store, StoreError};

/// Largest request body accepted: a submit request is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Event lines buffered per follower before the stream waits for the client to read.
const FOLLOW_BUFFER_LINES: usize = 256;
/// Events a follower reads from the log at a time (replay and catch-up after a lag).
const EVENTS_PAGE_MAX: usize = 256;

pub type Body = BoxBody<Bytes, Infallible>;

/// What the handlers share.
pub struct App {
    pub scheduler: SchedulerHandle,
    pub store: Store,
    pub counters: Arc<Counters>,
    /// Turns true when the daemon stops: event followers end their streams then.
    pub stopping: watch::Receiver<bool>,
    /// The daemon-wide upload limit every job's uploads pay (changed by `PUT /v1/bandwidth`).
    pub bandwidth: Arc<crate::bandwidth::Bucket>,
    /// What health reports about this daemon's binary and who started it ([`super::Config`]).
    pub build: Option<String>,
    pub autostarted: bool,
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed()
}

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type).expect("static content type"),
    );
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    respond(status, api::CONTENT_TYPE_JSON, full(api::encode(value)))
}

/// An error response: `{ "error": message }`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    respond(
        status,
        api::CONTENT_TYPE_JSON,
        full(api::error_body(message)),
    )
}

/// The response to a client whose uid is not the daemon's; the connection closes after it.
pub fn refused() -> Response<Body> {
    let mut resp = error(
        StatusCode::FORBIDDEN,
        "this hoistd serves only the user it runs as: start your own hoistd, or use your own --socket",
    );
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

fn sched_error(e: SchedError) -> Response<Body> {
    let status = match &e {
        SchedError::NotFound(_) => StatusCode::NOT_FOUND,
        SchedError::Conflict(_) => StatusCode::CONFLICT,
        SchedError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        SchedError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn store_error(e: StoreError) -> Response<Body> {
    sched_error(SchedError::from(e))
}

async fn job_view(store: &Store, job: JobRecord) -> Result<api::Job, StoreError> {
    let blobs = store.blobs(job.id.clone()).await?;
    Ok(api::Job {
        id: job.id,
        spec: job.spec,
        state: job.state,
        reason: job.reason,
        manifest_digest: job.manifest_digest,
        created_ms: job.created_ms,
        updated_ms: job.updated_ms,
        env: job.env,
        blobs: blobs
            .into_iter()
            .map(|b| api::BlobStatus {
                uploaded_bytes: if b.state.is_finished() {
                    b.upload_size_bytes()
                } else {
                    b.cursor.as_ref().map_or(0, |c| c.offset_bytes)
                },
                pushed_digest: b.pushed.as_ref().map(|p| p.digest.clone()),
                pushed_size_bytes: b.pushed.as_ref().map(|p| p.size_bytes),
                digest: b.digest,
                size_bytes: b.size_bytes,
                media_type: b.media_type,
                action: b.action,
                state: b.state,
                compressed_chunks: b.chunks_done,
            })
            .collect(),
    })
}

/// Routes one request from an allowed peer.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    match api::match_route(req.method().as_str(), req.uri().path()) {
        Ok((endpoint, id)) => dispatch(app, endpoint, id, req).await,
        Err(e) => error(route_status(&e), e.to_string()),
    }
}

fn route_status(e: &api::RouteError) -> StatusCode {
    match e {
        api::RouteError::NotFound(_) => StatusCode::NOT_FOUND,
        api::RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        api::RouteError::BadJobId(_) => StatusCode::BAD_REQUEST,
    }
}

/// Calls the handler of `endpoint`; `id` is the `{id}` of routes that have one.
async fn dispatch(
    app: Arc<App>,
    endpoint: Endpoint,
    id: Option<JobId>,
    req: Request<Incoming>,
) -> Response<Body> {
    let query = req.uri().query().unwrap_or("").to_string();
    let id = || id.clone().expect("routes with {id} always carry one");
    match endpoint {
        Endpoint::Health => health(&app),
        Endpoint::Metrics => metrics(&app).await,
        Endpoint::SubmitJob => submit(&app, req).await,
        Endpoint::ListJobs => list_jobs(&app).await,
        Endpoint::GetJob => job_response(&app, app.store.job(id()).await, StatusCode::OK).await,
        Endpoint::JobEvents => events(app, id(), &query).await,
        Endpoint::PauseJob => control(&app, id(), Control::Pause, None).await,
        Endpoint::ResumeJob => control_with_env(&app, id(), Control::Resume, req).await,
        Endpoint::CancelJob => control(&app, id(), Control::Cancel, None).await,
        Endpoint::RetryJob => retry(&app, id(), req).await,
        Endpoint::GetBandwidth => bandwidth(&app),
        Endpoint::SetBandwidth => set_bandwidth(&app, req).await,
        Endpoint::SetJobBandwidth => set_job_bandwidth(&app, id(), req).await,
        Endpoint::DeleteJob => match app.scheduler.control(id(), Control::Delete, None).await {
            Ok(_) => no_content(),
            Err(e) => sched_error(e),
        },
    }
}

fn no_content() -> Response<Body> {
    respond(
        StatusCode::NO_CONTENT,
        api::CONTENT_TYPE_JSON,
        full(Vec::new()),
    )
}

/// The job `record` names, as the API shows it, with `status`; or the store's error.
async fn job_response(
    app: &App,
    record: Result<JobRecord, StoreError>,
    status: StatusCode,
) -> Response<Body> {
    match record {
        Ok(r) => match job_view(&app.store, r).await {
            Ok(j) => json(status, &j),
            Err(e) => store_error(e),
        },
        Err(e) => store_error(e),
    }
}

fn health(app: &App) -> Response<Body> {
    json(
        StatusCode::OK,
        &api::Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            build: app.build.clone(),
            pid: std::process::id(),
            jobs_running: app.counters.jobs_running(),
            autostarted: app.autostarted,
        },
    )
}

async fn metrics(app: &App) -> Response<Body> {
    match app.store.count_by_state().await {
        Ok(counts) => respond(
            StatusCode::OK,
            api::CONTENT_TYPE_PROMETHEUS,
            full(app.counters.snapshot(counts).to_prometheus().into_bytes()),
        ),
        Err(e) => store_error(e),
    }
}

async fn list_jobs(app: &App) -> Response<Body> {
    let records = match app.store.jobs().await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let mut jobs = Vec::with_capacity(records.len());
    for r in records {
        match job_view(&app.store, r).await {
            Ok(j) => jobs.push(j),
            Err(e) => return store_error(e),
        }
    }
    json(StatusCode::OK, &api::JobList { jobs })
}

fn bandwidth(app: &App) -> Response<Body> {
    json(
        StatusCode::OK,
        &api::Bandwidth {
            bytes_per_s: app.bandwidth.rate(),
        },
    )
}

async fn submit(app: &App, req: Request<Incoming>) -> Response<Body> {
    debug_assert_eq!(req.method(), Method::POST);
    let caller = caller_of(&req);
    let body = match small_body(req).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let request: api::SubmitRequest = match api::decode("submit request", &body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}: see proto/openapi.yaml"),
            );
        }
    };
    let mut request = request;
    let env = match request.env.take().map(api::EnvVars::validate).transpose() {
        Ok(env) => env.map(|e| e.with_caller(caller)),
        Err(msg) => return error(StatusCode::UNPROCESSABLE_ENTITY, msg),
    };
    let mut spec = match request.validate() {
        Ok(s) => s,
        Err(msg) => return error(StatusCode::UNPROCESSABLE_ENTITY, msg),
    };
    // The job reads the file the path named at submission, whatever a symlink on the way
    // points at later (the first run then records the file's identity).
    let source = spec.source.clone();
    if let Ok(Some(canonical)) = tokio::task::spawn_blocking(move || {
        crate::paths::map_source_path(&source, |p| std::fs::canonicalize(p))
    })
    .await
    {
        spec.source = canonical;
    }
    match app.scheduler.submit(spec, env).await {
        Ok(job) => job_response(app, Ok(job), StatusCode::CREATED).await,
        Err(e) => sched_error(e),
    }
}

/// The peer that sent `req` (the server puts it there), for the environment it sends.
fn caller_of<B>(req: &Request<B>) -> Option<crate::environ::Caller> {
    req.extensions().get::<crate::environ::Caller>().cloned()
}

/// Reads a small JSON request body; the error is the response to send.
async fn small_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
    match http_body_util::Limited::new(req.into_body(), REQUEST_BYTES_MAX)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "cannot read the request body ({e}): send at most {REQUEST_BYTES_MAX} bytes of JSON"
            ),
        ))),
    }
}

async fn set_bandwidth(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match small_body(req).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let request: api::Bandwidth = match api::decode("bandwidth", &body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}: see proto/openapi.yaml"),
            );
        }
    };
    app.bandwidth.set_rate(request.bytes_per_s);
    tracing::info!(bytes_per_s = ?app.bandwidth.rate(), "bandwidth limit changed");
    bandwidth(app)
}

/// `PUT /v1/jobs/{id}/bandwidth`: the scheduler checks the job's state, stores the limit and
/// applies it to the job's running uploads.
async fn set_job_bandwidth(app: &App, id: JobId, req: Request<Incoming>) -> Response<Body> {
    let body = match small_body(req).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let bytes_per_s = match api::decode::<api::JobBandwidth>("job bandwidth", &body) {
        Ok(r) => match r.validate() {
            Ok(rate) => rate,
            Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}: send {{\"bytes_per_s\": N}}, or null to remove the job's limit"),
            );
        }
    };
    match app.scheduler.set_bandwidth(id, bytes_per_s).await {
        Ok(job) => job_response(app, Ok(job), StatusCode::OK).await,
        Err(e) => sched_error(e),
    }
}

/// `POST /v1/jobs/{id}/retry`: an empty body retries as is; the body may carry the caller's
/// environment again and `deadline_unix_s`, a new deadline set first.
async fn retry(app: &App, id: JobId, req: Request<Incoming>) -> Response<Body> {
    let caller = caller_of(&req);
    let body = match small_body(req).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let request = if body.is_empty() {
        api::RetryRequest::default()
    } else {
        match api::decode::<api::RetryRequest>("retry", &body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{e}: send no body, or {{\"env\": {{...}}, \"deadline_unix_s\": N}}"),
                );
            }
        }
    };
    let env = match request.env.clone().map(api::EnvVars::validate).transpose() {
        Ok(env) => env.map(|e| e.with_caller(caller)),
        Err(msg) => return error(StatusCode::UNPROCESSABLE_ENTITY, msg),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match request.validate(now) {
        Ok(deadline_unix_s) => control(app, id, Control::Retry { deadline_unix_s }, env).await,
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

/// Resume: the body, if any, carries the caller's environment again.
async fn control_with_env(
    app: &App,
    id: JobId,
    action: Control,
    req: Request<Incoming>,
) -> Response<Body> {
    let caller = caller_of(&req);
    let body = match small_body(req).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    if body.is_empty() {
        return control(app, id, action, None).await;
    }
    let env = match api::decode::<api::ControlRequest>("control request", &body) {
        Ok(r) => match r.env.map(api::EnvVars::validate).transpose() {
            Ok(env) => env.map(|e| e.with_caller(caller)),
            Err(msg) => return error(StatusCode::UNPROCESSABLE_ENTITY, msg),
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{e}: send {{\"env\": {{...}}}} or no body"),
            );
        }
    };
    control(app, id, action, env).await
}

async fn control(
    app: &App,
    id: JobId,
    action: Control,
    env: Option<crate::environ::CallerEnv>,
) -> Response<Body> {
    match app.scheduler.control(id, action, env).await {
        Ok(Some(job)) => job_response(app, Ok(job), StatusCode::OK).await,
        Ok(None) => no_content(),
        Err(e) => sched_error(e),
    }
}

/// Parses `after=SEQ` and `follow=false` from the query string.
fn follow_params(query: &str) -> Result<(u64, bool), String> {
    let mut after = 0;
    let mut follow = true;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", v)) => {
                after = v.parse().map_err(|_| {
                    format!(
                        "after={v} is not a sequence number: give the seq of the last event seen"
                    )
                })?
            }
            Some(("follow", "true")) => follow = true,
            Some(("follow", "false")) => follow = false,
            _ => {
                return Err(format!(
                    "unknown query parameter {pair:?}: use after=SEQ and follow=true|false"
                ));
            }
        }
    }
    Ok((after, follow))
}

fn to_event(r: EventRecord) -> Option<api::Event> {
    match api::decode::<api::EventKind>("event", r.body.as_bytes()) {
        Ok(kind) => Some(api::Event {
            seq: r.seq,
            job: r.job,
            time_ms: r.time_ms,
            kind,
        }),
        Err(e) => {
            warn!(seq = r.seq, error = %e, "skipping an unreadable event");
            None
        }
    }
}

/// Replays the job's persisted events after `after`, then follows live ones until the job ends.
async fn events(app: Arc<App>, id: JobId, query: &str) -> Response<Body> {
    let (after, follow) = match follow_params(query) {
        Ok(p) => p,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    // Subscribe first, then read the log: an event committed in between is in one or the other.
    let live = app.scheduler.subscribe();
    let job = match app.store.job(id.clone()).await {
        Ok(j) => j,
        Err(e) => return store_error(e),
    };
    let (tx, rx) = mpsc::channel::<Vec<u8>>(FOLLOW_BUFFER_LINES);
    let mut follower = Follower {
        app,
        id,
        last: after,
        tx,
    };
    tokio::spawn(async move {
        // A job read in a final state sends no further final event, and a final event in the
        // log may be followed by late ones (a stopping body's last progress): either way there
        // is nothing to follow once the log is replayed.
        let replayed = follower.replay().await;
        if replayed == Flow::Go && follow && !job.state.is_final() {
            follower.follow(live).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
    });
    respond(
        StatusCode::OK,
        api::CONTENT_TYPE_NDJSON,
        StreamBody::new(stream).boxed(),
    )
}

/// Whether a follower goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// The job ended, was deleted, or the client left.
    End,
}

/// One client's stream of a job's events: what it has seen, and where its lines go.
struct Follower {
    app: Arc<App>,
    id: JobId,
    /// The newest `seq` read from the log or sent live (at first the client's `after`).
    last: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Follower {
    /// Sends one event; [`Flow::End`] when the client left.
    async fn send(&self, ev: &api::Event) -> Flow {
        match self.tx.send(api::encode_event_line(ev)).await {
            Ok(()) => Flow::Go,
            Err(_) => Flow::End,
        }
    }

    /// Sends the logged events after `last`, a page at a time, so a long log is never held
    /// whole. Ends after the log when it holds a final event. A store error ends the stream.
    async fn replay(&mut self) -> Flow {
        let mut ended = false;
        loop {
            let page = self
                .app
                .store
                .events_after(self.id.clone(), self.last, EVENTS_PAGE_MAX);
            let Ok(page) = page.await else {
                return Flow::End;
            };
            let full = page.len() == EVENTS_PAGE_MAX;
            // The next page starts after this one, even where its last events are unreadable.
            self.last = page.last().map_or(self.last, |r| r.seq);
            for ev in page.into_iter().filter_map(to_event) {
                ended |= ev.kind.is_final();
                if self.send(&ev).await == Flow::End {
                    return Flow::End;
                }
            }
            if !full {
                return if ended { Flow::End } else { Flow::Go };
            }
        }
    }

    /// After falling behind the broadcast: the missed events are in the log, unless the job
    /// was deleted meanwhile (its `Deleted` event may be among those missed), which ends the
    /// stream as the live event would have.
    async fn catch_up(&mut self) -> Flow {
        if self.replay().await == Flow::End {
            return Flow::End;
        }
        match self.app.store.job(self.id.clone()).await {
            Ok(_) => Flow::Go,
            Err(StoreError::NoSuchJob(_)) => {
                let deleted = api::Event {
                    seq: 0,
                    job: self.id.clone(),
                    time_ms: crate::store::now_ms(),
                    kind: api::EventKind::Deleted {},
                };
                let _ = self.send(&deleted).await;
                Flow::End
            }
            Err(_) => Flow::End,
        }
    }

    /// Sends live events of the job until it ends, the client leaves or the daemon stops.
    async fn follow(&mut self, mut live: broadcast::Receiver<api::Event>) {
        let mut stopping = self.app.stopping.clone();
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                // The client left: stop waiting for events nobody reads.
                () = self.tx.closed() => return,
                () = super::shutdown::stopped(&mut stopping) => return,
            };
            let flow = match received {
                Ok(ev) if ev.job == self.id => self.live(ev).await,
                Ok(_) => Flow::Go,
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                Err(broadcast::error::RecvError::Closed) => Flow::End,
            };
            if flow == Flow::End {
                return;
            }
        }
    }

    /// One live event of the job: skipped when the replay sent it already.
    async fn live(&mut self, ev: api::Event) -> Flow {
        // `Deleted` is never logged (seq 0): it always goes out, and ends the stream.
        if ev.seq <= self.last && !matches!(ev.kind, api::EventKind::Deleted {}) {
            return Flow::Go;
        }
        self.last = self.last.max(ev.seq);
        let end = ev.kind.is_final();
        match self.send(&ev).await {
            Flow::Go if !end => Flow::Go,
            _ => Flow::End,
        }
    }
}
