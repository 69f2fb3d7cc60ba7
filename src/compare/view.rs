//! What `dotevals compare A B` prints: per evaluation, how the samples
//! paired, and per evaluator B against A with its error bar, test and power;
//! the timing side by side. These types are the documented `--format json`
//! shape (README, "Comparing runs"; `compare` in the JSON Schema).

use serde::Serialize;

use super::{Flip, Paired, Pairing};
use crate::stats::{Comparison, TestName};
use crate::view::EvaluationView;

/// `dotevals compare A B --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct CompareView {
    /// The experiments compared: differences are B - A.
    pub a: String,
    pub b: String,
    pub evaluations: Vec<EvaluationComparison>,
}

/// One evaluation both experiments ran.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationComparison {
    pub name: String,
    /// The column A's spec clusters samples by (`dataset.cluster`), if any.
    pub cluster: Option<String>,
    pub samples: PairedSamples,
    pub evaluators: Vec<EvaluatorComparison>,
    /// Evaluators only one side has (not compared).
    pub not_compared: Vec<String>,
    pub timing: SideBySide,
}

/// How the samples paired: by id and dataset row.
#[derive(Debug, Clone, Serialize)]
pub struct PairedSamples {
    /// Samples recorded in A and in B.
    pub a: u64,
    pub b: u64,
    /// In both, with the same row: the ones compared.
    pub matched: u64,
    pub only_in_a: Unmatched,
    pub only_in_b: Unmatched,
    /// In both under one id but with different rows (an edited dataset).
    pub changed_rows: Unmatched,
}

/// Samples left out of the comparison: how many, and the first few ids.
#[derive(Debug, Clone, Serialize)]
pub struct Unmatched {
    pub count: u64,
    /// At most [`EXAMPLES`] ids, in id order.
    pub ids: Vec<String>,
}

/// A flipped sample's output in A and in B, by id (for `--flips`).
pub type Outputs<'a> = dyn Fn(&str) -> (Option<String>, Option<String>) + 'a;

/// Ids named per kind of unmatched sample.
pub const EXAMPLES: usize = 10;

/// One evaluator, B against A, on the samples both scored.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluatorComparison {
    pub name: String,
    /// `pass_fail` (every score 0 or 1) or `graded`.
    pub kind: Kind,
    /// Samples compared: matched and scored on both sides.
    pub n: u64,
    /// Matched samples one side or both could not score (not compared).
    pub unscored: u64,
    pub mean_a: Option<f64>,
    pub mean_b: Option<f64>,
    /// mean_b - mean_a.
    pub difference: Option<f64>,
    /// Paired standard error of the difference.
    pub stderr: Option<f64>,
    /// 95% interval of the difference, `[lo, hi]`.
    pub ci95: Option<[f64; 2]>,
    /// Two-sided p-value of "no difference".
    pub p_value: Option<f64>,
    /// `mcnemar_exact` (pass/fail), `paired_t` (graded), or
    /// `clustered_paired_t` (either, with `dataset.cluster`).
    pub test: TestName,
    /// The smallest true difference these samples detect with 80% power at
    /// a two-sided 5% level.
    pub min_detectable_difference: Option<f64>,
    /// With `dataset.cluster`: the groups the standard error is clustered over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<u64>,
    /// Samples that passed in A and failed in B, and the reverse.
    pub pass_to_fail: u64,
    pub fail_to_pass: u64,
    /// Only with `--flips`: every sample whose verdict changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flips: Option<Vec<FlipReport>>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    PassFail,
    Graded,
}

/// A sample whose verdict changed, with both outputs.
#[derive(Debug, Clone, Serialize)]
pub struct FlipReport {
    pub id: String,
    pub score_a: f64,
    pub score_b: f64,
    pub output_a: Option<String>,
    pub output_b: Option<String>,
}

/// Both runs' timing.
#[derive(Debug, Clone, Serialize)]
pub struct SideBySide {
    pub a: TimingSummary,
    pub b: TimingSummary,
}

