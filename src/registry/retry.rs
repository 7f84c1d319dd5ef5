//! Retries with exponential backoff and jitter (`backon`), honouring `Retry-After`.
//!
//! The client retries internally only what is safe to repeat: idempotent requests on any
//! retryable error, and any request answered 429 (a throttled request was not processed).
//! A PATCH or final PUT that failed in flight is NOT repeated here: the caller asks
//! [`RegistryClient::resume`](super::RegistryClient::resume) where the registry really is.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

use super::RegistryError;

/// The longest `Retry-After` we wait for; a registry asking for more is treated as asking this.
pub const RETRY_AFTER_MS_MAX: u64 = 120_000;

/// How often and how long to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries_max: usize,
    pub delay_min: Duration,
    pub delay_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries_max: 5,
            delay_min: Duration::from_millis(250),
            delay_max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            retries_max: 0,
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.delay_min)
            .with_max_delay(self.delay_max)
            .with_max_times(self.retries_max)
            .with_factor(2.0)
            .with_jitter()
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the policy is
/// spent. A `Retry-After` from the registry replaces the computed delay (capped).
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    retry_if(policy, what, RegistryError::is_retryable, op).await
}

/// [`retry`] with a custom predicate (still only on errors `is_retryable` accepts).
pub async fn retry_if<T, F, Fut, P>(
    policy: &RetryPolicy,
    what: &str,
    pred: P,
    op: F,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
    P: Fn(&RegistryError) -> bool,
{
    op.retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|e| e.is_retryable() && pred(e))
        .adjust(|e, delay| {
            delay.map(|d| match e.retry_after() {
                Some(ra) => ra.min(Duration::from_millis(RETRY_AFTER_MS_MAX)),
                None => d,
            })
        })
        .notify(|e, delay| tracing::warn!(what, error = %e, delay_ms = delay.as_millis() as u64, "retrying"))
        .await
}

/// `Retry-After: <seconds>` (the HTTP-date form is rare on registries and ignored).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(s: u16, retry_after: Option<Duration>) -> RegistryError {
        RegistryError::Status {
            method: "GET".into(),
            url: "u".into(),
            status: s,
            code: None,
            message: None,
            detail: None,
            retry_after,
        }
    }

    #[tokio::test]
    async fn backs_off_then_succeeds_and_honours_retry_after() {
        let n = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let fast = RetryPolicy {
            retries_max: 5,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(20),
        };
        let r = retry(&fast, "test", || async {
            match n.fetch_add(1, Ordering::SeqCst) {
                0 => Err(status(429, None)),
                1 => Err(status(503, Some(Duration::from_secs(1)))),
                _ => Ok(42),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 42);
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn stops_on_permanent_errors_and_when_spent() {
        let n = AtomicU32::new(0);
        let fast = RetryPolicy {
            retries_max: 5,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(20),
        };
        let r: Result<(), _> = retry(&fast, "test", || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(status(404, None))
        })
        .await;
        assert_eq!(r.unwrap_err().status(), Some(404));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n = AtomicU32::new(0);
        let p = RetryPolicy {
            retries_max: 3,
            ..fast
        };
        let r: Result<(), _> = retry(&p, "test", || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(status(500, None))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }
}
