//! `dotevals run SPEC...`: check everything, then run each evaluation into the
//! experiment and print its report.
//!
//! All specs are loaded, every dataset row is read and resume state is compared
//! before the first request, so a bad spec or an edited dataset costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::output::print;
use super::show::{build, Detail};
use super::{CliError, Format, Style};
use crate::concurrency::pause::Pauses;
use crate::concurrency::rate::RateLimits;
use crate::concurrency::StrategySpec;
use crate::dataset::{row_hash, scan};
use crate::diagnostic::Diagnostic;
use crate::runner::{self, Interrupt, Planned, Progress, RunStatus};
use crate::spec::{Evaluation, ModelSpec, DEFAULT_BASE_URL};
use crate::store::lock::{lock, LockError};
use crate::store::{SampleLookup, Store, StoreError};
use crate::Exit;

pub const AFTER_HELP: &str = "\
Running an experiment again resumes it: finished samples are kept and never re-sent, errored
and missing ones are sent (one whose evaluator failed is scored again from its stored reply). A changed spec is refused; pick a new --experiment for it.
Ctrl-C stops sending, lets requests in flight finish, saves them and prints how to resume.";

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
}

/// The runtime every async command uses.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

/// `storage_arg` is `--storage` as the user wrote it, for the resume command.
pub fn run(
    args: RunArgs,
    storage: &Path,
    storage_arg: Option<&str>,
    style: Style,
) -> Result<Exit, CliError> {
    let mut evals = Vec::with_capacity(args.specs.len());
    for path in &args.specs {
        let mut eval = crate::spec::load(path)?;
        if let Some(n) = args.samples {
            eval.dataset.limit = Some(n);
        }
        check_unique(&evals, &eval)?;
        evals.push(eval);
    }
    // Nothing is written until every check has passed: a bad spec or dataset
    // leaves no store behind.
    let existing = Store::open_existing(storage)?;
    let experiment = match &args.experiment {
        Some(name) => name.clone(),
        None => fresh_name(existing.as_ref())?,
    };
    // Lock before reading resume state, so two runs of one evaluation never interleave.
    let mut locks = evals
        .iter()
        .map(|e| lock(storage, &experiment, &e.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            LockError::Busy { .. } => CliError::usage(
                e.to_string(),
                Some("wait for it to finish, or run this one under another --experiment".into()),
            ),
            // The lock file lives beside the store: a folder this user cannot
            // write refuses it as it would refuse the store.
            LockError::Io { ref source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                StoreError::ReadOnly {
                    path: storage.to_owned(),
                    folder: true,
                }
                .into()
            }
            other => CliError::Failed(other.to_string()),
        })?;
    // Released last-first, so the one that created the store's folder goes last
    // and, when this run is refused before the store exists, takes the folder along.
    locks.reverse();
    let mut plans = evals
        .into_iter()
        .map(|eval| plan(eval, existing.as_ref(), &experiment, args.concurrency))
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = match existing {
        Some(store) => store,
        None => Store::open(storage)?,
    };

    let progress = Arc::new(Progress::new(style.progress, style.color));
    if args.experiment.is_none() {
        progress.note(&format!("experiment: {experiment}"));
    }
    for plan in &mut plans {
        let (fitted, note) = runner::fit_open_files(plan.strategy, plan.eval.model.mock.is_some());
        plan.strategy = fitted;
        if let Some(note) = note {
            progress.note(&format!("{}: {note}", plan.eval.name));
        }
    }
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        let interrupt = Interrupt::install();
        let rates = RateLimits::default();
        let pauses = Pauses::default();
        let mut statuses = Vec::new();
        for plan in &plans {
            let status = runner::run(
                plan,
                &experiment,
                &mut store,
                &progress,
                &interrupt,
                &rates,
                &pauses,
            )
            .await;
            let stop = !matches!(
                status,
                Ok(RunStatus::Completed | RunStatus::CompletedWithErrors)
            );
            statuses.push(status);
            if stop {
                break;
            }
        }
        statuses
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));

    // Whatever happened, show what was recorded; a failed run's own error is
    // the one to report, not a failure to build the report.
    let names: Vec<String> = plans.iter().map(|p| p.eval.name.clone()).collect();
    let report = build(&store, &experiment, Detail::default(), Some(&names));
    let failure = outcome
        .iter()
        .find_map(|s| s.as_ref().err())
        .map(|e| CliError::Failed(e.to_string()));
    match (report, failure) {
        (Ok(report), _) => print(style, &report)?,
        (Err(e), None) => return Err(e),
        (Err(_), Some(_)) => {}
    }
    let mut exit = Exit::Success;
    for status in outcome {
        match status {
            Ok(RunStatus::Completed) => {}
            Ok(RunStatus::CompletedWithErrors) => exit = exit.max(Exit::Failure),
            Ok(RunStatus::Interrupted) => {
                progress.note(&format!(
                    "interrupted; finished samples are saved. Resume with:\n  {}",
                    resume_command(&args, &experiment, storage_arg)
                ));
                return Ok(Exit::Interrupted);
            }
            Err(e) => return Err(CliError::Failed(e.to_string())),
        }
    }
    if style.format == Format::Table {
        let mut show = format!("dotevals show {}", shell_quote(&experiment));
        if let Some(storage) = storage_arg {
            show += &format!(" --storage {}", shell_quote(storage));
        }
        progress.note(&format!("saved as experiment `{experiment}`: {show}"));
    }
    Ok(exit)
}

