//! The start-up sweep of the spool root. A job's spool directory goes with the job (a delete,
//! a cancel, a finished push), but a daemon that dies between the store's row and the
//! directory leaves the directory behind, and nothing else would ever remove it.
//!
//! The spool root holds one directory per job (named by its ID) beside the daemon-wide
//! compression index and cache; the sweep removes the job directories no job needs and any
//! stray file, and leaves every other directory alone.

use std::collections::HashSet;
use std::path::Path;

use crate::api::{JobId, JobState};

/// Whether a job in `state` still needs its spool: a done job's layers are in the registry,
/// a cancelled one starts from nothing if it is retried, and a failed one compresses its
/// layers again (the same bytes) if it is retried. A paused job keeps its spool: pausing is a
/// break the user means to end, and its compressed chunks save compressing them again.
pub fn needs_spool(state: JobState) -> bool {
    !state.is_final()
}

/// What a sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub dirs: usize,
    pub files: usize,
}

/// Removes from `spool_root` every job directory whose job is not in `keep`, and every entry
/// that is not a directory. Blocking; errors are logged and skipped: a leftover costs disk
/// space, never a job.
pub fn sweep_spool(spool_root: &Path, keep: &HashSet<JobId>) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(spool_root) else {
        return swept;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let orphan = match entry.file_name().to_str().map(str::parse::<JobId>) {
            _ if !kind.is_dir() => true,
            Some(Ok(id)) => !keep.contains(&id),
            _ => false,
        };
        if !orphan {
            continue;
        }
        let removed = if kind.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) if kind.is_dir() => swept.dirs += 1,
            Ok(()) => swept.files += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover from the spool");
            }
        }
    }
    swept
}
