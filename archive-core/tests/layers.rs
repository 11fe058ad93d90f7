//! The layer rule of ARCHITECTURE.md, checked on the source: a module may
//! refer to its own layer and the layers below it, never to one above.
//! Order, bottom first: common, net, server, client, status.

use std::fs;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["common", "net", "server", "client", "status"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<layer>` a line of code names (comments left out).
fn layers_named(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if rank(&rest[..end]).is_some() {
            named.push(&rest[..end]);
        }
    }
    named
}

fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for layer in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no source under {layer}/");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for target in layers_named(line) {
                    if rank(target) > rank(layer) {
                        found.push(format!(
                            "{}:{}: {layer} refers to {target}, a layer above it",
                            file.strip_prefix(src).unwrap().display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_module_refers_to_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_reference() {
    assert_eq!(layers_named("use crate::status::Report;"), ["status"]);
    assert_eq!(
        layers_named("x(crate::server::store::A, crate::common::wal::B)"),
        ["server", "common"]
    );
    assert!(layers_named("// see crate::status").is_empty());
    assert!(layers_named("use crate::Error;").is_empty());
}
