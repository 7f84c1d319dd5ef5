//! The identity of the source files a job reads: device, inode, size and mtime of
//! every file a planned blob is read from, taken with `fstat` on the descriptor the plan opened
//! (so it names the file actually read, whatever a path or symlink points at later).
//!
//! The first run of a job records it in the job's spool directory; every later run (resume,
//! retry, daemon restart) compares, and fails the job if any file changed: blobs read in place
//! and upload cursors refer to those exact bytes. A symlink swapped after the first run, a
//! rebuilt archive, or a layout rewritten in place all end the job with a clear message.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;

use serde::{Deserialize, Serialize};

use crate::daemon::job::{JobContext, JobError};
use crate::plan::PushPlan;

const IDENTITY_FILE: &str = "source-identity.json";

/// What identifies one source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileIdentity {
    pub fn of(file: &File) -> std::io::Result<FileIdentity> {
        let m = file.metadata()?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// Identity of every file the plan reads, by blob name. A blob read from a compressed layer's
/// decompressed copy (a part of it) is identified by the compressed layer's file: the copy is
/// the job's own (checked against the layer's diff_id when made, and made again if lost).
fn identities(plan: &PushPlan) -> Result<BTreeMap<String, FileIdentity>, JobError> {
    let mut out = BTreeMap::new();
    let blobs = std::iter::once(&plan.config).chain(plan.layers.iter().map(|l| &l.source));
    for b in blobs {
        let file = plan
            .unpacked
            .iter()
            .find(|u| std::sync::Arc::ptr_eq(&u.file, &b.location.file))
            .map_or(&b.location.file, |u| &u.source.file);
        let id = FileIdentity::of(file).map_err(|e| {
            JobError::failed(format!(
                "cannot stat the source file of {}: {e}",
                b.location.name
            ))
        })?;
        out.insert(b.location.name.to_string(), id);
    }
    Ok(out)
}

/// Records the source identity on the first run, compares it on later ones.
pub fn check(ctx: &JobContext, plan: &PushPlan) -> Result<(), JobError> {
    let now = identities(plan)?;
    let path = ctx.spool_dir().join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let before: BTreeMap<String, FileIdentity> =
                serde_json::from_slice(&bytes).unwrap_or_default();
            for (name, id) in &now {
                match before.get(name) {
                    Some(b) if b == id => {}
                    Some(_) => {
                        return Err(JobError::failed(format!(
                            "the source changed since this job started: {name} is another file or was modified (device, inode, size or mtime differ); submit the push again"
                        )));
                    }
                    None => {
                        return Err(JobError::failed(format!(
                            "the source changed since this job started: {name} was not part of it; submit the push again"
                        )));
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let json = serde_json::to_vec(&now).map_err(|e| JobError::failed(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json)
                .and_then(|()| File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    JobError::failed(format!(
                        "cannot record the source identity in {}: {e}: check the state directory",
                        path.display()
                    ))
                })
        }
        Err(e) => Err(JobError::failed(format!(
            "cannot read {}: {e}: check the state directory",
            path.display()
        ))),
    }
}
