//! The fixed split cases (`tests/data/split/`: layers that GNU tar and Python's tarfile write,
//! each once broke a split) and the crafted layer, pushed through the daemon split and with
//! `--split-layers off` to a real registry, then applied by real appliers: umoci (one tree)
//! and containerd's overlayfs snapshotter (each layer into its own directory). The split push
//! must give the file system the whole push gives.

use hoist::api::{Job, JobState, SplitLayers};
use hoist::cli::client::Client;
use hoist::daemon::Config;

use crate::common::{self, TestRegistry};
use crate::daemon_support::TestDaemon;
use crate::push_support::containerd::Containerd;
use crate::push_support::split::{
    SPLIT_TEST_BYTES, Tree, crafted_archive, differences, one_layer_archive, split_request,
    try_unpacked,
};
use crate::push_support::{PUSH_MS_MAX, wait_for};
use crate::split_props::{FIXED_CASES, fixed_layer};

/// Pushes `source` to `target` with `split`; the finished job, or why it failed.
async fn push(
    client: &Client,
    source: &str,
    target: &str,
    split: SplitLayers,
) -> Result<Job, String> {
    let id = client
        .submit(&split_request(source, target, split))
        .await
        .map_err(|e| format!("submit: {e}"))?
        .id;
    let job = wait_for(client, &id, PUSH_MS_MAX, "ended", |j| j.state.is_final()).await;
    match job.state {
        JobState::Done => Ok(job),
        _ => Err(format!(
            "the push to {target} ended {:?}: {}",
            job.state,
            job.reason.unwrap_or_default()
        )),
    }
}

/// Pushes `source` split (tag `NAME-split`) and whole (`NAME-whole`) under `REPO`; the two
/// images' references, or why a push failed.
async fn push_both(
    client: &Client,
    host: &str,
    source: &str,
    name: &str,
) -> Result<[String; 2], String> {
    let split = format!("{host}/fixed/{name}:split");
    let whole = format!("{host}/fixed/{name}:whole");
    let parts = push(
        client,
        source,
        &split,
        SplitLayers::MaxBytes(SPLIT_TEST_BYTES),
    )
    .await?;
    let one = push(client, source, &whole, SplitLayers::Off).await?;
    eprintln!("{name}: {} blobs pushed split", parts.blobs.len());
    // Every case can be split at 1 MiB: one that stays whole is not checked here.
    if parts.blobs.len() <= one.blobs.len() {
        return Err(format!("the split push made no parts: {:?}", parts.blobs));
    }
    Ok([split, whole])
}

/// `image` from the test registry into an OCI layout under `dir`, unpacked by umoci.
fn umoci_tree(image: &str, dir: &std::path::Path) -> Result<Tree, String> {
    let layout = dir.join("oci");
    std::fs::create_dir_all(dir).unwrap();
    common::skopeo(&[
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:img", layout.display()),
    ]);
    try_unpacked(&format!("{}:img", layout.display()), &dir.join("bundle"))
}

/// What differs between the whole push's tree and the split push's (`trees`), if anything;
/// the whole one must have at least `nodes_min` entries.
fn compared(name: &str, trees: Result<(Tree, Tree), String>, nodes_min: usize) -> Option<String> {
    match trees {
        Err(e) => Some(format!("{name}: {e}")),
        Ok((want, got)) => {
            assert!(
                want.nodes.len() >= nodes_min,
                "{name}: {:?}",
                want.nodes.keys()
            );
            let d = differences(&want, &got);
            (!d.is_empty()).then(|| format!("{name}: {}", d.join("; ")))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_cases_pushed_split_unpack_with_umoci_as_pushed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let mut failed = Vec::new();
    for name in FIXED_CASES {
        let case = dir.path().join(name);
        std::fs::create_dir_all(&case).unwrap();
        let source = one_layer_archive(&case.join("image.tar"), &fixed_layer(name));
        let [split, whole] = match push_both(&client, &host, &source, name).await {
            Ok(images) => images,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        let trees = umoci_tree(&whole, &case.join("whole"))
            .and_then(|want| Ok((want, umoci_tree(&split, &case.join("split"))?)));
        failed.extend(compared(name, trees, 3));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_applies_split_pushes_as_whole_ones() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let host = registry.host();
    let daemon = TestDaemon::start_with(&dir.path().join("d"), Config::default());
    let client = daemon.client();
    let containerd = Containerd::start(&dir.path().join("containerd"));
    let (crafted, _) = crafted_archive(dir.path());
    let mut cases = vec![("crafted", crafted, 20)];
    for name in FIXED_CASES {
        let path = dir.path().join(format!("{name}.tar"));
        cases.push((name, one_layer_archive(&path, &fixed_layer(name)), 3));
    }
    let mut failed = Vec::new();
    for (name, source, nodes_min) in cases {
        let images = push_both(&client, &host, &source, name).await;
        let trees = images.and_then(|[split, whole]| {
            let at = dir.path().join(format!("mnt-{name}"));
            let want = containerd.rootfs(&whole, &at.join("whole"))?;
            let got = containerd.rootfs(&split, &at.join("split"))?;
            Ok((want, got))
        });
        failed.extend(compared(name, trees, nodes_min));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
