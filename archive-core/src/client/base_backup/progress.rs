//! A progress bar for a base backup run by hand on a terminal: the bytes
//! pg_basebackup has written into the temp directory, their rate, and a
//! time left estimated from the previous backup's size. Without a terminal
//! nothing is added: pg_basebackup's own progress lines are logged every
//! `backup_progress_interval`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::common::progress::{can_draw, Progress, LOG_INTERVAL};
use crate::server::backups;

/// The running bar; [`Watch::stop`] removes it.
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Watch {
    /// Starts a bar for what pg_basebackup writes into `tmp` (a new
    /// `data.master.*` in `backup_dir`), when stderr is a terminal.
    pub fn start(backup_dir: &Path, tmp: &Path, what: String) -> Option<Watch> {
        if !can_draw() {
            return None;
        }
        let progress = Progress::with_interval(what, previous_size(backup_dir), LOG_INTERVAL, true);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, tmp) = (stop.clone(), tmp.to_path_buf());
        let handle = thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    let now = written(&tmp);
                    progress.inc(now.saturating_sub(progress.done()));
                    thread::sleep(Duration::from_millis(250));
                }
                progress.finish();
            })
            .ok()?;
        Some(Watch { stop, handle })
    }

    /// Removes the bar.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.handle.join();
    }
}

/// Stored bytes of the newest complete backup, from its SUCCESS marker.
fn previous_size(backup_dir: &Path) -> Option<u64> {
    let newest = backups::list(backup_dir)
        .ok()?
        .into_iter()
        .filter(|b| b.complete)
        .max_by_key(|b| b.index)?;
    let text = std::fs::read_to_string(newest.path.join(backups::SUCCESS)).ok()?;
    backups::success_value(&text, "stored_bytes")?.parse().ok()
}

/// Bytes of the files in `dir`.
fn written(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
