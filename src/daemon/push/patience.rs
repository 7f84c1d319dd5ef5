//! Waiting out the network. Every registry call of a push (repository check, uploads, the
//! verifying HEADs, the manifest PUT, the read-back) goes through [`Patience::call`]: a
//! transient error (connection lost, stall, 408/429/5xx) is reported as
//! `waiting for network, retry in N s`, waited out with capped backoff and tried again, until
//! the job's deadline if it has one. Permanent errors come back to the caller as they are.
//! A wait on a dead link (no HTTP answer) also ends when the registry's link monitor sees the
//! link come back ([`super::wake`]), whatever the backoff; the job's client then starts over
//! with fresh connections.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use super::wake::Link;
use crate::daemon::job::{JobContext, JobError};
use crate::registry::{RegistryClient, RegistryError, VerifyError};

/// The shortest wait between attempts; it doubles per attempt up to `retry_delay_max`.
pub const RETRY_DELAY_MS_MIN: u64 = 500;
/// The default cap of the backoff between attempts (`hoistd --retry-max`).
pub const RETRY_DELAY_MS_MAX_DEFAULT: u64 = 300_000;

/// An error that may go away by itself (the network, a busy registry).
pub trait Transient: Display + Sync {
    fn is_transient(&self) -> bool;
    /// No HTTP answer at all (refused, reset, timed out): the link may be down, so the wait
    /// also ends when the link monitor sees it back. A registry that answers (429, 503) is
    /// waited out with the backoff alone.
    fn is_link_down(&self) -> bool;
}

impl Transient for RegistryError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }

    fn is_link_down(&self) -> bool {
        matches!(self, RegistryError::Transport { .. })
    }
}

impl Transient for VerifyError {
    fn is_transient(&self) -> bool {
        matches!(self, VerifyError::Registry(e) if e.is_retryable())
    }

    fn is_link_down(&self) -> bool {
        matches!(self, VerifyError::Registry(e) if e.is_link_down())
    }
}

/// How one job waits: its context (reports, stop, deadline), the backoff cap and what ends a
/// wait on a dead link early.
#[derive(Clone)]
pub struct Patience {
    pub ctx: JobContext,
    pub retry_delay_max: Duration,
    /// `None`: waits end by their backoff only.
    pub wake: Option<Wake>,
}

/// The registry's link monitor, and the job's client whose pooled connections are dropped
/// after a recovery.
#[derive(Clone)]
pub struct Wake {
    pub link: Arc<Link>,
    pub client: RegistryClient,
}

impl Patience {
    /// Runs `op` until it succeeds or fails permanently (the inner `Err`). The outer `Err` is
    /// a stop or the job's deadline.
    pub async fn call<T, E, F, Fut>(&self, what: &str, op: F) -> Result<Result<T, E>, JobError>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.attempts(what, op, true).await
    }

    /// [`Patience::call`], but a request in flight is not cut at the deadline (the stall
    /// watchdog still ends a dead one): for the manifest PUT, which must not be dropped
    /// half-way into a tag that is written while the job says it failed. The deadline still
    /// ends the waits between attempts.
    pub async fn call_to_end<T, E, F, Fut>(
        &self,
        what: &str,
        op: F,
    ) -> Result<Result<T, E>, JobError>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.attempts(what, op, false).await
    }

    async fn attempts<T, E, F, Fut>(
        &self,
        what: &str,
        mut op: F,
        cut_at_deadline: bool,
    ) -> Result<Result<T, E>, JobError>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempts = 0;
        loop {
            let result = if cut_at_deadline {
                self.before_deadline(what, op()).await?
            } else {
                op().await
            };
            match result {
                Ok(v) => return Ok(Ok(v)),
                Err(e) if e.is_transient() => {
                    attempts += 1;
                    self.wait_before_retry(what, &e, attempts).await?;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    /// Reports a retry and sleeps (a stop ends the wait), with backoff capped at
    /// `retry_delay_max`. Fails once the job's deadline has passed.
    pub async fn wait_before_retry(
        &self,
        what: &str,
        e: &dyn Transient,
        attempts: u32,
    ) -> Result<(), JobError> {
        let exp = RETRY_DELAY_MS_MIN.saturating_mul(1 << attempts.min(20));
        let mut delay = Duration::from_millis(exp).min(self.retry_delay_max);
        if let Some(left) = self.time_left() {
            if left.is_zero() {
                return Err(self.deadline_passed(&format!("{what}: {e}, {attempts} attempts")));
            }
            // Try once more right at the deadline rather than sleeping past it.
            delay = delay.min(left);
        }
        let secs = delay.as_secs().max(1);
        let early = self.wake.is_some() && e.is_link_down();
        let when = if early {
            format!("retry in {secs} s or once the registry answers")
        } else {
            format!("retry in {secs} s")
        };
        self.ctx
            .retrying(
                what,
                format!("waiting for network, {when} (attempt {attempts}): {e}"),
            )
            .await;
        self.ctx
            .waiting(Some(format!("waiting for network, {when}: {what}: {e}")))
            .await;
        let r = tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.link_back(early) => Ok(()),
            () = self.ctx.stop_requested() => Err(JobError::Stopped),
        };
        self.ctx.waiting(None).await;
        self.renew_connections();
        r
    }

    /// Resolves when the link monitor sees the registry's link come back (`listen`), else
    /// never.
    async fn link_back(&self, listen: bool) {
        match &self.wake {
            Some(w) if listen => w.link.recovered().await,
            _ => std::future::pending().await,
        }
    }

    /// After an outage the pooled connections may belong to the old network: the next
    /// attempt opens new ones (once per outage for the job's client).
    fn renew_connections(&self) {
        if let Some(w) = &self.wake
            && let Err(e) = w.client.renew_connections(w.link.outages_over())
        {
            tracing::warn!(error = %e, "cannot renew the registry connections: keeping the old ones");
        }
    }

    /// Time until the job's deadline (zero once passed); `None` without a deadline.
    fn time_left(&self) -> Option<Duration> {
        let deadline = self.ctx.spec().options.deadline_unix_s?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Some(Duration::from_secs(deadline).saturating_sub(now))
    }

    fn deadline_passed(&self, doing: &str) -> JobError {
        JobError::failed(format!(
            "the job's deadline passed while waiting for the network ({doing}): check the network and the registry, then `hoist retry {} --deadline 2h` (a plain retry keeps the passed deadline)",
            self.ctx.id()
        ))
    }

    /// Runs `fut` but gives up at the job's deadline: a request hanging on a dead link (the
    /// stall watchdog, the client's own retries) must not carry the job past it. What was
    /// acknowledged before stays persisted; a request dropped here is a cut like any other.
    pub async fn before_deadline<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, JobError> {
        match self.time_left() {
            None => Ok(fut.await),
            Some(left) => tokio::time::timeout(left, fut)
                .await
                .map_err(|_| self.deadline_passed(what)),
        }
    }
}
