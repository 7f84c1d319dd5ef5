//! Adaptive upload chunk size: smaller after failures, so a bad link wastes less per cut;
//! larger again on a steady link, so a good link keeps large, cheap requests.
//!
//! A cut costs at most the chunk in flight (on ECR, whose parts are atomic) or the blob's
//! session (on Debian's registry), so the chunk size is the price of one failure. Halving it
//! per failure bounds the waste on a link that keeps resetting; doubling it after
//! [`GROW_AFTER_SUCCESSES`] clean chunks returns to the configured size in a few requests once
//! the link is fine. It never goes below the registry's minimum (5 MiB on ECR, whose parts
//! except the last must be at least that) nor above the configured size.
//!
//! A registry also caps the parts of one upload (4,200 on ECR): with a part limit, no part is
//! smaller than what the blob's remaining bytes need to fit in the remaining parts (less
//! [`PARTS_SPARE_PERCENT`]), halving included, even above the configured size. Parts that
//! respect this floor reach `offset` in at most `offset * parts / blob_bytes` parts, so a
//! session this sizer did not see from its start (resumed by another run, or moved by the
//! registry after a lost acknowledgement) counts that many as used and still fits.

/// Default chunk (PATCH body) size: what one cut costs at most on a registry with atomic parts.
pub const CHUNK_BYTES_DEFAULT: u64 = 16 << 20;
/// ECR refuses layer parts below 5 MiB (except the last), so no chunk is ever smaller.
pub const ECR_CHUNK_BYTES_MIN: u64 = 5 << 20;

/// Clean chunks in a row before the size doubles again.
pub const GROW_AFTER_SUCCESSES: u32 = 3;

/// Parts of a registry's per-upload limit kept spare, in percent: a part whose
/// acknowledgement was lost is stored but not counted, and a resumed session's count is an
/// upper estimate that rounds up.
pub const PARTS_SPARE_PERCENT: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSizer {
    chunk_bytes_min: u64,
    chunk_bytes_max: u64,
    current: u64,
    successes: u32,
    parts: Option<PartBudget>,
}

/// The parts one upload session may still use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartBudget {
    /// The registry's limit less the spare parts.
    parts_max: u64,
    /// The blob's size, or an upper bound while it is still being compressed.
    blob_bytes: u64,
    /// Parts counted in this session, and the offset the last of them ended at.
    parts_used: u64,
    counted_to: u64,
}

impl PartBudget {
    /// Parts used by a session at `offset`: the count when this sizer saw every part up to
    /// there, else the most a session whose parts respected the floor can have.
    fn used_at(&self, offset: u64) -> u64 {
        if offset == self.counted_to {
            return self.parts_used;
        }
        let estimate = (u128::from(offset) * u128::from(self.parts_max))
            .div_ceil(u128::from(self.blob_bytes.max(1)));
        u64::try_from(estimate).unwrap_or(u64::MAX)
    }

