//! Planning: everything checked before the first request. Each evaluation is
//! compared with what the store recorded (a changed spec, an edited or
//! shortened dataset is refused), its whole dataset is read to count what is
//! left to send, and its API key is read from the environment.

use std::collections::HashSet;
use std::path::Path;

use crate::concurrency::StrategySpec;
use crate::dataset::{row_hash, scan};
use crate::diagnostic::Diagnostic;
use crate::secrets::Secrets;
use crate::shell;
use crate::spec::{ApiKeyEnv, Evaluation, ModelSpec};
use crate::store::fleet::{DatasetPrint, Digest, LiveFleet};
use crate::store::{SampleLookup, Store, StoreError};

/// One evaluation, checked and ready, with what resume found.
pub struct Planned {
    pub eval: Evaluation,
    pub strategy: StrategySpec,
    /// Samples to send: rows in the dataset (after `limit`) times `repeats`.
    pub total: u64,
    /// Samples (repeats counted apart) without a finished record: what this
    /// run will send.
    pub pending: u64,
    /// Whether the store already has records of this evaluation.
    pub resuming: bool,
    pub api_key: Option<String>,
    /// Per evaluator, the key its judge sends (`None` for the rest).
    pub judge_keys: Vec<Option<String>>,
    /// Everything this run must never store, print or send anywhere else
    /// ([`secrets`]), built once.
    pub secrets: Secrets,
    /// Where the samples' replies come from.
    pub replies: Replies,
    /// The dataset as read, to start or join a fleet of workers with.
    pub print: DatasetPrint,
    /// On a store workers share: how long this worker's claims last
    /// without a heartbeat.
    pub lease: std::time::Duration,
}

/// Where a run's replies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// The model (samples a resumed experiment already finished are skipped).
    Model,
    /// The outputs evaluation `evaluation_id` stored (`rescore`): nothing is
    /// sent to the model under test.
    Stored { evaluation_id: i64 },
}

