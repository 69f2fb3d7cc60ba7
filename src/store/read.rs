//! What `show` and `list` read: experiments, evaluations with their totals,
//! runs, errors, limits and whole sample records.

use super::writer::{JudgeRecord, ScoreRecord};
use super::{CallStats, EvaluationStatus};
use crate::usage::TokenTotals;

/// An experiment and its evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentRow {
    pub name: String,
    pub created_at: String,
    pub evaluations: Vec<EvaluationRow>,
}

/// An evaluation with its aggregate counts.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRow {
    pub id: i64,
    pub name: String,
    pub spec_path: String,
    pub provider: String,
    pub model: String,
    pub evaluators: Vec<String>,
    pub strategy: String,
    pub max_concurrency: u64,
    pub total: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub wall_us: u64,
    pub runs: u64,
    pub status: EvaluationStatus,
    /// Sample records (finished or errored).
    pub recorded: u64,
    pub errored: u64,
    /// Records whose reply came from the response cache (nothing sent).
    pub cached: u64,
    pub latency_sum_us: u64,
    pub tokens: TokenTotals,
    /// Attempts beyond the first, over all samples.
    pub retries: u64,
    /// Answers that said slow down (429/503).
    pub throttled: u64,
    /// Time samples spent waiting on backoff and rate limits.
    pub wait_us: u64,
    /// The spec text the latest run stored (with its `--set` block).
    pub spec_text: String,
    /// Per evaluator, in spec order.
    pub scores: Vec<ScoreTotal>,
    /// The dataset column standard errors are clustered by (`dataset.cluster`).
    pub cluster: Option<String>,
    /// Per evaluator, its `fail_under` bar (empty when none was stored).
    pub fail_under: Vec<Option<f64>>,
    /// Times each sample was sent (`repeats`) by the latest run.
    pub repeats: u32,
}

/// One evaluator's scores over an evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreTotal {
    /// Samples it scored.
    pub scored: u64,
    /// The sum of their scores.
    pub sum: f64,
    /// The sum of their squares (for the standard error of a graded mean).
    pub sum_sq: f64,
    /// Samples whose score reached the evaluator's threshold.
    pub passed: u64,
    /// Samples it was asked to score and could not (excluded from the mean).
    pub unscored: u64,
}

/// One judging evaluator's calls over an evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JudgeTotal {
    /// The evaluator's index in the spec.
    pub evaluator: usize,
    pub calls: u64,
    /// Calls that gave no score (failed requests, replies without one).
    pub failed: u64,
    pub retries: u64,
    pub throttled: u64,
    pub wait_us: u64,
    pub queue_us: u64,
    /// Latencies of the calls that got a reply, in microseconds, ascending.
    pub latencies_us: Vec<u64>,
    pub tokens: TokenTotals,
}

/// An errored sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    pub key: String,
    pub index: u64,
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}

/// The concurrency limit over one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitTimeline {
    /// The limit at each change, the first included.
    pub steps: Vec<LimitStep>,
    /// When each of the run's samples finished, µs, ascending.
    pub ends: Vec<u64>,
}

/// The concurrency limit from one moment of a run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStep {
    /// µs since the run started.
    pub t_us: u64,
    pub limit: u64,
}

/// Errored samples of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGroup {
    pub kind: String,
    pub count: u64,
    /// The first such sample (dataset order) and its message.
    pub example_key: String,
    pub example: String,
}

/// A whole sample record.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub key: String,
    pub index: u64,
    /// The hash of its dataset row (what resume matches an edited row by).
    pub row_hash: u64,
    pub variables: String,
    pub prompt: String,
    pub output: Option<String>,
    /// One per evaluator, in spec order; `None` when not scored.
    pub scores: Vec<Option<ScoreRecord>>,
    /// Its evaluators were asked (a score stored for each, decided or not);
    /// false when the model call failed first, and none was.
    pub scored: bool,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// The model call (zero when none was made).
    pub call: CallStats,
    pub start_us: u64,
    pub end_us: u64,
    /// Which send of its dataset row this record is (0 for the first; see `repeats`).
    pub repeat: u32,
    /// The calls judges made for this sample.
    pub judge_calls: Vec<JudgeRecord>,
    /// Its reply came from the response cache: nothing was sent.
    pub cached: bool,
    /// The response cache's key of its request, when the cache was on.
    pub cache_key: Option<String>,
    /// The replica that answered (or last failed), when the model had several.
    pub endpoint: Option<String>,
}

