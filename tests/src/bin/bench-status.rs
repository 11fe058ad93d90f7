//! bench-status: how long archive-status takes on a cluster with many
//! segments (issue 7, item 4: "10,000 segments per server take seconds,
//! not minutes"). Not a test: it asserts no timing, it prints figures; it
//! fails only when the report is wrong or a run breaks.
//!
//! The lab's two archive servers (real sshd, forced command) each get
//! `BENCH_SEGMENTS` segment files fabricated straight into their storage
//! (names as PostgreSQL writes them with 16 MiB segments; the content is a
//! few bytes: archive-status never reads segment content unless sizes
//! differ), the last `BENCH_TL2` of them on timeline 2 after a switch (with
//! its `00000002.history`), two complete backups per server, and a few
//! anomalies archive-status must find at that scale: `BENCH_ONE_SIDED`
//! files only on arch1 and `BENCH_DIVERGENT` same-named files of different
//! content (and size) on arch2. archive-status then runs as the primary
//! runs it (as postgres, its config with the monitor key, over ssh):
//!
//! - cold: the primary's ssh master connections closed first (each run
//!   pays for two ssh connections);
//! - warm: `BENCH_ROUNDS` runs with the masters up (what cron sees when
//!   the previous run's masters are still open);
//! - `--checksum`: once, decoding every same-named file on both servers.
//!
//! Printed: seconds per run, requests per server (from the report itself:
//! one `List`, one `ListBackups`, one `DirStatus`, one `Get` of the history
//! file, one `Digest` batch per 32 divergent candidates), files listed.
//!
//! Run as root after `cargo build --release --workspace --bins` (or
//! `scripts/bench-status.sh`). Environment: `BENCH_SEGMENTS` (10000),
//! `BENCH_ROUNDS` (5), `BENCH_TL2` (100), `BENCH_ONE_SIDED` (10),
//! `BENCH_DIVERGENT` (3), `KEEP_LAB=1`; `BENCH_RESULTS_DIR`: where the
//! results file goes (default `docs/benchmarks/`, `YYYY-MM-DD-status.md`, a
//! section appended per completed run: see `e2e::bench_results`); set but
//! empty, none is written.

use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

use archive_core::common::wal::WalName;
use archive_core::status::{chain::format_lsn, Report};
use e2e::bench_common::{
    binaries_line, close_ssh_masters, env_or, exit_code, open_lab, require_root,
};
use e2e::bench_results::{Results, Table};
use e2e::{bin, mkdir_postgres, write_postgres_file, Lab, LabOptions};

const SEG: u64 = 16 << 20;
/// First segment number (log 1, so names cross log boundaries).
const FIRST: u64 = 0x100;

struct Settings {
    segments: u64,
    rounds: usize,
    tl2: u64,
    one_sided: u64,
    divergent: u64,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let s = Settings {
            segments: env_or("BENCH_SEGMENTS", 10_000)?,
            rounds: env_or("BENCH_ROUNDS", 5usize)?.max(1),
            tl2: env_or("BENCH_TL2", 100)?,
            one_sided: env_or("BENCH_ONE_SIDED", 10)?,
            divergent: env_or("BENCH_DIVERGENT", 3)?,
        };
        if s.segments < 10 || s.tl2 + s.one_sided + s.divergent >= s.segments / 2 {
            return Err("BENCH_SEGMENTS must be at least 10 and more than twice BENCH_TL2 + BENCH_ONE_SIDED + BENCH_DIVERGENT".into());
        }
        Ok(s)
    }
}

fn main() -> ExitCode {
    exit_code("bench-status", run())
}

/// The segment at position `segno`: timeline 2 from the switch on.
fn name_at(s: &Settings, segno: u64) -> String {
    let switch = FIRST + s.segments - s.tl2;
    let tli = if s.tl2 > 0 && segno >= switch { 2 } else { 1 };
    WalName::from_segment_number(tli, segno, SEG).to_string()
}

