//! Reports: what `show`, `list` and `run` print, as serde view structs.
//!
//! These types *are* the documented `--format json` shape (README, "JSON
//! output"; committed as `schema/dotevals.schema.json`); they are built from store rows here, so renaming a column never
//! changes what scripts see. Percentiles come from an HDR histogram.

use serde::Serialize;

use crate::concurrency::{StrategyName, UnknownStrategy};
use crate::stats;
use crate::store::read::{
    EvaluationRow, ExperimentRow, JudgeTotal, LimitStep, RunRow, SampleRow, ScoreTotal,
};
use crate::store::writer::ScoreRecord;
use crate::store::EvaluationStatus;

/// `dotevals show NAME --format json` (and `run --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentReport {
    /// Experiment name.
    pub experiment: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    pub status: ExperimentStatus,
    pub evaluations: Vec<EvaluationReport>,
}

/// One evaluation of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    pub name: String,
    /// The spec file it was run from.
    pub spec: String,
    /// `mock` or `openai`.
    pub provider: String,
    /// The model name sent in requests.
    pub model: String,
    /// The `--set KEY=VALUE` arguments the latest run applied to the spec, in order.
    pub overrides: Vec<String>,
    /// Strategy of the latest run.
    pub strategy: StrategyName,
    pub max_concurrency: u64,
    pub status: EvaluationStatus,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Invocations that ran this evaluation (resumes add one each).
    pub runs: u64,
    /// Times each sample was sent (`repeats`, the latest run's); `samples`
    /// counts every repeat.
    pub repeats: u32,
    pub samples: SampleCounts,
    pub evaluators: Vec<EvaluatorReport>,
    pub timing: Timing,
    pub tokens: Tokens,
    /// Errors grouped by kind with a count and an example each; only with `--errors` or `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kinds: Option<Vec<ErrorKindReport>>,
    /// Errored samples; only with `--errors` or `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorReport>>,
    /// Every sample record; only with `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordReport>>,
}

/// Sample counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SampleCounts {
    /// Rows in the dataset (after `limit` / `--samples`).
    pub total: u64,
    /// Samples with a record, finished or errored.
    pub recorded: u64,
    /// Samples with an output and no error.
    pub finished: u64,
    /// Samples recorded with an error (retried on the next run).
    pub errored: u64,
}

/// One evaluator's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvaluatorReport {
    pub name: String,
    /// Samples it scored.
    pub scored: u64,
    /// Samples that passed: scored at least the evaluator's threshold.
    pub passed: u64,
    /// passed / scored; null when nothing was scored. Kept for scripts: equal
    /// to `pass_rate`.
    pub accuracy: Option<f64>,
    /// Mean score of the scored samples, in [0, 1]; null when nothing was scored.
    pub mean: Option<f64>,
    /// passed / scored; null when nothing was scored.
    pub pass_rate: Option<f64>,
    /// Standard error of `mean`; null with fewer than 2 scored samples (or,
    /// clustered, fewer than 2 clusters).
    pub stderr: Option<f64>,
    /// 95% interval of `mean` as `[lo, hi]`, clipped to [0, 1]; null when
    /// there is none (see `interval`).
    pub ci95: Option<[f64; 2]>,
    /// How `ci95` was made: `wilson` (scores all 0 or 1: a pass rate),
    /// `t` (graded scores), or `clustered_t` (`dataset.cluster` set).
    pub interval: IntervalMethod,
    /// With `dataset.cluster`: the clusters the standard error is clustered over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<u64>,
    /// With `repeats` above 1: the mean over samples of the variance of their
    /// repeats' scores (`stderr` and `ci95` are then those of the per-sample
    /// means); null with one repeat.
    pub within_sample_variance: Option<f64>,
    /// Samples it could not score (a judge without a score, a scorer that
    /// failed): counted apart, excluded from `mean` and `pass_rate`.
    pub unscored: u64,
    /// For an `llm_judge`: its calls, apart from the model's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeReport>,
    /// The CI gate's bar (`fail_under`), when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_under: Option<f64>,
    /// With a bar: whether the mean is below it (or nothing was scored),
    /// which makes `run` and `show` exit 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below_fail_under: Option<bool>,
}

