//! The end of `run` and `rescore`: the view of what was recorded, held to
//! the CI gate, and how the runs ended.

use super::output::print;
use super::{gate, CliError, Style};
use crate::runner::{Planned, RunError, RunStatus};
use crate::store::Store;
use crate::view::{self, Detail};
use crate::Exit;

/// How the runs of one command ended.
pub enum Ended {
    /// Every plan ran: success, or failure when samples errored.
    Done(Exit),
    /// Ctrl-C or SIGTERM stopped a run; what finished is saved.
    Interrupted,
}

/// The async runtime could not start.
pub fn runtime_error(e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot start the async runtime: {e}"))
}

/// Prints the view of what `plans` recorded into `experiment` (whatever
/// happened; a run's own error is the one to report) and holds it to the CI
/// gate (`bar` replacing the spec's).
pub fn finish(
    plans: &[Planned],
    experiment: &str,
    store: &dyn Store,
    outcome: Vec<Result<RunStatus, RunError>>,
    style: Style,
    bar: Option<f64>,
) -> Result<Ended, CliError> {
    let names: Vec<String> = plans.iter().map(|p| p.eval.name.clone()).collect();
    let recorded = view::experiment_row(store, experiment).and_then(|x| {
        let mut report = view::load_row(store, &x, Detail::default(), Some(&names))?;
        // The cells of a matrix: their grid, laid out as `show` does by default.
        let layout = view::matrix::Layout::default();
        report.matrix =
            view::matrix::build(store, &x, &report.evaluations, &layout)?.and_then(Result::ok);
        Ok(report)
    });
    let failed = outcome.iter().any(Result::is_err);
    let mut exit = Exit::Success;
    match recorded {
        Ok(mut report) => {
            if let Some(bar) = bar {
                gate::raise(&mut report, bar);
            }
            print(style, &report)?;
            // Said even with --quiet: it explains the exit status (3).
            for line in gate::failures(&report) {
                eprintln!("{line}");
                exit = Exit::BelowBar;
            }
        }
        Err(e) if !failed => return Err(e.into()),
        Err(_) => {}
    }
    for status in outcome {
        match status {
            Ok(RunStatus::Completed) => {}
            Ok(RunStatus::CompletedWithErrors) => exit = exit.max(Exit::Failure),
            Ok(RunStatus::Interrupted) => return Ok(Ended::Interrupted),
            Err(e) => return Err(CliError::Failed(e.to_string())),
        }
    }
    Ok(Ended::Done(exit))
}
