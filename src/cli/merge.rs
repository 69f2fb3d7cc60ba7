//! `dotevals merge SOURCE... --into TARGET`: the stores a sharded run left
//! (one per machine) combined into one, as if one run had recorded them all
//! (see [`crate::merge`]).

use clap::Args;
use serde::Serialize;
use tabled::builder::Builder;

use super::output::table::{printable, push_row, table};
use super::output::{print, Render};
use super::{CliError, Style};
use crate::merge::{MergeError, Merged};
use crate::shell;
use crate::store::{EvaluationStatus, StoreError};
use crate::Exit;

pub const AFTER_HELP: &str = "\
Example: a CI matrix of 4 jobs, each running a quarter of the dataset into a store of its own:
  dotevals run evals/qa.yaml -e nightly --shard $I/4 --storage shard-$I.db   # job I of the matrix
  dotevals merge shard-*.db --into nightly.db                                # once the 4 are done
  dotevals show nightly --storage nightly.db

Every experiment of every SOURCE is merged (only NAME's with --experiment), evaluation by
evaluation. An evaluation must come from the same spec in every store, the target included
(what a resume accepts: timeouts or concurrency may differ); one from a different spec, or one
being run, is refused (exit 2) before anything is written. Samples are copied whole, with
their scores and judge calls; each store's runs are copied after the target's. A sample found
in two stores is an overlap: one record is kept (a finished one over an errored one, else the
one merged first) and the overlaps are counted and named. The merged total is the stores'
totals summed less the overlaps, so merging a store twice changes nothing; the wall time is the
longest store's, as shards run side by side. An evaluation short of its total is `interrupted`:
`dotevals run SPEC -e NAME --storage TARGET` then sends the samples no store holds.";

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Stores to merge: SQLite files (or folders holding one), sqlite://PATH, postgres:// URLs
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// The store to merge into, created when missing (a path or URL, as SOURCE)
    #[arg(long, value_name = "TARGET")]
    pub into: String,
    /// Merge only experiment NAME (every SOURCE must hold it) [default: every experiment]
    #[arg(long, short, value_name = "NAME")]
    pub experiment: Option<String>,
    #[command(flatten)]
    pub output: super::FormatArg,
}

pub fn merge(args: MergeArgs, style: Style) -> Result<Exit, CliError> {
    let sources: Vec<_> = args
        .sources
        .iter()
        .map(|s| crate::store::locate(Some(s)))
        .collect();
    let target = crate::store::locate(Some(&args.into));
    let merged = crate::merge::merge(&sources, target.as_ref(), args.experiment.as_deref())?;
    // `--storage` as the hint repeats it: a server's URL without its password.
    let storage = match crate::store::is_server(&args.into) {
        true => target.location(),
        false => &args.into,
    };
    let one = merged.first().map(|m| &m.experiment);
    let show = match one.filter(|one| merged.iter().all(|m| &m.experiment == *one)) {
        Some(one) => format!("dotevals show {}", shell::quote(one)),
        None => "dotevals list".into(),
    };
    print(
        style,
        &MergeView {
            into: target.location().to_owned(),
            evaluations: merged.into_iter().map(MergedView::from).collect(),
            show: format!("{show} --storage {}", shell::quote(storage)),
        },
    )?;
    Ok(Exit::Success)
}

impl From<MergeError> for CliError {
    fn from(e: MergeError) -> Self {
        match e {
            MergeError::Refused { message, hint } => CliError::usage(message, Some(hint)),
            MergeError::Store(e @ (StoreError::NotAStore { .. } | StoreError::TooNew { .. })) => {
                CliError::usage(
                    e.to_string(),
                    Some("name the stores the runs wrote (their --storage)".into()),
                )
            }
            MergeError::Store(e) => e.into(),
            MergeError::Record(e) => CliError::Failed(e.to_string()),
        }
    }
}

/// What `merge` prints.
#[derive(Debug, Serialize)]
struct MergeView {
    /// Where the evaluations were merged.
    into: String,
    evaluations: Vec<MergedView>,
    /// The command that shows the result.
    #[serde(skip)]
    show: String,
}

/// One evaluation merged.
#[derive(Debug, Serialize)]
struct MergedView {
    experiment: String,
    evaluation: String,
    /// Sample records written into the target.
    copied: u64,
    /// Sample ids found in more than one store, and up to 3 of them.
    overlaps: u64,
    overlap_examples: Vec<String>,
    /// Samples the merged evaluation should hold.
    total: u64,
    status: EvaluationStatus,
}

impl From<Merged> for MergedView {
    fn from(m: Merged) -> Self {
        MergedView {
            experiment: m.experiment,
            evaluation: m.evaluation,
            copied: m.copied,
            overlaps: m.overlaps,
            overlap_examples: m.overlap_examples,
            total: m.total,
            status: m.status,
        }
    }
}

impl Render for MergeView {
    fn table(&self) -> String {
        let mut b = Builder::default();
        b.push_record([
            "experiment",
            "evaluation",
            "copied",
            "overlaps",
            "total",
            "status",
        ]);
        for e in &self.evaluations {
            let overlaps = match e.overlap_examples.is_empty() {
                true => e.overlaps.to_string(),
                false => format!("{} (e.g. {})", e.overlaps, e.overlap_examples.join(", ")),
            };
            push_row(
                &mut b,
                [
                    e.experiment.clone(),
                    e.evaluation.clone(),
                    e.copied.to_string(),
                    overlaps,
                    e.total.to_string(),
                    e.status.to_string(),
                ],
            );
        }
        format!(
            "{}\nmerged into {}: {}\n",
            table(b, 3),
            printable(&self.into),
            printable(&self.show)
        )
    }
}
