//! A private containerd (Debian's 1.6) with the overlayfs snapshotter: it applies each layer
//! into its own directory, with overlay whiteouts, as production nodes do; the tests pull
//! images from the test registry into it and compare the root file systems it mounts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::split::{Tree, tree_of};
use crate::common;

/// How long containerd may take to answer on its socket.
const CONTAINERD_START_MS_MAX: u64 = 30_000;

/// A private containerd (own config, root, state and socket under one directory); stopped
/// with SIGTERM when dropped.
pub struct Containerd {
    child: Child,
    dir: PathBuf,
}

/// The daemon's config: private paths, no CRI and no snapshotters but the two that need no
/// setup (overlayfs is the default).
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#
    )
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        common::require_tool("containerd");
        common::require_tool("ctr");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.toml"), config(dir)).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_millis(CONTAINERD_START_MS_MAX);
        while !c.run(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd does not answer: {}",
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", "hoist"])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// `ctr ARGS`, which must succeed; its stderr otherwise.
    pub fn ctr(&self, args: &[&str]) -> Result<(), String> {
        let out = self.run(args);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Pulls `image` (`HOST/REPO:TAG` on a plain-HTTP registry), applies its layers with the
    /// overlayfs snapshotter, mounts its root file system at `at` and reads it; an error
    /// when containerd cannot pull or apply it.
    pub fn rootfs(&self, image: &str, at: &Path) -> Result<Tree, String> {
        self.ctr(&["images", "pull", "--plain-http", image])?;
        self.mounted(image, at, tree_of)
    }

    /// `read` of image `image`'s root file system (an image containerd has), mounted at `at`
    /// for the call and unmounted after.
    pub fn mounted<T>(
        &self,
        image: &str,
        at: &Path,
        read: impl FnOnce(&Path) -> T,
    ) -> Result<T, String> {
        std::fs::create_dir_all(at).unwrap();
        let target = at.to_str().unwrap();
        self.ctr(&["images", "mount", image, target])?;
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(at)));
        let unmounted = self.ctr(&["images", "unmount", "--rm", target]);
        let got = got.map_err(|_| format!("reading the mounted {image} failed"))?;
        unmounted?;
        Ok(got)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        common::terminate(&mut self.child, Duration::from_secs(10));
    }
}
