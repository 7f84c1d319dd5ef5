//! Uploads of a `docker-daemon:` source's layers that start while the export goes on.
//!
//! A layer whose compressed file is whole in the spool (synced, renamed, indexed) has its final
//! digest and size: it is recorded in the job at its place in the plan
//! ([`JobContext::plan_blob`]) and uploaded at once by the same [`Uploader`] as the upload
//! phase (upload slots under the daemon's cap, a cursor persisted before each next chunk,
//! the in-flight lock, patience through outages), while the export goes on with the next
//! layer. The upload phase then finds the blob `uploaded` and skips it. A hoistd restart during
//! the export finds the layer in the spool at once and resumes its upload from the recorded
//! cursor; the whole plan is recorded when the export has ended
//! ([`crate::daemon::prepare::record_plan`], with these blobs as announced).

use std::sync::Arc;

use tokio::task::JoinSet;

use super::upload::{BlobJob, Bytesrc, Uploader};
use crate::api::{BlobAction, JobState};
use crate::daemon::job::{JobContext, JobError};
use crate::digest::Digest;
use crate::source::SourceLayer;
use crate::store::NewBlob;

/// The uploads started before the plan is whole. Dropped, they end (aborted where they are:
/// the last acknowledged chunk's cursor is persisted).
pub struct EarlyUploads {
    ctx: JobContext,
    uploader: Arc<Uploader>,
    tasks: JoinSet<Result<(), JobError>>,
    /// The blobs recorded and announced so far, in the order they were.
    announced: Vec<Digest>,
}

impl EarlyUploads {
    pub fn new(ctx: JobContext, uploader: Arc<Uploader>) -> EarlyUploads {
        EarlyUploads {
            ctx,
            uploader,
            tasks: JoinSet::new(),
            announced: Vec::new(),
        }
    }

    /// The blobs recorded (and announced in the job's events) so far.
    pub fn announced(&self) -> &[Digest] {
        &self.announced
    }

    /// Records `layer` (whole in the spool) at `position` of the plan and starts its upload;
    /// the job is `uploading` from the first one on.
    pub async fn start(&mut self, position: usize, layer: &SourceLayer) -> Result<(), JobError> {
        if self.announced.contains(&layer.digest) {
            return Ok(());
        }
        let blob = NewBlob {
            digest: layer.digest.clone(),
            size_bytes: layer.size,
            media_type: layer.media_type.clone(),
            action: BlobAction::AsIs,
        };
        let record = self.ctx.plan_blob(position, blob).await?;
        self.announced.push(layer.digest.clone());
        if self.announced.len() == 1 {
            self.ctx.enter(JobState::Uploading).await?;
        }
        let job = BlobJob {
            key: layer.digest.clone(),
            record: Some(record),
            src: Bytesrc::Source {
                location: layer.location.clone(),
                digest: layer.digest.clone(),
            },
        };
        let up = self.uploader.clone();
        self.tasks
            .spawn(async move { up.run(job).await.map(|_| ()) });
        Ok(())
    }

    /// The first upload to end with an error; never resolves while none has.
    pub async fn failure(&mut self) -> JobError {
        loop {
            match self.tasks.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return e,
                Some(Err(e)) => return abnormal(&e),
            }
        }
    }

    /// What the push ends with when planning ended with `e`: on a stop, once every upload
    /// stopped at its chunk boundary (as the upload phase's do); on a failure at once (the
    /// uploads end where they are when dropped).
    pub async fn ended_by(&mut self, e: JobError) -> JobError {
        if e == JobError::Stopped {
            while self.tasks.join_next().await.is_some() {}
        }
        e
    }

    /// Waits for every upload; a failure wins over a stop, the first failure is the one
    /// reported (the others go on to their end, their cursors persisted).
    pub async fn finish(mut self) -> Result<(), JobError> {
        let mut first: Option<JobError> = None;
        while let Some(joined) = self.tasks.join_next().await {
            let e = match joined {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => abnormal(&e),
            };
            if first.is_none() || (first == Some(JobError::Stopped) && e != JobError::Stopped) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn abnormal(e: &tokio::task::JoinError) -> JobError {
    JobError::failed(format!(
        "internal error: an upload task ended abnormally ({e}): report this as a bug"
    ))
}
