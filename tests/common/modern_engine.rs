//! A current Docker engine (Debian sid's Docker 28 with buildx) in the debootstrap chroot that
//! `scripts/engine-chroot.sh build` makes, with either image store. One engine per store serves
//! every test process of a run: `engine-chroot.sh ensure` starts it under a lock unless it
//! runs, builds the test images once, and stops it after a while without tests.
//!
//! The chroot is found through `HOIST_ENGINE_CACHE` (default `/var/cache/hoist/engines`).
//! Without it a test is skipped with a message, and fails under CI (`CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds without a test before the shared engine stops.
const ENGINE_IDLE_S: u64 = 600;
/// The default cache of the chroot, as `scripts/engine-chroot.sh` has it.
const ENGINE_CACHE_DEFAULT: &str = "/var/cache/hoist/engines";
/// The file `engine-chroot.sh build` writes last.
const ENGINE_MARKER: &str = "sid/.hoist-engine-complete";

/// Which image store the engine keeps images in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Classic,
    Containerd,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Classic => "classic",
            Store::Containerd => "containerd",
        }
    }
}

/// A running engine, shared; its images (`engine-chroot.sh images`): `app:1` on both
/// stores (imported base, COPY layers, a RUN that removes a file), `multi:1` (linux/amd64 and
/// linux/arm64 with attestations), `zst:1` (zstd layers) and `armbins:1` (labelled
/// linux/arm64, holding x86-64 executables) on the containerd store.
pub struct ModernEngine {
    pub store: Store,
    /// `unix://...`: what `DOCKER_HOST` is set to.
    pub host: String,
    dir: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/engine-chroot.sh")
}

impl ModernEngine {
    /// The shared engine of `store`, started if needed; `None` (with a message) when the
    /// chroot is not built and this is not CI.
    pub fn shared(store: Store) -> Option<ModernEngine> {
        let cache = std::env::var("HOIST_ENGINE_CACHE").unwrap_or(ENGINE_CACHE_DEFAULT.into());
        if !Path::new(&cache).join(ENGINE_MARKER).exists() {
            let msg = format!(
                "no engine chroot in {cache}: run `scripts/engine-chroot.sh build` (scripts/test.sh does)"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("skipped: {msg}");
            return None;
        }
        // One engine per checkout and store: worktrees do not share images they may build
        // differently.
        let tag = hoist::digest::Digest::sha256_of(env!("CARGO_MANIFEST_DIR").as_bytes());
        let dir = std::env::temp_dir().join(format!(
            "hoist-engine-{}-{}",
            store.name(),
            &tag.hex()[..12]
        ));
        let out = Command::new(script())
            .arg("ensure")
            .arg(store.name())
            .arg(&dir)
            .arg(ENGINE_IDLE_S.to_string())
            .output()
            .expect("run scripts/engine-chroot.sh");
        assert!(
            out.status.success(),
            "engine-chroot.sh ensure {}: {}",
            store.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let host = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Some(ModernEngine { store, host, dir })
    }

    /// The chroot's docker CLI (with buildx) against this engine; its stdout.
    pub fn docker(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(script())
            .arg("docker")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run the chroot's docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A directory the engine's CLI sees at the same path (for `docker save -o`).
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join("run").join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
