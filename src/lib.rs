//! dotevals: run LLM evaluations declared in YAML, fast.
//!
//! Data flows one way: spec ▸ dataset rows ▸ concurrency strategy ▸ model
//! client ▸ evaluators ▸ store ▸ views. `main` parses the command line and
//! calls [`cli::main`]; everything else is a library so tests can drive it.

#![forbid(unsafe_code)]

pub mod cache;
pub mod call;
pub mod cli;
pub mod compare;
pub mod concurrency;
pub mod dataset;
pub mod diagnostic;
pub mod error_kind;
pub mod evaluators;
pub mod html;
pub mod human;
pub mod merge;
pub mod model;
pub mod repeats;
pub mod runner;
pub mod secrets;
pub mod serde_names;
pub mod shell;
pub mod spec;
pub mod stats;
pub mod store;
pub mod template;
pub mod usage;
pub mod view;

pub use cli::Cli;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything ran and every sample finished.
    Success,
    /// Some samples errored, or the run failed.
    Failure,
    /// An evaluator's mean score is below its `fail_under` bar (the CI gate).
    BelowBar,
    /// Bad usage or a bad spec; nothing was sent.
    Usage,
    /// Interrupted; the store is consistent and the run resumable.
    Interrupted,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(match e {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::BelowBar => 3,
            Exit::Interrupted => 130,
        })
    }
}
