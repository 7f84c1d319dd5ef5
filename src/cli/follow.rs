//! Following a job: progress bars on a terminal, plain lines otherwise, or NDJSON.
//! Progress goes to stderr; stdout carries only results (the digest, the job ID, NDJSON).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, ClientError};
use crate::api::{self, EventKind, JobId, JobState};
use crate::digest::Digest;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif bars per blob and overall, on stderr.
    Bars,
    /// One line per event on stderr.
    Lines,
    /// Each event as one JSON line on stdout.
    Json,
}

impl Mode {
    /// `Json` when asked, else bars on a terminal and lines otherwise.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// How following ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job is done; the manifest digest, when the daemon reported one.
    Done(Option<Digest>),
    /// The job ended otherwise (failed or cancelled), with the reason.
    Ended(JobState, Option<String>),
    /// The user pressed Ctrl-C; the job goes on in the daemon.
    Detached,
    /// The daemon closed the stream before the job ended (e.g. it is shutting down).
    Lost,
    /// Someone deleted the job.
    Deleted,
}

/// Draws the events of one job.
struct Renderer {
    mode: Mode,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    bars: HashMap<Digest, ProgressBar>,
    sizes: HashMap<Digest, u64>,
    done: HashMap<Digest, u64>,
}

const BAR_TEMPLATE: &str = "{prefix:>19} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}";
const OVERALL_TEMPLATE: &str =
    "{prefix:>19} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec} eta {eta}";
/// Bars redraw at most this often.
const DRAW_HZ: u8 = 10;

impl Renderer {
    fn new(mode: Mode) -> Renderer {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Bars => ProgressDrawTarget::stderr_with_hz(DRAW_HZ),
            _ => ProgressDrawTarget::hidden(),
        });
        Renderer {
            mode,
            multi,
            overall: None,
            bars: HashMap::new(),
            sizes: HashMap::new(),
            done: HashMap::new(),
        }
    }

    fn say(&self, line: String) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(line);
            }
            Mode::Lines => eprintln!("{line}"),
            Mode::Json => {}
        }
    }

    fn overall(&mut self) -> &ProgressBar {
        let total: u64 = self.sizes.values().sum();
        let multi = &self.multi;
        let bar = self.overall.get_or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(OVERALL_TEMPLATE)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix("total");
            bar
        });
        bar.set_length(total);
        bar
    }

    fn set_done(&mut self, digest: &Digest, bytes: u64) {
        self.done.insert(digest.clone(), bytes);
        let sum: u64 = self.done.values().sum();
        self.overall().set_position(sum);
    }

    fn event(&mut self, ev: &api::Event) {
        if self.mode == Mode::Json {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&api::encode_event_line(ev));
            let _ = out.flush();
            return;
        }
        match &ev.kind {
            EventKind::State {
                state,
                reason,
                manifest_digest,
            } => {
                let mut line = format!("job {}: {state}", ev.job);
                if let Some(r) = reason {
                    line.push_str(&format!(": {r}"));
                }
                if let Some(d) = manifest_digest {
                    line.push_str(&format!(" ({d})"));
                }
                self.say(line);
            }
            EventKind::Blob {
                digest, size_bytes, ..
            } => self.blob_planned(digest, *size_bytes),
            EventKind::Compress {
                digest,
                chunks_done,
                bytes_done,
            } => match self.bars.get(digest) {
                Some(bar) => bar.set_message(format!("compressed {chunks_done} chunks")),
                None => self.say(format!(
                    "blob {}: compressed {chunks_done} chunks, {bytes_done} bytes",
                    digest.short()
                )),
            },
            EventKind::Progress {
                digest,
                offset_bytes,
                size_bytes,
            } => self.progress(digest, *offset_bytes, *size_bytes),
            EventKind::Export { .. } => self.say(export_line(&ev.kind)),
            EventKind::Resumed {
                digest,
                offset_bytes,
                size_bytes,
            } => {
                self.say(resumed_line(digest, *offset_bytes, *size_bytes));
                self.moved_to(digest, *offset_bytes);
            }
            EventKind::Restarted {
                digest,
                offset_bytes,
                size_bytes,
                reason,
            } => {
                self.say(restarted_line(digest, *offset_bytes, *size_bytes, reason));
                self.moved_to(digest, 0);
            }
            EventKind::BlobDone { digest, state } => self.blob_done(digest, *state),
            EventKind::Retry { what, reason } => self.say(format!("retrying {what}: {reason}")),
            EventKind::Deleted {} => self.say(format!("job {}: deleted", ev.job)),
            EventKind::Warning { message } => self.say(format!("warning: {message}")),
            EventKind::Note { message } => self.say(message.clone()),
        }
    }

    /// A blob joins the plan: its own bar (on a terminal) and its share of the total.
    fn blob_planned(&mut self, digest: &Digest, size_bytes: u64) {
        self.sizes.insert(digest.clone(), size_bytes);
        if self.mode == Mode::Bars && !self.bars.contains_key(digest) {
            let bar = self.multi.add(ProgressBar::new(size_bytes));
            bar.set_style(
                ProgressStyle::with_template(BAR_TEMPLATE)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(digest.short());
            self.bars.insert(digest.clone(), bar);
        }
        let _ = self.overall();
        if self.mode == Mode::Lines {
            self.say(format!(
                "blob {}: {size_bytes} bytes planned",
                digest.short()
            ));
        }
    }

    fn progress(&mut self, digest: &Digest, offset_bytes: u64, size_bytes: u64) {
        if let Some(bar) = self.bars.get(digest) {
            bar.set_position(offset_bytes);
            bar.set_message("uploading");
        } else {
            self.say(format!(
                "blob {}: {offset_bytes}/{size_bytes} bytes",
                digest.short()
            ));
        }
        self.set_done(digest, offset_bytes);
    }

    /// A blob's upload goes on from `offset_bytes` (a resume, or 0 after a restart).
    fn moved_to(&mut self, digest: &Digest, offset_bytes: u64) {
        if let Some(bar) = self.bars.get(digest) {
            bar.set_position(offset_bytes);
        }
        self.set_done(digest, offset_bytes);
    }

    fn blob_done(&mut self, digest: &Digest, state: api::BlobState) {
        let size = self.sizes.get(digest).copied().unwrap_or(0);
        if let Some(bar) = self.bars.get(digest) {
            bar.set_position(size);
            bar.finish_with_message(state.as_str());
        } else {
            self.say(format!("blob {}: {}", digest.short(), state.as_str()));
        }
        self.set_done(digest, size);
    }

    fn finish(&self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        if let Some(bar) = &self.overall {
            bar.abandon();
        }
    }
}