/// Why an evaluation cannot be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The setup is refused as written (a changed spec, an API key missing or
    /// unfit for a header); `hint` says what to do.
    #[error("{message}")]
    Refused { message: String, hint: String },
    /// The dataset is unreadable, or differs from what the experiment recorded.
    #[error("{0}")]
    Input(Box<Diagnostic>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a run of `eval` must never store, print or send anywhere
/// else: the spec's credentials, the model's key and every judge's key. A
/// judge's reply is scrubbed of the model's key as the model's is of the
/// judge's, whatever echoes what.
pub fn secrets(
    eval: &Evaluation,
    api_key: Option<&String>,
    judge_keys: &[Option<String>],
) -> Secrets {
    let mut secrets = eval.secrets.clone();
    for key in api_key.into_iter().chain(judge_keys.iter().flatten()) {
        secrets.add(key);
    }
    secrets
}

impl From<Diagnostic> for PlanError {
    fn from(d: Diagnostic) -> Self {
        PlanError::Input(Box::new(d))
    }
}

/// The datasets a command has read, by what decides their checks (the
/// dataset, the columns its templates use, the repeats): the cells of a
/// matrix that start fresh read their common dataset once.
#[derive(Debug, Default)]
pub struct Reads(std::collections::HashMap<u64, DatasetPrint>);

impl Reads {
    /// What decides a dataset's checks for `eval`, as one number.
    pub fn key(eval: &Evaluation) -> u64 {
        let what = format!(
            "{:?}\0{:?}\0{}",
            eval.dataset, eval.required_columns, eval.repeats
        );
        xxhash_rust::xxh3::xxh3_64(what.as_bytes())
    }
}

/// Checks one evaluation against `store` (none yet: a fresh start) and reads
/// its whole dataset, unless `reads` has it from another evaluation that
/// starts fresh; `concurrency` overrides the spec's strategy.
pub fn plan(
    eval: Evaluation,
    store: Option<&dyn Store>,
    experiment: &str,
    concurrency: Option<StrategySpec>,
    reads: &mut Reads,
) -> Result<Planned, PlanError> {
    let existing = match store {
        Some(store) => store.find_evaluation(experiment, &eval.name)?,
        None => None,
    };
    if let Some(old) = &existing {
        let old_identity = serde_json::from_str(&old.identity).unwrap_or_default();
        if old.spec_hash != eval.spec_hash
            && !crate::spec::same_results(&old_identity, &eval.identity)
        {
            let changed = crate::spec::changed_parts(&old_identity, &eval.identity).join(", ");
            return Err(PlanError::Refused {
                message: format!(
                    "experiment `{experiment}` already holds evaluation `{}` from a different spec (changed: {changed})",
                    eval.name
                ),
                hint: format!(
                    "results from two specs cannot be mixed: use a new name (--experiment {}), or drop the old results with `dotevals delete {}`", shell::quote(&format!("{experiment}-2")), shell::quote(experiment)
                ),
            });
        }
        if old.repeats > eval.repeats {
            return Err(PlanError::Refused {
                message: format!(
                    "experiment `{experiment}` holds {} repeats of evaluation `{}`; this run asks for {}",
                    old.repeats, eval.name, eval.repeats
                ),
                hint: format!(
                    "resume with --repeats {} (or more, to send only the new repeats), or run the fewer repeats as a new experiment (--experiment {})",
                    old.repeats,
                    shell::quote(&format!("{experiment}-2"))
                ),
            });
        }
    }
    // A worker joining a fleet at work checks its dataset against the
    // fleet's as a whole (its print) rather than sample by sample against
    // the store: the fleet's first worker did that, and a lookup per row
    // would make joining a large fleet slow. Without the file, it takes the
    // fleet's dataset.
    let fleet = match (store, &existing) {
        (Some(store), Some(e)) => store.live_fleet(e.id)?.map(|f| (store, e.id, f)),
        _ => None,
    };
    if let Some((_, _, f)) = &fleet {
        refuse_other_spec(&eval, f, experiment)?;
    }
    if let Some(missing) = eval.dataset.missing() {
        return match &fleet {
            Some((store, id, f)) => {
                let (total, pending) = fleet_counts(*store, *id, f)?;
                finish_plan(eval, concurrency, total, pending, true, f.print)
            }
            None => Err(missing.clone().into()),
        };
    }
    let lookup = match (store, &existing, &fleet) {
        (Some(store), Some(e), None) => Some((store.lookup(e.id)?, store.location())),
        _ => None,
    };
    // Nothing recorded yet: every sample is pending, and a dataset read for
    // another fresh evaluation of this command checked the same rows.
    let fresh = existing.is_none().then(|| Reads::key(&eval));
    if let Some(print) = fresh.and_then(|key| reads.0.get(&key).copied()) {
        return finish_plan(
            eval,
            concurrency,
            print.samples,
            print.samples,
            false,
            print,
        );
    }
    let mut pending = 0u64;
    let mut matched = 0u64;
    let mut digest = Digest::default();
    let summary = scan(&eval.dataset, &eval.required_columns, |row, id| {
        refuse_marked_id(&eval, row.line, id)?;
        let hash = row_hash(&row.values);
        // Each repeat of a row is a sample of its own, looked up by its key.
        for repeat in 0..eval.repeats {
            let key = crate::repeats::key(id, repeat);
            digest.add(&key, hash);
            let stored = match &lookup {
                Some((l, location)) => l.get(&key).map_err(|e| {
                    Diagnostic::new(std::path::Path::new(location), 0, 0, e.to_string())
                })?,
                None => None,
            };
            matched += u64::from(stored.is_some());
            match stored {
                Some(s) if s.row_hash != hash => return Err(Diagnostic::new(eval.dataset.file(), row.line, 1, format!(
                    "sample `{id}` differs from the one experiment `{experiment}` recorded: the dataset was edited"
                ))
                .with_hint(format!("run the edited dataset as a new experiment, e.g. --experiment {}", shell::quote(&format!("{experiment}-2"))))),
                Some(s) if s.finished => {}
                _ => pending += 1,
            }
        }
        Ok(())
    })?;
    if let Some((lookup, _)) = &lookup {
        refuse_removed_rows(&eval, lookup.as_ref(), summary.rows, matched, experiment)?;
    }
    let print = digest.print(summary.rows);
    if let Some(key) = fresh {
        reads.0.insert(key, print);
    }
    let total = summary.rows * u64::from(eval.repeats);
    if let Some((store, id, f)) = &fleet {
        refuse_other_dataset(&eval, *store, *id, f, print, experiment)?;
        let (_, pending) = fleet_counts(*store, *id, f)?;
        return finish_plan(eval, concurrency, total, pending, true, print);
    }
    finish_plan(eval, concurrency, total, pending, existing.is_some(), print)
}

/// The plan, once the samples are counted: the keys read from the environment.
fn finish_plan(
    eval: Evaluation,
    concurrency: Option<StrategySpec>,
    total: u64,
    pending: u64,
    resuming: bool,
    print: DatasetPrint,
) -> Result<Planned, PlanError> {
    let api_key = api_key(&eval.model, &eval.spec_path)?;
    let judge_keys = judge_keys(&eval, api_key.as_ref())?;
    let secrets = secrets(&eval, api_key.as_ref(), &judge_keys);
    Ok(Planned {
        strategy: concurrency.unwrap_or(eval.concurrency),
        total,
        pending,
        resuming,
        api_key,
        judge_keys,
        secrets,
        replies: Replies::Model,
        print,
        lease: crate::store::fleet::DEFAULT_LEASE,
        eval,
    })
}

/// The samples of the fleet at work on an evaluation, and of those the
/// ones without a finished record.
fn fleet_counts(
    store: &dyn Store,
    evaluation_id: i64,
    fleet: &LiveFleet,
) -> Result<(u64, u64), PlanError> {
    let counts = store.counts(evaluation_id)?;
    let finished = counts.recorded.saturating_sub(counts.errored);
    let total = fleet.print.samples;
    Ok((total, total.saturating_sub(finished)))
}

/// Refuses to join workers that run this evaluation from another spec.
fn refuse_other_spec(
    eval: &Evaluation,
    fleet: &LiveFleet,
    experiment: &str,
) -> Result<(), PlanError> {
    if fleet.spec_hash == eval.spec_hash {
        return Ok(());
    }
    Err(PlanError::Refused {
        message: format!(
            "{} run evaluation `{}` of experiment `{experiment}` from a different spec (or other --set values)",
            workers(fleet), eval.name
        ),
        hint: "every worker of one experiment runs the same spec file with the same --set arguments; copy theirs, or use another --experiment".into(),
    })
}

/// `1 worker`, `3 workers`.
fn workers(fleet: &LiveFleet) -> String {
    match fleet.workers {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    }
}

/// Refuses to join workers that run this evaluation over another dataset:
/// their results cannot be mixed. Names the first sample where the
/// datasets part.
fn refuse_other_dataset(
    eval: &Evaluation,
    store: &dyn Store,
    evaluation_id: i64,
    fleet: &LiveFleet,
    print: DatasetPrint,
    experiment: &str,
) -> Result<(), PlanError> {
    let workers = workers(fleet);
    if fleet.print == print {
        return Ok(());
    }
    let here = dataset_samples(eval)?;
    let theirs = store.fleet_samples(evaluation_id)?;
    let at = here
        .iter()
        .zip(&theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(here.len().min(theirs.len()));
    let what = match (here.get(at), theirs.get(at)) {
        (Some((a, _)), Some((b, _))) if a != b => {
            format!("sample {} is `{a}` here and `{b}` in theirs", at + 1)
        }
        (Some((a, _)), Some(_)) => format!("sample `{a}` (number {}) was edited", at + 1),
        (Some((a, _)), None) => format!(
            "theirs ends after {} samples; here `{a}` follows",
            theirs.len()
        ),
        (None, Some((b, _))) => format!(
            "this one ends after {} samples; theirs goes on with `{b}`",
            here.len()
        ),
        (None, None) => "the two read the same samples in another order".into(),
    };
    Err(Diagnostic::new(
        eval.dataset.file(),
        0,
        0,
        format!(
            "this dataset differs from the one the {workers} running `{experiment}` loaded ({} samples here, {} there): {what}",
            print.samples, fleet.print.samples
        ),
    )
    .with_hint("every worker of one experiment reads the same dataset (and the same --samples and --repeats); copy theirs, or use another --experiment")
    .into())
}

/// The dataset's samples in order as (key, row hash) (on the error path).
fn dataset_samples(eval: &Evaluation) -> Result<Vec<(String, u64)>, PlanError> {
    let mut samples = Vec::new();
    for row in eval.dataset.rows()? {
        let row = row?;
        let id = eval.dataset.sample_id(&row)?;
        let hash = row_hash(&row.values);
        for repeat in 0..eval.repeats {
            samples.push((crate::repeats::key(&id, repeat).into_owned(), hash));
        }
    }
    Ok(samples)
}

/// Refuses, with more than one repeat, a sample id that holds the mark
/// repeat keys are made with: its repeats' keys could not be told apart from
/// another sample's (see [`crate::repeats`]). `validate` makes the same check.
pub fn refuse_marked_id(eval: &Evaluation, line: usize, id: &str) -> Result<(), Diagnostic> {
    if eval.repeats > 1 && id.contains(crate::repeats::MARK) {
        return Err(Diagnostic::new(
            eval.dataset.file(),
            line,
            1,
            format!(
                "sample id `{id}` holds `{}`, which marks repeat keys, and `repeats` is {}",
                crate::repeats::MARK,
                eval.repeats
            ),
        )
        .with_hint(format!(
            "rename the id (or pick another id column with `dataset.id`), or run with `repeats: 1`; repeat r of a sample is stored as `ID{}r`",
            crate::repeats::MARK
        )));
    }
    Ok(())
}

/// Refuses to resume when samples the experiment recorded have no row any more:
/// its totals would count rows the dataset no longer has. `rows` were read and
/// `matched` of them have a record. Rows past `--samples N` were not read, so
/// a run cut short by it cannot tell and is let through.
fn refuse_removed_rows(
    eval: &Evaluation,
    lookup: &dyn SampleLookup,
    rows: u64,
    matched: u64,
    experiment: &str,
) -> Result<(), PlanError> {
    if eval.dataset.limit.is_some_and(|n| rows >= n) {
        return Ok(());
    }
    let recorded = lookup.count()?;
    if recorded <= matched {
        return Ok(());
    }
    // Count them by key, reading the ids again (this is the error path):
    // records written while the dataset was read (by workers beside this
    // one) are not missing rows.
    let mut ids = HashSet::new();
    for row in eval.dataset.rows()? {
        ids.insert(eval.dataset.sample_id(&row?)?);
    }
    let gone: Vec<String> = lookup
        .keys()?
        .into_iter()
        .filter(|k| {
            let id = match eval.repeats {
                1 => k.as_str(),
                _ => crate::repeats::base_id(k),
            };
            !ids.contains(id)
        })
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let missing = gone.len();
    let examples: Vec<String> = gone.iter().take(3).map(|k| format!("`{k}`")).collect();
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
        "resuming would mix results of two datasets: run the shortened dataset as a new experiment, e.g. --experiment {}", shell::quote(&format!("{experiment}-2"))
    ))
    .into())
}