/// One run of an evaluation, as recorded at its end (`runs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run: u64,
    pub strategy: String,
    pub wall_us: u64,
    /// Samples that sent at least one request.
    pub samples: u64,
    pub attempts: u64,
    pub throttled: u64,
    /// Slot time, time at the server, and wall time blocked on waits.
    pub held_us: u64,
    pub at_server_us: u64,
    pub blocked_us: u64,
    /// Replies that had the server alone, and their summed latency.
    pub unloaded: u64,
    pub unloaded_us: u64,
    /// Per replica, when the model had several.
    pub endpoints: Vec<super::EndpointRun>,
}

/// One sample's scores, for pairing two evaluations sample by sample (`compare`).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleScores {
    pub key: String,
    pub row_hash: u64,
    /// The value of the cluster column asked for, as JSON text.
    pub cluster: Option<String>,
    /// One per evaluator, in spec order; `None` when not scored.
    pub scores: Vec<Option<ScorePoint>>,
}

/// One dataset row's scores by one evaluator, summed over the row's repeats
/// (`repeats`): what its per-sample mean and variance need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatSums {
    /// Rows with the same number are in the same cluster of `dataset.cluster`
    /// (all 0 without one), and come one after another.
    pub cluster: u64,
    /// Scored repeats, their sum and the sum of their squares.
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// A score and whether it passed, without the reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScorePoint {
    pub value: f64,
    pub passed: bool,
}

/// Everything one evaluation's summary view reads, in one call (see
/// [`Reader::summary_reads`](super::Reader::summary_reads)).
#[derive(Debug, Clone, Default)]
pub struct SummaryReads {
    /// Successful latencies, µs, ascending.
    pub latencies: Vec<u64>,
    pub runs: Vec<RunRow>,
    /// The latest run's limit and sample ends, when the evaluation is adaptive.
    pub timeline: Option<LimitTimeline>,
    /// Each adaptive run's limit steps, by run number (the latest included).
    pub run_limits: Vec<(u64, Vec<LimitStep>)>,
    pub judges: Vec<JudgeTotal>,
    /// Per evaluator, what its error bar needs beyond the totals.
    pub groups: Vec<Groups>,
    /// The successful replies that streamed, for time to first token and
    /// output speed.
    pub streamed: Vec<StreamedReply>,
    /// Per replica, when the model had several; empty otherwise.
    pub endpoints: Vec<EndpointSamples>,
    /// The workers of its latest fleet, while it runs or when it had
    /// several; empty otherwise.
    pub workers: Vec<WorkerRow>,
}

/// One worker of a fleet (`store::fleet`), as the store last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub run: u64,
    pub host: String,
    pub pid: u64,
    /// `running`, `finished`, `interrupted`, `failed`, or `lost` (it
    /// stopped beating without leaving: killed, or cut off).
    pub state: String,
    pub started_at: String,
    /// Seconds from its start to its last heartbeat.
    pub active_seconds: f64,
    /// Seconds since its last heartbeat.
    pub heartbeat_seconds_ago: f64,
    pub lease_seconds: f64,
    pub samples: u64,
    pub in_flight: u64,
}

/// What one replica of the model answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSamples {
    pub url: String,
    /// Samples it answered or last failed.
    pub samples: u64,
    pub errors: u64,
    /// Successful latencies, µs, ascending.
    pub latencies: Vec<u64>,
}

