//! Deterministic inputs for benchmarks, examples and tests: random bytes and text-like
//! bytes from a fixed SplitMix64, so they never depend on a crate's RNG.
//!
//! The golden-digest test in `tests/compress.rs` keeps its own copy of its generator on
//! purpose: a change here must not look like a codec change there.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever (the sample images'
/// digests depend on it).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`); the slight modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `len` uniformly random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes that compress like source code and config files in a layer (gzip -6 ratio about
/// 3): lines of words drawn with a skewed distribution from a fixed 4096-word vocabulary, with
/// indentation, punctuation and numbers.
pub fn text_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut vocab_rng = SplitMix64(0x7e57);
    let vocab: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let n = 2 + vocab_rng.below(9) as usize;
            (0..n)
                .map(|_| b"etaoinshrdlcumwfgypbvkjxqz_"[vocab_rng.below(27) as usize])
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 256);
    while out.len() < len {
        let indent = rng.below(5) as usize * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        let words = 1 + rng.below(12);
        for w in 0..words {
            // The product of two uniforms favours small indices: a few words are very common.
            let i = (rng.below(4096) * rng.below(4096)) >> 12;
            out.extend_from_slice(&vocab[i as usize]);
            match rng.below(16) {
                0 => out.extend_from_slice(b"("),
                1 => out.extend_from_slice(b", "),
                2 => out.extend_from_slice(format!(" = {}", rng.below(100_000)).as_bytes()),
                3 => out.extend_from_slice(b"."),
                _ if w + 1 < words => out.push(b' '),
                _ => {}
            }
        }
        out.extend_from_slice(if rng.below(8) == 0 { b";\n" } else { b"\n" });
    }
    out.truncate(len);
    out
}