/// Two evaluations of one run (or one `validate`) must not share a name.
pub(super) fn check_unique(earlier: &[Evaluation], eval: &Evaluation) -> Result<(), CliError> {
    match earlier.iter().find(|e| e.name == eval.name) {
        Some(other) => Err(CliError::usage(
            format!(
                "{} and {} both define evaluation `{}`",
                other.spec_path.display(),
                eval.spec_path.display(),
                eval.name
            ),
            Some("give one of them a different `name:`".into()),
        )),
        None => Ok(()),
    }
}

/// Checks one evaluation against the store and reads its whole dataset.
fn plan(
    eval: Evaluation,
    store: Option<&Store>,
    experiment: &str,
    concurrency: Option<StrategySpec>,
) -> Result<Planned, CliError> {
    let existing = match store {
        Some(store) => store.find_evaluation(experiment, &eval.name)?,
        None => None,
    };
    if let Some(old) = &existing {
        if old.spec_hash != eval.spec_hash {
            let old_identity = serde_json::from_str(&old.identity).unwrap_or_default();
            let changed = crate::spec::changed_parts(&old_identity, &eval.identity).join(", ");
            return Err(CliError::usage(
                format!(
                    "experiment `{experiment}` already holds evaluation `{}` from a different spec (changed: {changed})",
                    eval.name
                ),
                Some(format!(
                    "results from two specs cannot be mixed: use a new name (--experiment {}), or drop the old results with `dotevals delete {}`", shell_quote(&format!("{experiment}-2")), shell_quote(experiment)
                )),
            ));
        }
    }
    let lookup = match (store, &existing) {
        (Some(store), Some(e)) => Some((SampleLookup::open(store.path(), e.id)?, store.path())),
        _ => None,
    };
    let mut pending = 0u64;
    let mut matched = 0u64;
    let summary = scan(&eval.dataset, &eval.required_columns, |row, id| {
        let stored = match &lookup {
            Some((l, path)) => l
                .get(id)
                .map_err(|e| Diagnostic::new(path, 0, 0, e.to_string()))?,
            None => None,
        };
        matched += u64::from(stored.is_some());
        match stored {
            Some(s) if s.row_hash != row_hash(&row.values) => Err(Diagnostic::new(eval.dataset.file(), row.line, 1, format!(
                "sample `{id}` differs from the one experiment `{experiment}` recorded: the dataset was edited"
            ))
            .with_hint(format!("run the edited dataset as a new experiment, e.g. --experiment {}", shell_quote(&format!("{experiment}-2"))))),
            Some(s) if s.finished => Ok(()),
            _ => {
                pending += 1;
                Ok(())
            }
        }
    })?;
    if let Some((lookup, _)) = &lookup {
        refuse_removed_rows(&eval, lookup, summary.rows, matched, experiment)?;
    }
    let api_key = api_key(&eval.model, &eval.spec_path)?;
    Ok(Planned {
        strategy: concurrency.unwrap_or(eval.concurrency),
        total: summary.rows,
        pending,
        resuming: existing.is_some(),
        api_key,
        eval,
    })
}

