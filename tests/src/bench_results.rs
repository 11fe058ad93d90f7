//! Benchmark results as dated files. Each bench binary prints its lines
//! through a [`Results`] ([`Results::say`] prints one and keeps it), adds a
//! Markdown table of its headline figures, and at the end of a completed
//! run [`Results::write`] appends a section to
//! `docs/benchmarks/YYYY-MM-DD-<bench>.md` (UTC date; the file and the
//! directory are made when missing): the date and time, the git commit, the
//! machine, the knobs read from the environment ([`crate::bench_common`]
//! records them), the table, and every line the bench printed.
//!
//! `BENCH_RESULTS_DIR` names another directory; set but empty, nothing is
//! written.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming the results directory.
pub const RESULTS_DIR_VAR: &str = "BENCH_RESULTS_DIR";

/// A Markdown table: a header row and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (cells as printed; `|` is escaped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table in Markdown, numbers right-aligned.
    pub fn markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let mut s = String::new();
        let line = |cells: &[String]| {
            format!(
                "| {} |\n",
                cells
                    .iter()
                    .map(|c| cell(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        s.push_str(&line(&self.header));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| {
                let numeric = !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        r.get(i).is_some_and(|c| {
                            c.trim_start_matches(['-', '+'])
                                .starts_with(|ch: char| ch.is_ascii_digit())
                        })
                    });
                if numeric {
                    "---:"
                } else {
                    "---"
                }
            })
            .collect();
        writeln!(s, "| {} |", align.join(" | ")).unwrap();
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// What one bench run prints and writes to its results file.
#[derive(Debug)]
pub struct Results {
    bench: String,
    machine: Vec<String>,
    tables: Vec<(String, Table)>,
    lines: Vec<String>,
}

impl Results {
    /// The results of bench `bench` (`archive`, `restore`, `sync`,
    /// `backup`, `status`: the file is `<date>-<bench>.md`).
    pub fn new(bench: &str) -> Results {
        Results {
            bench: bench.to_string(),
            machine: vec![machine_line()],
            tables: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Prints `line` to stdout and keeps it for the file.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("{line}");
        self.lines.extend(line.lines().map(str::to_string));
        if line.is_empty() {
            self.lines.push(String::new());
        }
    }

    /// Prints a line about the machine (its speed, say) and lists it with
    /// the machine in the file too.
    pub fn say_machine(&mut self, line: impl Into<String>) {
        let line = line.into();
        self.say(line.clone());
        self.machine.push(line);
    }

    /// Adds a table of figures under `title`.
    pub fn table(&mut self, title: &str, table: Table) {
        self.tables.push((title.to_string(), table));
    }

    /// The section this run adds to the file, headed by `when` and `commit`.
    pub fn section(&self, when: &str, commit: Option<&str>, knobs: &[(String, String)]) -> String {
        let mut s = format!(
            "## {when}, commit {}\n\n",
            commit.unwrap_or("unknown (no git)")
        );
        for m in &self.machine {
            writeln!(s, "- {m}").unwrap();
        }
        let knobs: Vec<String> = knobs.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        writeln!(
            s,
            "- knobs: {}",
            if knobs.is_empty() {
                "none".to_string()
            } else {
                knobs.join(", ")
            }
        )
        .unwrap();
        for (title, t) in &self.tables {
            write!(s, "\n{title}:\n\n{}", t.markdown()).unwrap();
        }
        s.push_str("\nWhat it printed:\n\n```text\n");
        for l in &self.lines {
            writeln!(s, "{l}").unwrap();
        }
        s.push_str("```\n");
        s
    }

    /// Appends this run's section to the results file of today (see the
    /// module documentation) and says where, on stdout; an error (the file
    /// cannot be written) is said on stderr and changes nothing else.
    pub fn write(&self) {
        let var = std::env::var_os(RESULTS_DIR_VAR);
        let Some(dir) = results_dir(var.as_deref()) else {
            return;
        };
        let now = chrono::Utc::now();
        let section = self.section(
            &now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            git_commit().as_deref(),
            &crate::bench_common::knobs(),
        );
        let date = now.format("%Y-%m-%d").to_string();
        match append_section(&dir, &date, &self.bench, &section) {
            Ok(path) => println!("bench-{}: results added to {}", self.bench, path.display()),
            Err(e) => eprintln!("bench-{}: WARNING: results not written: {e}", self.bench),
        }
    }
}

/// The results directory: `value` of `BENCH_RESULTS_DIR` when set (`None`
/// when set but empty), else `docs/benchmarks` of this repository.
pub fn results_dir(value: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    match value {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(repo_root().join("docs").join("benchmarks")),
    }
}

/// The repository this crate was built from (the parent of `tests/`).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `git rev-parse --short HEAD` of the repository, if git answers, with
/// a note when tracked files differ from it.
fn git_commit() -> Option<String> {
    let root = repo_root();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-c")
            .arg(format!("safe.directory={}", root.display()))
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty())?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    })
}

