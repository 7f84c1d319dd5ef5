//! Bandwidth limits: token buckets shared by every upload of the daemon (the global limit) and
//! of one job (a per-job limit), changeable while uploads run.
//!
//! Background pushes should leave room on a laptop's uplink; docker, skopeo and crane have no
//! such limit (users are told to use `trickle`). A sender calls [`Limits::acquire`] with the
//! bytes it is about to write; the call returns when every bucket on the path has them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A bucket holds at most this much time's worth of its rate: short enough that a burst does
/// not defeat the limit, long enough that a sender is not woken for every few kilobytes.
const BURST_MS: u64 = 100;
/// The smallest burst, so that low rates still move reasonable pieces.
const BURST_BYTES_MIN: u64 = 16 * 1024;

/// One token bucket. `rate = None` means unlimited.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate_bytes_per_s: Option<u64>,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate_bytes_per_s: Option<u64>) -> Arc<Bucket> {
        Arc::new(Bucket {
            state: Mutex::new(State {
                rate_bytes_per_s: rate_bytes_per_s.filter(|r| *r > 0),
                tokens: 0.0,
                last: Instant::now(),
            }),
        })
    }

    pub fn rate(&self) -> Option<u64> {
        self.lock().rate_bytes_per_s
    }

    /// Changes the rate at once; senders waiting on the old rate pick it up within a burst.
    pub fn set_rate(&self, rate_bytes_per_s: Option<u64>) {
        let mut s = self.lock();
        s.rate_bytes_per_s = rate_bytes_per_s.filter(|r| *r > 0);
        s.tokens = s.tokens.min(burst_bytes(s.rate_bytes_per_s) as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned bucket only means a sender panicked mid-update; its numbers are still
        // usable, and a rate limiter must never take the daemon down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to `want` bytes of tokens: returns how many it took now (at least 1 when the
    /// bucket is unlimited or has tokens) or, with 0, how long to wait before asking again.
    fn take(&self, want: u64) -> (u64, Duration) {
        let mut s = self.lock();
        let Some(rate) = s.rate_bytes_per_s else {
            return (want, Duration::ZERO);
        };
        let now = Instant::now();
        let burst = burst_bytes(Some(rate)) as f64;
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate as f64).min(burst);
        s.last = now;
        if s.tokens >= 1.0 {
            let n = (s.tokens as u64).min(want);
            s.tokens -= n as f64;
            return (n, Duration::ZERO);
        }
        let need = (want as f64).min(burst) - s.tokens;
        (
            0,
            Duration::from_secs_f64(need / rate as f64).max(Duration::from_millis(1)),
        )
    }

    /// Waits until `bytes` tokens have been taken from this bucket.
    pub async fn acquire(&self, bytes: u64) {
        let mut left = bytes;
        while left > 0 {
            let (got, wait) = self.take(left);
            left -= got;
            if got == 0 {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn burst_bytes(rate: Option<u64>) -> u64 {
    rate.map_or(u64::MAX, |r| (r * BURST_MS / 1000).max(BURST_BYTES_MIN))
}

/// The buckets one upload passes through: the daemon's and its job's.
#[derive(Debug, Clone)]
pub struct Limits {
    pub global: Arc<Bucket>,
    pub job: Option<Arc<Bucket>>,
}

impl Limits {
    pub fn unlimited() -> Limits {
        Limits {
            global: Bucket::new(None),
            job: None,
        }
    }

    /// Waits until `bytes` may be sent under every limit.
    pub async fn acquire(&self, bytes: u64) {
        if let Some(job) = &self.job {
            job.acquire(bytes).await;
        }
        self.global.acquire(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_the_rate() {
        let b = Bucket::new(Some(1_000_000));
        let start = Instant::now();
        b.acquire(3_000_000).await;
        let t = start.elapsed();
        // 3 MB at 1 MB/s: about 3 s (the bucket starts empty).
        assert!(
            t >= Duration::from_millis(2900) && t <= Duration::from_millis(3100),
            "{t:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_does_not_wait() {
        let b = Bucket::new(None);
        let start = Instant::now();
        b.acquire(u64::MAX / 2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_changes_apply_to_waiting_senders() {
        let b = Bucket::new(Some(100_000));
        let b2 = b.clone();
        let start = Instant::now();
        let sender = tokio::spawn(async move { b2.acquire(10_000_000).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.set_rate(Some(10_000_000));
        sender.await.unwrap();
        // 100 KB in the first second, then ~9.9 MB at 10 MB/s: about 2 s, not 100 s.
        assert!(
            start.elapsed() < Duration::from_millis(2200),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn job_and_global_limits_both_apply() {
        let limits = Limits {
            global: Bucket::new(Some(4_000_000)),
            job: Some(Bucket::new(Some(1_000_000))),
        };
        let start = Instant::now();
        limits.acquire(2_000_000).await;
        assert!(
            start.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shared_by_concurrent_senders() {
        let b = Bucket::new(Some(1_000_000));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire(500_000).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 4 x 0.5 MB through one 1 MB/s bucket: about 2 s in all.
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(1900) && t <= Duration::from_millis(2200),
            "{t:?}"
        );
    }
}
