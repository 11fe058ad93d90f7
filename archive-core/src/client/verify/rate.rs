//! The I/O rate bound of a verify: every reader of stored bytes (a local
//! file, the pipe a peer's copy streams through) counts what it read on
//! one shared [`Throttle`], which sleeps whenever the run is ahead of
//! `--max-rate`.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared byte budget: at most `rate` bytes a second since the run began.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: Option<u64>,
    state: Arc<Mutex<(Instant, u64)>>,
}

impl Throttle {
    /// A budget of `rate` bytes a second (`None`: unbounded, only counts).
    pub fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            state: Arc::new(Mutex::new((Instant::now(), 0))),
        }
    }

    /// Bytes read so far.
    pub fn total(&self) -> u64 {
        self.state.lock().expect("not poisoned").1
    }

    /// Counts `n` bytes read, then sleeps until the budget allows them.
    pub fn spend(&self, n: usize) {
        let (start, total) = {
            let mut s = self.state.lock().expect("not poisoned");
            s.1 += n as u64;
            *s
        };
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// `inner`, its reads counted and paced.
    pub fn reader<R: Read>(&self, inner: R) -> Paced<R> {
        Paced {
            inner,
            throttle: self.clone(),
        }
    }
}

/// A reader paced by a [`Throttle`].
pub struct Paced<R> {
    inner: R,
    throttle: Throttle,
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.throttle.spend(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_reader_reads_everything_and_counts_it() {
        let t = Throttle::new(None);
        let mut out = Vec::new();
        t.reader(&[7u8; 1000][..]).read_to_end(&mut out).unwrap();
        t.reader(&[1u8; 24][..]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1024);
        assert_eq!(t.total(), 1024);
    }
}