/// A judge's calls over an evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JudgeReport {
    pub calls: u64,
    /// Calls that gave no score: the request failed, or the reply held none.
    pub failed: u64,
    pub retries: u64,
    /// Answers that said slow down (HTTP 429 or 503).
    pub throttled: u64,
    /// Time calls waited on backoff, server-ordered pauses and its rate limit, summed.
    pub wait_seconds: f64,
    /// Time calls queued for the judge's own window (`max_concurrency`)
    /// before they were sent, summed: not a wait on its endpoint.
    pub queue_seconds: f64,
    /// Latency of the calls that got a reply; null when none did.
    pub latency_seconds: Option<Latency>,
    pub tokens: Tokens,
}

impl JudgeReport {
    pub fn new(t: &JudgeTotal) -> Self {
        JudgeReport {
            calls: t.calls,
            failed: t.failed,
            retries: t.retries,
            throttled: t.throttled,
            wait_seconds: t.wait_us as f64 / US,
            queue_seconds: t.queue_us as f64 / US,
            latency_seconds: percentiles(&t.latencies_us),
            tokens: Tokens {
                prompt: t.prompt_tokens,
                completion: t.completion_tokens,
            },
        }
    }
}

/// How an evaluator's interval was made.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    Wilson,
    T,
    ClusteredT,
}

impl From<stats::Method> for IntervalMethod {
    fn from(m: stats::Method) -> Self {
        match m {
            stats::Method::Wilson => IntervalMethod::Wilson,
            stats::Method::T => IntervalMethod::T,
            stats::Method::ClusteredT => IntervalMethod::ClusteredT,
        }
    }
}

/// The error bars of scores with these totals: Wilson on a pass rate when
/// every score is 0 or 1 (then x² = x, so the sums agree), else a t interval.
fn error_bars(s: &ScoreTotal) -> stats::Summary {
    let binary = (s.sum - s.sum_sq).abs() <= 1e-9 * s.scored.max(1) as f64;
    if binary {
        stats::Summary::pass_fail(s.sum.round() as u64, s.scored)
    } else {
        stats::Summary::graded(&stats::Sums {
            n: s.scored,
            sum: s.sum,
            sum_sq: s.sum_sq,
        })
    }
}

impl EvaluatorReport {
    /// An evaluator's figures from its stored totals.
    pub fn new(name: &str, s: &ScoreTotal) -> Self {
        let pass_rate = ratio(s.passed as f64, s.scored as f64);
        let bars = error_bars(s);
        EvaluatorReport {
            name: name.to_owned(),
            scored: s.scored,
            passed: s.passed,
            accuracy: pass_rate,
            mean: ratio(s.sum, s.scored as f64),
            pass_rate,
            stderr: bars.stderr,
            ci95: bars.ci95.map(stats::Interval::to_array),
            interval: bars.method.into(),
            clusters: None,
            within_sample_variance: None,
            unscored: s.unscored,
            judge: None,
            fail_under: None,
            below_fail_under: None,
        }
    }

    /// The same, with its standard error clustered as `clustered` says.
    pub fn clustered(mut self, clustered: &stats::Clustered) -> Self {
        let bars = stats::Summary::clustered(clustered);
        self.stderr = bars.stderr;
        self.ci95 = bars.ci95.map(stats::Interval::to_array);
        self.interval = bars.method.into();
        self.clusters = Some(clustered.clusters());
        self
    }

    /// The same for samples sent several times (`repeats`): the error bars
    /// of the per-sample means (see [`crate::repeats::bars`]).
    pub fn repeated(mut self, bars: &crate::repeats::RepeatBars) -> Self {
        self.stderr = bars.stderr;
        self.ci95 = bars.ci95;
        self.interval = bars.method.into();
        self.clusters = bars.clusters;
        self.within_sample_variance = bars.within_sample_variance;
        self
    }

