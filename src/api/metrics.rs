//! The metrics page (`GET /v1/metrics`): Prometheus text exposition format 0.0.4.

use super::job::JobState;

/// Counters of `GET /v1/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub retries: u64,
    pub resumes: u64,
    pub jobs_running: u64,
    pub upload_slots_in_use: u64,
    pub jobs_by_state: Vec<(JobState, u64)>,
}

impl Metrics {
    /// The Prometheus text exposition of these counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let series = [
            (
                "hoist_upload_bytes_total",
                "counter",
                "Blob bytes acknowledged by registries.",
                self.bytes_sent,
            ),
            (
                "hoist_upload_chunks_total",
                "counter",
                "Blob chunks acknowledged by registries.",
                self.chunks_sent,
            ),
            (
                "hoist_retries_total",
                "counter",
                "Steps retried after a transient failure.",
                self.retries,
            ),
            (
                "hoist_resumes_total",
                "counter",
                "Jobs resumed after a pause or a daemon restart.",
                self.resumes,
            ),
            (
                "hoist_jobs_running",
                "gauge",
                "Jobs whose task runs now.",
                self.jobs_running,
            ),
            (
                "hoist_upload_slots_in_use",
                "gauge",
                "Upload connections open now (capped by --uploads-max).",
                self.upload_slots_in_use,
            ),
        ];
        for (name, kind, help, value) in series {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        out.push_str("# HELP hoist_jobs Jobs in the store, by state.\n# TYPE hoist_jobs gauge\n");
        for state in JobState::ALL {
            let n = self
                .jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            out.push_str(&format!("hoist_jobs{{state=\"{state}\"}} {n}\n"));
        }
        out
    }
}
