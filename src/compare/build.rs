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
    Some(only) if a == b => format!("`{a}` holds no evaluation `{only}`"),
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
        if self.a == self.b {
            return format!(
                "it holds {} (a cell of a matrix may be named by its labels alone)",
                list(&self.held.0)
            );
        }
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

/// Which evaluations `compare` pairs.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// Every evaluation both experiments hold, matched by name.
    Shared,
    /// Only this one, which both hold.
    One(&'a str),
    /// A's first against B's second (two cells of one matrix experiment).
    Pair(&'a str, &'a str),
}

/// The evaluation of `x` named `name`, or the cell of a matrix whose labels
/// are `name` (`gpt-4o/terse` for `qa/gpt-4o/terse`).
fn find<'x>(x: &'x ExperimentRow, name: &str) -> Option<&'x EvaluationRow> {
    x.evaluations.iter().find(|e| e.name == name).or_else(|| {
        x.evaluations
            .iter()
            .find(|e| e.name.split_once('/').is_some_and(|(_, cell)| cell == name))
    })
}

/// B against A over the evaluations `pick` names; `flips` adds both outputs
/// of every sample whose verdict changed. `storage` opens a second
/// connection, so that B's samples are read while A's are.
pub fn load(
    storage: &dyn Storage,
    store: &dyn Store,
    (a, b): (&ExperimentRow, &ExperimentRow),
    pick: Pick<'_>,
    flips: bool,
) -> Result<Result<CompareView, NothingInCommon>, ViewError> {
    let names = |x: &ExperimentRow| -> Vec<String> {
        x.evaluations.iter().map(|e| e.name.clone()).collect()
    };
    let nothing = |eval: Option<&str>| NothingInCommon {
        a: a.name.clone(),
        b: b.name.clone(),
        eval: eval.map(str::to_owned),
        held: (names(a), names(b)),
    };
    let pairs: Vec<(&EvaluationRow, &EvaluationRow)> = match pick {
        Pick::Shared => a
            .evaluations
            .iter()
            .filter_map(|ea| Some((ea, b.evaluations.iter().find(|eb| eb.name == ea.name)?)))
            .collect(),
        Pick::One(name) => match (find(a, name), find(b, name)) {
            (Some(ea), Some(eb)) => vec![(ea, eb)],
            _ => Vec::new(),
        },
        Pick::Pair(first, second) => match (find(a, first), find(b, second)) {
            (Some(ea), Some(eb)) => vec![(ea, eb)],
            (None, _) => return Ok(Err(nothing(Some(first)))),
            (_, None) => return Ok(Err(nothing(Some(second)))),
        },
    };
    if pairs.is_empty() {
        let eval = match pick {
            Pick::One(name) => Some(name),
            _ => None,
        };
        return Ok(Err(nothing(eval)));
    }
    let mut evaluations = Vec::with_capacity(pairs.len());
    for (ea, eb) in &pairs {
        let mut compared = evaluation(storage, store, (ea, eb), &b.name, flips)?;
        if ea.name != eb.name {
            compared.name = format!("{} → {}", ea.name, eb.name);
        }
        evaluations.push(compared);
    }
    // Two evaluations of one experiment are named by themselves.
    let (side_a, side_b) = match (pick, pairs.as_slice()) {
        (Pick::Pair(..), [(ea, eb)]) if a.name == b.name => (ea.name.clone(), eb.name.clone()),
        (Pick::Pair(..), [(ea, eb)]) => (
            format!("{} {}", a.name, ea.name),
            format!("{} {}", b.name, eb.name),
        ),
        _ => (a.name.clone(), b.name.clone()),
    };
    Ok(Ok(CompareView {
        a: side_a,
        b: side_b,
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
pub fn by_sample(
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
