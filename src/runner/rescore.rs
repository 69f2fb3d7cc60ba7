//! Planning a rescore: the outputs an experiment stored, scored again with a
//! spec's (possibly edited) evaluators into a new experiment. [`plan_rescore`]
//! checks the spec against the source and returns a plan whose replies are
//! [`Replies::Stored`]; [`super::run`] then runs it as any plan, except that
//! each sample carries its stored call: a reply is scored by the same code a
//! run uses, keeping the model's stored latency, tokens, attempts and waits; a
//! failed call is copied as it was. The model under test is never called and
//! its mock is never started, unless a judge grades with the evaluation's own
//! model (it has no model block of its own).
//!
//! The rule for what may differ: the spec must be the one the source
//! experiment ran except for `evaluators:` (and what never decides a result:
//! `description`, `concurrency`, timeouts, retries, rate limits, `limit`).
//! A changed dataset source, model or prompt is refused, because the stored
//! outputs would not be answers to it, and because the new experiment records
//! the edited spec, so a later `dotevals run SPEC --experiment NEW` resumes it
//! and must send its missing rows with the prompt the stored outputs answered.
//! Samples are matched by sample id and row hash: a row whose values changed is
//! refused, as `run` refuses it on resume; rows the source never recorded are
//! left out (not sent), and the plan's `total - pending` counts them.

use super::plan::{PlanError, Planned, Replies};
use crate::dataset::scan;
use crate::diagnostic::Diagnostic;
use crate::shell;
use crate::spec::Evaluation;
use crate::store::Store;

/// Checks `eval` against its evaluation in experiment `source` of `store`:
/// recorded there, the same spec but for its evaluators, the same rows.
pub fn plan_rescore(
    mut eval: Evaluation,
    store: &dyn Store,
    source: &str,
) -> Result<Planned, PlanError> {
    let Some(old) = store.find_evaluation(source, &eval.name)? else {
        let held: Vec<String> = store
            .experiment(source)?
            .evaluations
            .iter()
            .map(|e| format!("`{}`", e.name))
            .collect();
        return Err(PlanError::Refused {
            message: format!(
                "experiment `{source}` holds no evaluation `{}` (the `name:` of {}); it holds {}",
                eval.name,
                eval.spec_path.display(),
                held.join(", ")
            ),
            hint: "rescore with the spec that made the evaluation (keep its `name:`), editing only its `evaluators:`".into(),
        });
    };
    let old_identity = serde_json::from_str(&old.identity).unwrap_or_default();
    let changed: Vec<String> = crate::spec::changed_parts(&old_identity, &eval.identity)
        .into_iter()
        .filter(|part| part != "evaluators")
        .collect();
    if !changed.is_empty() {
        return Err(PlanError::Refused {
            message: format!(
                "{} differs from the spec experiment `{source}` ran in more than its evaluators (changed: {}), so the stored outputs are not answers to it",
                eval.spec_path.display(),
                changed.join(", ")
            ),
            hint: format!(
                "rescore only grades again: edit only `evaluators:`; to send a changed dataset, model or prompt, run it as a new experiment (dotevals run {} --experiment {})",
                shell::quote(&eval.spec_path.display().to_string()),
                shell::quote(&format!("{source}-2"))
            ),
        });
    }
    // Every repeat the source sent is graded again, whatever the spec says.
    eval.repeats = old.repeats;
    let lookup = store.lookup(old.id)?;
    let location = store.location().to_owned();
    let mut matched = 0u64;
    let summary = scan(&eval.dataset, &eval.required_columns, |row, id| {
        super::plan::refuse_marked_id(&eval, row.line, id)?;
        for repeat in 0..eval.repeats {
            let key = crate::repeats::key(id, repeat);
            let stored = lookup.get(&key).map_err(|e| {
                Diagnostic::new(std::path::Path::new(&location), 0, 0, e.to_string())
            })?;
            match stored {
                Some(s) if s.row_hash != crate::dataset::row_hash(&row.values) => Err(Diagnostic::new(
                    eval.dataset.file(),
                    row.line,
                    1,
                    format!("sample `{id}` differs from the one experiment `{source}` recorded: the dataset was edited, so its stored output answers another row"),
                )
                .with_hint(format!(
                    "run the edited dataset as a new experiment, e.g. dotevals run {} --experiment {}",
                    shell::quote(&eval.spec_path.display().to_string()),
                    shell::quote(&format!("{source}-2"))
                ))),
                Some(_) => {
                    matched += 1;
                    Ok(())
                }
                None => Ok(()),
            }?;
        }
        Ok(())
    })?;
    let cut = eval.dataset.limit.is_some_and(|n| summary.rows >= n);
    let recorded = lookup.count()?;
    if !cut && recorded > matched {
        let gone = recorded - matched;
        return Err(Diagnostic::new(
            eval.dataset.file(),
            0,
            0,
            format!("{gone} of the samples experiment `{source}` recorded are no longer in the dataset (rows were removed)"),
        )
        .with_hint("rescore with the dataset the experiment ran; rows cannot be dropped while grading again")
        .into());
    }
    // Judges are called: one on the evaluation's own endpoint sends its key
    // (read only then), one with a model block of its own that block's key.
    let api_key = if judge_calls_model(&eval) {
        super::plan::api_key(&eval.model, &eval.spec_path)?
    } else {
        None
    };
    let judge_keys = super::plan::judge_keys(&eval, api_key.as_ref())?;
    let secrets = super::plan::secrets(&eval, api_key.as_ref(), &judge_keys);
    Ok(Planned {
        strategy: eval.concurrency,
        total: summary.rows * u64::from(eval.repeats),
        pending: matched,
        resuming: false,
        api_key,
        judge_keys,
        secrets,
        replies: Replies::Stored {
            evaluation_id: old.id,
        },
        // A rescore runs alone: it never starts or joins a fleet.
        print: Default::default(),
        lease: crate::store::fleet::DEFAULT_LEASE,
        eval,
    })
}

/// Whether a judge calls the evaluation's own model (it has no model block of
/// its own): only then does a rescore reach that endpoint (or start its mock).
pub(super) fn judge_calls_model(eval: &Evaluation) -> bool {
    eval.evaluators
        .iter()
        .any(|e| e.scorer.judge().is_some_and(|j| !j.own_model()))
}
