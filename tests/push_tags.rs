//! Several tags in one push and `--digestfile`, end to end through the socket against the real
//! registry: the blobs are uploaded once for every tag, each tag resolves (skopeo) to the same
//! digest, a bad tag is refused at submission, a job killed between two tags writes the rest
//! when it runs again, an immutable tag that holds another image fails the job naming it, and
//! the CLI writes the digest skopeo reports to the digest file (refused with `--detach`).
use crate::common;
use crate::daemon_support;
use crate::push_support;

use std::process::Stdio;
use std::sync::atomic::Ordering;

use hoist::api::{Compression, JobState};
use hoist::cli::client::{Client, ClientError};
use hoist::daemon::Config;
use hoist_testkit::sample::SampleCompression;

use common::TestRegistry;
use common::ecr_proxy::EcrProxy;
use daemon_support::{TestDaemon, hoist, kill9, text, wait_answers};
use push_support::*;

/// Blobs of a test image: its config and three layers.
const BLOBS: usize = 4;

/// The manifest digest skopeo reports for `reference` (`sha256:...`).
fn skopeo_digest(host: &str, reference: &str) -> String {
    let out = common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{host}/{reference}"),
    ]);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Requests of the proxy's log that start with `prefix` (e.g. `POST /v2/r/blobs/uploads/`).
fn requests(proxy: &EcrProxy, prefix: &str) -> usize {
    proxy.log().iter().filter(|l| l.starts_with(prefix)).count()
}

/// Manifest PUTs to `repo` under `tag`.
fn manifest_puts(proxy: &EcrProxy, repo: &str, tag: &str) -> usize {
    requests(proxy, &format!("PUT /v2/{repo}/manifests/{tag} "))
}

fn with_tags(source: &str, target: &str, tags: &[&str]) -> hoist::api::SubmitRequest {
    hoist::api::SubmitRequest {
        extra_tags: tags.iter().map(|t| t.to_string()).collect(),
        ..request(source, target, Compression::Gzip)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tags_in_one_push_upload_the_blobs_once_and_resolve_to_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    let (img, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(51, 6, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let target = format!("{}/tags/img:1", proxy.host());
    // Duplicates, and the target's own tag, collapse.
    let req = with_tags(&source, &target, &["2", "latest", "2", "1"]);
    let job = client.submit(&req).await.unwrap();
    assert_eq!(job.spec.extra_tags, ["2", "latest", "1"]);
    let job = wait_done(&client, &job.id).await;
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));

    for tag in ["1", "2", "latest"] {
        let reference = format!("tags/img:{tag}");
        assert_eq!(
            skopeo_digest(&registry.host(), &reference),
            img.manifest.to_string(),
            "{reference}"
        );
        verify(&registry.host(), &reference, &img.manifest).await;
        assert_eq!(
            manifest_puts(&proxy, "tags/img", tag),
            1,
            "{:?}",
            proxy.log()
        );
    }
    // Each blob is uploaded once (one upload session each), whatever the number of tags.
    let uploads = requests(&proxy, "POST /v2/tags/img/blobs/uploads/");
    assert_eq!(uploads, BLOBS, "{:?}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tag_is_refused_at_submission_and_no_job_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    for bad in ["-x", "a/b", "v1:2", "", &"t".repeat(129)] {
        let req = with_tags("oci:/nowhere", "127.0.0.1:1/r/img:1", &["ok", bad]);
        match client.submit(&req).await {
            Err(ClientError::Api { status, message }) => {
                assert_eq!(status.as_u16(), 422, "{bad:?}: {message}");
                assert!(message.contains("not a valid tag"), "{message}");
                // The tag is quoted, a long one cut.
                let quoted = format!("{bad:?}");
                assert!(
                    message.contains(&quoted[..quoted.len().min(40)]),
                    "{message}"
                );
            }
            other => panic!("{bad:?} accepted or refused otherwise: {other:?}"),
        }
    }
    assert!(client.jobs().await.unwrap().is_empty());
}

/// A job killed after its first tag was written and before the others: the restarted daemon
/// writes them all (the first again, the same bytes), without uploading any blob again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_between_two_tags_writes_the_rest_when_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    let (img, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(52, 6, SampleCompression::Gzip),
    );
    proxy
        .state
        .manifest_puts_before_hold
        .store(1, Ordering::SeqCst);
    proxy.state.hold_manifest_puts.store(true, Ordering::SeqCst);
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    let client = Client::new(d.join("hoist.sock"));
    let hoistd = || {
        daemon_support::hoistd_command(&d, "info")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hoistd")
    };
    let child = hoistd();
    wait_answers(&client, 10).await;
    let target = format!("{}/kill/tags:1", proxy.host());
    let id = client
        .submit(&with_tags(&source, &target, &["2", "3"]))
        .await
        .unwrap()
        .id;
    wait_for(&client, &id, PUSH_MS_MAX, "committing tag 2", |j| {
        j.state == JobState::Committing && proxy.state.manifest_puts_held.load(Ordering::SeqCst)
    })
    .await;
    assert!(tag_exists(registry.addr, "kill/tags", "1"));
    assert!(!tag_exists(registry.addr, "kill/tags", "2"));
    kill9(child);
    proxy
        .state
        .hold_manifest_puts
        .store(false, Ordering::SeqCst);

    let child = hoistd();
    wait_answers(&client, 10).await;
    let job = wait_done(&client, &id).await;
    assert_eq!(job.manifest_digest, Some(img.manifest.clone()));
    for tag in ["1", "2", "3"] {
        let reference = format!("kill/tags:{tag}");
        assert_eq!(
            skopeo_digest(&registry.host(), &reference),
            img.manifest.to_string()
        );
    }
    assert_eq!(
        manifest_puts(&proxy, "kill/tags", "1"),
        2,
        "{:?}",
        proxy.log()
    );
    let uploads = requests(&proxy, "POST /v2/kill/tags/blobs/uploads/");
    assert_eq!(uploads, BLOBS, "{:?}", proxy.log());
    kill9(child);
}