/// The API key from the variable the spec names. A named variable must be set;
/// the default `OPENAI_API_KEY` is only required by the default (OpenAI) endpoint,
/// and is never sent to a `base_url` written in the spec (see `spec::ModelSpec`).
/// `validate` makes the same check.
pub fn api_key(model: &ModelSpec, spec: &Path) -> Result<Option<String>, PlanError> {
    let key_env = model.provider.http().and_then(|h| h.api_key_env.as_ref());
    let Some(ApiKeyEnv { var, required }) = key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => {
            let key = key.trim().to_owned();
            // Every provider sends the key in a header.
            if reqwest::header::HeaderValue::from_str(&key).is_err() {
                return Err(PlanError::Refused {
                    message: format!("{}: the value of {var} cannot be sent in an HTTP header", spec.display()),
                    hint: format!("{var} holds a control character or non-ASCII text; check how it was exported"),
                });
            }
            Ok(Some(key))
        }
        _ if *required => Err(PlanError::Refused {
            message: format!("{}: the API key variable {var} is not set", spec.display()),
            hint: format!(
                "export {var}=... first; the key is read from the environment and never stored"
            ),
        }),
        _ => Ok(None),
    }
}

/// Per evaluator, the key its judge sends: a judge on the evaluation's own
/// endpoint sends `api_key`; one with a model block of its own, that block's
/// key, checked now, before any request. `None` for the other evaluators.
pub fn judge_keys(
    eval: &Evaluation,
    api_key: Option<&String>,
) -> Result<Vec<Option<String>>, PlanError> {
    eval.evaluators
        .iter()
        .map(|e| match e.scorer.judge() {
            Some(judge) if judge.own_model() => self::api_key(judge.model(), &eval.spec_path),
            Some(_) => Ok(api_key.cloned()),
            None => Ok(None),
        })
        .collect()
}

/// `run-YYYYMMDD-HHMMSS`, with a suffix if that name is taken in `store`.
pub fn fresh_name(store: Option<&dyn Store>) -> Result<String, StoreError> {
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