    /// The same, held to the CI gate's `bar` when there is one: a mean below
    /// it, or no mean at all, fails.
    pub fn with_bar(mut self, bar: Option<f64>) -> Self {
        self.fail_under = bar;
        self.below_fail_under = bar.map(|bar| self.mean.is_none_or(|m| m < bar));
        self
    }
}

/// Timing of an evaluation, summed over its runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timing {
    /// Wall-clock time of the runs.
    pub wall_seconds: f64,
    /// Recorded samples per wall second.
    pub throughput_per_second: Option<f64>,
    /// Latency of successful requests (send to full body).
    pub latency_seconds: Option<Latency>,
    /// Sum of successful latencies / wall time: successful requests at the
    /// server on average. Kept for scripts; `mean_in_flight` and
    /// `mean_at_server` count failed attempts and waits too.
    pub effective_concurrency: Option<f64>,
    /// Slots held on average: requests at the server, and samples waiting
    /// to try again or on the client's rate limit (slot time / wall time).
    pub mean_in_flight: Option<f64>,
    /// Requests at the server on average, failed attempts included.
    pub mean_at_server: Option<f64>,
    /// Mean latency of the replies that had the server to themselves (at
    /// least 3 of them: a sequential run, or adaptive's probes at 1); null
    /// when there were too few to say.
    pub unloaded_latency_seconds: Option<f64>,
    /// Finished samples x unloaded latency / wall time: how many times faster
    /// than sending one at a time to an idle server. Null without an unloaded
    /// latency (a fixed window never measures one), and when the run was
    /// blocked for more than half its wall time (it waited on a quota, and
    /// says nothing of what concurrency buys).
    pub speedup_over_sequential: Option<f64>,
    /// Attempts beyond each sample's first, over every run.
    pub retries: u64,
    /// Answers that said slow down (HTTP 429 or 503), over every run.
    pub throttled: u64,
    /// Every sample's time waiting on backoff, pauses and rate limits, summed
    /// over samples (so it can exceed the wall time). Kept for scripts; see
    /// `blocked_seconds`.
    pub wait_seconds: f64,
    /// Wall-clock time during which samples held slots but none was at the
    /// server: every one waiting on backoff, a server's pause or the rate limit.
    pub blocked_seconds: f64,
    /// How the concurrency limit moved in the latest run; null for fixed strategies.
    pub concurrency_limit: Option<LimitReport>,
    /// Each run, oldest first (a resumed evaluation has several).
    pub runs: Vec<RunReport>,
}

/// One run of an evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub run: u64,
    pub strategy: StrategyName,
    pub wall_seconds: f64,
    /// Samples that sent a request in this run.
    pub samples: u64,
    pub retries: u64,
    pub throttled: u64,
    pub blocked_seconds: f64,
    pub mean_in_flight: Option<f64>,
    /// For `adaptive`: the limit's time-weighted `{min, median, max}` in this run.
    pub limit: Option<LimitSummary>,
}

/// The concurrency limit over one run, time-weighted.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LimitSummary {
    pub min: u64,
    /// The limit in force for half of the run's time.
    pub median: u64,
    pub max: u64,
}

/// The concurrency limit over a run (time-weighted), with sparklines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitReport {
    pub min: u64,
    /// The limit in force for half of the run's time.
    pub median: u64,
    pub max: u64,
    /// Times the limit changed.
    pub changes: u64,
    /// The limit over the run, one character per slice of time.
    pub limit_sparkline: String,
    /// Samples finished per second over the same slices.
    pub throughput_sparkline: String,
}

/// Latency distribution in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Tokens reported by the server's `usage`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

/// Errored samples of one kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorKindReport {
    /// See [`ErrorReport::kind`].
    pub kind: String,
    pub count: u64,
    /// Id of the first such sample.
    pub example_id: String,
    /// Its error message.
    pub example: String,
}

