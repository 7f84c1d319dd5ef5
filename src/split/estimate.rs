//! What each entry of a layer will weigh once compressed, estimated from samples, so the parts
//! can be cut to equal *compressed* sizes: a part's upload time is its compressed size over one
//! connection, and tars compress unevenly (the same 120 MiB of tar can give 10 or 100 MiB of
//! gzip), so parts cut by tar size alone leave one connection working long after the others.
//!
//! The layer is cut into blocks of [`ESTIMATE_BLOCK_BYTES`]; [`ESTIMATE_SAMPLE_BYTES`] of each,
//! at a place that varies from block to block (a fixed function of the block's index), are
//! compressed as a gzip stream's first chunk with the spool's own compressor, and the block is taken to
//! compress like its sample. One contiguous sample keeps deflate's whole window (smaller
//! pieces make text look less compressible than it is, and so parts of text too heavy), and
//! moving it around the blocks samples every kind of file a part holds, not only the files
//! that happen to start blocks. The estimate is a function
//! of the layer's bytes alone (fixed codec, level and sizes; whatever codec the push uses), so
//! the layout stays a function of the layer and the part size.

use crate::compress::{ChunkCompressor, Codec};
use crate::source::BlobLocation;

/// Bytes of the layer one sample stands for.
pub const ESTIMATE_BLOCK_BYTES: u64 = 1 << 20;
/// Bytes of each block compressed: deflate's window (32 KiB), 1/32 of the block.
pub const ESTIMATE_SAMPLE_BYTES: usize = 32 << 10;

/// The estimated compressed size of each block, as (sample's compressed bytes, sample bytes).
#[derive(Debug, Clone, Default)]
pub struct Ratios(Vec<(u32, u32)>);

impl Ratios {
    /// Samples every block of `layer`, on up to `threads` threads (blocks are independent).
    pub fn sample(layer: &BlobLocation, threads: usize) -> std::io::Result<Ratios> {
        let blocks = layer.len.div_ceil(ESTIMATE_BLOCK_BYTES) as usize;
        let threads = threads.clamp(1, blocks.max(1));
        let per = blocks.div_ceil(threads).max(1);
        let sampled: Vec<std::io::Result<Vec<(u32, u32)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let range = (t * per).min(blocks)..((t + 1) * per).min(blocks);
                    s.spawn(move || sample_blocks(layer, range))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a sampler panicked")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(blocks);
        for part in sampled {
            out.extend(part?);
        }
        Ok(Ratios(out))
    }

    /// The estimated compressed bytes of the layer's bytes `[start, end)`.
    pub fn weight(&self, start: u64, end: u64) -> u64 {
        let mut w = 0u64;
        let mut at = start;
        while at < end {
            let block = at / ESTIMATE_BLOCK_BYTES;
            let block_end = ((block + 1) * ESTIMATE_BLOCK_BYTES).min(end);
            let len = block_end - at;
            w += match self.0.get(block as usize) {
                Some(&(out, sample)) if sample > 0 => len * u64::from(out) / u64::from(sample),
                _ => len,
            };
            at = block_end;
        }
        // Every entry weighs something, so an empty file still counts towards its part.
        w.max(1)
    }
}

/// Where block `b`'s sample starts in the block, at most `room`: a multiplicative hash of the
/// block's index, on a 512-byte tar block boundary.
fn sample_offset(b: u64, room: u64) -> u64 {
    let h = b.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h % (room + 1)) / 512 * 512
}

fn sample_blocks(
    layer: &BlobLocation,
    blocks: std::ops::Range<usize>,
) -> std::io::Result<Vec<(u32, u32)>> {
    let mut compressor = ChunkCompressor::new();
    let mut buf = vec![0u8; ESTIMATE_SAMPLE_BYTES];
    let mut out = Vec::with_capacity(ESTIMATE_SAMPLE_BYTES + 1024);
    let mut ratios = Vec::with_capacity(blocks.len());
    for b in blocks {
        let start = b as u64 * ESTIMATE_BLOCK_BYTES;
        let len = (layer.len - start).min(ESTIMATE_BLOCK_BYTES);
        let n = len.min(ESTIMATE_SAMPLE_BYTES as u64);
        let at = sample_offset(b as u64, len - n);
        let sample = &mut buf[..n as usize];
        layer.read_exact_at(start + at, sample)?;
        out.clear();
        compressor
            .compress(Codec::Gzip, sample, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // A sample never exceeds 32 KiB, and its member stays within a few bytes of it.
        ratios.push((out.len() as u32, n as u32));
    }
    Ok(ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_weighs_what_its_sample_compresses_to() {
        let r = Ratios(vec![(1000, 32768), (32768, 32768)]);
        let block = ESTIMATE_BLOCK_BYTES;
        assert_eq!(r.weight(0, block), block * 1000 / 32768);
        assert_eq!(r.weight(block, 2 * block), block);
        // Across the boundary: half of each block.
        let half = block / 2;
        assert_eq!(r.weight(half, block + half), half * 1000 / 32768 + half);
        // Past the sampled blocks, bytes count as they are; nothing weighs zero.
        assert_eq!(r.weight(3 * block, 3 * block + 10), 10);
        assert_eq!(r.weight(5, 5), 1);
    }
}
