//! `dotevals report NAME [NAME2] [-o FILE]`: one self-contained HTML file of
//! an experiment, or of two side by side (see [`crate::html`]).

use std::path::PathBuf;

use clap::Args;

use super::output::note_if_running;
use super::output::table::size;
use super::{open_for_reading, unknown_experiment, CliError, Style};
use crate::html;
use crate::store::Storage;
use crate::view;
use crate::Exit;

pub const AFTER_HELP: &str = "\
Examples:
  dotevals report baseline                  # writes baseline.html
  dotevals report baseline candidate        # writes baseline-vs-candidate.html
  dotevals report baseline -o /tmp/run.html
  dotevals run evals/sentiment.yaml -e fast --report fast.html

The file needs no network: styles, script, plots and data are inline. The summary and the
plots are plain HTML and SVG; the sample browser (filters by pass, fail or error, by
evaluator, and text search) needs JavaScript. Its state is in the URL:
  baseline.html#filter=fail&evaluator=exact&q=refund";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Experiment to report on
    pub name: String,
    /// A second experiment: a comparison page (differences are NAME2 - NAME)
    pub name2: Option<String>,
    /// File to write [default: NAME.html, or NAME-vs-NAME2.html]
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn report(args: ReportArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.name, &[]));
    };
    let path = args.output.clone().unwrap_or_else(|| {
        let stem = match &args.name2 {
            Some(b) => format!("{}-vs-{}", file_safe(&args.name), file_safe(b)),
            None => file_safe(&args.name),
        };
        PathBuf::from(format!("{stem}.html"))
    });
    html::check_target(&path)?;
    let a = view::experiment_row(store.as_ref(), &args.name)?;
    let b = match &args.name2 {
        Some(name) => Some(view::experiment_row(store.as_ref(), name)?),
        None => None,
    };
    for x in std::iter::once(&a).chain(&b) {
        note_if_running(x);
    }
    let bytes = html::write(storage, store.as_ref(), &a, b.as_ref(), &path)?;
    if style.progress != crate::runner::ProgressMode::Off {
        eprintln!("wrote {} ({})", path.display(), size(bytes));
    }
    Ok(Exit::Success)
}

/// An experiment name as a file name: characters other than letters,
/// digits, `-`, `_` and `.` become `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names() {
        assert_eq!(file_safe("base line/v2"), "base_line_v2");
        assert_eq!(file_safe("run-2024.1"), "run-2024.1");
    }
}
