//! `dotevals report NAME [NAME2] [-o FILE]`: one self-contained HTML file of
//! an experiment, or of two side by side (see [`crate::html`]).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::compare::{comparison, CompareArgs};
use super::show::{build, Detail};
use super::{known_experiment, open_for_reading, unknown_experiment, CliError, Style};
use crate::concurrency::StrategyName;
use crate::html::{self, Evaluation, Experiment};
use crate::store::{Storage, Store};
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
    check_target(&path)?;
    let bytes = write_file(
        storage,
        store.as_ref(),
        &args.name,
        args.name2.as_deref(),
        &path,
    )?;
    if style.progress != crate::runner::ProgressMode::Off {
        eprintln!("wrote {} ({})", path.display(), size(bytes));
    }
    Ok(Exit::Success)
}

/// Refuses (exit 2) a path whose folder does not exist or that is a folder.
pub(super) fn check_target(path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::usage(
            format!("{} is a folder", path.display()),
            Some("name the HTML file to write, e.g. -o report.html".into()),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(CliError::usage(
                format!(
                    "cannot write {}: the folder {} does not exist",
                    path.display(),
                    dir.display()
                ),
                Some(format!("create it first (mkdir -p {})", dir.display())),
            ));
        }
    }
    Ok(())
}

/// Writes the report of `a` (compared with `b` when given) to `path`,
/// through a temporary file beside it, so a failed write leaves no half
/// page; answers the bytes written.
pub(super) fn write_file(
    storage: &dyn Storage,
    store: &dyn Store,
    a: &str,
    b: Option<&str>,
    path: &Path,
) -> Result<u64, CliError> {
    let x = experiment(store, a)?;
    let page = match b {
        // (`comparison` says so of both experiments.)
        None => {
            super::compare::still_running(a, x.report.status);
            None
        }
        Some(b) => {
            let y = experiment(store, b)?;
            let args = CompareArgs {
                a: a.to_owned(),
                b: b.to_owned(),
                eval: None,
                flips: true,
            };
            // Two experiments that share no evaluation still get their
            // summaries side by side.
            let compared = match comparison(storage, store, &args) {
                Ok(c) => c,
                Err(CliError::Usage { .. }) => crate::compare::report::CompareReport {
                    a: args.a,
                    b: args.b,
                    evaluations: Vec::new(),
                },
                Err(e) => return Err(e),
            };
            Some((y, compared))
        }
    };
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(failed)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = match &page {
        None => html::write_single(&mut out, &x),
        Some((y, compared)) => html::write_comparison(&mut out, &x, y, compared),
    }
    .and_then(|()| out.flush());
    drop(out);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// Experiment `name` with what the page shows of each evaluation.
fn experiment(store: &dyn Store, name: &str) -> Result<Experiment, CliError> {
    let report = build(
        store,
        name,
        Detail {
            errors: true,
            full: false,
        },
        None,
    )?;
    let row = store
        .experiment(name)
        .map_err(|e| known_experiment(store, name, e))?;
    let mut evaluations = Vec::with_capacity(report.evaluations.len());
    for r in &report.evaluations {
        let Some(e) = row.evaluations.iter().find(|e| e.name == r.name) else {
            continue;
        };
        let limit = if r.strategy == StrategyName::Adaptive {
            store.limit_timeline(e.id)?.steps
        } else {
            Vec::new()
        };
        evaluations.push(Evaluation {
            report: r.clone(),
            samples: store.samples(e.id, e.evaluators.len())?,
            limit,
            latencies: store.latencies(e.id)?,
        });
    }
    Ok(Experiment {
        report,
        evaluations,
    })
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

/// `812 KB`, `34.2 MB`.
pub(super) fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
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
