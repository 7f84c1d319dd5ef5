//! Adaptive upload chunk size: smaller after failures, so a bad link wastes less per cut;
//! larger again on a steady link, so a good link keeps large, cheap requests.
//!
//! A cut costs at most the chunk in flight (on ECR, whose parts are atomic) or the blob's
//! session (on Debian's registry), so the chunk size is the price of one failure. Halving it
//! per failure bounds the waste on a link that keeps resetting; doubling it after
//! [`GROW_AFTER_SUCCESSES`] clean chunks returns to the configured size in a few requests once
//! the link is fine. It never goes below the registry's minimum (5 MiB on ECR, whose parts
//! except the last must be at least that) nor above the configured size.

/// Default chunk (PATCH body) size: what one cut costs at most on a registry with atomic parts.
pub const CHUNK_BYTES_DEFAULT: u64 = 16 << 20;
/// ECR refuses layer parts below 5 MiB (except the last), so no chunk is ever smaller.
pub const ECR_CHUNK_BYTES_MIN: u64 = 5 << 20;

/// Clean chunks in a row before the size doubles again.
pub const GROW_AFTER_SUCCESSES: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSizer {
    chunk_bytes_min: u64,
    chunk_bytes_max: u64,
    current: u64,
    successes: u32,
}

impl ChunkSizer {
    /// Starts at `chunk_bytes_max` (the configured size); never goes below `chunk_bytes_min`.
    pub fn new(chunk_bytes_min: u64, chunk_bytes_max: u64) -> ChunkSizer {
        let max = chunk_bytes_max.max(chunk_bytes_min).max(1);
        ChunkSizer {
            chunk_bytes_min: chunk_bytes_min.min(max).max(1),
            chunk_bytes_max: max,
            current: max,
            successes: 0,
        }
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// A chunk was acknowledged.
    pub fn on_success(&mut self) {
        self.successes += 1;
        if self.successes >= GROW_AFTER_SUCCESSES {
            self.successes = 0;
            self.current = self.current.saturating_mul(2).min(self.chunk_bytes_max);
        }
    }

    /// A chunk failed in flight (reset, stall, lost acknowledgement).
    pub fn on_failure(&mut self) {
        self.successes = 0;
        self.current = (self.current / 2).max(self.chunk_bytes_min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn shrinks_on_failure_to_the_minimum_and_grows_back() {
        let mut c = ChunkSizer::new(5 * MIB, 16 * MIB);
        assert_eq!(c.current(), 16 * MIB);
        c.on_failure();
        assert_eq!(c.current(), 8 * MIB);
        c.on_failure();
        assert_eq!(c.current(), 5 * MIB, "never below the ECR minimum");
        c.on_failure();
        assert_eq!(c.current(), 5 * MIB);
        for _ in 0..GROW_AFTER_SUCCESSES {
            c.on_success();
        }
        assert_eq!(c.current(), 10 * MIB);
        for _ in 0..GROW_AFTER_SUCCESSES {
            c.on_success();
        }
        assert_eq!(c.current(), 16 * MIB, "never above the configured size");
    }

    #[test]
    fn a_failure_resets_the_streak() {
        let mut c = ChunkSizer::new(MIB, 16 * MIB);
        c.on_failure();
        c.on_success();
        c.on_success();
        c.on_failure();
        c.on_success();
        c.on_success();
        assert_eq!(c.current(), 4 * MIB);
    }

    #[test]
    fn odd_configurations_are_sane() {
        let c = ChunkSizer::new(5 * MIB, MIB);
        assert_eq!(
            c.current(),
            5 * MIB,
            "the minimum wins over a smaller configured size"
        );
        let c = ChunkSizer::new(0, 0);
        assert_eq!(c.current(), 1);
    }
}