/// Refuses to resume when samples the experiment recorded have no row any more:
/// its totals would count rows the dataset no longer has. `rows` were read and
/// `matched` of them have a record. Rows past `--samples N` were not read, so
/// a run cut short by it cannot tell and is let through.
fn refuse_removed_rows(
    eval: &Evaluation,
    lookup: &SampleLookup,
    rows: u64,
    matched: u64,
    experiment: &str,
) -> Result<(), CliError> {
    if eval.dataset.limit.is_some_and(|n| rows >= n) {
        return Ok(());
    }
    let recorded = lookup.count()?;
    if recorded <= matched {
        return Ok(());
    }
    let missing = recorded - matched;
    // Name a few: read the ids again (this is the error path).
    let mut ids = std::collections::HashSet::new();
    for row in eval.dataset.rows()? {
        ids.insert(eval.dataset.sample_id(&row?)?);
    }
    let examples: Vec<String> = lookup
        .keys()?
        .into_iter()
        .filter(|k| !ids.contains(k))
        .take(3)
        .map(|k| format!("`{k}`"))
        .collect();
    let (noun, verb) = if missing == 1 {
        ("sample", "is")
    } else {
        ("samples", "are")
    };
    Err(Diagnostic::new(
        eval.dataset.file(),
        0,
        0,
        format!(
            "{missing} {noun} that experiment `{experiment}` recorded {verb} no longer in the dataset (rows were removed; e.g. {})",
            examples.join(", ")
        ),
    )
    .with_hint(format!(
        "resuming would mix results of two datasets: run the shortened dataset as a new experiment, e.g. --experiment {}", shell_quote(&format!("{experiment}-2"))
    ))
    .into())
}

/// The API key from the variable the spec names. A named variable must be set;
/// the default `OPENAI_API_KEY` is only required by the default (OpenAI) endpoint,
/// and is never sent to a `base_url` written in the spec (see `spec::ModelSpec`).
/// `validate` makes the same check.
pub(super) fn api_key(model: &ModelSpec, spec: &Path) -> Result<Option<String>, CliError> {
    let Some((var, named)) = &model.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => {
            let key = key.trim().to_owned();
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
                return Err(CliError::usage(
                    format!("{}: the value of {var} cannot be sent in an HTTP header", spec.display()),
                    Some(format!("{var} holds a control character or non-ASCII text; check how it was exported")),
                ));
            }
            Ok(Some(key))
        }
        _ if *named || model.base_url.as_deref() == Some(DEFAULT_BASE_URL) => Err(CliError::usage(
            format!("{}: the API key variable {var} is not set", spec.display()),
            Some(format!(
                "export {var}=... first; the key is read from the environment and never stored"
            )),
        )),
        _ => Ok(None),
    }
}

/// `run-YYYYMMDD-HHMMSS`, with a suffix if that name is taken.
fn fresh_name(store: Option<&Store>) -> Result<String, CliError> {
    let stamp: String = crate::store::now()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let base = format!(
        "run-{}-{}",
        &stamp[..8.min(stamp.len())],
        &stamp[8.min(stamp.len())..]
    );
    let taken = match store {
        Some(store) => store.experiment_names()?,
        None => Vec::new(),
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    Ok(name)
}

/// The command that resumes an interrupted run.
fn resume_command(args: &RunArgs, experiment: &str, storage: Option<&str>) -> String {
    let mut parts = vec!["dotevals".to_owned(), "run".to_owned()];
    parts.extend(
        args.specs
            .iter()
            .map(|p| shell_quote(&p.display().to_string())),
    );
    parts.push("--experiment".into());
    parts.push(shell_quote(experiment));
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
    if let Some(storage) = storage {
        parts.push(format!("--storage {}", shell_quote(storage)));
    }
    parts.join(" ")
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
