//! The example configurations the Debian package installs
//! (packaging/examples/*.toml) load as they are, and also with every
//! commented-out `# key = value` line switched on: a key they name exists
//! and its example value is valid, so an operator who uncomments a line
//! gets what the comment says, not "unknown key".

use std::path::{Path, PathBuf};

use archive_core::common::config::Config;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// `# key = value` → `key = value`; prose comments stay comments.
fn uncommented(text: &str) -> (String, usize) {
    let mut switched = 0;
    let out = text
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_string();
            };
            let is_setting = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            if is_setting {
                switched += 1;
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (out, switched)
}

#[test]
fn every_role_has_an_example() {
    let names: Vec<String> = examples()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "archive-server.toml",
            "monitor.toml",
            "primary.toml",
            "standby.toml"
        ]
    );
}

#[test]
fn examples_load_as_shipped_and_with_every_commented_key_on() {
    let tmp = tempfile::tempdir().unwrap();
    for path in examples() {
        Config::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (text, switched) = uncommented(&std::fs::read_to_string(&path).unwrap());
        let on = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&on, &text).unwrap();
        Config::load(Some(&on), &[]).unwrap_or_else(|e| {
            panic!("{} with its commented keys on: {e}\n{text}", path.display())
        });
        if path.ends_with("primary.toml") {
            assert!(
                switched >= 10,
                "{}: {switched} commented keys",
                path.display()
            );
        }
    }
}

#[test]
fn the_archive_server_example_names_its_server_and_roots() {
    let path = examples()
        .into_iter()
        .find(|p| p.ends_with("archive-server.toml"))
        .unwrap();
    let cfg = Config::load(Some(&path), &[]).unwrap();
    assert_eq!(cfg.server_name.as_deref(), Some("arch1"));
    assert_eq!(cfg.archive_roots, [PathBuf::from("/var/lib/pgarchive")]);
    assert!(cfg.queue_dsn.is_some());
}
