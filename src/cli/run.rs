//! `dotevals run SPEC...`: check everything, then run each evaluation into the
//! experiment and print its report.
//!
//! All specs are loaded, every dataset row is read and resume state is compared
//! before the first request, so a bad spec or an edited dataset costs nothing.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::finish::{finish, runtime_error, Ended};
use super::output::note_if_running;
use super::output::table::size;
use super::{CliError, Format, Style};
use crate::concurrency::StrategySpec;
use crate::runner::{self, fresh_name, plan, PlanError, Planned, Progress};
use crate::shell;
use crate::spec::{check_unique, Evaluation, MatrixArg, Override};
use crate::store::{LockError, Storage, Store, StoreError};
use crate::Exit;

pub const AFTER_HELP: &str = "\
Running an experiment again resumes it: finished samples are kept and never re-sent, errored
and missing ones are sent (one whose evaluator failed is scored again from its stored reply). A changed spec is refused; pick a new --experiment for it.
Ctrl-C stops sending, lets requests in flight finish, saves them and prints how to resume.

--set KEY=VALUE changes the spec as if its file said so, then checks it as a file:
  dotevals run evals/sentiment.yaml --set model.name=gpt-4o-mini --set evaluators.0.threshold=0.7
KEY is a dotted path (a list item by its index); a key the spec lacks is added. VALUE is YAML:
--set 'model.params.stop=[a, b]' is a list; quote to keep a string: --set 'model.name=\"001\"'.
The --set arguments are part of the spec: resume with the same ones (the Ctrl-C hint repeats
them). `dotevals show` lists each evaluation's --set.";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Spec files to run, one evaluation each
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<PathBuf>,

    /// Experiment to record into; an existing one is resumed [default: run-<date>-<time>].
    /// Up to 100 characters, not starting with `-`
    #[arg(long, short, value_name = "NAME", value_parser = super::experiment_name)]
    pub experiment: Option<String>,

    /// Override the spec's strategy: `sequential`, a sliding window size such as 8 (at most 10000), or
    /// `adaptive` (finds the most throughput at the fewest requests in flight by itself;
    /// `show` prints the limit it chose over time)
    #[arg(long, short, value_name = "STRATEGY", value_parser = StrategySpec::parse_cli)]
    pub concurrency: Option<StrategySpec>,

    /// Run only the first N samples of each dataset (a later run completes the rest)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub samples: Option<u64>,

    /// Send each sample N times (1 to 100); replaces the spec's `repeats:`. Raising it on a
    /// resumed experiment sends only the new repeats
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::repeats::MAX as i64))]
    pub repeats: Option<u32>,

    /// CI gate: exit 3 when any evaluator's mean score is below SCORE (0 to 1); replaces the
    /// spec's per-evaluator `fail_under:`
    #[arg(long, value_name = "SCORE", value_parser = super::gate::parse_bar)]
    pub fail_under: Option<f64>,

    /// Override a spec field by its dotted path, the value read as YAML (repeatable):
    /// `model.name=gpt-4o-mini`, `model.params.temperature=0.7`, `evaluators.0.threshold=0.7`.
    /// Applied to every SPEC, recorded with the experiment and shown by `show`
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = Override::parse)]
    pub overrides: Vec<Override>,

    /// Add or replace an axis of the spec's `matrix:`: PATH=V1,V2 (repeatable), such as
    /// model.name=gpt-4o,gpt-4o-mini or 'prompt=["a, b", c]'. Each cell of the cross product
    /// is one evaluation; cells run together, sharing each endpoint's window and limits
    #[arg(long = "matrix", value_name = "PATH=V1,V2", value_parser = MatrixArg::parse)]
    pub matrix: Vec<MatrixArg>,

    /// Reuse replies kept in the store for requests sent before (exactly the same request:
    /// model, messages, every param, the repeat when sampled), and keep this run's; as the
    /// spec's `cache: true`. Cached samples are left out of timing figures
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: bool,

    /// Send every request even when the spec says `cache: true`
    #[arg(long)]
    pub no_cache: bool,

    /// Run only shard I of N (1 to N) of each dataset: its rows sorted by sample id and dealt
    /// round robin, the same on every machine, so N machines (a CI matrix, a Slurm array, a
    /// Kubernetes Indexed Job) each run one into a store of its own; `dotevals merge` combines
    /// them. A row's repeats stay in its shard. On a PostgreSQL store, start the same run on
    /// every machine instead: the runs share the samples as they go
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,

    /// On a PostgreSQL store, where several `run`s of one experiment work on it together
    /// (a fleet of workers): how long the samples this worker claimed stay its own without a
    /// heartbeat. A worker that dies or loses the network has its samples taken by the others
    /// this long after its last heartbeat
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_lease)]
    pub lease: std::time::Duration,

    /// When the run ends, also write the experiment as a self-contained HTML report to FILE
    /// (as `dotevals report NAME -o FILE` would)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub output: super::FormatArg,
}

