//! Merging stores, for `dotevals merge`: the experiments of several stores
//! (the shards of one run, each run on its own machine into a store of its
//! own) copied into one, so that each merged evaluation shows what one run
//! over the whole dataset would have shown.
//!
//! Everything is checked before anything is written: an evaluation whose
//! spec differs between two stores (the target included), or that is being
//! run, is refused and the target left as it was. Records are then streamed
//! from each source in turn and committed in batches, whole. A sample found in
//! two stores is kept once: a finished record over an errored one, else the
//! one there first. Only an evaluation's sample keys are held in memory.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::concurrency::Totals;
use crate::store::writer::UnknownErrorKind;
use crate::store::{
    now, EvaluationMeta, EvaluationRow, EvaluationStatus, LockError, RecordSink, RunRow, RunTotals,
    SampleLookup, SampleRecord, SampleRow, Storage, Store, StoreError, StoredEvaluation,
    WriterConfig,
};

/// Records per committed batch.
const BATCH: usize = 1000;

/// Overlapping sample ids named per evaluation.
const EXAMPLES: usize = 3;

/// Why stores could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Refused as asked, before anything was written; `hint` says what to do.
    #[error("{message}")]
    Refused { message: String, hint: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Record(#[from] UnknownErrorKind),
}

/// What went into one evaluation of the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub experiment: String,
    pub evaluation: String,
    /// Records written (those replacing an errored record included).
    pub copied: u64,
    /// Sample ids found in more than one store (the target included), and
    /// the first few of them.
    pub overlaps: u64,
    pub overlap_examples: Vec<String>,
    pub total: u64,
    pub status: EvaluationStatus,
}

/// An open source store.
struct Source {
    location: String,
    store: Box<dyn Store>,
}

/// One source's copy of an evaluation.
struct Part {
    source: usize,
    row: EvaluationRow,
    stored: StoredEvaluation,
}

/// One evaluation to merge: its copies in the sources, in order, and the
/// target's, when it has one.
struct Planned {
    experiment: String,
    name: String,
    parts: Vec<Part>,
    target: Option<EvaluationRow>,
}

/// Where a sample id was found, and what was kept of it.
#[derive(Debug, Clone, Copy)]
enum Held {
    /// In the target before the merge; its state is read when it matters.
    Target,
    /// First in a source whose records are not copied yet.
    Unseen,
    /// Copied, or in the target and compared: whether that record finished.
    Kept { finished: bool },
}

/// Merges every experiment of `sources` (only `experiment`, when given) into
/// `target`, which is created when missing.
pub fn merge(
    sources: &[Box<dyn Storage>],
    target: &dyn Storage,
    experiment: Option<&str>,
) -> Result<Vec<Merged>, MergeError> {
    let sources = sources
        .iter()
        .map(|s| open_source(s.as_ref(), target))
        .collect::<Result<Vec<_>, _>>()?;
    let mut plan = gather(&sources, experiment)?;
    check_target(&mut plan, &sources, target)?;
    let mut store = target.open_or_create()?;
    let _locks = plan
        .iter()
        .map(|p| target.lock(&p.experiment, &p.name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            StoreError::Lock(busy @ LockError::Busy { .. }) => refused(
                format!("{busy} into {}", target.location()),
                "wait for that run to finish, then merge",
            ),
            other => other.into(),
        })?;
    plan.iter()
        .map(|p| copy(p, &sources, store.as_mut()))
        .collect()
}

fn refused(message: String, hint: impl Into<String>) -> MergeError {
    MergeError::Refused {
        message,
        hint: hint.into(),
    }
}

/// Opens a source for reading; one missing, or the target itself, is refused.
fn open_source(storage: &dyn Storage, target: &dyn Storage) -> Result<Source, MergeError> {
    let location = storage.location().to_owned();
    if same_place(&location, target.location()) {
        return Err(refused(
            format!("{location} is both a source and the target"),
            "merge into another store (--into PATH)",
        ));
    }
    match storage.open_read_only()? {
        Some(store) => Ok(Source { location, store }),
        None => Err(refused(
            format!("there is no dotevals store at {location}"),
            "name each store as the `--storage` of its run named it",
        )),
    }
}

