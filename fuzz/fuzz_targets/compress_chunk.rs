//! Fuzzes `compress_chunk` for both codecs: whatever the input, the member / frame decodes
//! (flate2's multi-member reader, libzstd's decoder) to exactly the input, and compressing
//! twice gives the same bytes.
//!
//! libFuzzer's inputs are small (4 KiB by default) and the incompressible probe only looks at
//! chunks of 128 KiB and more, so the input is a recipe: the first byte says how many times
//! (0..=63, times 4 KiB) to repeat-and-perturb the rest, which reaches the stored path too.
#![no_main]

use std::io::Read;

use hoist::compress::{Codec, compress_chunk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&recipe, seed)) = data.split_first() else {
        return;
    };
    let mut input = seed.to_vec();
    let target = usize::from(recipe & 63) * 4096;
    if !seed.is_empty() {
        // Repeat the seed, xor-ing a counter in, up to the target size.
        let mut k: u8 = 0;
        while input.len() < target {
            k = k.wrapping_add(recipe | 1);
            input.extend(seed.iter().map(|b| b ^ k));
        }
    }
    for codec in [Codec::Gzip, Codec::Zstd] {
        let mut out = Vec::new();
        compress_chunk(codec, &input, &mut out).expect("compress");
        let mut again = Vec::new();
        compress_chunk(codec, &input, &mut again).expect("compress");
        assert!(out == again, "{codec}: not deterministic");
        let back = match codec {
            Codec::Gzip => {
                let mut v = Vec::new();
                flate2::read::MultiGzDecoder::new(&out[..])
                    .read_to_end(&mut v)
                    .expect("gzip decode");
                v
            }
            Codec::Zstd => zstd::decode_all(&out[..]).expect("zstd decode"),
        };
        assert!(back == input, "{codec}: round trip");
    }
});
