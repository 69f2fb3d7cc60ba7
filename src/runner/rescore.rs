//! Rescoring: the outputs an experiment stored, scored again with a spec's
//! (possibly edited) evaluators into a new experiment. The model under test is
//! never called: no client connects to it and its mock is never started.
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
//! reported and left out (not sent).
//!
//! Each sample with a stored output goes through the same
//! [`process`](super::sample::process) path a resumed run takes for a stored
//! reply, so it is scored by [`SampleContext`]'s `score` and keeps the model's
//! stored latency, tokens, attempts and waits; its start and end are the
//! rescore's. A sample the model failed (no output) is copied with its error as
//! it was. Judges (`llm_judge`) are connected as a run connects them and are
//! called; a judge without a model block of its own grades with the
//! evaluation's model, so only then is that endpoint reached (its mock started).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, Sender};

use super::plan::{shell_quote, PlanError, Planned};
use super::progress::Progress;
use super::refusal::RefusalWatch;
use super::sample::SampleContext;
use super::{dispatch, DispatchEnd, Interrupt, RunError, RunStatus, Sample, Tasks, GRACE};
use crate::concurrency::pause::{Pause, Pauses};
use crate::concurrency::rate::RateLimits;
use crate::concurrency::Limiter;
use crate::dataset::{row_json, scan, Dataset};
use crate::diagnostic::Diagnostic;
use crate::error_kind::ErrorKind;
use crate::model::openai::OpenAi;
use crate::model::{Endpoint, ModelClient};
use crate::spec::Evaluation;
use crate::store::writer::{SampleRecord, WriterConfig, QUEUE};
use crate::store::{
    now, EvaluationMeta, EvaluationStatus, RunTotals, SampleLookup, Store, StoreError,
};

/// One evaluation checked against the experiment whose outputs it rescores.
pub struct Rescore {
    /// The edited spec; `total` and `pending` count the samples to write
    /// (those the source recorded), which is what progress shows.
    pub planned: Planned,
    /// Rows in the spec's dataset (after `limit`): the new evaluation's total.
    pub rows: u64,
    /// The source evaluation's id in the store.
    pub source_id: i64,
    /// Rows of the dataset the source has no record of (left out, not sent).
    pub missing: u64,
}

