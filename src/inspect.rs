//! `hoist inspect`: what would be pushed, read from the source with no network.
//!
//! The report is the push plan (platform, manifest type, every blob with size and action,
//! warnings) plus the ELF census of every layer and its verdict against the declared platform.

use std::fmt;
use std::io::{self, Read};

use serde::Serialize;

use crate::elf::{self, LayerCensus};
use crate::plan::{ActionView, PlanError, PlanOptions, PlanView, PlannedLayer, PushPlan};
use crate::source::SourceRef;

#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    pub plan: PlanOptions,
    /// Read every layer for the ELF census (costs a full read, and decompression for
    /// compressed layers).
    pub elf_census: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{name}: layer {layer} could not be read for the ELF census: {source}")]
    Census {
        name: String,
        layer: usize,
        #[source]
        source: io::Error,
    },
}

/// What `hoist inspect` prints (as text through `Display`, as JSON through `Serialize`).
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    #[serde(flatten)]
    pub plan: PlanView,
    /// One census per layer, in layer order; absent when the census was not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<Vec<LayerCensus>>,
    /// The census verdict: `None` when it passed or was not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch_mismatch: Option<String>,
}

pub fn inspect(source: &SourceRef, opts: &InspectOptions) -> Result<InspectReport, InspectError> {
    let plan = PushPlan::new(source, &opts.plan)?;
    let mut report = InspectReport {
        plan: plan.view(),
        elf: None,
        arch_mismatch: None,
    };
    if opts.elf_census {
        let mut censuses = Vec::with_capacity(plan.layers.len());
        for (i, (layer, census)) in plan
            .layers
            .iter()
            .zip(census_layers(&plan.layers, false, &|| false))
            .enumerate()
        {
            censuses.push(census.map_err(|source| InspectError::Census {
                name: layer.source.location.name.to_string(),
                layer: i + 1,
                source,
            })?);
        }
        report.arch_mismatch = elf::check_platform(&plan.platform, &censuses)
            .err()
            .map(|e| e.to_string());
        report.elf = Some(censuses);
    }
    Ok(report)
}

/// The nice value of census threads that run beside a push (`low_priority`): the scheduler
/// gives the CPU to the uploads (and a local registry) first, the census takes what is left.
/// 19 (CFS weight 15 against 1024) rather than 10 (weight 110): on the bench's OCI push, whose
/// census inflates 1.3 GB, 3 alternated runs each took 5.42-5.67 s at 19 against 5.91-7.48 s
/// at 10, and the registry spent less CPU. (SCHED_IDLE would be lower still, but needs
/// `unsafe` libc calls; rustix does not offer it.)
pub const CENSUS_NICE: i32 = 19;

/// Whether the census should give up (its push stopped); asked before every read.
pub type CensusStop<'a> = &'a (dyn Fn() -> bool + Sync);

/// The ELF census of every layer, in layer order, on up to one thread per core (layers are
/// taken one at a time, so a large layer does not hold the others back). With `low_priority`,
/// each thread runs at [`CENSUS_NICE`]. Once `stop` says so, every read fails and the layers
/// not done yet give an error: a stopped push (or a daemon shutting down) does not wait for
/// the census of every layer.
pub fn census_layers(
    layers: &[PlannedLayer],
    low_priority: bool,
    stop: CensusStop<'_>,
) -> Vec<io::Result<LayerCensus>> {
    let threads_max = std::thread::available_parallelism().map_or(1, |n| n.get());
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<io::Result<LayerCensus>>>> =
        layers.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads_max.clamp(1, layers.len().max(1)) {
            s.spawn(|| {
                if low_priority {
                    lower_priority();
                }
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(layer) = layers.get(i) else { break };
                    let r = layer_census_until(layer, stop);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(io::Error::other("the census thread ended abnormally")))
        })
        .collect()
}

// Not `Interrupted`: readers retry on that kind, and would spin.
fn census_stopped() -> io::Error {
    io::Error::other("the ELF census was stopped")
}

/// A reader that fails once its census is told to stop.
struct UntilStop<'a, R> {
    inner: R,
    stop: CensusStop<'a>,
}

impl<R: Read> Read for UntilStop<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.stop)() {
            return Err(census_stopped());
        }
        self.inner.read(buf)
    }
}

