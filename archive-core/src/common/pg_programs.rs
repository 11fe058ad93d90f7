//! Finding PostgreSQL's client programs (pg_basebackup, pg_verifybackup,
//! pg_combinebackup, ...) of the right major version.
//!
//! A client program works with servers of its own major version and older
//! ones, and a backup's manifest is read by pg_verifybackup of its version
//! or newer; so the program chosen is the one of the smallest installed major
//! version at least the server's (the closest match), or the newest when the
//! server's version is not known. `pg_bin_dir`, when set (in the
//! configuration or per cluster in the queue), is the only directory looked
//! in; otherwise the directories of `pg_search_path` (globs) and then PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::config::Config;
use crate::{Error, Result};

/// A program found, with the major version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path.
    pub path: PathBuf,
    /// Its PostgreSQL major version.
    pub major: u32,
}

/// The major version in a `--version` line such as
/// "pg_basebackup (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)" or
/// "postgres (PostgreSQL) 18beta1".
pub fn parse_version_line(line: &str) -> Option<u32> {
    let rest = &line[line.find("(PostgreSQL) ")? + "(PostgreSQL) ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&v| v >= 10)
}

/// The major version of `program`, from `program --version`.
pub fn major_of(program: &Path) -> Result<u32> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| Error::io("cannot run", program.to_path_buf(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version_line(text.trim()).ok_or_else(|| {
        Error::Refused(format!(
            "{}: --version printed {:?}, not a PostgreSQL version",
            program.display(),
            text.trim()
        ))
    })
}

/// The directories looked in, in order: `pg_bin_dir` alone when set, else
/// each entry of `pg_search_path` (globs expanded, sorted) then PATH.
pub fn search_dirs(cfg: &Config) -> Vec<PathBuf> {
    if let Some(dir) = &cfg.pg_bin_dir {
        return vec![dir.clone()];
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for pattern in cfg.pg_search_path.split(':').filter(|p| !p.is_empty()) {
        match glob::glob(pattern) {
            Ok(paths) => dirs.extend(paths.flatten()),
            Err(_) => dirs.push(PathBuf::from(pattern)),
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())));
    dirs
}

/// Every `program` in `dirs` whose version could be read.
fn candidates(dirs: &[PathBuf], program: &str) -> Vec<Found> {
    dirs.iter()
        .map(|d| d.join(program))
        .filter(|p| p.is_file())
        .filter_map(|path| major_of(&path).ok().map(|major| Found { path, major }))
        .collect()
}

/// The best of `found` for a server of major version `server` (see the
/// module docs).
pub fn choose(found: &[Found], server: Option<u32>) -> Option<&Found> {
    match server {
        Some(v) => found
            .iter()
            .filter(|f| f.major >= v)
            .min_by_key(|f| f.major),
        None => found.iter().max_by_key(|f| f.major),
    }
}

/// Where [`search_dirs`] looks, for messages.
fn looked_in(cfg: &Config) -> String {
    match &cfg.pg_bin_dir {
        Some(d) => format!("in pg_bin_dir ({})", d.display()),
        None => format!("in pg_search_path {:?} and PATH", cfg.pg_search_path),
    }
}

/// `program` for a server (or backup) of major version `server`, or an
/// error naming what was found, where, and what to install or set.
pub fn find(cfg: &Config, program: &str, server: Option<u32>) -> Result<Found> {
    let dirs = search_dirs(cfg);
    let found = candidates(&dirs, program);
    if let Some(f) = choose(&found, server) {
        return Ok(f.clone());
    }
    let need = server.map_or_else(
        || "any version".to_string(),
        |v| format!("PostgreSQL {v} or newer"),
    );
    let have = if found.is_empty() {
        "none".to_string()
    } else {
        found
            .iter()
            .map(|f| format!("{} ({})", f.major, f.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let looked = looked_in(cfg);
    let install = server.map_or_else(
        || "PostgreSQL's client programs".to_string(),
        |v| format!("PostgreSQL {v}'s client programs (Debian/PGDG: postgresql-client-{v})"),
    );
    Err(Error::NotFound(format!(
        "no {program} of {need} {looked} (found: {have}): install {install}, or set pg_bin_dir \
         (the configuration, or the cluster's pg_bin_dir in the queue) to a directory holding one"
    )))
}

/// The server program `program` (postgres, pg_ctl) of exactly major
/// version `major`: a data directory runs only on its own version.
pub fn find_server(cfg: &Config, program: &str, major: u32) -> Result<Found> {
    let dirs = search_dirs(cfg);
    candidates(&dirs, program)
        .into_iter()
        .find(|f| f.major == major)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no {program} of PostgreSQL {major} {}: install PostgreSQL {major}'s server \
                 (Debian/PGDG: postgresql-{major}) to start it",
                looked_in(cfg)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_of_every_packaging_parse() {
        let cases = [
            (
                "pg_basebackup (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)",
                Some(15),
            ),
            ("pg_basebackup (PostgreSQL) 18.6", Some(18)),
            ("postgres (PostgreSQL) 13.23", Some(13)),
            ("postgres (PostgreSQL) 19beta1", Some(19)),
            ("pg_basebackup (PostgreSQL) 9.6.24", None),
            ("something else 15.1", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_version_line(line), want, "{line}");
        }
    }

    fn f(major: u32) -> Found {
        Found {
            path: PathBuf::from(format!("/pg/{major}/bin/pg_basebackup")),
            major,
        }
    }

    #[test]
    fn the_closest_version_not_older_than_the_server_is_chosen() {
        let found = [f(18), f(15), f(16)];
        assert_eq!(choose(&found, Some(13)).unwrap().major, 15);
        assert_eq!(choose(&found, Some(15)).unwrap().major, 15);
        assert_eq!(choose(&found, Some(17)).unwrap().major, 18);
        assert_eq!(choose(&found, None).unwrap().major, 18);
        assert_eq!(choose(&found, Some(19)), None);
        assert_eq!(choose(&[], None), None);
    }

    #[test]
    fn a_missing_program_is_named_with_what_was_found_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            pg_bin_dir: Some(dir.path().to_path_buf()),
            ..Config::default()
        };
        let e = find(&cfg, "pg_basebackup", Some(17))
            .unwrap_err()
            .to_string();
        for want in [
            "no pg_basebackup of PostgreSQL 17 or newer in pg_bin_dir",
            "found: none",
            "postgresql-client-17",
            "set pg_bin_dir",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}
