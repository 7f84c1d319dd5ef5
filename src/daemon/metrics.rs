//! Process-wide counters for `GET /v1/metrics`. Atomics, because job tasks bump them from
//! many tasks and the scrape reads them without asking the scheduler.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the daemon started. Relaxed ordering: each is an independent tally.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_sent: AtomicU64,
    chunks_sent: AtomicU64,
    retries: AtomicU64,
    resumes: AtomicU64,
    jobs_running: AtomicU64,
    upload_slots_in_use: AtomicU64,
}

impl Counters {
    pub fn add_chunk(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.chunks_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_resume(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_jobs_running(&self, n: u64) {
        self.jobs_running.store(n, Ordering::Relaxed);
    }

    pub fn slot_taken(&self) {
        self.upload_slots_in_use.fetch_add(1, Ordering::Relaxed);
    }

    pub fn slot_released(&self) {
        self.upload_slots_in_use.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn jobs_running(&self) -> u64 {
        self.jobs_running.load(Ordering::Relaxed)
    }

    /// The wire form, with the job counts (read from the store) filled in by the caller.
    pub fn snapshot(&self, jobs_by_state: Vec<(crate::api::JobState, u64)>) -> crate::api::Metrics {
        crate::api::Metrics {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            chunks_sent: self.chunks_sent.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            resumes: self.resumes.load(Ordering::Relaxed),
            jobs_running: self.jobs_running.load(Ordering::Relaxed),
            upload_slots_in_use: self.upload_slots_in_use.load(Ordering::Relaxed),
            jobs_by_state,
        }
    }
}