/// `storage_arg` is `--storage` as the user wrote it, for the resume command.
pub fn run(
    args: RunArgs,
    storage: &dyn Storage,
    storage_arg: Option<&str>,
    style: Style,
) -> Result<Exit, CliError> {
    if let Some(path) = &args.report {
        crate::html::check_target(path)?;
    }
    if args.shard.is_some() && storage_arg.is_some_and(crate::store::is_server) {
        return Err(CliError::usage(
            "--shard is for stores of their own (SQLite), one per machine",
            Some("on a PostgreSQL store, run the same command without --shard on every machine: the runs share the samples as they go".into()),
        ));
    }
    let evals = load_specs(&args, storage_arg.is_some_and(crate::store::is_server))?;
    // Nothing is written until every check has passed: a bad spec or dataset
    // leaves no store behind.
    let existing = storage.open_existing()?;
    let experiment = match &args.experiment {
        Some(name) => name.clone(),
        None => fresh_name(existing.as_deref())?,
    };
    // Lock before reading resume state, so two runs of one evaluation never interleave.
    let mut locks = evals
        .iter()
        .map(|e| storage.lock_worker(&experiment, &e.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            StoreError::Lock(e @ LockError::Busy { .. }) => CliError::usage(
                e.to_string(),
                Some("wait for it to finish, or run this one under another --experiment".into()),
            ),
            StoreError::Lock(other) => CliError::Failed(other.to_string()),
            other => other.into(),
        })?;
    // Released last-first, so the one that created the store's folder goes last
    // and, when this run is refused before the store exists, takes the folder along.
    locks.reverse();
    let mut reads = runner::Reads::default();
    let mut plans = evals
        .into_iter()
        .map(|eval| {
            plan(
                eval,
                existing.as_deref(),
                &experiment,
                args.concurrency,
                &mut reads,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for plan in &mut plans {
        plan.lease = args.lease;
    }
    let mut store = match existing {
        Some(store) => store,
        None => storage.open_or_create()?,
    };

    let progress = Arc::new(Progress::new(style.progress, style.color));
    if args.experiment.is_none() {
        progress.note(&format!("experiment: {experiment}"));
    }
    fit_and_announce(&mut plans, &progress);
    let outcome = runner::execute(
        &plans,
        &experiment,
        store.as_mut(),
        Some(storage),
        &progress,
    )
    .map_err(runtime_error)?;
    let ended = finish(
        &plans,
        &experiment,
        store.as_ref(),
        outcome,
        style,
        args.fail_under,
    )?;
    // The run is saved whatever happens here: a report that cannot be
    // written is an error message and exit 1, and `dotevals report` can
    // write it later.
    let ended = match &args.report {
        Some(path) => write_report(
            storage,
            store.as_ref(),
            &experiment,
            path,
            &progress,
            style,
            ended,
        ),
        None => ended,
    };
    match ended {
        Ended::Interrupted => {
            // A credential given with --set is not printed back.
            let mut secrets = crate::secrets::Secrets::default();
            for plan in &plans {
                secrets.extend(&plan.eval.secrets);
            }
            let command = resume_command(&args, &experiment, storage_arg);
            progress.note(&format!(
                "interrupted; finished samples are saved. Resume with:\n  {}",
                secrets.scrub(&command)
            ));
            Ok(Exit::Interrupted)
        }
        Ended::Done(exit) => {
            if style.format == Format::Table {
                let mut show = format!("dotevals show {}", shell::quote(&experiment));
                if let Some(storage) = storage_arg {
                    show += &format!(" --storage {}", shell::quote(storage));
                }
                progress.note(&format!("saved as experiment `{experiment}`: {show}"));
            }
            Ok(exit)
        }
    }
}

/// Reads `--shard I/N` (clap value parser): 1 <= I <= N <= 100000.
fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let fix = "write it as I/N, e.g. 2/4 for the second of four shards";
    let (i, n) = s.trim().split_once('/').ok_or_else(|| fix.to_owned())?;
    let (i, n): (u64, u64) = match (i.trim().parse(), n.trim().parse()) {
        (Ok(i), Ok(n)) => (i, n),
        _ => return Err(fix.to_owned()),
    };
    if n == 0 || n > 100_000 {
        return Err("N (the number of shards) is from 1 to 100000".into());
    }
    if i == 0 || i > n {
        return Err(format!("I counts from 1 to N ({n}); {fix}"));
    }
    Ok((i, n))
}

/// Every spec of the command line, with `--samples` and `--repeats`
/// applied; two of one name are refused.
fn load_specs(args: &RunArgs, on_server: bool) -> Result<Vec<Evaluation>, CliError> {
    // On a shared store a worker may lack the dataset: it joins the fleet
    // that loaded it (planning refuses it when there is none).
    let options = crate::spec::Options {
        dataset_may_be_missing: on_server,
    };
    let mut evals = Vec::with_capacity(args.specs.len());
    let cells = args
        .specs
        .iter()
        .map(|path| crate::spec::load_cells(path, &args.overrides, &args.matrix, options));
    for eval in cells.collect::<Result<Vec<_>, _>>()?.into_iter().flatten() {
        let mut eval = eval;
        if let Some(n) = args.samples {
            eval.dataset.limit = Some(n);
        }
        if let Some(n) = args.repeats {
            eval.repeats = n;
        }
        if let Some((index, count)) = args.shard {
            let shard = crate::dataset::Shard::select(&eval.dataset, index, count)?;
            eval.dataset.shard = Some(std::sync::Arc::new(shard));
        }
        super::rescore::apply_cache_flags(&mut eval, args.cache, args.no_cache);
        check_unique(&evals, &eval)?;
        evals.push(eval);
    }
    Ok(evals)
}

/// Fits each plan's window to the open files this process may have, and
/// says what the run should know first: a fitted window, warnings, and the
/// programs scorers start.
fn fit_and_announce(plans: &mut [Planned], progress: &Progress) {
    for plan in plans.iter_mut() {
        let (fitted, note) =
            runner::fit_open_files(plan.strategy, plan.eval.model.mock().is_some());
        plan.strategy = fitted;
        if let Some(note) = note {
            progress.note(&format!("{}: {note}", plan.eval.name));
        }
        if let Some(shard) = &plan.eval.dataset.shard {
            progress.note(&format!(
                "{}: shard {}/{}: {} of the dataset's {} rows",
                plan.eval.name,
                shard.index,
                shard.count,
                shard.rows(),
                shard.of_rows
            ));
        }
        for warning in plan.eval.warnings() {
            progress.note(&format!("warning: {}: {warning}", plan.eval.name));
        }
        // A spec that starts a program is code: say what it runs.
        for program in plan.eval.programs() {
            progress.note(&format!("{}: scorer {program}", plan.eval.name));
        }
    }
}

/// Writes `--report`'s page of the experiment. The run is saved whatever
/// happens here: a page that cannot be written is an error message and exit
/// 1, and `dotevals report` can write it later.
fn write_report(
    storage: &dyn Storage,
    store: &dyn Store,
    experiment: &str,
    path: &std::path::Path,
    progress: &Progress,
    style: Style,
    ended: Ended,
) -> Ended {
    let written = crate::view::experiment_row(store, experiment)
        .map_err(CliError::from)
        .and_then(|x| {
            note_if_running(&x);
            Ok(crate::html::write(storage, store, &x, None, path)?)
        });
    match written {
        Ok(bytes) => {
            progress.note(&format!("report: {} ({})", path.display(), size(bytes)));
            ended
        }
        Err(e) => {
            super::print_error(&e, style.color);
            match ended {
                Ended::Done(exit) => Ended::Done(exit.max(Exit::Failure)),
                other => other,
            }
        }
    }
}

impl From<PlanError> for CliError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Refused { message, hint } => CliError::usage(message, Some(hint)),
            PlanError::Input(d) => CliError::Input(d),
            PlanError::Store(e) => e.into(),
        }
    }
}

