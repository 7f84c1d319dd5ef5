//! Logs never carry credentials or upload-URL queries. In its own test binary, because it
//! installs a global tracing subscriber.
use crate::common;

use std::sync::atomic::Ordering;

use common::images::{self, Blob};
use hoist::registry::{ClientOptions, RegistryClient, ResumePoint};

const MIB: usize = 1 << 20;

fn opts() -> ClientOptions {
    ClientOptions {
        chunk_bytes: Some(MIB as u64),
        retry: common::brisk_retries(),
        ..ClientOptions::default()
    }
}

/// A `Write` into a shared buffer, for capturing logs.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs (every level, every crate) show neither the Authorization header, the secret, its
/// base64 form, nor the query of upload URLs, even through retries, resumes and refreshes.
#[tokio::test(flavor = "current_thread")]
async fn logs_never_show_credentials_or_upload_queries() {
    use base64::Engine as _;
    let buf = LogBuf::default();
    let b2 = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || b2.clone())
        .finish();
    // Global, not thread-scoped: callsite interest is cached process-wide, and a scoped
    // subscriber loses DEBUG events to that cache when other threads log first.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (reg, proxy) = common::start_behind_ecr(MIB as u64).await;
    proxy.basic_auth(&["sekrit-token-1"]);
    let c = RegistryClient::new(
        &proxy.host(),
        common::with_credentials(opts(), "AWS", "sekrit-token-1"),
    )
    .unwrap();
    let blob = Blob::new(images::random_bytes(23, 3 * MIB));
    proxy.state.throttle_next.store(1, Ordering::SeqCst);
    *proxy.state.cut_next_body_after.lock().unwrap() = Some((MIB / 2) as u64);
    images::upload(&c, "team/app", &blob, 2).await.unwrap();
    // And a failure path, which logs errors with URLs.
    proxy.expire_password("sekrit-token-1", "sekrit-token-2");
    let _ = c.check_repository("team/app").await.unwrap_err();
    // Debian's registry puts `_state` in its Locations: upload there, lose a session, resume.
    let d = RegistryClient::new(&reg.host(), opts()).unwrap();
    let cur = d.start_upload("team/app").await.unwrap();
    assert!(
        cur.session_url.contains("_state"),
        "the registry's Location has a query"
    );
    let cur = images::send_chunk(&d, &cur, &blob, 0..MIB).await;
    d.cancel_upload(&cur).await.unwrap();
    assert_eq!(
        d.resume("team/app", &cur).await.unwrap(),
        ResumePoint::Unconfirmed(cur.clone())
    );
    let e = d
        .upload_chunk_from(&cur, common::body(blob.bytes.slice(MIB..2 * MIB)))
        .await
        .unwrap_err();
    tracing::warn!(error = %e, cursor = ?cur, "as the daemon would log it");

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("registry request"), "nothing logged?\n{logs}");
    assert!(
        logs.contains("?REDACTED"),
        "upload URLs with queries were logged, redacted\n{logs}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode("AWS:sekrit-token-1");
    for secret in ["sekrit", b64.as_str(), "_state", "Basic "] {
        assert!(!logs.contains(secret), "logs show {secret:?}:\n{logs}");
    }
}
