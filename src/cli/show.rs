//! `dotevals show NAME`: one experiment's accuracy, errors and timing.

use clap::Args;

use super::output::print;
use super::{gate, open_for_reading, unknown_experiment, CliError, Style};
use crate::store::Storage;
use crate::view::matrix::{self, Layout, Metric};
use crate::view::{self, Detail};
use crate::Exit;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Experiment to show
    pub name: String,
    /// Also list errored samples with their kind and message
    #[arg(long)]
    pub errors: bool,
    /// Also list every sample: output, scores, latency, error (JSON adds variables and prompt)
    #[arg(long)]
    pub full: bool,
    /// CI gate: exit 3 when any evaluator's mean score is below SCORE (0 to 1); replaces the
    /// bars (`fail_under:`) the spec had when it ran
    #[arg(long, value_name = "SCORE", value_parser = super::gate::parse_bar)]
    pub fail_under: Option<f64>,

    /// A matrix experiment's grid: the axis down the side (default the first; other axes
    /// but the columns' are folded in beside it)
    #[arg(long, value_name = "PATH")]
    pub rows: Option<String>,

    /// A matrix experiment's grid: the axis across the top (default the last)
    #[arg(long, value_name = "PATH")]
    pub columns: Option<String>,

    /// A matrix experiment's grid: the cell the others are compared with, by its evaluation
    /// name or its labels (`gpt-4o/terse`) [default: the first cell]
    #[arg(long, value_name = "CELL")]
    pub baseline: Option<String>,

    /// A matrix experiment's grid: what the cells show
    #[arg(long, value_enum, default_value_t = Metric::Score)]
    pub metric: Metric,
    #[command(flatten)]
    pub output: super::ReviewFormatArg,
}

pub fn show(args: ShowArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.name, &[]));
    };
    let detail = Detail {
        errors: args.errors || args.full,
        full: args.full,
    };
    let x = view::experiment_row(store.as_ref(), &args.name)?;
    let mut report = view::load_row(store.as_ref(), &x, detail, None)?;
    let layout = Layout {
        rows: args.rows,
        columns: args.columns,
        baseline: args.baseline,
        metric: Some(args.metric),
    };
    report.matrix = match matrix::build(store.as_ref(), &x, &report.evaluations, &layout)? {
        None => None,
        Some(Ok(grid)) => Some(grid),
        Some(Err(e)) => return Err(CliError::usage(e.to_string(), Some(e.hint()))),
    };
    if let Some(bar) = args.fail_under {
        gate::raise(&mut report, bar);
    }
    print(style, &report)?;
    let below = gate::failures(&report);
    for line in &below {
        eprintln!("{line}");
    }
    Ok(if below.is_empty() {
        Exit::Success
    } else {
        Exit::BelowBar
    })
}