/// Fabricates the archive and backup directories on both servers.
fn fabricate(lab: &Lab, s: &Settings, dst: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = (FIRST..FIRST + s.segments).map(|n| name_at(s, n)).collect();
    let last = names.len() as u64;
    for server in [1, 2] {
        let dir = lab.stored_path(server, dst, "x");
        let dir = dir.parent().ok_or("no parent")?;
        mkdir_postgres(dir, 0o700);
        for (i, n) in names.iter().enumerate() {
            let i = i as u64;
            // The newest ones are only on arch1.
            if server == 2 && i >= last - s.one_sided {
                continue;
            }
            // Divergent: the same name with other (longer) content on arch2.
            let body: &[u8] = if server == 2 && (1..=s.divergent).any(|k| i == k * 7) {
                b"other content, longer"
            } else {
                b"wal"
            };
            write_postgres_file(dir.join(n), body, 0o600);
        }
        if s.tl2 > 0 {
            let switch = (FIRST + s.segments - s.tl2) * SEG;
            write_postgres_file(
                dir.join("00000002.history"),
                format!("1\t{}\tno recovery target specified\n", format_lsn(switch)),
                0o600,
            );
        }
        let backups = lab.stored_backup_dir(server, "bench");
        for (k, segno) in [FIRST, FIRST + s.segments / 2].into_iter().enumerate() {
            let b = backups.join(format!("data.master.{k}"));
            mkdir_postgres(&b, 0o700);
            let start = name_at(s, segno);
            let lsn = segno * SEG + 0x28;
            write_postgres_file(
                b.join("backup_label"),
                format!(
                    "START WAL LOCATION: {} (file {start})\nCHECKPOINT LOCATION: {}\n\
                     BACKUP METHOD: streamed\nBACKUP FROM: standby\n\
                     START TIME: 2026-03-01 03:07:00 UTC\nLABEL: base-backup\nSTART TIMELINE: 1\n",
                    format_lsn(lsn),
                    format_lsn(lsn + 0x60)
                ),
                0o600,
            );
            write_postgres_file(b.join("SUCCESS"), "finished=2026-03-01T04:00:00Z\n", 0o600);
        }
    }
    Ok(names)
}

/// Closes the primary's ssh master connections, so the next run connects.
fn close_masters(lab: &Lab) {
    close_ssh_masters(&lab.primary_runtime_dir(), "x", || lab.postgres_cmd("ssh"));
}