/// Appends `section` to `<dir>/<date>-<bench>.md`, making the directory and
/// the file (with a title) when missing; returns the file's path.
pub fn append_section(
    dir: &Path,
    date: &str,
    bench: &str,
    section: &str,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{date}-{bench}.md"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let text = if f.metadata()?.len() == 0 {
        format!("# bench-{bench}, {date}\n\n{section}")
    } else {
        format!("\n{section}")
    };
    f.write_all(text.as_bytes())?;
    Ok(path)
}

/// One line on the machine: CPUs and their model, RAM, kernel.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or("unknown model".to_string(), |(_, m)| m.trim().to_string());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {} CPUs ({model}), {:.1} GiB RAM, Linux {}",
        crate::sampler::cpu_count(),
        mem_kib as f64 / (1u64 << 20) as f64,
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Results {
        let mut r = Results::new("archive");
        r.say("serial: 4 segments in 0.50 s = 8.0 seg/s");
        r.say("");
        r.say("result: 3 of 5 targets met\n  a second line");
        let mut t = Table::new(&["scenario", "seg/s", "note"]);
        t.row(vec!["serial".into(), "8.0".into(), "a | b".into()]);
        r.table("figures", t);
        r
    }

    #[test]
    fn a_section_holds_date_commit_machine_knobs_table_and_lines() {
        let knobs = vec![("BENCH_SEGMENTS".to_string(), "4".to_string())];
        let s = results().section("2026-12-05 05:40:00 UTC", Some("abc1234"), &knobs);
        assert!(s.starts_with("## 2026-12-05 05:40:00 UTC, commit abc1234\n\n- machine: "));
        assert!(s.contains("- knobs: `BENCH_SEGMENTS=4`\n"));
        assert!(s.contains(
            "figures:\n\n| scenario | seg/s | note |\n| --- | ---: | --- |\n| serial | 8.0 | a \\| b |\n"
        ));
        assert!(s.contains(
            "```text\nserial: 4 segments in 0.50 s = 8.0 seg/s\n\nresult: 3 of 5 targets met\n  a second line\n```\n"
        ));
        let none = results().section("now", None, &[]);
        assert!(none.contains("commit unknown (no git)") && none.contains("- knobs: none\n"));
    }

    #[test]
    fn the_file_of_the_day_is_made_then_appended_to() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("docs").join("benchmarks");
        let p = append_section(&dir, "2026-12-05", "sync", "## one\n").unwrap();
        assert_eq!(p, dir.join("2026-12-05-sync.md"));
        let p2 = append_section(&dir, "2026-12-05", "sync", "## two\n").unwrap();
        assert_eq!(p, p2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# bench-sync, 2026-12-05\n\n## one\n\n## two\n"
        );
        append_section(&dir, "2026-12-06", "sync", "## three\n").unwrap();
        assert_eq!(crate::list_files(&dir).len(), 2);
    }

    #[test]
    fn the_directory_comes_from_the_environment_or_the_repository() {
        use std::ffi::OsStr;
        assert_eq!(results_dir(Some(OsStr::new(""))), None);
        assert_eq!(
            results_dir(Some(OsStr::new("/tmp/x"))),
            Some(PathBuf::from("/tmp/x"))
        );
        let default = results_dir(None).unwrap();
        assert!(default.ends_with("docs/benchmarks"));
        assert!(default
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("tests")
            .join("Cargo.toml")
            .is_file());
        assert!(machine_line().starts_with("machine: "));
    }
}