/// Groups `(url, latency, errored)` rows, in URL order, into replicas.
pub fn group_endpoints(
    rows: impl IntoIterator<Item = (String, Option<u64>, bool)>,
) -> Vec<EndpointSamples> {
    let mut out: Vec<EndpointSamples> = Vec::new();
    for (url, latency, errored) in rows {
        if out.last().is_none_or(|e| e.url != url) {
            out.push(EndpointSamples {
                url,
                ..EndpointSamples::default()
            });
        }
        if let Some(e) = out.last_mut() {
            e.samples += 1;
            e.errors += u64::from(errored);
            // Latencies come ascending within a URL; an errored sample has none.
            e.latencies.extend(latency.filter(|_| !errored));
        }
    }
    out
}

/// When a successful streamed reply's text began and ended, and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedReply {
    pub first_token_us: u64,
    pub latency_us: u64,
    pub completion_tokens: Option<u64>,
}

impl StreamedReply {
    /// Output tokens per second once the text began: the tokens after the
    /// first over the time after it. `None` below two tokens, or when the
    /// first text was the last byte too.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let tokens = self.completion_tokens.filter(|t| *t >= 2)?;
        let after = self.latency_us.checked_sub(self.first_token_us)?;
        (after > 0).then(|| (tokens - 1) as f64 / (after as f64 / 1e6))
    }
}

/// The groups an evaluator's scores fall in, for its error bar.
#[derive(Debug, Clone)]
pub enum Groups {
    /// Independent samples: the totals say it all.
    None,
    /// Each dataset row's sum over its repeats.
    Repeats(Vec<RepeatSums>),
    /// Per cluster of `dataset.cluster`: scored samples, sum, sum of squares.
    Clusters(Vec<(u64, f64, f64)>),
}

/// [`SummaryReads`] from the reader's single queries, one after another.
pub fn summary_reads(
    reader: &dyn super::Reader,
    e: &EvaluationRow,
) -> Result<SummaryReads, super::StoreError> {
    const ADAPTIVE: &str = "adaptive";
    let runs = reader.runs(e.id)?;
    let mut run_limits = Vec::new();
    for run in runs.iter().filter(|r| r.strategy == ADAPTIVE) {
        run_limits.push((run.run, reader.limit_steps(e.id, run.run)?));
    }
    let groups = (0..e.evaluators.len())
        .map(|i| match (e.repeats > 1, &e.cluster) {
            (true, cluster) => Ok(Groups::Repeats(reader.repeat_sums(
                e.id,
                i,
                cluster.as_deref(),
            )?)),
            (false, Some(column)) => Ok(Groups::Clusters(reader.cluster_sums(e.id, i, column)?)),
            (false, None) => Ok(Groups::None),
        })
        .collect::<Result<_, super::StoreError>>()?;
    Ok(SummaryReads {
        latencies: reader.latencies(e.id)?,
        timeline: (e.strategy == ADAPTIVE)
            .then(|| reader.limit_timeline(e.id))
            .transpose()?,
        runs,
        run_limits,
        judges: reader.judge_totals(e.id)?,
        groups,
        streamed: reader.streamed(e.id)?,
        endpoints: reader.endpoints(e.id)?,
        workers: reader.workers(e.id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::StreamedReply;

    #[test]
    fn output_speed_counts_the_tokens_after_the_first() {
        let reply = |first_token_us, latency_us, tokens| StreamedReply {
            first_token_us,
            latency_us,
            completion_tokens: tokens,
        };
        // 11 tokens: the first at 100 ms, ten more over the next 400 ms.
        assert_eq!(
            reply(100_000, 500_000, Some(11)).tokens_per_second(),
            Some(25.0)
        );
        assert_eq!(reply(100_000, 500_000, Some(1)).tokens_per_second(), None);
        assert_eq!(reply(100_000, 500_000, None).tokens_per_second(), None);
        assert_eq!(reply(500_000, 500_000, Some(9)).tokens_per_second(), None);
    }
}
