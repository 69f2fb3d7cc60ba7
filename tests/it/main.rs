//! Integration tests of the `dotevals` binary: one test binary, one module per
//! topic (ripgrep's layout). Every test gets its own directory, results store
//! and loopback server, so the tests run in parallel.
//!
//! Run with `cargo test --test it`.

mod server;
mod util;

mod concurrency;
mod datasets;
mod errors;
mod evaluators;
mod json_output;
mod resume;
mod validation;