/// An errored sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorReport {
    /// Sample id (dataset `id` column, else the row index).
    pub id: String,
    pub index: u64,
    /// `timeout`, `connection`, `http_<status>`, `api_error`, `malformed`, `template`, `evaluator` or `judge`.
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}

/// A full sample record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordReport {
    pub id: String,
    pub index: u64,
    /// The dataset row.
    pub variables: serde_json::Value,
    /// The rendered prompt (a list of messages when the spec uses `messages`).
    pub prompt: serde_json::Value,
    pub output: Option<String>,
    /// Evaluator name to score in [0, 1] (null: not scored).
    pub scores: serde_json::Map<String, serde_json::Value>,
    /// Evaluator name to whether the sample passed it (null: not scored).
    pub passed: serde_json::Map<String, serde_json::Value>,
    /// Evaluator name to the reason it gave; only evaluators that gave one,
    /// and left out when none did.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub reasons: serde_json::Map<String, serde_json::Value>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    pub latency_seconds: Option<f64>,
    /// Offsets from the start of the run that recorded it.
    pub start_seconds: f64,
    pub end_seconds: f64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Evaluator name to the call its judge made for this sample; left out
    /// when no judge was called.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub judges: std::collections::BTreeMap<String, JudgeCallReport>,
}

/// One judge call, in a record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JudgeCallReport {
    /// The messages sent to the judge.
    pub prompt: serde_json::Value,
    /// The judge's raw reply; null when none came.
    pub reply: Option<String>,
    /// The score read from the reply and its reason (null: none).
    pub score: Option<f64>,
    pub reason: Option<String>,
    /// Why the call gave no score.
    pub error: Option<String>,
    pub attempts: u32,
    pub throttled: u32,
    /// Backoff, server-ordered pauses and the rate limit.
    pub wait_seconds: f64,
    /// Queued for the judge's own window before it was sent.
    pub queue_seconds: f64,
    pub latency_seconds: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// `dotevals list --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub experiments: Vec<ExperimentSummary>,
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSummary {
    pub name: String,
    pub created_at: String,
    pub status: ExperimentStatus,
    /// Number of evaluations.
    pub evaluations: u64,
    pub samples: SampleCounts,
    /// Every evaluator's passes pooled: passed / scored over all evaluators.
    pub accuracy: Option<f64>,
    /// Wilson 95% interval of the pooled `accuracy` when its verdicts are
    /// independent: one evaluator per evaluation and no repeats, so each
    /// verdict is a sample of its own. Null otherwise (several verdicts on
    /// one sample are not independent draws: `show` gives each evaluator's
    /// interval) and when nothing was scored.
    pub accuracy_ci95: Option<[f64; 2]>,
    /// Verdicts pooled: scored samples summed over evaluators.
    pub scored: u64,
    /// Wall time of all evaluations.
    pub wall_seconds: f64,
}

const US: f64 = 1e6;

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// How an experiment stands: its most pressing evaluation status, or `partial`
/// when every evaluation ended but some have samples not run yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    Running,
    Failed,
    Interrupted,
    CompletedWithErrors,
    Partial,
    Completed,
}

impl std::fmt::Display for ExperimentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExperimentStatus::Running => "running",
            ExperimentStatus::Failed => "failed",
            ExperimentStatus::Interrupted => "interrupted",
            ExperimentStatus::CompletedWithErrors => "completed_with_errors",
            ExperimentStatus::Partial => "partial",
            ExperimentStatus::Completed => "completed",
        })
    }
}