/// ECR's immutable tags: a second tag that already holds another image fails the job with
/// the registry's refusal, naming that tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_second_tag_holding_another_image_fails_naming_the_tag() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let proxy = EcrProxy::start(registry.addr).await;
    proxy.state.immutable_tags.store(true, Ordering::SeqCst);
    let (_, first) = write_oci(
        &dir.path().join("a"),
        &image_spec(53, 2, SampleCompression::Gzip),
    );
    let (_, second) = write_oci(
        &dir.path().join("b"),
        &image_spec(54, 2, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let host = proxy.host();
    let id = submit(
        &client,
        &first,
        &format!("{host}/imm/img:2"),
        Compression::Gzip,
    )
    .await;
    wait_done(&client, &id).await;

    let req = with_tags(&second, &format!("{host}/imm/img:1"), &["2"]);
    let id = client.submit(&req).await.unwrap().id;
    let job = wait_for(&client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    assert_eq!(job.state, JobState::Failed);
    let reason = job.reason.unwrap();
    assert!(
        reason.contains("imm/img:2") && reason.contains("immutable"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pushes_tags_and_writes_the_digest_skopeo_reports_to_the_digest_file() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let (_, source) = write_oci(
        &dir.path().join("img"),
        &image_spec(55, 2, SampleCompression::Gzip),
    );
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let socket = daemon.socket.clone();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let digest_file = out_dir.join("digest");
    let target = format!("{}/cli/img:1", registry.host());
    let run = |args: Vec<String>| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hoist(&socket, &args)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["push", "--no-autostart", "--tag", "2", "--tag", "2"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        v.extend([source.clone(), target.clone()]);
        v
    };

    // With --detach nobody writes the file: refused before anything is submitted.
    let file = digest_file.to_str().unwrap();
    let out = run(args(&["--detach", "--digestfile", file]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--digestfile") && err.contains("--detach"),
        "{err}"
    );
    assert!(daemon.client().jobs().await.unwrap().is_empty());
    assert!(!digest_file.exists());
    // A bad tag: the daemon's refusal, in words.
    let out = run(args(&["--tag", "no/slash"])).await.unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a valid tag"),
        "{}",
        text(&out.stderr)
    );

    let out = run(args(&["--digestfile", file])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&digest_file).unwrap();
    // As skopeo writes it: the digest, no newline.
    assert_eq!(written, skopeo_digest(&registry.host(), "cli/img:1"));
    assert_eq!(written, skopeo_digest(&registry.host(), "cli/img:2"));
    assert_eq!(text(&out.stdout).lines().last(), Some(written.as_str()));
    // Only the digest file is left in its directory (the temporary one was renamed).
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let out = run(vec!["ls".into()]).await.unwrap();
    assert!(
        text(&out.stdout).contains("cli/img:1 +2"),
        "{}",
        text(&out.stdout)
    );
}
