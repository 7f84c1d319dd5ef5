//! A small HTTP/1.1 client over the daemon's Unix socket (hyper on a tokio `UnixStream`).
//! One connection per request: the socket is local and requests are few.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::api::{self, Endpoint, JobId};

/// What can go wrong talking to the daemon. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no daemon answers on {socket}: start one with hoistd (hoist push starts one unless --no-autostart)"
    )]
    NoDaemon {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the connection to hoistd on {socket} failed ({source}): check `hoistd` is running and its log"
    )]
    Http {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered with an error; `message` is its one-line explanation.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    /// The process serving the socket runs as another user: nothing is sent to it (a
    /// request may carry the caller's environment, secrets included).
    #[error(
        "the socket {socket} is served by {owner}, not by you (uid {own_uid}): hoist sends nothing to another user's daemon; use your own socket (--socket) or remove that one"
    )]
    NotOwner {
        socket: PathBuf,
        owner: String,
        own_uid: u32,
    },
    #[error("{0:?} is not a job action: use pause, resume, cancel or retry")]
    UnknownAction(String),
    #[error(
        "hoistd sent a response this hoist cannot read ({0}): use a hoist and hoistd of the same version"
    )]
    Decode(String),
}

impl ClientError {
    /// The daemon is not there (as opposed to answering with an error).
    pub fn is_no_daemon(&self) -> bool {
        matches!(self, ClientError::NoDaemon { .. })
    }
}