/// The status of an experiment from its evaluations'.
pub fn experiment_status(evals: &[EvaluationRow]) -> ExperimentStatus {
    use EvaluationStatus as E;
    let pressing = [
        (E::Running, ExperimentStatus::Running),
        (E::Failed, ExperimentStatus::Failed),
        (E::Interrupted, ExperimentStatus::Interrupted),
        (
            E::CompletedWithErrors,
            ExperimentStatus::CompletedWithErrors,
        ),
    ];
    for (evaluation, experiment) in pressing {
        if evals.iter().any(|e| e.status == evaluation) {
            return experiment;
        }
    }
    if evals.iter().any(|e| e.recorded < e.total) {
        return ExperimentStatus::Partial;
    }
    ExperimentStatus::Completed
}

fn counts(e: &EvaluationRow) -> SampleCounts {
    SampleCounts {
        total: e.total,
        recorded: e.recorded,
        finished: e.recorded - e.errored,
        errored: e.errored,
    }
}

/// Replies alone at the server needed before their mean is shown as the
/// unloaded latency.
const MIN_UNLOADED: u64 = 3;

/// A run blocked (nothing at the server) for more than half its wall time
/// waited on a quota: its speed-up says nothing of concurrency.
fn mostly_blocked(blocked: f64, wall: f64) -> bool {
    blocked > 0.5 * wall
}

/// Builds an evaluation's report; `latencies` are successful latencies in µs,
/// ascending; `runs` its recorded runs (none for stores before schema 3, or a
/// run killed before it could write its row).
pub fn evaluation(
    e: &EvaluationRow,
    latencies: &[u64],
    runs: &[RunRow],
) -> Result<EvaluationReport, UnknownStrategy> {
    let wall = e.wall_us as f64 / US;
    let sum = |f: fn(&RunRow) -> u64| runs.iter().map(f).sum::<u64>();
    // Figures from the runs' own rows are over the walls of those runs only.
    let runs_wall = sum(|r| r.wall_us) as f64 / US;
    let mean_over_runs = |us: u64| {
        (!runs.is_empty())
            .then(|| ratio(us as f64 / US, runs_wall))
            .flatten()
    };
    let unloaded = (sum(|r| r.unloaded) >= MIN_UNLOADED)
        .then(|| sum(|r| r.unloaded_us) as f64 / US / sum(|r| r.unloaded) as f64);
    let finished = e.recorded - e.errored;
    let blocked = sum(|r| r.blocked_us) as f64 / US;
    let (retries, throttled) = if runs.is_empty() {
        (e.retries, e.throttled)
    } else {
        (
            sum(|r| r.attempts - r.samples.min(r.attempts)),
            sum(|r| r.throttled),
        )
    };
    Ok(EvaluationReport {
        name: e.name.clone(),
        spec: e.spec_path.clone(),
        provider: e.provider.clone(),
        model: e.model.clone(),
        overrides: e.overrides.clone(),
        strategy: e.strategy.parse()?,
        max_concurrency: e.max_concurrency,
        status: e.status,
        started_at: e.started_at.clone(),
        ended_at: e.ended_at.clone(),
        runs: e.runs,
        repeats: e.repeats,
        samples: counts(e),
        evaluators: e
            .evaluators
            .iter()
            .zip(&e.scores)
            .enumerate()
            .map(|(i, (name, s))| {
                EvaluatorReport::new(name, s).with_bar(e.fail_under.get(i).copied().flatten())
            })
            .collect(),
        timing: Timing {
            wall_seconds: wall,
            throughput_per_second: ratio(e.recorded as f64, wall),
            latency_seconds: percentiles(latencies),
            effective_concurrency: ratio(e.latency_sum_us as f64 / US, wall),
            mean_in_flight: mean_over_runs(sum(|r| r.held_us)),
            mean_at_server: mean_over_runs(sum(|r| r.at_server_us)),
            unloaded_latency_seconds: unloaded,
            speedup_over_sequential: unloaded
                .filter(|_| finished > 0 && !mostly_blocked(blocked, wall))
                .and_then(|u| ratio(finished as f64 * u, wall)),
            retries,
            throttled,
            wait_seconds: e.wait_us as f64 / US,
            blocked_seconds: blocked,
            concurrency_limit: None,
            runs: runs
                .iter()
                .map(|r| {
                    Ok(RunReport {
                        run: r.run,
                        strategy: r.strategy.parse()?,
                        wall_seconds: r.wall_us as f64 / US,
                        samples: r.samples,
                        retries: r.attempts - r.samples.min(r.attempts),
                        throttled: r.throttled,
                        blocked_seconds: r.blocked_us as f64 / US,
                        mean_in_flight: ratio(r.held_us as f64, r.wall_us as f64),
                        limit: None,
                    })
                })
                .collect::<Result<_, UnknownStrategy>>()?,
        },
        tokens: Tokens {
            prompt: e.prompt_tokens,
            completion: e.completion_tokens,
        },
        error_kinds: None,
        errors: None,
        records: None,
    })
}

