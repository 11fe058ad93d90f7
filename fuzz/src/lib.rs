//! Fuzz targets for everything an archive server reads from a client, run
//! as property tests (proptest) on stable Rust.
//!
//! Each [`Target`] is a check over a byte string (so every input, generated
//! or found, can be written to a file and replayed) and a proptest strategy
//! that makes such byte strings: structured ones (real frames, real WAL
//! names, real page headers, real compressed streams), mutations of the
//! target's corpus (`fuzz/corpus/<target>/`), and arbitrary bytes.
//!
//! | target | input | checks |
//! |---|---|---|
//! | `wire` | what a client writes to `archive-remote-cmd serve` | the serve loop ([`archive_core::server::serve::Server::serve`]) on a scratch archive root: no panic, ends in bounded time, answers well-formed reply frames, creates nothing outside its root and state directories |
//! | `names` | one string | `validate_file_name`, `WalName::parse`, `validate_dir_arg`, `validate_host_name`, `validate_cluster_name`, `parse_hosts`, `quote_for_log`: no panic, what is accepted is safe and round-trips |
//! | `page_header` | a name and a first page | `parse_long_header`, `validate_first_page`: no panic, an accepted header is sane and matches the name |
//! | `codec` | a codec, a limit, bytes | `sniff`, `decoder_limited`, `zstd_frame_len`: no panic, never more than the limit, bounded time, a limit does not change the content |
//!
//! [`driver::run`] replays the corpus, then generates cases until a deadline
//! or a case count; a failing input (shrunk) is written to the corpus as
//! `crash-<hash>` so it stays a regression seed. `scripts/fuzz.sh` runs every
//! target for a fixed time; `fuzz/tests/targets.rs` runs each briefly under
//! `cargo test`.

pub mod driver;
pub mod mutate;
pub mod targets;

pub use driver::{run, Budget, Report};
pub use targets::{all, by_name, Target};