/// Whether two locations are one store: the same text, or the same file.
fn same_place(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// The evaluations to merge, in the order the sources hold them (oldest
/// experiment first), each checked to come from one spec in every source.
fn gather(sources: &[Source], only: Option<&str>) -> Result<Vec<Planned>, MergeError> {
    let mut plan: Vec<Planned> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let store = source.store.as_ref();
        let names = match only {
            Some(name) => vec![name.to_owned()],
            None => store
                .experiments()?
                .into_iter()
                .rev()
                .map(|x| x.name)
                .collect(),
        };
        for name in names {
            let x = store.experiment(&name).map_err(|e| match e {
                StoreError::UnknownExperiment(_) => unknown_in(source, &name),
                other => other.into(),
            })?;
            for row in x.evaluations {
                if store.is_running(&name, &row.name) {
                    return Err(being_run(&name, &row.name, &source.location));
                }
                let Some(stored) = store.find_evaluation(&name, &row.name)? else {
                    continue;
                };
                let part = Part {
                    source: i,
                    row,
                    stored,
                };
                let known = plan
                    .iter_mut()
                    .find(|p| p.experiment == name && p.name == part.row.name);
                match known {
                    Some(p) => {
                        let first = &p.parts[0];
                        let first_at = &sources[first.source].location;
                        same_spec(p, &first.stored, first_at, &part.stored, &source.location)?;
                        p.parts.push(part);
                    }
                    None => plan.push(Planned {
                        experiment: name.clone(),
                        name: part.row.name.clone(),
                        parts: vec![part],
                        target: None,
                    }),
                }
            }
        }
    }
    if plan.is_empty() {
        return Err(refused(
            "the sources hold no evaluations: nothing to merge".into(),
            "`dotevals list --storage PATH` shows what a store holds",
        ));
    }
    Ok(plan)
}

/// Source `source` has no experiment `name`, as `--experiment` asked.
fn unknown_in(source: &Source, name: &str) -> MergeError {
    let known = source.store.experiment_names().unwrap_or_default();
    let hint = match crate::diagnostic::did_you_mean(name, known.iter().map(String::as_str)) {
        Some(m) => format!("did you mean `--experiment {m}`?"),
        None if known.is_empty() => "it holds no experiments".into(),
        None => format!("it holds: {}", known.join(", ")),
    };
    refused(
        format!("{} has no experiment named `{name}`", source.location),
        hint,
    )
}

fn being_run(experiment: &str, evaluation: &str, location: &str) -> MergeError {
    refused(
        format!(
            "evaluation `{evaluation}` of experiment `{experiment}` is being run right now in {location}"
        ),
        "wait for the run to finish, then merge (half a run cannot be merged)",
    )
}

/// Refuses `b` (stored in `b_at`) unless the spec that made it decides
/// results as `a`'s (in `a_at`) does: the rule a resume applies.
fn same_spec(
    p: &Planned,
    a: &StoredEvaluation,
    a_at: &str,
    b: &StoredEvaluation,
    b_at: &str,
) -> Result<(), MergeError> {
    if a.spec_hash == b.spec_hash {
        return Ok(());
    }
    let identity =
        |e: &StoredEvaluation| -> Value { serde_json::from_str(&e.identity).unwrap_or_default() };
    let (a, b) = (identity(a), identity(b));
    // Either may have been stored under older rules of what counts.
    if crate::spec::same_results(&a, &b) || crate::spec::same_results(&b, &a) {
        return Ok(());
    }
    let changed = crate::spec::changed_parts(&a, &b).join(", ");
    Err(refused(
        format!(
            "experiment `{}` holds evaluation `{}` from a different spec in {b_at} than in {a_at} (changed: {changed})",
            p.experiment, p.name
        ),
        "only runs of one spec can be merged (the shards of one run): merge the others into another store, or rename the experiment in one store first (`dotevals rename`)",
    ))
}

