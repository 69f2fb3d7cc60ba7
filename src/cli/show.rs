//! `dotevals show NAME`: one experiment's accuracy, errors and timing.

use clap::Args;

use super::output::print;
use super::{gate, known_experiment, open_for_reading, unknown_experiment, CliError, Style};
use crate::concurrency::StrategyName;
use crate::report::{self, ExperimentReport};
use crate::store::{Storage, Store};
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
}

pub fn show(args: ShowArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.name, &[]));
    };
    let mut report = build(
        store.as_ref(),
        &args.name,
        Detail {
            errors: args.errors || args.full,
            full: args.full,
        },
        None,
    )?;
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

/// How much per-sample detail a report carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detail {
    pub errors: bool,
    pub full: bool,
}

/// The report of experiment `name`, limited to evaluations in `only` when given.
pub fn build(
    store: &dyn Store,
    name: &str,
    detail: Detail,
    only: Option<&[String]>,
) -> Result<ExperimentReport, CliError> {
    let x = store
        .experiment(name)
        .map_err(|e| known_experiment(store, name, e))?;
    let mut reports = Vec::with_capacity(x.evaluations.len());
    for e in &x.evaluations {
        if only.is_some_and(|names| !names.contains(&e.name)) {
            continue;
        }
        let mut r = report::evaluation(e, &store.latencies(e.id)?, &store.runs(e.id)?)?;
        if r.strategy == StrategyName::Adaptive {
            let timeline = store.limit_timeline(e.id)?;
            r.timing.concurrency_limit = report::limit_report(&timeline.steps, &timeline.ends);
        }
        if e.repeats > 1 {
            // Repeats of a sample are not independent: the per-sample means are
            // (clustered by `dataset.cluster` when set).
            for (i, ev) in r.evaluators.iter_mut().enumerate() {
                let rows = store.repeat_sums(e.id, i, e.cluster.as_deref())?;
                let bars = crate::repeats::bars(&rows, e.cluster.is_some());
                *ev = ev.clone().repeated(&bars);
            }
        } else if let Some(column) = &e.cluster {
            for (i, ev) in r.evaluators.iter_mut().enumerate() {
                let mut clustered = crate::stats::Clustered::new();
                for (n, sum, sum_sq) in store.cluster_sums(e.id, i, column)? {
                    clustered.push_cluster(&crate::stats::Sums { n, sum, sum_sq });
                }
                *ev = ev.clone().clustered(&clustered);
            }
        }
        for judge in store.judge_totals(e.id)? {
            if let Some(ev) = r.evaluators.get_mut(judge.evaluator) {
                ev.judge = Some(report::JudgeReport::new(&judge));
            }
        }
        let latest = r.timing.runs.last().map(|run| run.run);
        let shown = r
            .timing
            .concurrency_limit
            .as_ref()
            .map(|l| report::LimitSummary {
                min: l.min,
                median: l.median,
                max: l.max,
            });
        for run in r
            .timing
            .runs
            .iter_mut()
            .filter(|r| r.strategy == StrategyName::Adaptive)
        {
            run.limit = if Some(run.run) == latest {
                // The latest run's summary is the timeline shown beside it.
                shown
            } else {
                let span = (run.wall_seconds * 1e6) as u64;
                report::limit_summary(&store.limit_steps(e.id, run.run)?, span)
            };
        }
        if detail.errors {
            r.error_kinds = Some(
                store
                    .error_groups(e.id)?
                    .into_iter()
                    .map(|g| report::ErrorKindReport {
                        kind: g.kind,
                        count: g.count,
                        example_id: g.example_key,
                        example: g.example,
                    })
                    .collect(),
            );
            r.errors = Some(
                store
                    .errors(e.id)?
                    .into_iter()
                    .map(|x| report::ErrorReport {
                        id: x.key,
                        index: x.index,
                        kind: x.kind,
                        message: x.message,
                        attempts: x.attempts,
                    })
                    .collect(),
            );
        }
        if detail.full {
            r.records = Some(
                store
                    .samples(e.id, e.evaluators.len())?
                    .into_iter()
                    .map(|s| report::record(s, &e.evaluators))
                    .collect(),
            );
        }
        reports.push(r);
    }
    Ok(report::experiment(&x, reports))
}
