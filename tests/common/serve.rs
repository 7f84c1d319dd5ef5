//! A tiny hyper server for test doubles (the ECR proxy, the token service, spies): every
//! connection is served by `handler`; a handler returning `Err(Cut)` drops the connection
//! without an answer, the way ECR drops an upload POST to a missing repository.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub type Resp = Response<Full<Bytes>>;

/// Returned by a handler: close the connection now, send nothing.
#[derive(Debug)]
pub struct Cut(pub &'static str);

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection cut on purpose: {}", self.0)
    }
}

impl std::error::Error for Cut {}

/// A test double's accept loop, aborted when dropped: the double stops with its owner.
pub struct ServerTask(tokio::task::JoinHandle<()>);

impl ServerTask {
    pub fn spawn(accept_loop: impl Future<Output = ()> + Send + 'static) -> ServerTask {
        ServerTask(tokio::spawn(accept_loop))
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `handler` on a fresh loopback port until the returned task is dropped.
pub async fn spawn_server<F, Fut>(handler: F) -> (SocketAddr, ServerTask)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Cut>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let task = ServerTask::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(&h);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            // Reap finished connections so the set stays small.
            while conns.try_join_next().is_some() {}
        }
    });
    (addr, task)
}

/// A response with a body and headers.
pub fn respond(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Resp {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body.into())).expect("valid response")
}

/// An OCI error envelope response.
pub fn oci_error(status: u16, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    respond(status, &[("content-type", "application/json".into())], body)
}
