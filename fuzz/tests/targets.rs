//! Every fuzz target, briefly, under `cargo test`: its whole corpus
//! (`fuzz/corpus/<target>/`: seeds and every input that once failed), then
//! a fixed number of generated cases with a fixed seed. `scripts/fuzz.sh`
//! runs them for longer.

use std::path::PathBuf;

use archive_fuzz::{by_name, driver, Budget};

/// Generated cases per target (debug build: a few seconds in all).
fn cases(target: &str) -> u64 {
    match target {
        "wire" => 48,
        "codec" => 96,
        _ => 512,
    }
}

fn fuzz(target: &str) {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let t = by_name(target).expect("a target");
    let report = driver::run(t, &corpus, &Budget::cases(cases(target), 0x5EED));
    assert!(
        report.replayed > 0,
        "{target}: no corpus in {}",
        corpus.display()
    );
    assert!(report.failures.is_empty(), "{report}");
    println!("{report}");
}

#[test]
fn names() {
    fuzz("names");
}

#[test]
fn page_header() {
    fuzz("page_header");
}

#[test]
fn codec() {
    fuzz("codec");
}

#[test]
fn wire() {
    fuzz("wire");
}