/// The command that resumes an interrupted run.
fn resume_command(args: &RunArgs, experiment: &str, storage: Option<&str>) -> String {
    let mut parts = vec!["dotevals".to_owned(), "run".to_owned()];
    parts.extend(
        args.specs
            .iter()
            .map(|p| shell::quote(&p.display().to_string())),
    );
    parts.push("--experiment".into());
    parts.push(shell::quote(experiment));
    if let Some(c) = &args.concurrency {
        parts.push("--concurrency".into());
        parts.push(match c {
            StrategySpec::Sequential => "sequential".into(),
            StrategySpec::SlidingWindow(n) => n.to_string(),
            StrategySpec::Adaptive(_) => "adaptive".into(),
        });
    }
    if let Some(n) = args.samples {
        parts.push(format!("--samples {n}"));
    }
    if let Some(n) = args.repeats {
        parts.push(format!("--repeats {n}"));
    }
    if let Some((i, n)) = args.shard {
        parts.push(format!("--shard {i}/{n}"));
    }
    if args.lease != crate::store::fleet::DEFAULT_LEASE {
        parts.push(format!(
            "--lease {}",
            humantime::format_duration(args.lease)
        ));
    }
    if let Some(bar) = args.fail_under {
        parts.push(format!("--fail-under {bar}"));
    }
    if args.cache {
        parts.push("--cache".into());
    }
    if args.no_cache {
        parts.push("--no-cache".into());
    }
    for o in &args.overrides {
        parts.push(format!("--set {}", shell::quote(&o.arg)));
    }
    for m in &args.matrix {
        parts.push(format!("--matrix {}", shell::quote(&m.arg)));
    }
    if let Some(path) = &args.report {
        parts.push(format!(
            "--report {}",
            shell::quote(&path.display().to_string())
        ));
    }
    if let Some(storage) = storage {
        parts.push(format!("--storage {}", shell::quote(storage)));
    }
    parts.join(" ")
}
