//! The comparison of two experiments, read from the store: evaluations
//! matched by name, samples paired by id and row, each side's view beside.

use super::view::{CompareView, EvaluationComparison, Outputs};
use super::{collapse_repeats, pair};
use crate::store::read::EvaluationRow;
use crate::store::{ExperimentRow, SampleLookup, SampleScores, Storage, Store};
use crate::view::{self, ViewError};

/// Two experiments that hold no evaluation of one name (or not the one
/// asked for): nothing to pair.
#[derive(Debug, thiserror::Error)]
#[error("{}", match eval {
    Some(only) => format!("`{a}` and `{b}` do not both hold evaluation `{only}`"),
    None => format!("`{a}` and `{b}` share no evaluation"),
})]
pub struct NothingInCommon {
    pub a: String,
    pub b: String,
    pub eval: Option<String>,
    /// The evaluations each side holds.
    pub held: (Vec<String>, Vec<String>),
}

impl NothingInCommon {
    /// What each side holds, to say how evaluations are matched.
    pub fn hint(&self) -> String {
        let list = |names: &[String]| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "evaluations are matched by name: `{}` holds {}; `{}` holds {}",
            self.a,
            list(&self.held.0),
            self.b,
            list(&self.held.1)
        )
    }
}

/// The rows of experiments `a` and `b`.
pub fn rows(
    store: &dyn Store,
    a: &str,
    b: &str,
) -> Result<(ExperimentRow, ExperimentRow), ViewError> {
    Ok((
        view::experiment_row(store, a)?,
        view::experiment_row(store, b)?,
    ))
}

/// B against A over the evaluations both hold (only `eval` when given);
/// `flips` adds both outputs of every sample whose verdict changed.
/// `storage` opens a second connection, so that B's samples are read while
/// A's are.
pub fn load(
    storage: &dyn Storage,
    store: &dyn Store,
    (a, b): (&ExperimentRow, &ExperimentRow),
    eval: Option<&str>,
    flips: bool,
) -> Result<Result<CompareView, NothingInCommon>, ViewError> {
    let names = |x: &ExperimentRow| -> Vec<String> {
        x.evaluations.iter().map(|e| e.name.clone()).collect()
    };
    let shared: Vec<String> = names(a)
        .into_iter()
        .filter(|n| b.evaluations.iter().any(|e| &e.name == n))
        .filter(|n| eval.is_none_or(|only| only == n))
        .collect();
    if shared.is_empty() {
        return Ok(Err(NothingInCommon {
            a: a.name.clone(),
            b: b.name.clone(),
            eval: eval.map(str::to_owned),
            held: (names(a), names(b)),
        }));
    }
    let mut evaluations = Vec::with_capacity(shared.len());
    for name in &shared {
        let (Some(ea), Some(eb)) = (
            a.evaluations.iter().find(|e| &e.name == name),
            b.evaluations.iter().find(|e| &e.name == name),
        ) else {
            continue;
        };
        evaluations.push(evaluation(storage, store, (ea, eb), &b.name, flips)?);
    }
    Ok(Ok(CompareView {
        a: a.name.clone(),
        b: b.name.clone(),
        evaluations,
    }))
}

/// One evaluation both experiments hold, compared.
fn evaluation(
    storage: &dyn Storage,
    store: &dyn Store,
    (ea, eb): (&EvaluationRow, &EvaluationRow),
    b_name: &str,
    flips: bool,
) -> Result<EvaluationComparison, ViewError> {
    // Clustered by A's cluster column, when its spec set one. B is read on
    // a second connection at the same time: each side is 100k rows on a big
    // experiment, and this halves the wait.
    let cluster = ea.cluster.as_deref();
    let (scores_a, scores_b) = std::thread::scope(|scope| {
        let b_side = scope.spawn(|| -> Result<_, ViewError> {
            match storage.open_read_only()? {
                Some(store) => by_sample(store.as_ref(), eb, None),
                None => Err(ViewError::UnknownExperiment {
                    name: b_name.to_owned(),
                    known: Vec::new(),
                }),
            }
        });
        let a_side = by_sample(store, ea, cluster);
        let b_side = b_side
            .join()
            .unwrap_or_else(|_| Err(ViewError::Failed("reading B's samples failed".into())));
        Ok::<_, ViewError>((a_side?, b_side?))
    })?;
    let pairing = pair(&scores_a, &ea.evaluators, &scores_b, &eb.evaluators);
    let side = |e: &EvaluationRow| -> Result<_, ViewError> {
        let mut view = view::evaluation(e, &store.latencies(e.id)?, &store.runs(e.id)?)?;
        view::streamed_timing(&mut view.timing, &store.streamed(e.id)?);
        Ok(view)
    };
    let (ra, rb) = (side(ea)?, side(eb)?);
    let lookups = if flips {
        Some((store.lookup(ea.id)?, store.lookup(eb.id)?))
    } else {
        None
    };
    let outputs = lookups.as_ref().map(|(la, lb)| {
        move |key: &str| {
            let output = |l: &dyn SampleLookup| l.call(key).ok().flatten().and_then(|c| c.output);
            (output(la.as_ref()), output(lb.as_ref()))
        }
    });
    Ok(EvaluationComparison::new(
        &ea.name,
        cluster,
        &pairing,
        (&ra, &rb),
        (scores_a.len() as u64, scores_b.len() as u64),
        outputs.as_ref().map(|f| f as &Outputs<'_>),
    ))
}

/// The scores of evaluation `e`, one entry per sample id ordered by id:
/// samples sent several times (`repeats`) pair by id, one mean each.
fn by_sample(
    store: &dyn Store,
    e: &EvaluationRow,
    cluster: Option<&str>,
) -> Result<Vec<SampleScores>, ViewError> {
    let scores = store.sample_scores(e.id, e.evaluators.len(), cluster)?;
    Ok(match e.repeats {
        1 => scores,
        _ => collapse_repeats(&scores),
    })
}