impl<R: io::Seek> io::Seek for UntilStop<'_, R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        if (self.stop)() {
            return Err(census_stopped());
        }
        self.inner.seek(pos)
    }
}

/// Lowers the calling thread's priority (Linux nice values are per thread). Best effort: a
/// failure only means the census competes with the uploads as an equal.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), CENSUS_NICE) {
        tracing::debug!(error = %e, "cannot lower the census thread's priority");
    }
}

/// Elsewhere (macOS) a nice value is the whole process's: lowering it would slow the uploads
/// too, so the census runs at normal priority there.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn lower_priority() {}

/// Magic numbers of the layer compressions hoist reads.
const GZIP_MAGIC: [u8; 2] = crate::compress::GZIP_MAGIC;
const ZSTD_MAGIC: [u8; 4] = crate::compress::ZSTD_MAGIC;

/// The ELF census of one layer: its source bytes, decompressed when they are compressed
/// (detected from the magic bytes, not trusted from the media type).
pub fn layer_census(layer: &PlannedLayer) -> io::Result<LayerCensus> {
    layer_census_until(layer, &|| false)
}

fn layer_census_until(layer: &PlannedLayer, stop: CensusStop<'_>) -> io::Result<LayerCensus> {
    if stop() {
        return Err(census_stopped());
    }
    let head = layer
        .source
        .location
        .head(4)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let reader = UntilStop {
        inner: layer.source.location.reader(),
        stop,
    };
    let tar: Box<dyn Read + '_> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(
            reader,
        )))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::new(reader)?)
    } else {
        // Uncompressed: seek over file contents instead of reading them.
        return elf::census_tar_seek(io::BufReader::new(reader)).map_err(|e| census_error(e, stop));
    };
    elf::census_tar(tar).map_err(|e| census_error(e, stop))
}

/// A census error as an I/O error, or the stop that caused it.
fn census_error(e: elf::CensusError, stop: CensusStop<'_>) -> io::Error {
    if stop() {
        census_stopped()
    } else {
        io::Error::other(e.to_string())
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn census_text(c: &LayerCensus) -> String {
    if let Some(why) = &c.skipped {
        return format!("ELF census skipped: {why}");
    }
    if c.total() == 0 {
        return "no ELF files".into();
    }
    let parts: Vec<String> = c.by_arch.iter().map(|(a, n)| format!("{n} {a}")).collect();
    format!("ELF {}", parts.join(", "))
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        writeln!(f, "source    {}", p.source)?;
        writeln!(f, "platform  {}", p.platform)?;
        let digest = match &p.manifest_digest {
            Some(d) => d.to_string(),
            None => "known after compression".into(),
        };
        writeln!(f, "manifest  {} ({digest})", p.manifest_media_type)?;
        writeln!(
            f,
            "config    {}  {}",
            p.config.digest.short(),
            human_bytes(p.config.size)
        )?;
        writeln!(
            f,
            "layers    {} ({} read from the source)",
            p.layers.len(),
            human_bytes(p.total_size)
        )?;
        for (i, l) in p.layers.iter().enumerate() {
            let action = match &l.action {
                ActionView::AsIs => "push as is".to_string(),
                ActionView::Compress { codec } => format!("compress to {codec}"),
            };
            write!(
                f,
                "  {:>3}  {}  {:>10}  {:<16}",
                i + 1,
                l.digest.short(),
                human_bytes(l.size),
                action
            )?;
            if let Some(part) = &l.part {
                write!(
                    f,
                    "  part {} of {} of {}",
                    part.index,
                    part.count,
                    part.layer.short()
                )?;
            }
            if let Some(c) = self.elf.as_ref().and_then(|e| e.get(i)) {
                write!(f, "  {}", census_text(c))?;
            }
            writeln!(f)?;
        }
        if let Some(census) = &self.elf {
            let total: u64 = census.iter().map(LayerCensus::total).sum();
            match &self.arch_mismatch {
                Some(m) => writeln!(f, "binaries  MISMATCH: {m}")?,
                None if total == 0 => writeln!(f, "binaries  no ELF files to check")?,
                None => writeln!(f, "binaries  {total} ELF files match {}", p.platform)?,
            }
        }
        for w in &p.warnings {
            writeln!(f, "warning   {w}")?;
        }
        Ok(())
    }
}
