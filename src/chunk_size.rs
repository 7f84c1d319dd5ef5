//! Adaptive upload part size: sized from the bytes the link carries between failures, so a link
//! that keeps failing wastes little per cut; large again once the link has carried several such
//! intervals without one, so a good link keeps large, cheap requests.
//!
//! A cut costs at most the part in flight, up to the bytes it had sent (on ECR, whose parts are
//! atomic) or the blob's session (on Debian's registry), so the part size is the price of one
//! failure. The sizer counts the bytes its requests carried since the last failure (the part
//! that was cut included, as far as it got): that count at a failure is the link's last
//! *failure interval*. Parts are then a fraction of the smallest of the last [`INTERVALS_KEPT`]:
//! as many whole parts as the registry's
//! minimum lets fit in [`INTERVAL_PARTS_PERCENT`] of the interval, from
//! [`PARTS_PER_INTERVAL_MIN`] to [`PARTS_PER_INTERVAL_MAX`], all of one size; so on a link that
//! fails at a steady period the parts end just before the next failure, and the part that is cut
//! had sent little. Halving per failure and doubling after clean parts did the opposite: the part
//! grew after a few successes and the larger part was the one cut. Once the link has carried
//! [`GROW_AFTER_CLEAN_INTERVALS`] intervals without failure, the interval counts double for each
//! further clean interval, up to the configured size; without any failure the parts are the
//! configured size. No part is below the registry's minimum (5 MiB on ECR, whose parts except the
//! last must be at least that) nor above the configured size.
//!
//! A registry also caps the parts of one upload (4,200 on ECR): with a part limit, no part is
//! smaller than what the blob's remaining bytes need to fit in the remaining parts (less
//! [`PARTS_SPARE_PERCENT`]), even above the configured size. Parts that respect this floor reach
//! `offset` in at most `offset * parts / blob_bytes` parts, so a session this sizer did not see
//! from its start (resumed by another run, or moved by the registry after a lost
//! acknowledgement) counts that many as used and still fits.

/// Default chunk (PATCH body) size: what one cut costs at most on a registry with atomic parts.
pub const CHUNK_BYTES_DEFAULT: u64 = 16 << 20;
/// ECR refuses layer parts below 5 MiB (except the last), so no chunk is ever smaller.
pub const ECR_CHUNK_BYTES_MIN: u64 = 5 << 20;

/// The share of a failure interval the parts planned in it fill, in percent. The rest is left
/// for what the count misses or overstates: request headers and other requests on the link, and
/// the bytes of the cut part that were still in socket buffers (counted as sent, never carried).
/// At a steady period the cut part costs about this share of the interval.
pub const INTERVAL_PARTS_PERCENT: u64 = 90;
/// At least this many parts per failure interval, unless the registry's minimum part is larger:
/// a part is at most a quarter of the interval, so on a link whose failures come at random the
/// cut part costs a small share of what the link carries.
pub const PARTS_PER_INTERVAL_MIN: u64 = 4;
/// At most this many parts per failure interval: more would cost requests and save little.
pub const PARTS_PER_INTERVAL_MAX: u64 = 8;
/// Failure intervals remembered; parts are sized from the smallest. A cut part's count
/// overstates what the link carried by the bytes still in socket buffers (a megabyte or more
/// on a fast link), and an interval read too long makes the last planned part the one cut: the
/// smallest of the last three reads the period low rather than high.
pub const INTERVALS_KEPT: usize = 3;
/// Failure intervals the link carries without failure before parts grow again.
pub const GROW_AFTER_CLEAN_INTERVALS: u64 = 3;

