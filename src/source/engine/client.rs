//! The Engine API over a Unix socket: one HTTP/1.1 connection per request (hyper).
//!
//! Requests use versioned paths (`/vX.Y/...`) at the lower of the engine's `ApiVersion` and
//! [`API_VERSION_MAX`]; an engine below [`API_VERSION_MIN`] is refused by name and version.

use std::io::{self, Read};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use super::{Endpoint, EngineError};
use crate::digest::Digest;
use crate::image::JSON_BYTES_MAX;
use crate::image::doc::Descriptor;
use crate::platform::Platform;

/// The oldest Engine API hoist speaks: image inspect and export as used here exist since
/// Docker 1.12 (API 1.24), the oldest API current engines and podman still serve.
pub const API_VERSION_MIN: (u32, u32) = (1, 24);
/// The newest Engine API hoist knows; from 1.48 on, inspect and export take a `platform`.
pub const API_VERSION_MAX: (u32, u32) = (1, 48);
/// The first Engine API whose image inspect and export accept a `platform` parameter.
pub const API_VERSION_PLATFORM: (u32, u32) = (1, 48);
/// The first Engine API whose image inspect lists an image index's entries (`manifests=1`).
pub const API_VERSION_MANIFESTS: (u32, u32) = (1, 48);
/// How long connecting to the socket and each small answer may take.
pub const ENGINE_ANSWER_TIMEOUT_S: u64 = 30;
/// Export body pieces buffered between the socket and the reader.
const EXPORT_PIECES_BUFFERED: usize = 16;

/// An engine that answered `GET /version`, and the API version hoist speaks with it.
#[derive(Debug, Clone)]
pub struct Engine {
    pub endpoint: Endpoint,
    pub version: String,
    pub api: (u32, u32),
}

/// What the engine says about an image, before anything is exported.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Os", default)]
    pub os: String,
    #[serde(rename = "Architecture", default)]
    pub architecture: String,
    #[serde(rename = "Variant", default)]
    pub variant: Option<String>,
    #[serde(rename = "RootFS", default)]
    pub rootfs: InspectRootFs,
    /// Uncompressed bytes of all layers, when the engine says.
    #[serde(rename = "Size", default)]
    pub size: u64,
    /// The entries of the image's index (platforms, attestations) on engines that list them.
    #[serde(rename = "Manifests", default)]
    pub manifests: Option<Vec<InspectManifest>>,
}

/// One entry of an image's index, as the engine's inspect lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct InspectManifest {
    #[serde(rename = "Descriptor")]
    pub descriptor: Descriptor,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InspectRootFs {
    #[serde(rename = "Layers", default)]
    pub layers: Vec<Digest>,
}

impl ImageInspect {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// What the image's index holds besides the platform inspected (named as every source
    /// names them); empty for a single-platform image or an engine that does not list them.
    pub fn left_out(&self) -> Vec<String> {
        let entries: Vec<Descriptor> = self
            .manifests
            .iter()
            .flatten()
            .map(|m| m.descriptor.clone())
            .collect();
        crate::image::select::left_out_of(&entries, &self.platform())
    }
}

#[derive(Deserialize)]
struct VersionAnswer {
    #[serde(rename = "Version", default)]
    version: String,
    #[serde(rename = "ApiVersion")]
    api_version: String,
}

