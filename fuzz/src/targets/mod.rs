//! The targets: a check over bytes, a strategy that makes inputs, and the
//! seeds written to the corpus by `archive-fuzz seed`.

use proptest::strategy::BoxedStrategy;

pub mod codec;
pub mod names;
pub mod page_header;
pub mod wire;

/// One fuzz target.
pub struct Target {
    /// Name, also the corpus folder.
    pub name: &'static str,
    /// What it feeds and checks, one line.
    pub what: &'static str,
    /// The properties over one input: `Err` names the one that failed. A
    /// panic is a failure too.
    pub check: fn(&[u8]) -> Result<(), String>,
    /// Inputs: structured ones, mutations of the corpus (passed in), and
    /// arbitrary bytes.
    pub strategy: fn(Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>>,
    /// Seed inputs (file name, bytes) for the corpus.
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
}

/// Every target, cheapest first.
pub fn all() -> [&'static Target; 4] {
    [
        &names::TARGET,
        &page_header::TARGET,
        &codec::TARGET,
        &wire::TARGET,
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    all().into_iter().find(|t| t.name == name)
}

/// `Err(msg)` unless `cond`.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}