/// Checks `eval` against its evaluation in experiment `source` of `store`:
/// recorded there, the same spec but for its evaluators, the same rows.
pub fn plan_rescore(
    eval: Evaluation,
    store: &dyn Store,
    source: &str,
) -> Result<Rescore, PlanError> {
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
                shell_quote(&eval.spec_path.display().to_string()),
                shell_quote(&format!("{source}-2"))
            ),
        });
    }
    let lookup = store.lookup(old.id)?;
    let location = store.location().to_owned();
    let mut matched = 0u64;
    let summary = scan(&eval.dataset, &eval.required_columns, |row, id| {
        let stored = lookup
            .get(id)
            .map_err(|e| Diagnostic::new(&location, 0, 0, e.to_string()))?;
        match stored {
            Some(s) if s.row_hash != crate::dataset::row_hash(&row.values) => Err(Diagnostic::new(
                eval.dataset.file(),
                row.line,
                1,
                format!("sample `{id}` differs from the one experiment `{source}` recorded: the dataset was edited, so its stored output answers another row"),
            )
            .with_hint(format!(
                "run the edited dataset as a new experiment, e.g. dotevals run {} --experiment {}",
                shell_quote(&eval.spec_path.display().to_string()),
                shell_quote(&format!("{source}-2"))
            ))),
            Some(_) => {
                matched += 1;
                Ok(())
            }
            None => Ok(()),
        }
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
    let api_key = if shares_endpoint(&eval) {
        super::plan::api_key(&eval.model, &eval.spec_path)?
    } else {
        None
    };
    let judge_keys = eval
        .evaluators
        .iter()
        .map(|e| match e.scorer.judge() {
            Some(judge) if judge.own_model() => {
                super::plan::api_key(judge.model(), &eval.spec_path)
            }
            Some(_) => Ok(api_key.clone()),
            None => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    Ok(Rescore {
        rows: summary.rows,
        missing: summary.rows - matched,
        source_id: old.id,
        planned: Planned {
            strategy: eval.concurrency,
            total: matched,
            pending: matched,
            resuming: false,
            api_key,
            judge_keys,
            eval,
        },
    })
}

/// Whether a judge calls the evaluation's own endpoint (it has no model block
/// of its own): only then is that endpoint's address needed (and its mock started).
fn shares_endpoint(eval: &Evaluation) -> bool {
    eval.evaluators
        .iter()
        .any(|e| e.scorer.judge().is_some_and(|j| !j.own_model()))
}

/// A client that is never called: scoring a stored output sends nothing, and
/// the sample context only needs one to exist. It points at an address that
/// cannot resolve (`.invalid`), and building it opens no connection.
fn idle_client(eval: &Evaluation) -> Result<ModelClient, RunError> {
    ModelClient::new(Endpoint {
        api: Arc::new(OpenAi),
        base_url: "http://model-not-called.invalid",
        model: &eval.model.name,
        api_key: None,
        params: Default::default(),
        timeout: Duration::from_secs(1),
        max_connections: 1,
    })
    .map_err(RunError::Client)
}

/// Rescores `plan` from the store's stored records into experiment `target`.
pub async fn rescore(
    plan: &Rescore,
    target: &str,
    store: &mut dyn Store,
    progress: &Arc<Progress>,
    interrupt: &Arc<Interrupt>,
    rates: &RateLimits,
    pauses: &Pauses,
) -> Result<RunStatus, RunError> {
    let eval = &plan.planned.eval;
    // The model under test is never called; its endpoint (its mock) is only
    // reached by a judge that grades with the evaluation's own model.
    let shared = match shares_endpoint(eval) {
        true => Some(
            super::client::connect(
                &eval.model,
                plan.planned.api_key.as_deref(),
                plan.planned.strategy.max_concurrency(),
            )
            .await?,
        ),
        false => None,
    };
    let model_url = shared.as_ref().map_or("", |c| c.base_url.as_str());
    let judge_mocks =
        super::client::connect_judges(&plan.planned, model_url, rates, pauses).await?;
    let strategy = plan.planned.strategy;
    let evaluator_names: Vec<String> = eval.evaluators.iter().map(|e| e.name.clone()).collect();
    let identity = eval.identity.to_string();
    let spec_path = eval.spec_path.display().to_string();
    let meta = EvaluationMeta {
        name: &eval.name,
        spec_path: &spec_path,
        spec_text: &eval.spec_text,
        spec_hash: &eval.spec_hash,
        identity: &identity,
        provider: eval.model.provider.as_str(),
        model: &eval.model.name,
        evaluators: &evaluator_names,
        strategy: strategy.name(),
        max_concurrency: strategy.max_concurrency(),
        total: plan.rows,
    };
    let started_evaluation = store.start_evaluation(target, &meta, &now())?;
    let evaluation_id = started_evaluation.id;
    let started = Instant::now();
    let limiter = Limiter::new(strategy.build());
    let pause = Arc::new(Pause::default());
    progress.start(&plan.planned, &limiter, None, Arc::clone(&pause));
    let config = WriterConfig {
        evaluation_id,
        run: started_evaluation.run,
        resuming: false,
        base_wall_us: started_evaluation.wall_us,
        started,
    };
    let writer = store.writer(
        config.clone(),
        strategy.max_concurrency().saturating_add(QUEUE),
        Box::new(progress.on_commit()),
    )?;
    let (rows_tx, mut rows_rx) = mpsc::channel::<Result<Sample, RunError>>(1024);
    let reader = spawn_reader(
        eval.dataset.clone(),
        store.lookup(plan.source_id),
        rows_tx,
        writer.sender(),
        started,
    );
    let ctx = Arc::new(SampleContext::new(
        eval,
        idle_client(eval)?.with_secrets(&eval.secrets),
        started,
        writer.sender(),
        RefusalWatch::new(limiter.limit(), 0, None),
        None,
        pause,
    ));
    let ticker = progress.is_live().then(|| {
        let progress = Arc::clone(progress);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                progress.tick();
            }
        })
    });
    let mut tasks = Tasks::default();
    let end = dispatch(&limiter, &mut rows_rx, &mut tasks, &ctx, interrupt).await;
    drop(rows_rx);
    let mut interrupted = matches!(end, DispatchEnd::Interrupted);
    let failure = match end {
        DispatchEnd::Failed(e) => Some(e),
        _ => None,
    };
    if !interrupted {
        tokio::select! {
            _ = tasks.join_all() => {}
            _ = interrupt.reached(1) => interrupted = true,
        }
    }
    if interrupted {
        progress
            .note("interrupted: letting samples being scored finish (Ctrl-C again to cancel them)");
        tokio::select! {
            _ = tasks.join_all() => {}
            _ = interrupt.reached(2) => tasks.set.abort_all(),
            _ = tokio::time::sleep(GRACE) => tasks.set.abort_all(),
        }
    }
    tasks.join_all().await;
    let lost = tasks.lost;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    drop(ctx);
    let _ = reader.join();
    writer.finish()?;
    drop(judge_mocks);
    drop(shared);
    store.record_limits(evaluation_id, config.run, &limiter.history())?;
    store.record_run(
        evaluation_id,
        config.run,
        &RunTotals {
            strategy: strategy.name().to_owned(),
            wall: started.elapsed(),
            limiter: limiter.totals(),
        },
    )?;
    store.record_wall(evaluation_id, config.wall_us())?;
    let counts = store.counts(evaluation_id)?;
    let failure = failure.or((lost > 0).then_some(RunError::Lost(lost)));
    let status = match failure {
        Some(e) => Err(e),
        None if interrupted => Ok(RunStatus::Interrupted),
        None if counts.errored > 0 || counts.recorded < plan.rows => {
            Ok(RunStatus::CompletedWithErrors)
        }
        None => Ok(RunStatus::Completed),
    };
    let stored = status
        .as_ref()
        .map_or(EvaluationStatus::Failed, |s| (*s).into());
    store.finish_evaluation(evaluation_id, stored, &now())?;
    progress.finish();
    status
}

