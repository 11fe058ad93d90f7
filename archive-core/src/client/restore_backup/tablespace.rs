//! Tablespaces of a tar-format backup: pg_basebackup writes one archive per
//! tablespace (`<oid>.tar[.ext]`) and, in base.tar, a `tablespace_map`
//! naming each one's location. They are restored to those locations or to
//! the ones `--tablespace-map OLD=NEW` gives (pg_basebackup's `-T`), with
//! the `pg_tblspc/<oid>` symlinks written as a plain-format backup has them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::common::error::{Error, Result};

/// The file in base.tar that names the tablespaces' locations.
pub const MAP_FILE: &str = "tablespace_map";

/// Largest tablespace_map read (a line per tablespace).
const MAX_MAP: u64 = 1 << 20;

/// `OLD=NEW` of `--tablespace-map`, both absolute.
pub fn parse_mapping(s: &str) -> Result<(PathBuf, PathBuf)> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "--tablespace-map {s:?}: {why}; use OLD=NEW with absolute paths, e.g. \
             /srv/ts1=/srv/restore/ts1"
        ))
    };
    let (old, new) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
    let (old, new) = (Path::new(old), Path::new(new));
    if !old.is_absolute() || !new.is_absolute() {
        return Err(bad("the paths must be absolute"));
    }
    Ok((clean(old), clean(new)))
}

/// `p` without a trailing slash or `.` components, as PostgreSQL
/// canonicalises tablespace locations.
fn clean(p: &Path) -> PathBuf {
    p.components().collect()
}

/// Reads `<data dir>/tablespace_map`: oid → location. PostgreSQL writes one
/// "oid path" line per tablespace, with `\`, CR and LF in the path escaped
/// by a backslash.
pub fn read_map(data_dir: &Path) -> Result<BTreeMap<u32, PathBuf>> {
    let p = data_dir.join(MAP_FILE);
    let meta = match fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("cannot read", &p, e)),
    };
    if meta.len() > MAX_MAP {
        return Err(Error::Refused(format!(
            "{}: {} bytes, more than a tablespace_map can be",
            p.display(),
            meta.len()
        )));
    }
    let bytes = fs::read(&p).map_err(|e| Error::io("cannot read", &p, e))?;
    parse_map(&bytes).map_err(|why| Error::Refused(format!("{}: {why}", p.display())))
}

fn parse_map(bytes: &[u8]) -> std::result::Result<BTreeMap<u32, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let mut line = Vec::new();
    let mut escaped = false;
    let mut lines = Vec::new();
    for &b in bytes {
        if escaped {
            line.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'\n' {
            lines.push(std::mem::take(&mut line));
        } else {
            line.push(b);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    for l in lines {
        let text = String::from_utf8_lossy(&l).into_owned();
        let space = l
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| format!("line {text:?} is not \"oid path\""))?;
        let oid = std::str::from_utf8(&l[..space])
            .ok()
            .and_then(|o| o.parse::<u32>().ok())
            .ok_or_else(|| format!("line {text:?}: not an oid"))?;
        let path = PathBuf::from(OsString::from_vec(l[space + 1..].to_vec()));
        if !path.is_absolute() {
            return Err(format!("line {text:?}: the location is not absolute"));
        }
        if out.insert(oid, path).is_some() {
            return Err(format!("oid {oid} twice"));
        }
    }
    Ok(out)
}

/// Where each tablespace goes: its location in the map, or the NEW of a
/// mapping whose OLD it is. A mapping that matches no tablespace is
/// refused (a typo would otherwise restore onto the original path).
pub fn locations(
    map: &BTreeMap<u32, PathBuf>,
    mappings: &[(PathBuf, PathBuf)],
) -> Result<BTreeMap<u32, PathBuf>> {
    for (old, _) in mappings {
        if !map.values().any(|p| clean(p) == *old) {
            let known: Vec<String> = map.values().map(|p| p.display().to_string()).collect();
            return Err(Error::Usage(format!(
                "--tablespace-map {}=…: the backup has no tablespace there (it has: {})",
                old.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(map
        .iter()
        .map(|(oid, p)| {
            let to = mappings
                .iter()
                .find(|(old, _)| *old == clean(p))
                .map_or_else(|| p.clone(), |(_, new)| new.clone());
            (*oid, to)
        })
        .collect())
}

/// Makes `pg_tblspc/<oid>` point at `location` and removes tablespace_map,
/// which would otherwise make PostgreSQL point it back at the original
/// location when it starts.
pub fn link(data_dir: &Path, locations: &BTreeMap<u32, PathBuf>) -> Result<()> {
    let dir = data_dir.join("pg_tblspc");
    crate::common::durable::create_dir_all(&dir)?;
    for (oid, to) in locations {
        let l = dir.join(oid.to_string());
        std::os::unix::fs::symlink(to, &l)
            .map_err(|e| Error::io("cannot create the symlink", &l, e))?;
    }
    let map = data_dir.join(MAP_FILE);
    fs::remove_file(&map).map_err(|e| Error::io("cannot remove", &map, e))?;
    crate::common::durable::sync_dir(&dir)?;
    crate::common::durable::sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_read_with_its_escapes() {
        let m = parse_map(b"16384 /srv/ts one\n16385 /srv/odd\\\\name\\\nx\n").unwrap();
        assert_eq!(m[&16384], PathBuf::from("/srv/ts one"));
        assert_eq!(m[&16385], PathBuf::from("/srv/odd\\name\nx"));
        assert!(parse_map(b"").unwrap().is_empty());
        for bad in [
            &b"x /srv\n"[..],
            b"16384 rel\n",
            b"16384\n",
            b"1 /a\n1 /b\n",
        ] {
            assert!(parse_map(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn mappings_move_the_tablespaces_they_name() {
        let map: BTreeMap<u32, PathBuf> = [(1, "/srv/a".into()), (2, "/srv/b".into())].into();
        let m = parse_mapping("/srv/b/=/new/b").unwrap();
        assert_eq!(m, ("/srv/b".into(), "/new/b".into()));
        let at = locations(&map, &[m]).unwrap();
        assert_eq!(at[&1], PathBuf::from("/srv/a"));
        assert_eq!(at[&2], PathBuf::from("/new/b"));
        let e = locations(&map, &[parse_mapping("/srv/c=/x").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no tablespace there (it has: /srv/a, /srv/b)"),
            "{e}"
        );
        assert!(parse_mapping("srv=/x").is_err());
        assert!(parse_mapping("/srv").is_err());
    }
}
