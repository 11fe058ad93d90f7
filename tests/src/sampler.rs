//! Measuring from `/proc`, for the benchmarks and for tests that watch a
//! process at work: whole-machine CPU counters, a process' CPU ticks and
//! peak RSS, and [`Sampler`], the background thread every sampler runs on.
//! Measurement only: nothing here asserts a timing.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/stat` and `/proc/PID/stat` (USER_HZ).
pub const CLK_TCK: f64 = 100.0;

/// Number of online CPUs.
pub fn cpu_count() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whole-machine CPU time counters from the first line of `/proc/stat`, in
/// ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal (guest time is in user).
    pub busy: u64,
    /// iowait.
    pub iowait: u64,
    /// idle.
    pub idle: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn now() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let f: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        CpuTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
            iowait: at(4),
            idle: at(3),
        }
    }

    /// Busy CPU-seconds since `earlier`.
    pub fn busy_secs_since(&self, earlier: &CpuTimes) -> f64 {
        self.since(earlier).0
    }

    /// Fraction of all CPUs busy since `earlier` (0..=1; iowait counts as
    /// not busy).
    pub fn busy_fraction_since(&self, earlier: &CpuTimes) -> f64 {
        self.since(earlier).2
    }

    /// (busy CPU-s, iowait CPU-s, fraction of all CPUs busy) since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> (f64, f64, f64) {
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let io = self.iowait.saturating_sub(earlier.iowait) as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let all = busy + io + idle;
        (
            busy / CLK_TCK,
            io / CLK_TCK,
            if all > 0.0 { busy / all } else { 0.0 },
        )
    }
}

/// Waits until the whole machine is quiet (at most `threshold` of all CPUs
/// busy over a 1 s window) or `limit` has passed; returns the last window's
/// busy fraction.
pub fn wait_quiet(threshold: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let a = CpuTimes::now();
        thread::sleep(Duration::from_secs(1));
        let busy = CpuTimes::now().busy_fraction_since(&a);
        if busy <= threshold || Instant::now() >= deadline {
            return busy;
        }
    }
}

/// The sum of the fields `fields` of a `stat` file of `/proc`
/// (`/proc/PID/stat`, `/proc/thread-self/stat`), numbered as proc(5)
/// numbers them: 14, 15 are utime, stime; 16, 17 the same of reaped
/// children. `None` when the file is gone or a field is missing.
pub fn stat_sum(stat_file: &str, fields: RangeInclusive<usize>) -> Option<u64> {
    let text = std::fs::read_to_string(stat_file).ok()?;
    // Fields after the command name start at field 3 (state).
    let f: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    fields
        .map(|i| f.get(i.checked_sub(3)?)?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    stat_sum(&format!("/proc/{pid}/stat"), 14..=15)
}

/// This thread's CPU ticks (utime + stime of `/proc/thread-self/stat`; 0
/// when unreadable).
pub fn thread_cpu_ticks() -> u64 {
    stat_sum("/proc/thread-self/stat", 14..=15).unwrap_or(0)
}

/// Peak resident set (VmHWM) of `pid` so far, KiB.
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A background thread that samples until told to stop, then hands back
/// what it gathered. The sampling function gets the stop flag: it loops
/// while the flag is down, and is expected to take one last sample once it
/// is up. Dropped without [`Sampler::finish`], it stops and joins the
/// thread.
pub struct Sampler<T> {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<T>>,
}

impl<T: Send + 'static> Sampler<T> {
    /// Starts `sample` on a thread named `name`.
    pub fn start(name: &str, sample: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Sampler<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || sample(&flag))
            .expect("spawn sampler");
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns what the thread gathered.
    pub fn finish(mut self) -> T {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("sampler thread")
    }
}

impl<T> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counters_move_forward() {
        let a = CpuTimes::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let b = CpuTimes::now();
        assert!(b.busy >= a.busy && b.idle >= a.idle && b.iowait >= a.iowait);
    }

    #[test]
    fn own_process_has_ticks_and_a_peak_rss() {
        let me = std::process::id() as i32;
        assert!(cpu_ticks(me).is_some());
        assert!(vm_hwm_kib(me).is_some_and(|k| k > 0));
        assert_eq!(cpu_ticks(i32::MAX), None);
        assert_eq!(
            stat_sum("/proc/self/stat", 2..=2),
            None,
            "field 2 is the name"
        );
    }

    #[test]
    fn a_sampler_takes_a_last_sample_when_finished() {
        let s = Sampler::start("test-sampler", |stop| {
            let mut n = 0u32;
            loop {
                let last = stop.load(Ordering::SeqCst);
                n += 1;
                if last {
                    return n;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        thread::sleep(Duration::from_millis(20));
        assert!(s.finish() >= 2);
    }
}