/// Checks the plan against what the target already holds (nothing, when it
/// does not exist yet), reading it only.
fn check_target(
    plan: &mut [Planned],
    sources: &[Source],
    target: &dyn Storage,
) -> Result<(), MergeError> {
    let Some(store) = target.open_read_only()? else {
        return Ok(());
    };
    for p in plan.iter_mut() {
        let Some(stored) = store.find_evaluation(&p.experiment, &p.name)? else {
            continue;
        };
        let first = &p.parts[0];
        let first_at = &sources[first.source].location;
        same_spec(p, &first.stored, first_at, &stored, target.location())?;
        if store.is_running(&p.experiment, &p.name) {
            return Err(being_run(&p.experiment, &p.name, target.location()));
        }
        let x = store.experiment(&p.experiment)?;
        p.target = x.evaluations.into_iter().find(|e| e.name == p.name);
    }
    Ok(())
}

/// Merges one evaluation into the target; it is marked failed if the copy
/// stops half way.
fn copy(p: &Planned, sources: &[Source], target: &mut dyn Store) -> Result<Merged, MergeError> {
    let Seen {
        held,
        overlaps,
        examples: overlap_examples,
    } = overlaps(p, sources, target)?;
    let before = p.target.as_ref().map_or(0, |t| t.total);
    let total = p.parts.iter().map(|x| x.row.total).sum::<u64>() + before;
    // A total is never lowered (as a run never lowers it).
    let total = total.saturating_sub(overlaps).max(before);
    let first = &p.parts[0];
    let repeats = p.parts.iter().map(|x| x.stored.repeats);
    let repeats = repeats.chain(p.target.as_ref().map(|t| t.repeats)).max();
    let meta = EvaluationMeta {
        name: &p.name,
        spec_path: &first.row.spec_path,
        spec_text: &first.row.spec_text,
        spec_hash: &first.stored.spec_hash,
        identity: &first.stored.identity,
        provider: &first.row.provider,
        model: &first.row.model,
        evaluators: &first.row.evaluators,
        strategy: &first.row.strategy,
        max_concurrency: first.row.max_concurrency as usize,
        total,
        cluster: first.row.cluster.as_deref(),
        fail_under: &first.row.fail_under,
        repeats: repeats.unwrap_or(1),
    };
    let started = target.start_evaluation(&p.experiment, &meta, &now())?;
    let filled = fill(p, sources, target, held, started.id, started.run);
    let (copied, status) = match filled {
        Ok(copied) => {
            let counts = target.counts(started.id)?;
            let status = if counts.recorded < total {
                EvaluationStatus::Interrupted
            } else if counts.errored > 0 {
                EvaluationStatus::CompletedWithErrors
            } else {
                EvaluationStatus::Completed
            };
            (copied, status)
        }
        Err(e) => {
            let _ = target.finish_evaluation(started.id, EvaluationStatus::Failed, &now());
            return Err(e);
        }
    };
    target.finish_evaluation(started.id, status, &now())?;
    Ok(Merged {
        experiment: p.experiment.clone(),
        evaluation: p.name.clone(),
        copied,
        overlaps,
        overlap_examples,
        total,
        status,
    })
}

/// Where each sample id of an evaluation was first found, and the ids found again.
struct Seen {
    held: HashMap<String, Held>,
    overlaps: u64,
    /// The first few of those ids.
    examples: Vec<String>,
}

/// [`Seen`] for `p`, from the keys of its stores alone.
fn overlaps(p: &Planned, sources: &[Source], target: &dyn Store) -> Result<Seen, StoreError> {
    let mut held = HashMap::new();
    if let Some(t) = &p.target {
        for key in target.lookup(t.id)?.keys()? {
            held.insert(key, Held::Target);
        }
    }
    let (mut overlaps, mut examples) = (0, Vec::new());
    for part in &p.parts {
        let lookup = sources[part.source].store.lookup(part.row.id)?;
        for key in lookup.keys()? {
            match held.entry(key) {
                Entry::Vacant(first) => {
                    first.insert(Held::Unseen);
                }
                Entry::Occupied(again) => {
                    overlaps += 1;
                    if examples.len() < EXAMPLES && !examples.contains(again.key()) {
                        examples.push(again.key().clone());
                    }
                }
            }
        }
    }
    Ok(Seen {
        held,
        overlaps,
        examples,
    })
}

