//! Writes a deterministic sample image as an OCI layout, for the demo and the benchmarks.
//!
//! `cargo run --release --example sample_image -- OUT_DIR --random-mib 1024 --text-mib 512`
//! Then `skopeo copy oci:OUT_DIR docker-archive:image.tar` gives a `docker save`-style archive.

use std::path::PathBuf;

use clap::Parser;
use hoist::platform::Platform;
use hoist_testkit::sample::{
    LayerContent, LayerSpec, SampleCompression, SampleSpec, write_oci_layout,
};

#[derive(Parser)]
struct Args {
    /// Directory to write the OCI layout into (created).
    out: PathBuf,
    /// MiB of random (incompressible) data, in one layer.
    #[arg(long, default_value_t = 64)]
    random_mib: u64,
    /// MiB of text-like (compressible) data, in one layer.
    #[arg(long, default_value_t = 64)]
    text_mib: u64,
    /// MiB of a tree of files (mixed sizes, mostly text-like, some random), in one layer,
    /// written before the others (0: no such layer).
    #[arg(long, default_value_t = 0)]
    tree_mib: u64,
    /// Number of small files, in one more layer (0: no such layer).
    #[arg(long, default_value_t = 16)]
    small_files: usize,
    #[arg(long, default_value = "linux/amd64")]
    platform: Platform,
    /// Gzip the layers (as `docker buildx` output would be) instead of leaving them as tar.
    #[arg(long)]
    gzip: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the text and the random layer this many times each (different content), e.g.
    /// to have several large layers upload in parallel.
    #[arg(long, default_value_t = 1)]
    copies: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let compression = if args.gzip {
        SampleCompression::Gzip
    } else {
        SampleCompression::None
    };
    let mut layers = Vec::new();
    if args.tree_mib > 0 {
        layers.push(LayerSpec::new(
            LayerContent::Tree(args.tree_mib << 20),
            compression,
        ));
    }
    if args.small_files > 0 {
        layers.push(LayerSpec::new(
            LayerContent::SmallFiles(args.small_files),
            compression,
        ));
    }
    for _ in 0..args.copies.max(1) {
        if args.text_mib > 0 {
            layers.push(LayerSpec::new(
                LayerContent::Text(args.text_mib << 20),
                compression,
            ));
        }
        if args.random_mib > 0 {
            layers.push(LayerSpec::new(
                LayerContent::Random(args.random_mib << 20),
                compression,
            ));
        }
    }
    let spec = SampleSpec {
        seed: args.seed,
        platform: args.platform,
        layers,
        ..SampleSpec::small(args.seed)
    };
    let image = write_oci_layout(&args.out, &spec)?;
    let total: u64 = image.layers.iter().map(|l| l.size).sum();
    println!(
        "wrote {} ({} layers, {:.1} MiB) manifest {}",
        args.out.display(),
        image.layers.len(),
        total as f64 / (1 << 20) as f64,
        image.manifest
    );
    Ok(())
}