fn parse_api(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Engine {
    /// Connects to the engine at `endpoint` and negotiates the API version.
    pub async fn connect(endpoint: Endpoint) -> Result<Engine, EngineError> {
        let probe = Engine {
            endpoint,
            version: String::new(),
            api: API_VERSION_MIN,
        };
        // Unversioned: the one request every engine answers whatever its API.
        let bytes = probe.small("/version", "GET /version", None).await?;
        let answer: VersionAnswer =
            serde_json::from_slice(&bytes).map_err(|e| probe.bad_answer("GET /version", e))?;
        let api = parse_api(&answer.api_version)
            .ok_or_else(|| probe.bad_answer("GET /version", &answer.api_version))?;
        if api < API_VERSION_MIN {
            return Err(EngineError::TooOld {
                socket: probe.socket(),
                version: crate::text::detail(&answer.version),
                api: crate::text::detail(&answer.api_version),
                min: format!("{}.{}", API_VERSION_MIN.0, API_VERSION_MIN.1),
            });
        }
        Ok(Engine {
            version: answer.version,
            api: api.min(API_VERSION_MAX),
            ..probe
        })
    }

    pub fn socket(&self) -> String {
        self.endpoint.socket.display().to_string()
    }

    /// The `platform` query parameter (JSON-encoded OCI platform) on engines that take it.
    fn platform_query(&self, wanted: &Platform) -> String {
        if self.api < API_VERSION_PLATFORM {
            return String::new();
        }
        let json = serde_json::to_string(wanted).unwrap_or_default();
        format!("?platform={}", query_escape(&json))
    }

    fn path(&self, rest: &str) -> String {
        format!("/v{}.{}{rest}", self.api.0, self.api.1)
    }

    /// `GET /images/{image}/json`, for `wanted` on engines that store several platforms.
    pub async fn inspect(
        &self,
        image: &str,
        wanted: &Platform,
    ) -> Result<ImageInspect, EngineError> {
        let what = format!("the inspect of {image}");
        let mut query = self.platform_query(wanted);
        if self.api >= API_VERSION_MANIFESTS {
            query.push_str(if query.is_empty() { "?" } else { "&" });
            query.push_str("manifests=1");
        }
        let path = self.path(&format!("/images/{image}/json{query}"));
        let bytes = self.small(&path, &what, Some(image)).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad_answer(&what, e))
    }

    /// `GET /images/{image}/get`: the export's tar stream, as a blocking reader (read it on a
    /// blocking thread; the body is pumped from the socket on the runtime).
    pub async fn export(
        &self,
        image: &str,
        wanted: &Platform,
    ) -> Result<ExportReader, EngineError> {
        let what = format!("the export of {image}");
        let path = self.path(&format!(
            "/images/{image}/get{}",
            self.platform_query(wanted)
        ));
        let body = self.send(&path, &what, Some(image)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_PIECES_BUFFERED);
        let (socket, pump_what) = (self.socket(), what.clone());
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let piece = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(data) => Ok(data),
                        Err(_) => continue,
                    },
                    Err(e) => Err(io::Error::other(EngineError::Broken {
                        socket: socket.clone(),
                        what: pump_what.clone(),
                        detail: crate::text::detail(&e.to_string()),
                    })),
                };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(ExportReader {
            rx,
            piece: Bytes::new(),
        })
    }

    /// A small answer (JSON), read whole within the answer timeout.
    async fn small(
        &self,
        path: &str,
        what: &str,
        image: Option<&str>,
    ) -> Result<Bytes, EngineError> {
        let read = async {
            let body = self.send(path, what, image).await?;
            Limited::new(body, JSON_BYTES_MAX as usize)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| self.broken(what, e))
        };
        tokio::time::timeout(Duration::from_secs(ENGINE_ANSWER_TIMEOUT_S), read)
            .await
            .map_err(|_| self.broken(what, "no answer in time"))?
    }

    /// Sends `GET path`; a non-2xx answer is an error (404 for `image`: the engine lacks it).
    async fn send(
        &self,
        path: &str,
        what: &str,
        image: Option<&str>,
    ) -> Result<Incoming, EngineError> {
        let timeout = Duration::from_secs(ENGINE_ANSWER_TIMEOUT_S);
        let stream = tokio::time::timeout(timeout, UnixStream::connect(&self.endpoint.socket))
            .await
            .map_err(|_| self.no_engine("it does not accept connections in time".into()))?
            .map_err(|e| self.connect_failed(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.broken(what, e))?;
        // The connection task ends when the body is read or dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(path)
            .header(http::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.bad_answer(what, e))?;
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| self.broken(what, "no answer in time"))?
            .map_err(|e| self.broken(what, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        if let (http::StatusCode::NOT_FOUND, Some(image)) = (status, image) {
            return Err(EngineError::UnknownImage {
                socket: self.socket(),
                image: image.to_string(),
            });
        }
        let body = Limited::new(resp.into_body(), JSON_BYTES_MAX as usize)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // The engine's errors are `{"message": "..."}`.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(EngineError::Status {
            socket: self.socket(),
            what: what.to_string(),
            status: status.as_u16(),
            detail: crate::text::detail(&message),
        })
    }

    fn connect_failed(&self, e: &io::Error) -> EngineError {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return EngineError::PermissionDenied {
                socket: self.socket(),
                chosen: self.endpoint.chosen.clone(),
            };
        }
        let detail = match e.kind() {
            io::ErrorKind::NotFound => "the socket does not exist".to_string(),
            io::ErrorKind::ConnectionRefused => "nothing listens on the socket".to_string(),
            _ => crate::text::detail(&e.to_string()),
        };
        self.no_engine(detail)
    }

    fn no_engine(&self, detail: String) -> EngineError {
        EngineError::NoEngine {
            socket: self.socket(),
            chosen: self.endpoint.chosen.clone(),
            detail,
        }
    }

    fn broken(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::Broken {
            socket: self.socket(),
            what: what.to_string(),
            detail: crate::text::detail(&e.to_string()),
        }
    }

    fn bad_answer(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::BadAnswer {
            socket: self.socket(),
            what: what.to_string(),
            detail: crate::text::detail(&e.to_string()),
        }
    }
}

/// The export stream as a blocking [`Read`]: call only from a blocking thread.
pub struct ExportReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    piece: Bytes,
}

impl Read for ExportReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.blocking_recv() {
                Some(piece) => self.piece = piece?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_query() {
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert_eq!(parse_api("1.9"), Some((1, 9)));
        assert!(parse_api("1.9") < Some(API_VERSION_MIN));
        assert_eq!(parse_api("x"), None);
        assert_eq!(
            query_escape(r#"{"os":"linux"}"#),
            "%7B%22os%22%3A%22linux%22%7D"
        );
    }
}
