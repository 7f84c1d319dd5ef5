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
        let counters = [
            (
                "hoist_upload_bytes_total",
                "Blob bytes acknowledged by registries.",
                self.bytes_sent,
            ),
            (
                "hoist_upload_chunks_total",
                "Blob chunks acknowledged by registries.",
                self.chunks_sent,
            ),
            (
                "hoist_retries_total",
                "Steps retried after a transient failure.",
                self.retries,
            ),
            (
                "hoist_resumes_total",
                "Jobs resumed after a pause or a daemon restart.",
                self.resumes,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        let gauges = [
            (
                "hoist_jobs_running",
                "Jobs whose task runs now.",
                self.jobs_running,
            ),
            (
                "hoist_upload_slots_in_use",
                "Upload connections open now (capped by --uploads-max).",
                self.upload_slots_in_use,
            ),
        ];
        for (name, help, value) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
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
