//! `dotevals rescore NAME --spec FILE [--into NEW]`: grade an experiment's
//! stored outputs again with a spec's (edited) evaluators, into a new
//! experiment, without a request to the model under test.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::finish::{finish, runtime_error, Ended};
use super::{unknown_experiment, CliError, Format, Style};
use crate::runner::{self, plan_rescore, Progress};
use crate::shell;
use crate::spec::check_unique;
use crate::store::{LockError, Storage, StoreError};
use crate::Exit;

pub const AFTER_HELP: &str = "\
Example: grade again with `contains` instead of `exact_match`, keeping the original:
  cp evals/sentiment.yaml edited.yaml      # edit only its `evaluators:`
  dotevals rescore baseline --spec edited.yaml
  dotevals show baseline-rescored

Nothing is sent to the model under test: every sample with a stored output is scored again
from it (keeping the model's latency and tokens), and a sample the model failed is copied with
its error. The spec must be the one the experiment ran except for its evaluators (matched by
its `name:`); a changed dataset, model or prompt is refused. Rows the experiment never
recorded are left out; `dotevals run SPEC --experiment NEW` sends them (and retries the copied
errors) with the edited evaluators. The original experiment is never changed.";

#[derive(Debug, Args)]
pub struct RescoreArgs {
    /// Experiment whose stored outputs are scored again (it is not changed)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The spec with the evaluators to use; repeat for several evaluations of NAME
    #[arg(long, required = true, value_name = "FILE")]
    pub spec: Vec<PathBuf>,

    /// Experiment to write (must not exist yet) [default: NAME-rescored]
    #[arg(long, value_name = "NEW", value_parser = super::experiment_name)]
    pub into: Option<String>,

    /// Override a field of each --spec by its dotted path, the value read as YAML (repeatable; as `run --set`)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::spec::Override::parse)]
    pub overrides: Vec<crate::spec::Override>,

    /// Reuse judge replies kept in the store for judge requests sent before, and keep this
    /// rescore's (as the spec's `cache: true`): a changed rubric sends only the judge calls
    /// whose prompt changed
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: bool,

    /// Send every judge request even when the spec says `cache: true`
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub output: super::FormatArg,
}

/// `storage_arg` is `--storage` as the user wrote it, for the hints.
pub fn rescore(
    args: RescoreArgs,
    storage: &dyn Storage,
    storage_arg: Option<&str>,
    style: Style,
) -> Result<Exit, CliError> {
    let source = args.name.as_str();
    let target = match &args.into {
        Some(into) => into.clone(),
        None => super::experiment_name(&format!("{source}-rescored")).map_err(|why| {
            CliError::usage(
                format!("cannot name the new experiment `{source}-rescored`: {why}"),
                Some("name it with --into NEW".into()),
            )
        })?,
    };
    let mut evals = Vec::with_capacity(args.spec.len());
    for path in &args.spec {
        // A matrix spec rescores each of its cells, matched by name.
        let options = crate::spec::Options::default();
        for mut eval in crate::spec::load_cells(path, &args.overrides, &[], options)? {
            apply_cache_flags(&mut eval, args.cache, args.no_cache);
            check_unique(&evals, &eval)?;
            evals.push(eval);
        }
    }
    let storage_flag = storage_arg
        .map(|s| format!(" --storage {}", shell::quote(s)))
        .unwrap_or_default();
    let mut store = storage
        .open_existing()?
        .ok_or_else(|| unknown_experiment(source, &[]))?;
    crate::view::experiment_row(store.as_ref(), source)?;
    if store.experiment(&target).is_ok() {
        return Err(CliError::usage(
            format!("experiment `{target}` already exists"),
            Some(format!(
                "rescore into another name with --into NEW, or drop the old one first with `dotevals delete {}{storage_flag}`",
                shell::quote(&target)
            )),
        ));
    }
    if let Some(e) = evals.iter().find(|e| store.is_running(source, &e.name)) {
        return Err(CliError::usage(
            format!(
                "experiment `{source}` is being run right now (evaluation `{}`)",
                e.name
            ),
            Some("wait for the run to finish, then rescore it".into()),
        ));
    }
    let _locks = evals
        .iter()
        .map(|e| storage.lock(&target, &e.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            StoreError::Lock(e @ LockError::Busy { .. }) => CliError::usage(
                e.to_string(),
                Some("another command writes that experiment; wait for it, or rescore --into another name".into()),
            ),
            StoreError::Lock(other) => CliError::Failed(other.to_string()),
            other => other.into(),
        })?;
    let plans = evals
        .into_iter()
        .map(|eval| plan_rescore(eval, store.as_ref(), source))
        .collect::<Result<Vec<_>, _>>()?;

    let progress = Arc::new(Progress::new(style.progress, style.color));
    progress.note(&format!(
        "rescoring the stored outputs of `{source}` into `{target}`; nothing is sent to the model"
    ));
    for plan in &plans {
        let missing = plan.total - plan.pending;
        if missing > 0 {
            let eval = &plan.eval;
            progress.note(&format!(
                "{}: {missing} of {} rows have no record in `{source}` and are left out (not sent); `dotevals run {} --experiment {}{storage_flag}` sends them",
                eval.name,
                plan.total,
                shell::quote(&eval.spec_path.display().to_string()),
                shell::quote(&target),
            ));
        }
    }
    let outcome =
        runner::execute(&plans, &target, store.as_mut(), None, &progress).map_err(runtime_error)?;
    match finish(&plans, &target, store.as_ref(), outcome, style, None)? {
        Ended::Interrupted => {
            progress.note(&format!(
                "interrupted; the samples rescored so far are saved in `{target}`. To rescore all of them, drop it and start again:\n  dotevals delete {t}{storage_flag} && dotevals rescore {s} {specs} --into {t}{storage_flag}",
                t = shell::quote(&target),
                s = shell::quote(source),
                specs = args
                    .spec
                    .iter()
                    .map(|p| format!("--spec {}", shell::quote(&p.display().to_string())))
                    .chain(args.overrides.iter().map(|o| format!("--set {}", shell::quote(&o.arg))))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
            Ok(Exit::Interrupted)
        }
        Ended::Done(exit) => {
            if style.format == Format::Table {
                progress.note(&format!(
                    "saved as experiment `{target}`: dotevals show {}{storage_flag}",
                    shell::quote(&target)
                ));
            }
            Ok(exit)
        }
    }
}

/// `--cache` turns the response cache on (keeping the spec's ttl), and
/// `--no-cache` off, whatever the spec says.
pub(super) fn apply_cache_flags(eval: &mut crate::spec::Evaluation, cache: bool, no_cache: bool) {
    if no_cache {
        eval.cache = None;
    } else if cache {
        eval.cache = Some(eval.cache.unwrap_or_default());
    }
}
