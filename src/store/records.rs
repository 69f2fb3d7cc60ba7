//! What a run records about an evaluation, and what resume reads back.

use std::fmt;
use std::str::FromStr;

use crate::usage::Usage;

/// How an evaluation stands, as stored (`status`) and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationStatus {
    /// A run is sending its samples (or died: see [`crate::store::Store::is_running`]).
    Running,
    /// Every sample has a finished record.
    Completed,
    /// Every sample was tried; some are recorded with errors.
    CompletedWithErrors,
    /// Stopped by Ctrl-C or SIGTERM, or found running with no run alive; resumable.
    Interrupted,
    /// Stopped by an error the run could not go on after.
    Failed,
}

impl EvaluationStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluationStatus::Running => "running",
            EvaluationStatus::Completed => "completed",
            EvaluationStatus::CompletedWithErrors => "completed_with_errors",
            EvaluationStatus::Interrupted => "interrupted",
            EvaluationStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for EvaluationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name the store does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown evaluation status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for EvaluationStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EvaluationStatus::Running,
            EvaluationStatus::Completed,
            EvaluationStatus::CompletedWithErrors,
            EvaluationStatus::Interrupted,
            EvaluationStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What a run records about an evaluation before its first sample.
#[derive(Debug, Clone)]
pub struct EvaluationMeta<'a> {
    pub name: &'a str,
    pub spec_path: &'a str,
    pub spec_text: &'a str,
    pub spec_hash: &'a str,
    pub identity: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// Evaluator names, in score order.
    pub evaluators: &'a [String],
    pub strategy: &'a str,
    pub max_concurrency: usize,
    pub total: u64,
    /// The dataset column standard errors are clustered by, if any.
    pub cluster: Option<&'a str>,
    /// Per evaluator, its `fail_under` bar.
    pub fail_under: &'a [Option<f64>],
    /// Times each sample is sent (`repeats`).
    pub repeats: u32,
}

/// An evaluation already in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvaluation {
    pub id: i64,
    pub spec_hash: String,
    pub identity: String,
    pub status: EvaluationStatus,
    /// Times each sample was sent (`repeats`) by the latest run.
    pub repeats: u32,
}

/// An evaluation a run has just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedEvaluation {
    pub id: i64,
    /// This run's number: 1 for a fresh evaluation.
    pub run: i64,
    /// The wall time earlier runs recorded.
    pub wall_us: u64,
}

/// An evaluation's sample counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleCounts {
    /// Sample records, finished or errored.
    pub recorded: u64,
    pub errored: u64,
}

/// What one run of an evaluation saw, for its row in `runs`.
#[derive(Debug, Clone)]
pub struct RunTotals {
    pub strategy: String,
    pub wall: std::time::Duration,
    pub limiter: crate::concurrency::Totals,
    /// Per replica, when the model has several.
    pub endpoints: Vec<EndpointRun>,
}

/// What one replica saw in one run: stored with the run (as JSON), so a
/// replica that answered nothing still shows its failures.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EndpointRun {
    pub url: String,
    pub attempts: u64,
    /// Attempts that failed (errors and timeouts), and were throttled.
    pub failed: u64,
    pub throttled: u64,
    /// Times it was rested for failing again and again.
    pub rests: u64,
}

impl EndpointRun {
    /// The runs' column: `None` for a model with one endpoint.
    pub fn to_column(endpoints: &[EndpointRun]) -> Option<String> {
        (!endpoints.is_empty()).then(|| serde_json::to_string(endpoints).unwrap_or_default())
    }

    /// The column read back; a value this build cannot read shows nothing.
    pub fn from_column(text: Option<&str>) -> Vec<EndpointRun> {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

/// A stored sample's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSample {
    pub row_hash: u64,
    /// Finished without error: never sent again.
    pub finished: bool,
    /// The model answered but an evaluator failed on the answer: scored again
    /// from the stored reply (see [`crate::store::SampleLookup::call`]), never sent again.
    pub rescore: bool,
}

/// What one model call cost, as recorded with a sample or a judge's call
/// (see [`crate::call`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Attempts made, the first included, throttled ones included.
    pub attempts: u32,
    /// Answers that said slow down (429, 503, 529).
    pub throttled: u32,
    /// Time waiting on backoff, server-ordered pauses and the rate limit.
    pub wait_us: u64,
    /// The successful attempt's latency; `None` when no reply came.
    pub latency_us: Option<u64>,
    /// From sending the successful attempt to its first text, when it streamed.
    pub first_token_us: Option<u64>,
    pub usage: Usage,
}

impl CallStats {
    /// Adds the cost of `later`, a call that took the request over (from a
    /// replica that rests): its reply and timings are the call's now.
    pub fn add(&mut self, later: &CallStats) {
        *self = CallStats {
            attempts: self.attempts.saturating_add(later.attempts),
            throttled: self.throttled.saturating_add(later.throttled),
            wait_us: self.wait_us.saturating_add(later.wait_us),
            ..*later
        };
    }
}

/// What a sample's stored record says about its model call: the reply, to
/// score again, or the error it ended with (`rescore` copies those as they are).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCall {
    /// The prompt as stored (JSON; empty when it failed to render).
    pub prompt: String,
    /// The model's reply; `None` when the call failed.
    pub output: Option<String>,
    /// The error kind as stored (`timeout`, `http_500`, `evaluator`, ...).
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub call: CallStats,
}
