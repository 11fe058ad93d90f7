//! Progress of a long transfer: a bar with bytes, rate and ETA when stderr
//! is a terminal, else an INFO line every interval (cron mails and journals
//! get a few lines, not a redrawn bar).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::common::log;

/// How often a line is logged when stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// True when stderr is a terminal a bar can be drawn on (not a dumb one:
/// the bar would not be drawn, and no line logged either).
pub fn can_draw() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}

/// A byte counter shown as it grows; shared by threads (`&self` methods).
#[derive(Debug)]
pub struct Progress {
    what: String,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    started: Instant,
    interval: Duration,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// `what` (e.g. "restoring data.master.3 from arch1") of `total` bytes
    /// when known; a bar on a terminal, else a line every [`LOG_INTERVAL`].
    pub fn new(what: impl Into<String>, total: Option<u64>) -> Progress {
        Progress::with_interval(what, total, LOG_INTERVAL, can_draw())
    }

    /// As [`Progress::new`], logging every `interval`; `terminal` chooses
    /// the bar.
    pub fn with_interval(
        what: impl Into<String>,
        total: Option<u64>,
        interval: Duration,
        terminal: bool,
    ) -> Progress {
        let what = what.into();
        let bar = terminal.then(|| {
            let (bar, template) = match total {
                Some(t) => (
                    ProgressBar::new(t),
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}",
                ),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            total,
            bar,
            done: AtomicU64::new(0),
            started: now,
            interval,
            last_log: Mutex::new(now),
        }
    }

    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= self.interval {
                    *last = Instant::now();
                    drop(last);
                    log::info(self.line(done));
                }
            }
        }
    }

    /// Bytes counted so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Removes the bar (the caller logs the outcome).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// "what: 1.20 GiB of 3.00 GiB (40%), 120.00 MiB/s, about 15s left".
    fn line(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let mut s = format!("{}: {}", self.what, HumanBytes(done));
        if let Some(t) = self.total.filter(|t| *t > 0) {
            s.push_str(&format!(
                " of {} ({}%)",
                HumanBytes(t),
                done.saturating_mul(100) / t
            ));
            if rate > 0.0 && done < t {
                s.push_str(&format!(
                    ", {}/s, about {}s left",
                    HumanBytes(rate as u64),
                    ((t - done) as f64 / rate).ceil() as u64
                ));
                return s;
            }
        }
        s.push_str(&format!(", {}/s", HumanBytes(rate as u64)));
        s
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A writer that counts what passes through it into a [`Progress`].
#[derive(Debug)]
pub struct Counting<'a, W> {
    inner: W,
    progress: &'a Progress,
}

impl<'a, W> Counting<'a, W> {
    /// Wraps `inner`.
    pub fn new(inner: W, progress: &'a Progress) -> Self {
        Counting { inner, progress }
    }
}

impl<W: std::io::Write> std::io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_says_bytes_share_rate_and_time_left() {
        let p = Progress::with_interval("restoring", Some(4 << 30), LOG_INTERVAL, false);
        let line = p.line(1 << 30);
        assert!(
            line.starts_with("restoring: 1.00 GiB of 4.00 GiB (25%), "),
            "{line}"
        );
        assert!(
            line.contains("/s, about ") && line.ends_with("s left"),
            "{line}"
        );
        let p = Progress::with_interval("syncing", None, LOG_INTERVAL, false);
        assert!(
            p.line(2048).starts_with("syncing: 2.00 KiB, "),
            "{}",
            p.line(2048)
        );
    }

    #[test]
    fn counting_writer_counts_what_it_wrote() {
        let p = Progress::with_interval("x", None, LOG_INTERVAL, false);
        let mut out = Vec::new();
        let mut w = Counting::new(&mut out, &p);
        std::io::Write::write_all(&mut w, b"hello").unwrap();
        assert_eq!(p.done(), 5);
        assert_eq!(out, b"hello");
    }
}