/// A client for one socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the response with its body unread.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::NoDaemon {
                    socket: self.socket.clone(),
                    source,
                })?;
        self.check_owner(&stream)?;
        let http_err = |source| ClientError::Http {
            socket: self.socket.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // The connection task ends when the response body is read or dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "hoistd");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, api::CONTENT_TYPE_JSON);
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Decode(format!("cannot build the request: {e}")))?;
        sender.send_request(req).await.map_err(http_err)
    }

    /// The peer must run as this process's user, checked before the first byte is sent
    /// (`SO_PEERCRED` on Linux, `getpeereid` on macOS): a socket path another user could
    /// have put there must not receive this shell's environment.
    fn check_owner(&self, stream: &UnixStream) -> Result<(), ClientError> {
        let own_uid = rustix::process::geteuid().as_raw();
        let peer_uid = stream
            .peer_cred()
            .map_err(|source| ClientError::NoDaemon {
                socket: self.socket.clone(),
                source,
            })?
            .uid();
        if peer_uid == own_uid {
            return Ok(());
        }
        let owner = match user_name(peer_uid) {
            Some(name) => format!("uid {peer_uid} ({name})"),
            None => format!("uid {peer_uid}"),
        };
        Err(ClientError::NotOwner {
            socket: self.socket.clone(),
            owner,
            own_uid,
        })
    }

    /// Sends a request and reads the whole body; non-2xx statuses become [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                socket: self.socket.clone(),
                source,
            })?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = api::decode::<api::ErrorBody>("error", &bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                format!(
                    "hoistd answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        Err(ClientError::Api { status, message })
    }

    /// Sends a request to `endpoint` (method and path from the route table) and reads the whole
    /// body; non-2xx statuses become [`ClientError::Api`].
    async fn call_endpoint(
        &self,
        endpoint: Endpoint,
        id: Option<&JobId>,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        self.call(method_of(endpoint), &endpoint.path(id), body)
            .await
    }

    /// [`Client::call_endpoint`], decoding the body as `what`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        id: Option<&JobId>,
        body: Option<Vec<u8>>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let bytes = self.call_endpoint(endpoint, id, body).await?;
        api::decode(what, &bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn health(&self) -> Result<api::Health, ClientError> {
        self.get_json(Endpoint::Health, None, None, "health").await
    }

    pub async fn submit(&self, req: &api::SubmitRequest) -> Result<api::Job, ClientError> {
        self.get_json(Endpoint::SubmitJob, None, Some(api::encode(req)), "job")
            .await
    }

    pub async fn jobs(&self) -> Result<Vec<api::Job>, ClientError> {
        let list: api::JobList = self
            .get_json(Endpoint::ListJobs, None, None, "job list")
            .await?;
        Ok(list.jobs)
    }

    pub async fn job(&self, id: &JobId) -> Result<api::Job, ClientError> {
        self.get_json(Endpoint::GetJob, Some(id), None, "job").await
    }

    /// `action` is one of `pause`, `resume`, `cancel`, `retry`.
    pub async fn control(&self, id: &JobId, action: &str) -> Result<api::Job, ClientError> {
        self.control_with(id, action, None).await
    }

    /// [`Client::control`] with a body: a resume or retry sends the caller's environment.
    pub async fn control_with(
        &self,
        id: &JobId,
        action: &str,
        body: Option<&api::ControlRequest>,
    ) -> Result<api::Job, ClientError> {
        let endpoint = Endpoint::job_action(action)
            .ok_or_else(|| ClientError::UnknownAction(action.to_string()))?;
        self.get_json(endpoint, Some(id), body.map(api::encode), "job")
            .await
    }

    /// Retries a failed or cancelled job, with the caller's environment and a new deadline
    /// (Unix seconds) when given.
    pub async fn retry(
        &self,
        id: &JobId,
        request: &api::RetryRequest,
    ) -> Result<api::Job, ClientError> {
        let body = api::encode(request);
        self.get_json(Endpoint::RetryJob, Some(id), Some(body), "job")
            .await
    }

    pub async fn delete(&self, id: &JobId) -> Result<(), ClientError> {
        self.call_endpoint(Endpoint::DeleteJob, Some(id), None)
            .await
            .map(|_| ())
    }

    pub async fn bandwidth(&self) -> Result<api::Bandwidth, ClientError> {
        self.get_json(Endpoint::GetBandwidth, None, None, "bandwidth")
            .await
    }

    pub async fn set_bandwidth(
        &self,
        bytes_per_s: Option<u64>,
    ) -> Result<api::Bandwidth, ClientError> {
        let body = api::encode(&api::Bandwidth { bytes_per_s });
        self.get_json(Endpoint::SetBandwidth, None, Some(body), "bandwidth")
            .await
    }

    /// Sets a job's own upload limit (`None`: no job limit); returns the job afterwards.
    pub async fn set_job_bandwidth(
        &self,
        id: &JobId,
        bytes_per_s: Option<u64>,
    ) -> Result<api::Job, ClientError> {
        let body = api::encode(&api::JobBandwidth { bytes_per_s });
        self.get_json(Endpoint::SetJobBandwidth, Some(id), Some(body), "job")
            .await
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let bytes = self.call_endpoint(Endpoint::Metrics, None, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Opens the job's event stream: past events after `after`, then live ones until the job
    /// ends (`follow`), or only the past ones.
    pub async fn events(
        &self,
        id: &JobId,
        after: u64,
        follow: bool,
    ) -> Result<EventStream, ClientError> {
        let endpoint = Endpoint::JobEvents;
        let path = format!("{}?after={after}&follow={follow}", endpoint.path(Some(id)));
        let resp = self.send(method_of(endpoint), &path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = api::decode::<api::ErrorBody>("error", &bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("hoistd answered {status}"));
            return Err(ClientError::Api { status, message });
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
            socket: self.socket.clone(),
        })
    }
}

/// The HTTP method of `endpoint`'s route.
fn method_of(endpoint: Endpoint) -> Method {
    Method::from_bytes(endpoint.method().as_bytes()).expect("the route table holds HTTP methods")
}

/// NDJSON events as they arrive.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
    socket: PathBuf,
}

impl EventStream {
    /// The next event, or `None` when the daemon ended the stream.
    pub async fn next(&mut self) -> Option<Result<api::Event, ClientError>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if line.len() <= 1 {
                    continue;
                }
                return Some(
                    api::decode("event", &line).map_err(|e| ClientError::Decode(e.to_string())),
                );
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buf.extend_from_slice(data);
                    }
                }
                Some(Err(source)) => {
                    return Some(Err(ClientError::Http {
                        socket: self.socket.clone(),
                        source,
                    }));
                }
                None => return None,
            }
        }
    }
}

/// The login name of `uid` from `/etc/passwd`, for messages (none where the file lacks it).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_method_is_an_http_method() {
        for route in api::ROUTES {
            assert_eq!(method_of(route.endpoint).as_str(), route.method);
        }
    }

    /// The client names endpoints; the route table alone spells paths. A path written here by
    /// hand would drift from the server's dispatch unnoticed.
    #[test]
    fn the_client_spells_no_path_itself() {
        let source = include_str!("client.rs");
        let literal = concat!('"', '/', 'v');
        assert!(
            !source.contains(literal),
            "src/cli/client.rs writes a path literal: name an api::Endpoint instead"
        );
        assert!(!source.contains(concat!("job", "_path(")));
    }
}
