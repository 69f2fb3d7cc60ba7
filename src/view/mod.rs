//! Views: what `show`, `list`, `run` and the HTML page print, as serde
//! structs.
//!
//! These types *are* the documented `--format json` shape (README, "JSON
//! output"; committed as `schema/dotevals.schema.json`); `build.rs` makes
//! them from store rows, so renaming a column never changes what scripts
//! see.

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
pub struct ExperimentView {
    /// Experiment name.
    pub experiment: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    pub status: ExperimentStatus,
    pub evaluations: Vec<EvaluationView>,
    /// With evaluations that are the cells of a `matrix:` spec: their grid
    /// (`show` only); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<matrix::MatrixView>,
}

/// One evaluation of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationView {
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
    pub evaluators: Vec<EvaluatorView>,
    pub timing: Timing,
    /// Per replica, when `base_url` listed several; absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointView>,
    /// The workers of its latest fleet (runs sharing it on a PostgreSQL
    /// store), while one runs or when there were several; absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerView>,
    pub tokens: Tokens,
    /// Errors grouped by kind with a count and an example each; only with `--errors` or `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kinds: Option<Vec<ErrorKindView>>,
    /// Errored samples; only with `--errors` or `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorView>>,
    /// Every sample record; only with `--full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordView>>,
}

/// What one replica of the model answered, over every run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointView {
    /// Its `base_url`, without credentials.
    pub url: String,
    /// Samples it answered (or was the last to fail), and of those, errors.
    pub samples: u64,
    pub errors: u64,
    /// Its share of the samples sent.
    pub share: f64,
    /// Attempts sent to it over every run, those that failed (errors and
    /// timeouts; the sample then went to another replica or was retried),
    /// and times it was rested for failing again and again.
    pub attempts: u64,
    pub failed_attempts: u64,
    pub rests: u64,
    /// Its successful replies per wall second.
    pub throughput_per_second: Option<f64>,
    pub latency_seconds: Option<Latency>,
}

/// One worker of a fleet, as the store last heard of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerView {
    /// Its run of the evaluation.
    pub run: u64,
    pub host: String,
    pub pid: u64,
    /// `running`, `finished`, `interrupted`, `failed`, or `lost` (it stopped
    /// beating without leaving: killed or cut off; the others took its samples).
    pub state: String,
    pub started_at: String,
    /// Samples it wrote.
    pub samples: u64,
    pub in_flight: u64,
    /// Its samples per second from its start to its last heartbeat.
    pub throughput_per_second: Option<f64>,
    pub last_heartbeat_seconds_ago: f64,
    /// Running, but its heartbeat is later than a third of its lease.
    pub late: bool,
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
    /// Recorded samples whose reply came from the response cache: nothing
    /// was sent for them, and the timing figures leave them out.
    pub cached: u64,
}

/// One evaluator's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvaluatorView {
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
    pub judge: Option<JudgeView>,
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
pub struct JudgeView {
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

impl JudgeView {
    pub fn new(t: &JudgeTotal) -> Self {
        JudgeView {
            calls: t.calls,
            failed: t.failed,
            retries: t.retries,
            throttled: t.throttled,
            wait_seconds: t.wait_us as f64 / US,
            queue_seconds: t.queue_us as f64 / US,
            latency_seconds: percentiles(&t.latencies_us),
            tokens: t.tokens,
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

impl EvaluatorView {
    /// An evaluator's figures from its stored totals.
    pub fn new(name: &str, s: &ScoreTotal) -> Self {
        let pass_rate = ratio(s.passed as f64, s.scored as f64);
        let bars = error_bars(s);
        EvaluatorView {
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
    /// From sending to the first text (not the first byte: a stream's
    /// first events carry none), over the replies that streamed; null when
    /// none did.
    pub time_to_first_token_seconds: Option<Latency>,
    /// Output tokens per second once the text began: completion tokens
    /// less one over latency less time to first token, over the streamed
    /// replies that counted at least two; null when none did.
    pub output_tokens_per_second: Option<Quantiles>,
    /// Successful replies that streamed, and how many of them reported no
    /// completion tokens (a server that ignores `include_usage`): their
    /// output speed is unknown.
    pub streamed_replies: u64,
    pub streamed_without_usage: u64,
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
    pub concurrency_limit: Option<LimitView>,
    /// Each run, oldest first (a resumed evaluation has several).
    pub runs: Vec<RunView>,
}

/// One run of an evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
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
pub struct LimitView {
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

impl Latency {
    /// `p50 250 ms · p90 410 ms · p99 1.20 s · max 2.01 s`, as tables and
    /// pages show it.
    pub fn percentiles(&self) -> String {
        use crate::human::duration;
        format!(
            "p50 {} · p90 {} · p99 {} · max {}",
            duration(self.p50),
            duration(self.p90),
            duration(self.p99),
            duration(self.max)
        )
    }
}

/// A distribution's percentiles (of a rate: higher is better, so no max).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Quantiles {
    /// The nearest-rank percentiles of `values`; `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Quantiles> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let at = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        (n > 0).then(|| Quantiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        })
    }
}

/// Tokens reported by the server's `usage`, summed (see [`crate::usage`]).
pub type Tokens = crate::usage::TokenTotals;

/// Errored samples of one kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorKindView {
    /// See [`ErrorView::kind`].
    pub kind: String,
    pub count: u64,
    /// Id of the first such sample.
    pub example_id: String,
    /// Its error message.
    pub example: String,
}

/// An errored sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorView {
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
pub struct RecordView {
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
    /// Its reply came from the response cache (nothing was sent; no
    /// attempts, latency or tokens).
    pub cached: bool,
    /// The replica that answered (or last failed); only when `base_url`
    /// lists replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub attempts: u32,
    pub latency_seconds: Option<f64>,
    /// Offsets from the start of the run that recorded it.
    pub start_seconds: f64,
    pub end_seconds: f64,
    #[serde(flatten)]
    pub usage: CallUsageView,
    /// Evaluator name to the call its judge made for this sample; left out
    /// when no judge was called.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub judges: std::collections::BTreeMap<String, JudgeCallView>,
}

/// One judge call, in a record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JudgeCallView {
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
    #[serde(flatten)]
    pub usage: CallUsageView,
}

/// What one call reported of its tokens (null: not reported; see
/// [`crate::usage`] for what each counts), and when its text began.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CallUsageView {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_prompt_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// From sending to the first text; null unless the reply streamed.
    pub time_to_first_token_seconds: Option<f64>,
}

impl From<&crate::store::CallStats> for CallUsageView {
    fn from(call: &crate::store::CallStats) -> Self {
        CallUsageView {
            prompt_tokens: call.usage.prompt,
            completion_tokens: call.usage.completion,
            cached_prompt_tokens: call.usage.cached_prompt,
            cache_write_tokens: call.usage.cache_write,
            reasoning_tokens: call.usage.reasoning,
            time_to_first_token_seconds: call.first_token_us.map(|v| v as f64 / 1e6),
        }
    }
}

/// `dotevals list --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct ListView {
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

/// Microseconds per second: the store keeps times in µs.
pub(crate) const US: f64 = 1e6;

pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
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

mod build;
pub mod matrix;

pub use build::*;
