//! A memory budget for chunk buffers, shared by every stream that draws on it.
//!
//! A chunk in flight needs a buffer pair: its input and its compressed output (see
//! [`slot_bytes`]). Those pairs are the largest memory of a compression: a stream on `t`
//! threads keeps up to `2 * t` of them busy so reading, compressing and writing overlap. A
//! daemon that runs several streams at once (layers side by side, split parts, jobs) would
//! hold that many per stream; drawing every pair from one [`ChunkBudget`] instead bounds the
//! buffers by the budget's bytes, whatever the number of streams, threads or connections.
//! When the budget is short, a stream waits for a pair another one gives back (at least one
//! pair is always lent when none is out, so a budget below one pair still makes progress,
//! one chunk at a time daemon-wide).
//!
//! Why this cannot deadlock: a stream takes pairs in chunk order and a pair comes back once
//! its chunk is compressed and handed to the sink, which waits for nothing another stream
//! holds; so every lent pair returns. Given-back buffers are kept for the next chunk (not
//! freed and allocated again: zeroing 4 MiB per chunk shows in a profile) and freed when no
//! stream is left or room is needed for a pair of another size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often a stream waiting for a buffer pair looks whether it was told to stop.
const BUDGET_STOP_POLL_MS: u64 = 50;

/// The bytes one chunk's buffer pair counts for: its input and the most its output can take
/// (the codec bound of [`super::compressed_bytes_bound`]).
pub fn slot_bytes(chunk_bytes: usize) -> u64 {
    chunk_bytes as u64 + super::compressed_bytes_bound(chunk_bytes as u64)
}

/// One chunk's buffers: its input and its compressed output.
#[derive(Default)]
pub(super) struct Slot {
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Bytes of the pairs lent out now.
    lent_bytes: u64,
    /// Pairs given back and kept for reuse, with the chunk size they were made for.
    idle: Vec<(usize, Slot)>,
    /// Streams drawing on the budget now; the idle pairs are freed when none is left.
    streams: usize,
}

impl State {
    fn idle_bytes(&self) -> u64 {
        self.idle.iter().map(|(c, _)| slot_bytes(*c)).sum()
    }
}

/// A byte budget for chunk buffer pairs (see the module documentation).
pub struct ChunkBudget {
    bytes_max: u64,
    state: Mutex<State>,
    freed: Condvar,
}

impl ChunkBudget {
    /// A budget of `bytes_max` bytes of buffer pairs, lent and idle together.
    pub fn new(bytes_max: u64) -> ChunkBudget {
        ChunkBudget {
            bytes_max,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// A budget of `pairs` buffer pairs of `chunk_bytes`.
    pub fn pairs(pairs: usize, chunk_bytes: usize) -> ChunkBudget {
        ChunkBudget::new(pairs.max(1) as u64 * slot_bytes(chunk_bytes))
    }

    /// The most bytes of buffer pairs this budget holds at once.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Bytes of the pairs lent out now.
    pub fn lent_bytes(&self) -> u64 {
        self.lock().lent_bytes
    }

    /// Bytes held now: the pairs lent out and those kept for reuse.
    pub fn held_bytes(&self) -> u64 {
        let s = self.lock();
        s.lent_bytes + s.idle_bytes()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while it held it: the counts are whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream starts drawing on the budget; the idle pairs are freed when the last one ends.
    pub(super) fn join(&self) -> StreamGuard<'_> {
        self.lock().streams += 1;
        StreamGuard { budget: self }
    }

    /// Waits for a pair of `chunk_bytes` and lends it, counted in `held` (the stream's pairs
    /// out, at most `depth`). `None` once `closed` is set: the stream no longer needs it.
    pub(super) fn take<'a>(
        &'a self,
        chunk_bytes: usize,
        held: &'a std::sync::atomic::AtomicUsize,
        depth: usize,
        closed: &AtomicBool,
    ) -> Option<Lent<'a>> {
        let cost = slot_bytes(chunk_bytes);
        let poll = Duration::from_millis(BUDGET_STOP_POLL_MS);
        let mut s = self.lock();
        loop {
            if closed.load(Ordering::Relaxed) {
                return None;
            }
            if held.load(Ordering::Relaxed) < depth
                && let Some(slot) = self.lend(&mut s, chunk_bytes, cost)
            {
                held.fetch_add(1, Ordering::Relaxed);
                return Some(Lent {
                    budget: self,
                    held,
                    chunk_bytes,
                    slot: Some(slot),
                });
            }
            s = self
                .freed
                .wait_timeout(s, poll)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A pair of `chunk_bytes` if the budget has room for it now (an idle one when there is).
    fn lend(&self, s: &mut State, chunk_bytes: usize, cost: u64) -> Option<Slot> {
        if let Some(i) = s.idle.iter().position(|(c, _)| *c == chunk_bytes) {
            s.lent_bytes += cost;
            return Some(s.idle.swap_remove(i).1);
        }
        // Idle pairs of another size make room first: they are memory nobody uses.
        while s.lent_bytes + s.idle_bytes() + cost > self.bytes_max && !s.idle.is_empty() {
            s.idle.pop();
        }
        let fits = s.lent_bytes + s.idle_bytes() + cost <= self.bytes_max;
        (fits || s.lent_bytes == 0).then(|| {
            s.lent_bytes += cost;
            Slot::default()
        })
    }

    /// Wakes the streams waiting for a pair (one of them may have been told to stop).
    pub(super) fn wake(&self) {
        let _s = self.lock();
        self.freed.notify_all();
    }
}

/// A stream's membership of the budget (see [`ChunkBudget::join`]).
pub(super) struct StreamGuard<'a> {
    budget: &'a ChunkBudget,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.streams -= 1;
        if s.streams == 0 {
            s.idle.clear();
        }
    }
}