/// Copies each source's records and, when some were kept, its runs
/// (numbered after the target's) into evaluation `id`, whose merge took run
/// number `run`; answers the records written. Wall time is the longest
/// store's: shards run side by side.
fn fill(
    p: &Planned,
    sources: &[Source],
    target: &mut dyn Store,
    mut held: HashMap<String, Held>,
    id: i64,
    run: i64,
) -> Result<u64, MergeError> {
    let target_lookup = match &p.target {
        Some(t) => Some(target.lookup(t.id)?),
        None => None,
    };
    let walls = p.parts.iter().map(|x| x.row.wall_us);
    let wall_us = walls.chain(p.target.as_ref().map(|t| t.wall_us)).max();
    let wall_us = wall_us.unwrap_or(0);
    // The number the next copied run takes.
    let mut next = run;
    let mut copied = 0;
    for part in &p.parts {
        let source = sources[part.source].store.as_ref();
        let runs = source.runs(part.row.id)?;
        // A source's records belong to its latest run.
        let config = WriterConfig {
            evaluation_id: id,
            run: (next + runs.len() as i64 - 1).max(1),
            resuming: false,
            fleet: None,
            base_wall_us: wall_us,
            started: Instant::now(),
        };
        let mut sink = target.sink(config)?;
        let kept = copy_records(
            source,
            &part.row,
            sink.as_mut(),
            &mut held,
            target_lookup.as_deref(),
        )?;
        copied += kept;
        // A store none of whose records was kept (merged before) adds no runs.
        if kept == 0 {
            continue;
        }
        for r in runs {
            let steps = source.limit_steps(part.row.id, r.run)?;
            let history: Vec<(Duration, usize)> = steps
                .iter()
                .map(|s| (Duration::from_micros(s.t_us), s.limit as usize))
                .collect();
            target.record_run(id, next, &run_totals(&r))?;
            target.record_limits(id, next, &history)?;
            next += 1;
        }
    }
    target.set_runs(id, (next - 1).max(1) as u64)?;
    target.record_wall(id, wall_us)?;
    Ok(copied)
}

/// A run as recorded, to record again.
fn run_totals(r: &RunRow) -> RunTotals {
    let us = Duration::from_micros;
    RunTotals {
        strategy: r.strategy.clone(),
        wall: us(r.wall_us),
        limiter: Totals {
            held: us(r.held_us),
            at_server: us(r.at_server_us),
            blocked: us(r.blocked_us),
            samples: r.samples,
            attempts: r.attempts,
            throttled: r.throttled,
            unloaded: r.unloaded,
            unloaded_sum: us(r.unloaded_us),
            ..Totals::default()
        },
        endpoints: r.endpoints.clone(),
    }
}

/// Streams the records of evaluation `e` of `source` into `sink`, in
/// batches, each kept or not by what `held` says of its id; answers how
/// many were written.
fn copy_records(
    source: &dyn Store,
    e: &EvaluationRow,
    sink: &mut dyn RecordSink,
    held: &mut HashMap<String, Held>,
    target: Option<&dyn SampleLookup>,
) -> Result<u64, MergeError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut copied = 0;
    let mut step = |row: SampleRow| -> Result<(), MergeError> {
        let finished = row.error_kind.is_none();
        let there = match held.get(&row.key) {
            None | Some(Held::Unseen) => None,
            Some(Held::Kept { finished }) => Some(*finished),
            Some(Held::Target) => target
                .map(|t| t.get(&row.key))
                .transpose()?
                .flatten()
                .map(|s| s.finished),
        };
        // A finished record wins over an errored one; else the one there first.
        let replaces = match there {
            None => false,
            Some(there) if finished && !there => true,
            Some(there) => {
                held.insert(row.key, Held::Kept { finished: there });
                return Ok(());
            }
        };
        held.insert(row.key.clone(), Held::Kept { finished });
        let record = SampleRecord::try_from(row)?;
        batch.push(SampleRecord { replaces, ..record });
        copied += 1;
        if batch.len() >= BATCH {
            sink.commit(&batch)?;
            batch.clear();
        }
        Ok(())
    };
    let mut failed = None;
    source.for_each_sample(e.id, e.evaluators.len(), &mut |row| match step(row) {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => {
            failed = Some(err);
            ControlFlow::Break(())
        }
    })?;
    if let Some(err) = failed {
        return Err(err);
    }
    if !batch.is_empty() {
        sink.commit(&batch)?;
    }
    Ok(copied)
}