fn status(lab: &Lab, dst: &str, extra: &[&str]) -> Result<(Duration, Report), String> {
    let mut cmd: Command = lab.postgres_cmd(bin("archive-status"));
    cmd.arg("--config")
        .arg(lab.monitor_config())
        .args(["--hosts", "arch1 arch2", "--wals-dir", dst])
        .arg("--backup-dir")
        .arg(lab.backup_dir("bench"))
        .args(["--cluster", "bench", "--json", "--max-digests", "100000"])
        .args(extra);
    let t = Instant::now();
    let out: Output = e2e::run(&mut cmd);
    let elapsed = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let report = Report::from_json(&text).map_err(|e| {
        format!(
            "archive-status ({}) printed no report: {e}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((elapsed, report))
}

/// Checks that the report found exactly what was fabricated.
fn verify(r: &Report, s: &Settings, names: &[String], checksum: bool) -> Result<(), String> {
    let c = r.clusters.first().ok_or("no cluster in the report")?;
    let history = u64::from(s.tl2 > 0);
    let want_files = [s.segments + history, s.segments - s.one_sided + history];
    for (srv, want) in c.servers.iter().zip(want_files) {
        if let Some(e) = &srv.error {
            return Err(format!("{}: {e}", srv.host));
        }
        if srv.files != want {
            return Err(format!(
                "{} lists {} files, not {want}",
                srv.host, srv.files
            ));
        }
        let ch = srv.chain.as_ref().ok_or("no chain")?;
        if ch.gap_segments != 0 || ch.error.is_some() {
            return Err(format!(
                "{}: unexpected gaps or chain error: {ch:?}",
                srv.host
            ));
        }
    }
    let last = names.last().ok_or("no names")?;
    if c.newest_segment.as_deref() != Some(last.as_str()) {
        return Err(format!("newest segment {:?}, not {last}", c.newest_segment));
    }
    let (a1, a2) = (&c.servers[0], &c.servers[1]);
    if a1.one_sided != s.one_sided || a2.one_sided != 0 {
        return Err(format!(
            "one-sided: arch1 {}, arch2 {} (want {}, 0)",
            a1.one_sided, a2.one_sided, s.one_sided
        ));
    }
    let want_missing = s.one_sided;
    let got_missing = a2.chain.as_ref().map_or(0, |c| c.missing_here);
    if got_missing != want_missing {
        return Err(format!(
            "arch2 misses {got_missing} chain segments, not {want_missing}"
        ));
    }
    if c.divergent.len() as u64 != s.divergent {
        return Err(format!(
            "{} divergent files, not {}",
            c.divergent.len(),
            s.divergent
        ));
    }
    let compared = if checksum {
        s.segments - s.one_sided + history
    } else {
        s.divergent
    };
    if c.compared != compared {
        return Err(format!("{} files compared, not {compared}", c.compared));
    }
    if c.segment_size != Some(SEG) {
        return Err(format!("segment size {:?}", c.segment_size));
    }
    Ok(())
}

fn requests(r: &Report) -> String {
    r.clusters[0]
        .servers
        .iter()
        .map(|s| format!("{} {}", s.host, s.requests))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run() -> Result<(), String> {
    require_root("the tools")?;
    let s = Settings::from_env()?;
    let mut out = Results::new("status");
    bin("archive-status");
    bin("archive-remote-cmd");
    out.say(binaries_line("bench-status"));
    let lab = open_lab(&mut out, LabOptions::default());
    let dst = lab.dst("bench");
    let t = Instant::now();
    let names = fabricate(&lab, &s, &dst)?;
    out.say(format!(
        "bench-status: lab {}; fabricated {} segments per server ({}..{}, the last {} on timeline 2 with its history file), {} only on arch1, {} divergent on arch2, 2 backups per server, in {:.1} s",
        lab.dir().display(),
        s.segments,
        names[0],
        names[names.len() - 1],
        s.tl2,
        s.one_sided,
        s.divergent,
        t.elapsed().as_secs_f64()
    ));

    // Warm-up (host keys, page cache), not counted.
    status(&lab, &dst, &[])?;

    close_masters(&lab);
    let (cold, r) = status(&lab, &dst, &[])?;
    verify(&r, &s, &names, false)?;
    out.say(format!(
        "cold (new ssh connections to both servers): {:.3} s; requests: {}; files listed: {}",
        cold.as_secs_f64(),
        requests(&r),
        r.clusters[0]
            .servers
            .iter()
            .map(|x| format!("{} {}", x.host, x.files))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let cold_requests = requests(&r);
    let mut warm = Vec::new();
    let mut last = r;
    for _ in 0..s.rounds {
        let (d, r) = status(&lab, &dst, &[])?;
        verify(&r, &s, &names, false)?;
        warm.push(d.as_secs_f64());
        last = r;
    }
    warm.sort_by(|a, b| a.total_cmp(b));
    out.say(format!(
        "warm (ssh masters up), {} runs: best {:.3} s, median {:.3} s, worst {:.3} s; archive-status's own collection time {:.3} s; requests: {}",
        warm.len(),
        warm[0],
        warm[warm.len() / 2],
        warm[warm.len() - 1],
        last.duration_secs,
        requests(&last)
    ));

    let (d, r) = status(&lab, &dst, &["--checksum"])?;
    verify(&r, &s, &names, true)?;
    out.say(format!(
        "--checksum (every same-named file decoded on both servers, {} files): {:.3} s; requests: {}",
        r.clusters[0].compared,
        d.as_secs_f64(),
        requests(&r)
    ));
    let per_server = last.clusters[0]
        .servers
        .iter()
        .map(|x| x.requests)
        .max()
        .unwrap_or(0);
    out.say(format!(
        "result: {} segments per server checked in {:.2} s cold, {:.2} s warm, with at most {per_server} requests per server -> target (seconds, not minutes) {}",
        s.segments,
        cold.as_secs_f64(),
        warm[warm.len() / 2],
        if cold.as_secs_f64() < 10.0 { "MET" } else { "MISSED" }
    ));
    let mut t = Table::new(&["run", "s", "requests"]);
    t.row(vec![
        "cold".into(),
        format!("{:.3}", cold.as_secs_f64()),
        cold_requests,
    ]);
    for (what, secs) in [
        ("warm, best", warm[0]),
        ("warm, median", warm[warm.len() / 2]),
        ("warm, worst", warm[warm.len() - 1]),
    ] {
        t.row(vec![what.into(), format!("{secs:.3}"), requests(&last)]);
    }
    t.row(vec![
        "--checksum".into(),
        format!("{:.3}", d.as_secs_f64()),
        requests(&r),
    ]);
    out.table(
        &format!(
            "{} segments per server, {} warm runs",
            s.segments,
            warm.len()
        ),
        t,
    );
    out.write();
    Ok(())
}