/// A lent buffer pair; goes back to its budget when dropped, whatever path drops it (a
/// stream stopped with chunks in flight gives them all back).
pub(super) struct Lent<'a> {
    budget: &'a ChunkBudget,
    held: &'a std::sync::atomic::AtomicUsize,
    chunk_bytes: usize,
    slot: Option<Slot>,
}

impl Lent<'_> {
    pub fn slot(&mut self) -> &mut Slot {
        self.slot
            .as_mut()
            .expect("a lent pair holds its slot until dropped")
    }

    pub fn output(&self) -> &[u8] {
        self.slot.as_ref().map_or(&[], |s| s.output.as_slice())
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.lent_bytes -= slot_bytes(self.chunk_bytes);
        self.held.fetch_sub(1, Ordering::Relaxed);
        if let Some(slot) = self.slot.take()
            && s.streams > 0
        {
            s.idle.push((self.chunk_bytes, slot));
        }
        drop(s);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{Codec, CompressConfig, StreamState, compress_stream_within};
    use std::sync::atomic::AtomicUsize;

    const CHUNK: usize = 64 << 10;

    #[test]
    fn a_budget_never_lends_more_than_its_bytes() {
        let budget = ChunkBudget::pairs(3, CHUNK);
        let _member = budget.join();
        let closed = AtomicBool::new(false);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                // One pair at a time each, as a stream's reader takes them: a pair out
                // never waits for another, so the threads cannot hold the budget among them.
                s.spawn(|| {
                    let held = AtomicUsize::new(0);
                    for _ in 0..200 {
                        let a = budget.take(CHUNK, &held, 1, &closed).unwrap();
                        most.fetch_max(budget.held_bytes() as usize, Ordering::Relaxed);
                        assert_eq!(held.load(Ordering::Relaxed), 1);
                        std::thread::yield_now();
                        drop(a);
                    }
                });
            }
        });
        assert!(most.load(Ordering::Relaxed) as u64 <= budget.bytes_max());
        assert_eq!(budget.lent_bytes(), 0);
    }

    #[test]
    fn a_budget_below_one_pair_lends_one_pair_at_a_time() {
        let budget = ChunkBudget::new(1);
        let mut s = budget.lock();
        let cost = slot_bytes(CHUNK);
        assert!(
            budget.lend(&mut s, CHUNK, cost).is_some(),
            "none out: one is lent"
        );
        assert!(
            budget.lend(&mut s, CHUNK, cost).is_none(),
            "one out: no room"
        );
    }

    #[test]
    fn a_closed_stream_stops_waiting() {
        let budget = ChunkBudget::new(0);
        let (held, closed) = (AtomicUsize::new(0), AtomicBool::new(false));
        let first = budget.take(CHUNK, &held, 4, &closed);
        assert!(first.is_some());
        closed.store(true, Ordering::Relaxed);
        assert!(budget.take(CHUNK, &held, 4, &closed).is_none());
    }

    fn compress_all(input: &[u8], budget: &ChunkBudget) -> Vec<u8> {
        let config = CompressConfig {
            codec: Codec::Gzip,
            chunk_bytes: CHUNK,
            threads: 2,
        };
        let mut out = Vec::new();
        compress_stream_within(input, &config, StreamState::new(), budget, |c| {
            out.extend_from_slice(c.bytes);
            Ok::<_, crate::compress::CompressError>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn streams_sharing_one_pair_give_the_same_bytes_and_every_pair_back() {
        let inputs: Vec<Vec<u8>> = (0..4u8)
            .map(|i| {
                (0..(CHUNK * 5 + 999))
                    .map(|j| (j % 251) as u8 ^ i)
                    .collect()
            })
            .collect();
        let alone: Vec<Vec<u8>> = inputs
            .iter()
            .map(|i| compress_all(i, &ChunkBudget::pairs(4, CHUNK)))
            .collect();
        let shared = ChunkBudget::pairs(1, CHUNK);
        let together: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|i| s.spawn(|| compress_all(i, &shared)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(alone, together);
        assert_eq!(shared.lent_bytes(), 0);
        assert_eq!(
            shared.held_bytes(),
            0,
            "no stream left: the idle pairs are freed"
        );
    }

    #[test]
    fn a_stream_stopped_by_its_sink_gives_its_pairs_back() {
        let budget = ChunkBudget::pairs(4, CHUNK);
        let input = vec![7u8; CHUNK * 8];
        let config = CompressConfig {
            codec: Codec::Zstd,
            chunk_bytes: CHUNK,
            threads: 2,
        };
        let r = compress_stream_within(&input[..], &config, StreamState::new(), &budget, |c| {
            if c.index == 1 {
                return Err(crate::compress::CompressError::Thread("stop".into()));
            }
            Ok(())
        });
        assert!(r.is_err());
        assert_eq!(budget.lent_bytes(), 0);
    }
}