/// Streams the rows the source recorded on a thread: a sample with a stored
/// output goes to the dispatcher to be scored again; one without (the model
/// failed it) is copied with its error straight to the writer through
/// `records`. Rows the source never recorded are skipped. Stops when the
/// dispatcher hangs up.
fn spawn_reader(
    dataset: Dataset,
    lookup: Result<Box<dyn SampleLookup>, StoreError>,
    tx: mpsc::Sender<Result<Sample, RunError>>,
    records: Sender<SampleRecord>,
    started: Instant,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let lookup = match lookup {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let rows = match dataset.rows() {
            Ok(rows) => rows,
            Err(d) => {
                let _ = tx.blocking_send(Err(RunError::Dataset(d)));
                return;
            }
        };
        for row in rows {
            let item = row.map_err(RunError::Dataset).and_then(|row| {
                let key = dataset.sample_id(&row).map_err(RunError::Dataset)?;
                if lookup.get(&key)?.is_none() {
                    return Ok(None);
                }
                let (variables, row_hash) = row_json(&row.values);
                let Some(stored) = lookup.reply(&key)? else {
                    let Some(failure) = lookup.failure(&key)? else {
                        return Ok(None);
                    };
                    let at = started.elapsed().as_micros() as u64;
                    let record = SampleRecord {
                        key,
                        index: row.index,
                        row_hash,
                        variables,
                        prompt: failure.prompt,
                        output: None,
                        scores: Vec::new(),
                        // A kind this build cannot read back is no model output either.
                        error_kind: Some(
                            failure.error_kind.parse().unwrap_or(ErrorKind::Malformed),
                        ),
                        error: failure.error,
                        attempts: failure.attempts,
                        throttled: failure.throttled,
                        wait_us: failure.wait_us,
                        latency_us: failure.latency_us,
                        start_us: at,
                        end_us: at,
                        prompt_tokens: failure.prompt_tokens,
                        completion_tokens: failure.completion_tokens,
                        judge_calls: Vec::new(),
                    };
                    records
                        .blocking_send(record)
                        .map_err(|_| RunError::Store(StoreError::WriterLost))?;
                    return Ok(None);
                };
                Ok(Some(Sample {
                    index: row.index,
                    row_hash,
                    key,
                    values: row.values,
                    variables,
                    stored: Some(stored),
                    retried: false,
                }))
            });
            let msg = match item {
                Ok(None) => continue,
                Ok(Some(sample)) => Ok(sample),
                Err(e) => Err(e),
            };
            let stop = msg.is_err();
            if tx.blocking_send(msg).is_err() || stop {
                return;
            }
        }
    })
}