/// Parts of a registry's per-upload limit kept spare, in percent: a part whose
/// acknowledgement was lost is stored but not counted, and a resumed session's count is an
/// upper estimate that rounds up.
pub const PARTS_SPARE_PERCENT: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSizer {
    chunk_bytes_min: u64,
    chunk_bytes_max: u64,
    /// The last [`INTERVALS_KEPT`] failure intervals, latest first (0: none yet). Parts are
    /// sized from the smallest.
    intervals_bytes: [u64; INTERVALS_KEPT],
    /// Bytes the link carried since the last failure.
    clean_bytes: u64,
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
            intervals_bytes: [0; INTERVALS_KEPT],
            clean_bytes: 0,
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
        self.adaptive_bytes().max(floor)
    }

    /// The smallest part the sizer allows at `offset` (the registry's minimum, raised to the
    /// part limit's floor), at most [`ChunkSizer::part_bytes`].
    pub fn part_bytes_min(&self, offset: u64) -> u64 {
        let floor = self.parts.as_ref().map_or(0, |p| p.floor_at(offset));
        self.chunk_bytes_min.max(floor).min(self.part_bytes(offset))
    }

    /// The part `[from, to)` was acknowledged, after its request carried `wire_bytes` (its
    /// body, sent again by any retry): counted against the part limit and as clean bytes.
    pub fn on_part_stored(&mut self, from: u64, to: u64, wire_bytes: u64) {
        if let Some(p) = self.parts.as_mut() {
            p.parts_used = p.used_at(from) + 1;
            p.counted_to = to;
        }
        self.clean_bytes = self.clean_bytes.saturating_add(wire_bytes);
    }

    /// A request failed in flight (reset, stall, lost acknowledgement) after sending
    /// `wire_bytes` of its body: the bytes since the previous failure are the latest interval. A
    /// failure with nothing carried since the previous one (an outage's retries) is the same
    /// failure, and keeps the interval.
    pub fn on_failure(&mut self, wire_bytes: u64) {
        let carried = self.clean_bytes.saturating_add(wire_bytes);
        if carried > 0 {
            self.intervals_bytes.rotate_right(1);
            self.intervals_bytes[0] = carried;
        }
        self.clean_bytes = 0;
    }

    /// The part size the link's failures allow, before the part limit's floor: the configured
    /// size until a failure, then a fraction of the failure interval, which counts double for
    /// each interval carried clean from the [`GROW_AFTER_CLEAN_INTERVALS`]th on.
    pub fn adaptive_bytes(&self) -> u64 {
        let Some(interval) = self
            .intervals_bytes
            .iter()
            .copied()
            .filter(|b| *b > 0)
            .min()
        else {
            return self.chunk_bytes_max;
        };
        let clean_intervals = self.clean_bytes / interval.max(1);
        let doublings = (clean_intervals + 1).saturating_sub(GROW_AFTER_CLEAN_INTERVALS);
        let grown = interval.saturating_mul(1u64 << doublings.min(63));
        self.interval_part_bytes(grown)
    }

    /// Equal parts filling [`INTERVAL_PARTS_PERCENT`] of `interval` bytes: as many of the
    /// registry's minimum as fit, within [`PARTS_PER_INTERVAL_MIN`]..=[`PARTS_PER_INTERVAL_MAX`],
    /// then between the minimum and the configured size.
    fn interval_part_bytes(&self, interval: u64) -> u64 {
        let planned =
            u64::try_from(u128::from(interval) * u128::from(INTERVAL_PARTS_PERCENT) / 100)
                .unwrap_or(u64::MAX);
        let parts =
            (planned / self.chunk_bytes_min).clamp(PARTS_PER_INTERVAL_MIN, PARTS_PER_INTERVAL_MAX);
        (planned / parts).clamp(self.chunk_bytes_min, self.chunk_bytes_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    const MB: u64 = 1_000_000;

    /// Sends a `blob`-byte blob from offset 0 through a link that cuts the connection each time
    /// it has carried another `period` bytes (exact multiples); at the `i`th cut the sizer is
    /// told `overcounts[i % len]` more bytes of the cut part than the link carried (bytes still
    /// in socket buffers). Returns the bytes the link carried and the sizes of the parts stored.
    fn periodic_cuts(
        sizer: &mut ChunkSizer,
        blob: u64,
        period: u64,
        overcounts: &[u64],
    ) -> (u64, Vec<u64>) {
        let (mut offset, mut carried, mut parts, mut cuts) = (0, 0, Vec::new(), 0);
        while offset < blob {
            let len = sizer.part_bytes(offset).min(blob - offset);
            let to_cut = period - carried % period;
            if len < to_cut {
                carried += len;
                sizer.on_part_stored(offset, offset + len, len);
                parts.push(len);
                offset += len;
            } else {
                carried += to_cut;
                let overcount = overcounts[cuts % overcounts.len()];
                sizer.on_failure(to_cut + overcount.min(len - to_cut));
                cuts += 1;
            }
        }
        (carried, parts)
    }

    #[test]
    fn resets_every_25_mb_cost_at_most_15_percent_of_a_300_mb_blob() {
        let uneven = [MIB / 2, 7 * MIB / 2, 2 * MIB, MIB, 4 * MIB, MIB / 4];
        for overcounts in [&[0][..], &[MIB], &[2 * MIB], &uneven] {
            let mut c = ChunkSizer::new(5 * MIB, 16 * MIB);
            let (carried, parts) = periodic_cuts(&mut c, 300 * MB, 25 * MB, overcounts);
            let ratio = carried as f64 / (300 * MB) as f64;
            assert!(
                ratio <= 1.15,
                "{ratio:.3} overcounting {overcounts:?}: {parts:?}"
            );
            // Four parts fill 90 % of each interval; none below the ECR minimum but the last.
            assert!(
                parts[..parts.len() - 1].iter().all(|p| *p >= 5 * MIB),
                "{parts:?}"
            );
        }
    }

    #[test]
    fn a_part_is_at_most_a_quarter_of_the_failure_interval_never_below_the_minimum() {
        for interval in [
            100 * MIB,
            60 * MIB,
            30 * MIB,
            25 * MB,
            20 * MIB,
            6 * MIB,
            MIB,
            1,
        ] {
            let mut c = ChunkSizer::new(5 * MIB, 64 * MIB);
            c.on_part_stored(0, interval / 2, interval / 2);
            c.on_failure(interval - interval / 2);
            let part = c.part_bytes(0);
            assert!(part >= 5 * MIB, "{part} for {interval}");
            assert!(
                part <= (interval / PARTS_PER_INTERVAL_MIN).max(5 * MIB),
                "{part} for {interval}"
            );
            // As many equal parts as the minimum lets fit in 90 % of the interval, up to 8.
            let planned = interval / 10 * 9;
            if planned >= PARTS_PER_INTERVAL_MIN * 5 * MIB {
                let parts = planned / part;
                assert!((PARTS_PER_INTERVAL_MIN..=PARTS_PER_INTERVAL_MAX).contains(&parts));
                assert!(planned - parts * part < part, "{part} for {interval}");
            }
        }
    }

    #[test]
    fn a_clean_link_keeps_the_configured_size() {
        let mut c = ChunkSizer::new(5 * MIB, 16 * MIB);
        assert_eq!(c.part_bytes(0), 16 * MIB);
        let mut offset = 0;
        for _ in 0..1_000 {
            c.on_part_stored(offset, offset + 16 * MIB, 16 * MIB);
            offset += 16 * MIB;
            assert_eq!(c.part_bytes(offset), 16 * MIB);
        }
        // A blob of a clean link carries few requests: 300 MB in 18 parts.
        let (carried, parts) = periodic_cuts(
            &mut ChunkSizer::new(5 * MIB, 16 * MIB),
            300 * MB,
            u64::MAX,
            &[0],
        );
        assert_eq!((carried, parts.len()), (300 * MB, 18));
    }

    #[test]
    fn parts_grow_only_after_several_clean_intervals_then_back_to_the_configured_size() {
        let mut c = ChunkSizer::new(5 * MIB, 16 * MIB);
        c.on_failure(40 * MIB);
        let small = c.part_bytes(0);
        assert_eq!(small, 36 * MIB / 7, "seven parts fill 36 MiB");
        let mut offset = 0;
        let mut sizes = Vec::new();
        while offset < 400 * MIB {
            let len = c.part_bytes(offset);
            sizes.push(len);
            c.on_part_stored(offset, offset + len, len);
            offset += len;
            if offset < GROW_AFTER_CLEAN_INTERVALS * 40 * MIB {
                assert_eq!(
                    c.part_bytes(offset),
                    small,
                    "grew after {offset} clean bytes"
                );
            }
        }
        assert!(sizes.windows(2).all(|w| w[1] >= w[0]), "{sizes:?}");
        assert_eq!(c.part_bytes(offset), 16 * MIB, "{sizes:?}");
        // Failures after the long clean run: parts from the smallest of the last three
        // intervals, until the short one is no longer among them.
        c.on_failure(MIB);
        assert_eq!(c.part_bytes(offset), small);
        for _ in 0..2 {
            c.on_part_stored(offset, offset + 100 * MIB, 100 * MIB);
            assert_eq!(c.part_bytes(offset), small);
            c.on_failure(MIB);
        }
        assert_eq!(
            c.part_bytes(offset),
            101 * MIB * 9 / 10 / 8,
            "an eighth of 90 %"
        );
        c.on_failure(10 * MIB);
        assert_eq!(
            c.part_bytes(offset),
            5 * MIB,
            "a failure soon after: small parts at once"
        );
    }

    #[test]
    fn an_outages_retries_keep_the_interval() {
        let mut c = ChunkSizer::new(5 * MIB, 16 * MIB);
        c.on_failure(0);
        assert_eq!(
            c.part_bytes(0),
            16 * MIB,
            "a failure before any byte moved says nothing"
        );
        c.on_part_stored(0, 10 * MIB, 10 * MIB);
        c.on_failure(30 * MIB);
        let part = c.part_bytes(0);
        for _ in 0..10 {
            c.on_failure(0);
        }
        assert_eq!(c.part_bytes(0), part);
        assert!(part < 16 * MIB);
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
                sizer.on_failure(len / 2);
                continue;
            }
            assert!(len >= 5 * MIB || offset + len == blob, "{len} at {offset}");
            parts += 1;
            if unseen_every == 0 || parts % unseen_every != 0 {
                sizer.on_part_stored(offset, offset + len, len);
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
    fn failures_and_lost_acknowledgements_never_break_the_part_limit() {
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
        c.on_failure(MIB);
        assert_eq!(c.part_bytes(GIB), 5 * MIB);
        // An upper bound above the real size only makes parts larger.
        let c = ChunkSizer::new(5 * MIB, 16 * MIB).with_part_limit(ECR_PARTS, 100 * GIB);
        assert!(c.part_bytes(0) > 16 * MIB);
    }

    #[test]
    fn odd_configurations_are_sane() {
        let c = ChunkSizer::new(5 * MIB, MIB);
        assert_eq!(
            c.adaptive_bytes(),
            5 * MIB,
            "the minimum wins over a smaller configured size"
        );
        let mut c = ChunkSizer::new(0, 0);
        assert_eq!(c.adaptive_bytes(), 1);
        c.on_failure(1);
        assert_eq!(c.adaptive_bytes(), 1);
    }
}