/// p50/p90/p99/max/mean of ascending microsecond latencies.
pub fn percentiles(sorted_us: &[u64]) -> Option<Latency> {
    let max = *sorted_us.last()?;
    // 3 significant digits: p99 of 1.000 s is exact to the millisecond.
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_max(max.max(2), 3).ok()?;
    for v in sorted_us {
        hist.record(*v).ok()?;
    }
    let at = |q: f64| hist.value_at_quantile(q).min(max) as f64 / US;
    Some(Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: max as f64 / US,
        mean: sorted_us.iter().sum::<u64>() as f64 / sorted_us.len() as f64 / US,
    })
}

/// Sparkline width in characters.
const SPARK_WIDTH: usize = 40;

/// The time-weighted min, median and max of limit `steps` (ascending) over a
/// run of `span` µs. `None` without steps.
pub fn limit_summary(steps: &[LimitStep], span: u64) -> Option<LimitSummary> {
    let first = steps.first()?;
    let span = span.max(steps.last()?.t_us).max(1);
    // How long each limit was in force.
    let mut weighted: Vec<(u64, u64)> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.limit,
                steps
                    .get(i + 1)
                    .map_or(span, |n| n.t_us)
                    .saturating_sub(s.t_us),
            )
        })
        .collect();
    weighted.sort_unstable();
    let total: u64 = weighted.iter().map(|w| w.1).sum();
    let mut acc = 0;
    let median = weighted.iter().find(|(_, w)| {
        acc += w;
        acc * 2 >= total
    });
    Some(LimitSummary {
        min: steps.iter().map(|s| s.limit).min()?,
        median: median.map_or(first.limit, |m| m.0),
        max: steps.iter().map(|s| s.limit).max()?,
    })
}

/// Summarises limit `steps` (ascending) over a run whose samples finished at
/// `ends` (µs, ascending). `None` when there is nothing to show.
pub fn limit_report(steps: &[LimitStep], ends: &[u64]) -> Option<LimitReport> {
    let first = steps.first()?;
    let span = ends
        .last()
        .copied()
        .unwrap_or(0)
        .max(steps.last()?.t_us)
        .max(1);
    let summary = limit_summary(steps, span)?;
    let slice = span as f64 / SPARK_WIDTH as f64;
    let limit_at = |t: f64| {
        steps
            .iter()
            .take_while(|s| (s.t_us as f64) <= t)
            .last()
            .map_or(first.limit, |s| s.limit) as f64
    };
    let limits: Vec<f64> = (0..SPARK_WIDTH)
        .map(|i| limit_at((i as f64 + 0.5) * slice))
        .collect();
    let mut counts = vec![0f64; SPARK_WIDTH];
    for e in ends {
        counts[((*e as f64 / slice) as usize).min(SPARK_WIDTH - 1)] += 1.0;
    }
    Some(LimitReport {
        min: summary.min,
        median: summary.median,
        max: summary.max,
        changes: steps.len() as u64 - 1,
        limit_sparkline: sparkline(&limits),
        throughput_sparkline: sparkline(&counts),
    })
}

