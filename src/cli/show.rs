//! `dotevals show NAME`: one experiment's accuracy, errors and timing.

use clap::Args;

use super::output::print;
use super::{gate, open_for_reading, unknown_experiment, CliError, Style};
use crate::store::Storage;
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
    #[command(flatten)]
    pub output: super::FormatArg,
}

pub fn show(args: ShowArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.name, &[]));
    };
    let detail = Detail {
        errors: args.errors || args.full,
        full: args.full,
    };
    let mut report = view::load(store.as_ref(), &args.name, detail)?;
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