/// `resumed sha256:abcd1234abcd at 176 MiB of 192 MiB`: the run goes on from a stored cursor.
fn resumed_line(digest: &Digest, offset_bytes: u64, size_bytes: u64) -> String {
    format!(
        "resumed {} at {} of {}",
        digest.short(),
        size_text(offset_bytes),
        size_text(size_bytes)
    )
}

/// `restarted sha256:abcd1234abcd from 0 (had 40 MiB of 192 MiB): the registry lost the session`.
fn restarted_line(digest: &Digest, offset_bytes: u64, size_bytes: u64, reason: &str) -> String {
    format!(
        "restarted {} from 0 (had {} of {}): {reason}",
        digest.short(),
        size_text(offset_bytes),
        size_text(size_bytes)
    )
}

/// Whole MiB (rounded down) from 1 MiB on, bytes below: a resume point people can read.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes < MIB {
        format!("{bytes} bytes")
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// Ctrl-C, caught from the moment this is created (create it before submitting, so an early
/// Ctrl-C detaches instead of killing `hoist` with the job half-reported).
pub struct Interrupt(tokio::sync::mpsc::Receiver<()>);

impl Interrupt {
    pub fn catch() -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                let _ = tx.send(()).await;
            }
        });
        Ok(Interrupt(rx))
    }

    async fn wait(&mut self) {
        // A closed channel means the signal stream ended: never resolve then.
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Follows `id` until it ends, the stream ends, or Ctrl-C.
pub async fn follow(
    client: &Client,
    id: &JobId,
    mode: Mode,
    interrupt: &mut Interrupt,
) -> Result<Outcome, ClientError> {
    let mut stream = tokio::select! {
        s = client.events(id, 0, true) => s?,
        () = interrupt.wait() => return Ok(Outcome::Detached),
    };
    let mut renderer = Renderer::new(mode);
    let outcome = loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(ev)) => {
                    renderer.event(&ev);
                    if matches!(ev.kind, EventKind::Deleted {}) {
                        break Outcome::Deleted;
                    }
                    if let EventKind::State { state, reason, manifest_digest } = &ev.kind {
                        match state {
                            JobState::Done => break Outcome::Done(manifest_digest.clone()),
                            s if s.is_final() => break Outcome::Ended(*s, reason.clone()),
                            _ => {}
                        }
                    }
                }
                Some(Err(e)) => {
                    renderer.finish();
                    return Err(e);
                }
                None => break Outcome::Lost,
            },
            () = interrupt.wait() => break Outcome::Detached,
        }
    };
    renderer.finish();
    // Give the terminal a moment to show the last frame before the summary lines.
    if mode == Mode::Bars {
        tokio::time::sleep(Duration::from_millis(1000 / u64::from(DRAW_HZ))).await;
    }
    Ok(outcome)
}

/// The line for an export event of a `docker-daemon:` source.
fn export_line(kind: &EventKind) -> String {
    let EventKind::Export {
        bytes_done,
        size_bytes,
        layers_done,
        layers_total,
    } = kind
    else {
        return String::new();
    };
    format!(
        "exporting from the engine: {} MiB of about {} MiB read, {layers_done} of {layers_total} layers compressed",
        bytes_done >> 20,
        size_bytes >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_and_restart_lines_say_where_the_blob_goes_on() {
        let d = Digest::sha256_of(b"layer");
        let line = resumed_line(&d, 176 << 20, 201_343_355);
        assert_eq!(line, format!("resumed {} at 176 MiB of 192 MiB", d.short()));
        let line = restarted_line(&d, 40 << 20, 201_343_355, "the registry lost the session");
        assert_eq!(
            line,
            format!(
                "restarted {} from 0 (had 40 MiB of 192 MiB): the registry lost the session",
                d.short()
            )
        );
        assert_eq!(size_text(1000), "1000 bytes");
    }
}
