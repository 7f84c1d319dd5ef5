//! A hostile registry: a raw TCP server of ours that answers whatever a test scripts, byte by
//! byte if need be (hyper would refuse to send most of it). Every connection reads one request
//! (head and `Content-Length` body), asks the script for an [`Answer`], writes it, and closes.
//!
//! What it can do: oversized bodies streamed without holding them (100 MB error bodies),
//! oversized headers, any `Location`, redirects forever, slow-loris pacing of the head or the
//! body, any bytes as the body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::serve::ServerTask;

/// A request as the hostile server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to send back.
pub enum Answer {
    /// Status, headers and body at once (`Content-Length` added).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A body of `len` bytes of `b'x'` announced by `Content-Length` and streamed in 64 KiB
    /// pieces: the server never holds it.
    Huge {
        status: u16,
        headers: Vec<(String, String)>,
        len: u64,
    },
    /// Head and body, one byte every `every` (the head too when `head_too`).
    Trickle {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        every: Duration,
        head_too: bool,
    },
}

impl Answer {
    pub fn full(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
        Answer::Full {
            status,
            headers: owned(headers),
            body: body.into(),
        }
    }
}

pub fn owned(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

/// A running hostile server on 127.0.0.1; stops when dropped.
pub struct Hostile {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: ServerTask,
}

/// A request head larger than this is refused by the server (the client never sends one).
const REQUEST_HEAD_BYTES_MAX: usize = 64 * 1024;

impl Hostile {
    pub async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let s2 = seen.clone();
        let task = ServerTask::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, script) = (s2.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &seen, &*script).await;
                });
            }
        });
        Hostile { addr, seen, task }
    }

    /// `127.0.0.1:PORT`, as a registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut s: TcpStream, seen: &Mutex<Vec<Seen>>, script: &Script) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let Some(req) = read_request(&mut s).await? else {
        return Ok(());
    };
    let answer = script(&req);
    seen.lock().unwrap().push(req);
    write_answer(&mut s, answer).await?;
    s.flush().await?;
    // Let the client read everything before the close.
    let _ = s.shutdown().await;
    Ok(())
}

/// Reads one request (its body is counted, not kept); `None` when the client closes first or
/// sends a head longer than [`REQUEST_HEAD_BYTES_MAX`].
async fn read_request(s: &mut TcpStream) -> std::io::Result<Option<Seen>> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < body_len {
        let mut b = vec![0u8; 64 * 1024];
        let n = s.read(&mut b).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(Some(Seen {
        method,
        target,
        headers,
        body_len,
    }))
}

/// A response head: `content-length: len` unless the script's headers set one.
fn response_head(status: u16, headers: &[(String, String)], len: u64) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} Hostile\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        h.push_str(&format!("content-length: {len}\r\n"));
    }
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn write_answer(s: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    match answer {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            s.write_all(&response_head(status, &headers, body.len() as u64))
                .await?;
            s.write_all(&body).await?;
        }
        Answer::Huge {
            status,
            headers,
            len,
        } => {
            s.write_all(&response_head(status, &headers, len)).await?;
            let piece = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(piece.len() as u64) as usize;
                s.write_all(&piece[..n]).await?;
                left -= n as u64;
            }
        }
        Answer::Trickle {
            status,
            headers,
            body,
            every,
            head_too,
        } => {
            let h = response_head(status, &headers, body.len() as u64);
            if head_too {
                for b in h {
                    s.write_all(&[b]).await?;
                    tokio::time::sleep(every).await;
                }
            } else {
                s.write_all(&h).await?;
            }
            for b in body {
                s.write_all(&[b]).await?;
                tokio::time::sleep(every).await;
            }
        }
    }
    Ok(())
}
