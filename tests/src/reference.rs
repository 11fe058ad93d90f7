//! The yardstick of issue 2's archiving benchmark: "a shell pipeline of
//! this very design with persistent ssh masters", which the issue measured
//! at 13 segments/s serial and 19 with a backlog, 5.8 CPU-seconds per GiB,
//! on the machine its targets were set on. Run on the same lab and corpus
//! as archive-cmd, it tells a reader how fast this machine is for this
//! work (ssh, zstd, fsync on two cores), which a zstd speed test alone does
//! not: its figures scale the issue's targets to the machine at hand.
//!
//! The issue gives no script; this is our reconstruction. Per segment:
//! `ssh arch1 <store script> < segment` through a persistent master; on
//! arch1, `zstd -1 | tee fifo > tmp`, sync, mv, while `ssh arch2 'cat >
//! tmp; sync; mv' < fifo` runs through a second persistent master. No
//! checks, no records, no failover: the bare cost of the design.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{command_line, describe_output, write_postgres_file, Lab};

/// What the issue measured for the pipeline on its machine.
pub const ISSUE_SERIAL: f64 = 13.0;
/// Segments/s with a backlog.
pub const ISSUE_BACKLOG: f64 = 19.0;
/// Whole-machine CPU-seconds per GiB of raw WAL.
pub const ISSUE_CPU_PER_GIB: f64 = 5.8;

/// Where the pipeline stores, under the lab's archive root (each server
/// sees its own storage there).
const DST: &str = "reference-pipeline";

const STORE_SCRIPT: &str = r#"#!/bin/bash
# The reference pipeline's arch1 side: stdin -> zstd -1 -> DST/NAME.zst
# here and, through a persistent ssh master, on arch2; fsync + rename on both.
# Usage: pipeline-store.sh NAME DST SSH_CONFIG CONTROL_PATH
set -euo pipefail
name=$1 dst=$2 cfg=$3 ctl=$4
fifo=$dst/.$name.fifo
rm -f "$fifo"
mkfifo "$fifo"
ssh -F "$cfg" -o ControlMaster=auto -o ControlPath="$ctl" -o ControlPersist=300 arch2 \
    "cat > '$dst/$name.tmp' && sync '$dst/$name.tmp' && mv '$dst/$name.tmp' '$dst/$name.zst'" \
    < "$fifo" &
fwd=$!
zstd -1 -q -c | tee "$fifo" > "$dst/$name.tmp"
sync "$dst/$name.tmp"
mv "$dst/$name.tmp" "$dst/$name.zst"
wait "$fwd"
rm -f "$fifo"
"#;

/// The pipeline installed in a lab whose keys are not forced commands.
pub struct Pipeline {
    script: PathBuf,
    /// The primary's master to arch1.
    control1: PathBuf,
    /// arch1's master to arch2.
    control2: PathBuf,
}

/// One run over a set of segments.
pub struct PipelineRun {
    pub elapsed: Duration,
    /// Bytes each server stored.
    pub stored: [u64; 2],
}

/// Why the pipeline cannot run here, if it cannot.
pub fn unavailable(lab: &Lab) -> Option<String> {
    if lab.forced_command() {
        return Some("the lab's keys force archive-remote-cmd".into());
    }
    if !Path::new("/usr/bin/zstd").is_file() {
        return Some("the zstd command is missing (apt-get install zstd)".into());
    }
    None
}

impl Pipeline {
    /// Writes the store script and makes the storage directories.
    pub fn install(lab: &Lab) -> Pipeline {
        let script = lab.dir().join("pipeline-store.sh");
        write_postgres_file(&script, STORE_SCRIPT, 0o755);
        for s in lab.servers() {
            crate::mkdir_postgres(s.stored(DST), 0o700);
        }
        Pipeline {
            script,
            control1: lab.dir().join("primary").join("run").join("pipeline-m1"),
            control2: lab.servers()[0].dir().join("run").join("pipeline-m2"),
        }
    }

    /// Stores one segment through the pipeline.
    pub fn store(&self, lab: &Lab, segment: &Path) -> Result<(), String> {
        let name = segment
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: no file name", segment.display()))?;
        let input = File::open(segment).map_err(|e| format!("{}: {e}", segment.display()))?;
        let dst = Path::new(&lab.dst(DST)).to_path_buf();
        let remote = format!(
            "bash {} {} {} {} {}",
            self.script.display(),
            name,
            dst.display(),
            lab.servers()[0].ssh_config_path().display(),
            self.control2.display()
        );
        let mut cmd = lab.postgres_cmd("ssh");
        cmd.arg("-F")
            .arg(lab.primary_ssh_config())
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=300"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.control1.display()))
            .arg("arch1")
            .arg(&remote)
            .stdin(Stdio::from(input));
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", command_line(&cmd)))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "reference pipeline failed: {}",
                describe_output(&cmd, &out)
            ))
        }
    }

    /// Stores `segments`, `parallel` at a time, into fresh directories;
    /// checks that both servers hold every one.
    pub fn run(
        &self,
        lab: &Lab,
        segments: &[PathBuf],
        parallel: usize,
    ) -> Result<PipelineRun, String> {
        for s in lab.servers() {
            let dir = s.stored(DST);
            for f in crate::list_files(&dir) {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
        let next = AtomicUsize::new(0);
        let t = Instant::now();
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..parallel.max(1))
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(seg) = segments.get(i) else {
                            return Ok(());
                        };
                        self.store(lab, seg)?;
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("pipeline worker panicked"))
                .collect()
        });
        let elapsed = t.elapsed();
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        let mut stored = [0; 2];
        for (i, s) in lab.servers().iter().enumerate() {
            let dir = s.stored(DST);
            let files = crate::list_files(&dir);
            let complete = files.iter().filter(|f| f.ends_with(".zst")).count();
            if complete != segments.len() || files.len() != complete {
                return Err(format!(
                    "reference pipeline: {} holds {complete} of {} segments ({} files)",
                    s.name(),
                    segments.len(),
                    files.len()
                ));
            }
            stored[i] = crate::bench_common::dir_bytes(&dir);
        }
        Ok(PipelineRun { elapsed, stored })
    }
}