    /// The smallest part that still lets the rest of the blob fit in the parts left.
    fn floor_at(&self, offset: u64) -> u64 {
        let remaining = self.blob_bytes.saturating_sub(offset);
        match self.parts_max.saturating_sub(self.used_at(offset)) {
            // Out of parts (a wrong estimate): the rest in one part.
            0 => remaining,
            left => remaining.div_ceil(left),
        }
    }
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
            parts: None,
        }
    }

    /// At most `parts_per_upload_max` parts for a blob of (at most) `blob_bytes` bytes.
    pub fn with_part_limit(mut self, parts_per_upload_max: u64, blob_bytes: u64) -> ChunkSizer {
        let spare = parts_per_upload_max * PARTS_SPARE_PERCENT / 100;
        self.parts = Some(PartBudget {
            parts_max: (parts_per_upload_max - spare).max(1),
            blob_bytes,
            parts_used: 0,
            counted_to: 0,
        });
        self
    }

    /// The size of the next part of a session at `offset`: the adaptive size, raised to the
    /// part limit's floor.
    pub fn part_bytes(&self, offset: u64) -> u64 {
        let floor = self.parts.as_ref().map_or(0, |p| p.floor_at(offset));
        self.current.max(floor)
    }

    /// The smallest part the sizer allows at `offset` (the registry's minimum, raised to the
    /// part limit's floor), at most [`ChunkSizer::part_bytes`].
    pub fn part_bytes_min(&self, offset: u64) -> u64 {
        let floor = self.parts.as_ref().map_or(0, |p| p.floor_at(offset));
        self.chunk_bytes_min.max(floor).min(self.part_bytes(offset))
    }

    /// The part `[from, to)` was acknowledged: counted against the part limit, and a success.
    pub fn on_part_stored(&mut self, from: u64, to: u64) {
        if let Some(p) = self.parts.as_mut() {
            p.parts_used = p.used_at(from) + 1;
            p.counted_to = to;
        }
        self.on_success();
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
    fn the_smallest_part_is_the_minimum_raised_to_the_part_floor() {
        let c = ChunkSizer::new(5 * MIB, 16 * MIB);
        assert_eq!(c.part_bytes_min(0), 5 * MIB);
        // 1 GiB in at most 100 parts (95 after the spare): no part under 1 GiB / 95.
        let blob = 1024 * MIB;
        let c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(100, blob);
        assert_eq!(c.part_bytes_min(0), blob.div_ceil(95));
        assert_eq!(c.part_bytes(0), 16 * MIB);
        // 2 GiB: the floor is above the chunk size too.
        let c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(100, 2 * blob);
        assert_eq!(c.part_bytes_min(0), (2 * blob).div_ceil(95));
        assert_eq!(c.part_bytes_min(0), c.part_bytes(0));
        // Never above the next part's size.
        let c = ChunkSizer::new(5 * MIB, 4 * MIB);
        assert_eq!(c.part_bytes_min(0), c.part_bytes(0));
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

    const GIB: u64 = 1 << 30;
    const ECR_PARTS: u64 = 4_200;

    /// Sends `[from, blob)` through `sizer`: every `fail_every`-th attempt fails in flight (0:
    /// none), every `unseen_every`-th stored part is not reported (a lost acknowledgement the
    /// registry's offset later reveals; 0: none). Returns the parts the registry stored.
    fn stored_parts(
        sizer: &mut ChunkSizer,
        from: u64,
        blob: u64,
        fail_every: u32,
        unseen_every: u64,
    ) -> u64 {
        let (mut offset, mut parts, mut attempts) = (from, 0u64, 0u32);
        while offset < blob {
            let len = sizer.part_bytes(offset).min(blob - offset);
            attempts += 1;
            if fail_every > 0 && attempts % fail_every == 0 {
                sizer.on_failure();
                continue;
            }
            assert!(len >= 5 * MIB || offset + len == blob, "{len} at {offset}");
            parts += 1;
            if unseen_every == 0 || parts % unseen_every != 0 {
                sizer.on_part_stored(offset, offset + len);
            }
            offset += len;
        }
        parts
    }

    #[test]
    fn a_30_gib_blob_with_5_mib_parts_fits_in_ecrs_4200_parts() {
        let blob = 30 * GIB;
        let unlimited = stored_parts(&mut ChunkSizer::new(5 * MIB, 5 * MIB), 0, blob, 0, 0);
        assert_eq!(unlimited, 6_144, "5 MiB parts alone would need too many");
        let mut c = ChunkSizer::new(5 * MIB, 5 * MIB).with_part_limit(ECR_PARTS, blob);
        let parts = stored_parts(&mut c, 0, blob, 0, 0);
        assert!(parts <= ECR_PARTS, "{parts}");
        assert!(c.part_bytes(0) > 7 * MIB, "{}", c.part_bytes(0));
    }

    #[test]
    fn halvings_and_lost_acknowledgements_never_break_the_part_limit() {
        let blob = 30 * GIB;
        for (fail_every, unseen_every) in [(2, 0), (3, 0), (2, 7), (5, 3)] {
            let mut c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, blob);
            let parts = stored_parts(&mut c, 0, blob, fail_every, unseen_every);
            assert!(parts <= ECR_PARTS, "{parts} ({fail_every}, {unseen_every})");
        }
    }

    #[test]
    fn a_session_resumed_by_another_run_still_fits() {
        let blob = 30 * GIB;
        // The first run sends 16 MiB parts on a good link up to the middle, then dies.
        let mut first = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, blob);
        let half = stored_parts(&mut first, 0, blob / 2, 0, 0);
        // The second does not know that count, and its link fails often.
        let mut second = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, blob);
        let rest = stored_parts(&mut second, blob / 2, blob, 2, 0);
        assert!(half + rest <= ECR_PARTS, "{half} + {rest}");
        // A first run on a bad link (small parts) is covered by the estimate too.
        let mut first = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, blob);
        let half = stored_parts(&mut first, 0, blob / 2, 2, 0);
        let mut second = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, blob);
        let rest = stored_parts(&mut second, blob / 2, blob, 0, 0);
        assert!(half + rest <= ECR_PARTS, "{half} + {rest}");
    }

    #[test]
    fn ecr_public_fits_in_1000_parts() {
        let blob = 9 * GIB;
        let mut c = ChunkSizer::new(5 * MIB, 5 * MIB).with_part_limit(1_000, blob);
        let parts = stored_parts(&mut c, 0, blob, 3, 0);
        assert!(parts <= 1_000, "{parts}");
    }

    #[test]
    fn the_floor_changes_nothing_for_ordinary_blobs() {
        let c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, 10 * GIB);
        assert_eq!(c.part_bytes(0), 16 * MIB);
        let mut c = c;
        c.on_failure();
        c.on_failure();
        assert_eq!(c.part_bytes(GIB), 5 * MIB);
        // An upper bound above the real size only makes parts larger.
        let c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, 100 * GIB);
        assert!(c.part_bytes(0) > 16 * MIB);
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