/// Values as block characters, lowest to highest.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BLOCKS[0]
            } else {
                BLOCKS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// An experiment report without per-sample detail.
pub fn experiment(x: &ExperimentRow, reports: Vec<EvaluationReport>) -> ExperimentReport {
    ExperimentReport {
        experiment: x.name.clone(),
        created_at: x.created_at.clone(),
        status: experiment_status(&x.evaluations),
        evaluations: reports,
    }
}

/// One `list` line.
pub fn summary(x: &ExperimentRow) -> ExperimentSummary {
    let mut samples = SampleCounts {
        total: 0,
        recorded: 0,
        finished: 0,
        errored: 0,
    };
    let (mut scored, mut passed, mut wall_us) = (0u64, 0u64, 0u64);
    let one_verdict_per_sample = x
        .evaluations
        .iter()
        .all(|e| e.scores.len() <= 1 && e.repeats <= 1);
    for e in &x.evaluations {
        let c = counts(e);
        samples.total += c.total;
        samples.recorded += c.recorded;
        samples.finished += c.finished;
        samples.errored += c.errored;
        for s in &e.scores {
            scored += s.scored;
            passed += s.passed;
        }
        wall_us += e.wall_us;
    }
    ExperimentSummary {
        name: x.name.clone(),
        created_at: x.created_at.clone(),
        status: experiment_status(&x.evaluations),
        evaluations: x.evaluations.len() as u64,
        samples,
        accuracy: ratio(passed as f64, scored as f64),
        accuracy_ci95: stats::wilson(passed, scored, stats::Z_975)
            .filter(|_| one_verdict_per_sample)
            .map(stats::Interval::to_array),
        scored,
        wall_seconds: wall_us as f64 / US,
    }
}

/// A stored sample as a report record.
pub fn record(row: SampleRow, evaluators: &[String]) -> RecordReport {
    let parse = |s: &str| {
        serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned()))
    };
    let prompt = parse(&row.prompt);
    let per = |f: &dyn Fn(&ScoreRecord) -> serde_json::Value| -> serde_json::Map<_, _> {
        evaluators
            .iter()
            .zip(&row.scores)
            .map(|(n, s)| (n.clone(), s.as_ref().map_or(serde_json::Value::Null, f)))
            .collect()
    };
    let scores = per(&|s| s.value.into());
    let passed = per(&|s| s.passed.into());
    let reasons = evaluators
        .iter()
        .zip(&row.scores)
        .filter_map(|(n, s)| Some((n.clone(), s.as_ref()?.reason.clone()?.into())))
        .collect();
    let judges = row
        .judge_calls
        .into_iter()
        .filter_map(|call| {
            let name = evaluators.get(call.evaluator)?.clone();
            let score = row.scores.get(call.evaluator).cloned().flatten();
            let report = JudgeCallReport {
                prompt: parse(&call.prompt),
                reply: call.reply,
                score: score.as_ref().map(|s| s.value),
                reason: score.and_then(|s| s.reason),
                error: call.error,
                attempts: call.attempts,
                throttled: call.throttled,
                wait_seconds: call.wait_us as f64 / US,
                queue_seconds: call.queue_us as f64 / US,
                latency_seconds: call.latency_us.map(|v| v as f64 / US),
                prompt_tokens: call.prompt_tokens,
                completion_tokens: call.completion_tokens,
            };
            Some((name, report))
        })
        .collect();
    RecordReport {
        id: row.key,
        index: row.index,
        variables: parse(&row.variables),
        prompt,
        output: row.output,
        scores,
        passed,
        reasons,
        error_kind: row.error_kind,
        error: row.error,
        attempts: row.attempts,
        latency_seconds: row.latency_us.map(|v| v as f64 / US),
        start_seconds: row.start_us as f64 / US,
        end_seconds: row.end_us as f64 / US,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        judges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_report_is_time_weighted() {
        // 4 for 1 s, 32 for 8 s, 16 for 1 s.
        let steps = [(0, 4), (1_000_000, 32), (9_000_000, 16)]
            .map(|(t_us, limit)| LimitStep { t_us, limit });
        let ends: Vec<u64> = (1..=100).map(|i| i * 100_000).collect();
        let r = limit_report(&steps, &ends).unwrap();
        assert_eq!((r.min, r.median, r.max, r.changes), (4, 32, 32, 2));
        assert_eq!(r.limit_sparkline.chars().count(), SPARK_WIDTH);
        let chars: Vec<char> = r.limit_sparkline.chars().collect();
        assert!(chars[0] < chars[20], "{}", r.limit_sparkline);
        assert_eq!(chars[20], '█');
        assert!(chars[39] < chars[20]);
        assert!(limit_report(&[], &ends).is_none());
    }

    #[test]
    fn evaluator_figures_count_passes_not_rounded_sums() {
        // Three scores of 0.7 under threshold 0.8: the mean is 0.7, no sample passed.
        let r = EvaluatorReport::new(
            "graded",
            &ScoreTotal {
                scored: 3,
                sum: 2.1,
                sum_sq: 1.47,
                passed: 0,
                unscored: 0,
            },
        );
        assert_eq!((r.scored, r.passed), (3, 0));
        assert!((r.mean.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(r.pass_rate, Some(0.0));
        assert_eq!(r.accuracy, r.pass_rate);
        let r = EvaluatorReport::new(
            "graded",
            &ScoreTotal {
                scored: 4,
                sum: 1.0,
                sum_sq: 1.0,
                passed: 3,
                unscored: 0,
            },
        );
        assert_eq!(
            (r.mean, r.pass_rate, r.accuracy),
            (Some(0.25), Some(0.75), Some(0.75))
        );
        let none = EvaluatorReport::new("x", &ScoreTotal::default());
        assert_eq!(
            (none.mean, none.pass_rate, none.accuracy),
            (None, None, None)
        );
    }

    #[test]
    fn a_record_shows_reasons_only_where_given() {
        let row = SampleRow {
            key: "a".into(),
            index: 0,
            variables: "{}".into(),
            prompt: "\"p\"".into(),
            output: Some("o".into()),
            scores: vec![
                Some(ScoreRecord {
                    value: 0.5,
                    passed: true,
                    reason: Some("half right".into()),
                }),
                Some(ScoreRecord::of(0.0)),
                None,
            ],
            error_kind: None,
            error: None,
            attempts: 1,
            throttled: 0,
            latency_us: None,
            start_us: 0,
            end_us: 0,
            prompt_tokens: None,
            completion_tokens: None,
            repeat: 0,
            judge_calls: Vec::new(),
        };
        let names = ["j".to_string(), "e".to_string(), "n".to_string()];
        let r = serde_json::to_value(record(row.clone(), &names)).unwrap();
        assert_eq!(
            r["scores"],
            serde_json::json!({"j": 0.5, "e": 0.0, "n": null})
        );
        assert_eq!(
            r["passed"],
            serde_json::json!({"j": true, "e": false, "n": null})
        );
        assert_eq!(r["reasons"], serde_json::json!({"j": "half right"}));
        let mut plain = row;
        plain.scores[0] = Some(ScoreRecord::of(1.0));
        let r = serde_json::to_value(record(plain, &names)).unwrap();
        assert!(r.get("reasons").is_none(), "{r}");
    }

    #[test]
    fn percentiles_of_known_values() {
        let v: Vec<u64> = (1..=100).map(|i| i * 10_000).collect();
        let l = percentiles(&v).unwrap();
        assert!((l.p50 - 0.5).abs() < 0.001, "{l:?}");
        assert!((l.p90 - 0.9).abs() < 0.001, "{l:?}");
        assert!((l.p99 - 0.99).abs() < 0.001, "{l:?}");
        assert_eq!(l.max, 1.0);
        assert!((l.mean - 0.505).abs() < 1e-9);
        assert!(percentiles(&[]).is_none());
    }
}