/// The figures `show` reports that say what a run cost.
#[derive(Debug, Clone, Serialize)]
pub struct TimingSummary {
    pub wall_seconds: f64,
    pub throughput_per_second: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// Null unless replies streamed.
    pub time_to_first_token_p50_seconds: Option<f64>,
    pub output_tokens_per_second_p50: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

impl From<&EvaluationView> for TimingSummary {
    fn from(r: &EvaluationView) -> Self {
        let latency = r.timing.latency_seconds.as_ref();
        TimingSummary {
            wall_seconds: r.timing.wall_seconds,
            throughput_per_second: r.timing.throughput_per_second,
            latency_p50_seconds: latency.map(|l| l.p50),
            latency_p99_seconds: latency.map(|l| l.p99),
            time_to_first_token_p50_seconds: r
                .timing
                .time_to_first_token_seconds
                .as_ref()
                .map(|l| l.p50),
            output_tokens_per_second_p50: r.timing.output_tokens_per_second.map(|q| q.p50),
            prompt_tokens: r.tokens.prompt,
            completion_tokens: r.tokens.completion,
            cached_prompt_tokens: r.tokens.cached_prompt,
            cache_write_tokens: r.tokens.cache_write,
            reasoning_tokens: r.tokens.reasoning,
        }
    }
}

impl Unmatched {
    fn of(ids: &[String]) -> Self {
        Unmatched {
            count: ids.len() as u64,
            ids: ids.iter().take(EXAMPLES).cloned().collect(),
        }
    }
}

impl EvaluationComparison {
    /// The comparison of evaluation `name` from its pairing and both sides'
    /// reports; `outputs` gives a flipped sample's two outputs when `--flips`
    /// asked for them.
    pub fn new(
        name: &str,
        cluster: Option<&str>,
        pairing: &Pairing,
        reports: (&EvaluationView, &EvaluationView),
        recorded: (u64, u64),
        outputs: Option<&Outputs<'_>>,
    ) -> Self {
        let (a, b) = reports;
        let compared: Vec<&str> = pairing.evaluators.iter().map(|p| p.name.as_str()).collect();
        let not_compared = a
            .evaluators
            .iter()
            .chain(&b.evaluators)
            .map(|e| e.name.clone())
            .filter(|n| !compared.contains(&n.as_str()))
            .collect();
        EvaluationComparison {
            name: name.to_owned(),
            cluster: cluster.map(str::to_owned),
            samples: PairedSamples {
                a: recorded.0,
                b: recorded.1,
                matched: pairing.matched,
                only_in_a: Unmatched::of(&pairing.only_a),
                only_in_b: Unmatched::of(&pairing.only_b),
                changed_rows: Unmatched::of(&pairing.changed),
            },
            evaluators: pairing
                .evaluators
                .iter()
                .map(|p| EvaluatorComparison::new(p, outputs))
                .collect(),
            not_compared,
            timing: SideBySide {
                a: a.into(),
                b: b.into(),
            },
        }
    }
}

impl EvaluatorComparison {
    fn new(p: &Paired, outputs: Option<&Outputs<'_>>) -> Self {
        let Comparison {
            n,
            mean_a,
            mean_b,
            diff,
            stderr,
            ci95,
            p_value,
            test,
            mde,
        } = p.compare();
        EvaluatorComparison {
            name: p.name.clone(),
            kind: if p.binary {
                Kind::PassFail
            } else {
                Kind::Graded
            },
            n,
            unscored: p.unscored,
            mean_a,
            mean_b,
            difference: diff,
            stderr,
            ci95: ci95.map(|i| i.to_array()),
            p_value,
            test: test.into(),
            min_detectable_difference: mde,
            clusters: (!p.clusters.is_empty()).then_some(p.clusters.len() as u64),
            pass_to_fail: p.verdicts.a_only,
            fail_to_pass: p.verdicts.b_only,
            flips: outputs.map(|outputs| p.flips.iter().map(|f| flip(f, outputs)).collect()),
        }
    }
}

fn flip(f: &Flip, outputs: &Outputs<'_>) -> FlipReport {
    let (output_a, output_b) = outputs(&f.key);
    FlipReport {
        id: f.key.clone(),
        score_a: f.a,
        score_b: f.b,
        output_a,
        output_b,
    }
}
