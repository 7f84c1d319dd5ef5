//! Credentials never leak: not in error messages, not in `Debug` output; upload-URL queries
//! are redacted in errors; a credential helper that hangs is killed (with what it spawned)
//! after its timeout, with a clear error. Logs are covered by tests/logs.rs, credentials to
//! other hosts by tests/ecr.rs (`no_credentials_to_other_hosts`,
//! `blob_redirects_get_no_credentials`) and tests/hostile.rs.
use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::hostile::{Answer, Hostile};
use hoist::registry::{
    ClientOptions, CredentialLookup, CredentialSource, Credentials, RegistryClient, RetryPolicy,
    Token, UploadCursor,
};

const SECRET: &str = "sekrit-7f3a";
const STATE: &str = "_state=STATESECRET";

fn creds() -> Credentials {
    Credentials {
        username: "AWS".into(),
        secret: SECRET.into(),
    }
}

fn b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("AWS:{SECRET}"))
}

/// `text` shows neither the secret, its Basic form, nor an upload URL's state.
fn assert_clean(what: &str, text: &str) {
    for s in [SECRET, b64().as_str(), "STATESECRET"] {
        assert!(!text.contains(s), "{what} shows {s:?}: {text}");
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        credentials: Some(creds()),
        stall_timeout: Duration::from_secs(2),
        retry: RetryPolicy::none(),
        ..ClientOptions::default()
    }
}

#[test]
fn debug_output_never_shows_secrets() {
    let o = opts();
    let c = RegistryClient::new("127.0.0.1:5000", o.clone()).unwrap();
    let cursor = UploadCursor {
        session_url: format!("http://127.0.0.1:5000/v2/a/blobs/uploads/x?{STATE}"),
        offset: 3,
    };
    let token = Token::from_response(
        format!(r#"{{"token":"{SECRET}","expires_in":60}}"#).as_bytes(),
        std::time::Instant::now(),
    )
    .unwrap();
    for (what, text) in [
        ("Credentials", format!("{:?}", creds())),
        ("Credentials {:#?}", format!("{:#?}", creds())),
        ("ClientOptions", format!("{o:?}")),
        (
            "CredentialSource",
            format!("{:?}", CredentialSource::Explicit(creds())),
        ),
        ("RegistryClient", format!("{c:?}")),
        ("UploadCursor", format!("{cursor:?}")),
        ("Token", format!("{token:?}")),
    ] {
        assert_clean(what, &text);
    }
    assert!(format!("{cursor:?}").contains("?REDACTED"));
}

/// Refused credentials: the auth error names the source of the credentials, never them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_never_show_credentials() {
    let h = Hostile::start(|_| {
        Answer::full(
            401,
            &[("www-authenticate", r#"Basic realm="r""#)],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
    })
    .await;
    let c = RegistryClient::new(&h.host(), opts()).unwrap();
    let e = c.ping().await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("authentication to"), "{msg}");
    assert!(msg.contains("the credentials given to hoist"), "{msg}");
    assert_clean("auth error", &msg);
    assert_clean("auth error {:?}", &format!("{e:?}"));
    // The registry did get them (so the test is not vacuous).
    assert!(
        h.seen()
            .iter()
            .any(|s| s.header("authorization") == Some(&format!("Basic {}", b64())))
    );
}

/// Sends a chunk to `cursor` and expects an error whose Display and Debug show the session's
/// query as `?REDACTED` and no secret; `what` names the error in the messages.
async fn assert_upload_error_redacted(c: &RegistryClient, cursor: &UploadCursor, what: &str) {
    let e = c
        .upload_chunk_from(cursor, common::body(Bytes::from_static(b"abc")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("?REDACTED"), "{e}");
    assert_clean(what, &e.to_string());
    assert_clean(&format!("{what} {{:?}}"), &format!("{e:?}"));
}

/// Upload URLs keep the registry's state in their query: errors (status and transport, their
/// Display and Debug) show it as `?REDACTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_url_queries_are_redacted_in_errors() {
    let h = Hostile::start(|_| {
        Answer::full(
            500,
            &[],
            r#"{"errors":[{"code":"UNKNOWN","message":"boom"}]}"#,
        )
    })
    .await;
    let c = RegistryClient::new(&h.host(), opts()).unwrap();
    let cursor = UploadCursor {
        session_url: format!("http://{}/v2/a/blobs/uploads/x?{STATE}", h.host()),
        offset: 0,
    };
    assert_upload_error_redacted(&c, &cursor, "status error").await;

    // A transport error: nobody listens there any more.
    let port = common::free_port();
    let gone = UploadCursor {
        session_url: format!("http://127.0.0.1:{port}/v2/a/blobs/uploads/x?{STATE}"),
        offset: 0,
    };
    let c = RegistryClient::new(&format!("127.0.0.1:{port}"), opts()).unwrap();
    assert_upload_error_redacted(&c, &gone, "transport error").await;
}

/// A client without credentials of its own for a server that asks for Basic ones, with the
/// credential helper `name` (running `script`) configured for it in `dir`.
async fn client_with_helper(dir: &Path, name: &str, script: &str) -> (Hostile, RegistryClient) {
    let h =
        Hostile::start(|_| Answer::full(401, &[("www-authenticate", r#"Basic realm="r""#)], ""))
            .await;
    let lookup = helper(dir, &h.host(), name, script);
    let c = RegistryClient::new(
        &h.host(),
        ClientOptions {
            credentials: None,
            lookup,
            ..opts()
        },
    )
    .unwrap();
    (h, c)
}

fn helper(dir: &Path, host: &str, name: &str, script: &str) -> CredentialLookup {
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"credHelpers": {host: name}}).to_string(),
    )
    .unwrap();
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap();
    CredentialLookup {
        docker_config_dir: Some(dir.to_path_buf()),
        helper_dirs: vec![dir.to_path_buf()],
        helper_timeout: Duration::from_secs(1),
    }
}

/// A helper that printed credentials and then failed: its stdout is not quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_helper_does_not_leak_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, c) = client_with_helper(
        dir.path(),
        "leaky",
        &format!(
            "#!/bin/sh\nprintf '{{\"Username\":\"AWS\",\"Secret\":\"{SECRET}\"}}'\necho 'token service down' >&2\nexit 1\n"
        ),
    )
    .await;
    let e = c.ping().await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("docker-credential-leaky"), "{msg}");
    assert!(msg.contains("token service down"), "{msg}");
    assert_clean("helper error", &msg);
}

/// `/proc/PID/stat`'s state, `None` once the process is gone.
fn state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim().chars().next()
}

/// A helper that never answers (and spawned a child that would outlive it): after the
/// timeout (1 s here, 30 s by default) the client kills its whole process group and fails
/// with a message that names the helper and says what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_helper_is_killed_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let (_h, c) = client_with_helper(
        dir.path(),
        "hang",
        &format!(
            "#!/bin/sh\nsleep 600 &\necho \"$$ $!\" > {}\nwait\n",
            pids.display()
        ),
    )
    .await;
    let t = Instant::now();
    let e = c.ping().await.unwrap_err();
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("docker-credential-hang") && msg.contains("no answer within 1 s: killed it"),
        "{msg}"
    );
    let pids = std::fs::read_to_string(&pids).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids.split_whitespace() {
        // Killed: gone, or a zombie waiting for its reaper.
        while !matches!(state(pid), None | Some('Z')) {
            assert!(
                Instant::now() < deadline,
                "helper process {pid} still runs: {:?}",
                state(pid)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
