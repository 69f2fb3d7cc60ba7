//! Storage: experiments, evaluations and sample records, behind traits.
//!
//! Layout: experiment ▸ evaluation (spec snapshot and hash, model, strategy,
//! times, status) ▸ sample record (id, variables, prompt, output, scores,
//! error, attempts, latency, start/end offsets, tokens). Nothing here knows
//! about HTTP or strategies, and nothing outside this module knows SQL.
//!
//! The runner and the CLI see four narrow traits and the plain types in
//! [`records`], [`read`] and [`writer`]:
//! - [`Storage`]: where `--storage` points, before anything is opened. It takes
//!   the per-evaluation run lock and opens the store (read-only, for writing,
//!   or creating it).
//! - [`Store`]: an open store, three traits in one: [`Recorder`] (an
//!   evaluation's start, end, runs and limits), [`Reader`] (the queries behind
//!   the views) and [`Admin`] (delete, rename). The recorder hands out the two
//!   things a run uses on other threads:
//! - [`RecordSink`]: commits batches of finished samples; the backend-neutral
//!   [`writer::Writer`] thread owns one and does the batching.
//! - [`SampleLookup`]: what resume needs to know about stored samples, read
//!   while the dataset streams.
//!
//! Two backends: [`sqlite`] (embedded SQLite in WAL mode, the default) and
//! [`postgres`] (a team's store on a server: the same tables in a schema of
//! their own, run locks as advisory locks). A trait rather than an enum over
//! backends, because an enum would need a match arm per backend in every
//! method; with traits the choice is made once, in [`locate`]. The facade
//! names no backend: its errors are [`StoreError::Backend`], its locks a
//! [`LockError`], and places are shown as `location` strings. The cases in
//! `conformance` run against both.

#[cfg(test)]
pub mod conformance;
pub mod fleet;
mod postgres;
pub mod read;
pub mod records;
mod sqlite;
pub mod writer;

use std::ops::ControlFlow;
use std::time::Duration;

pub use read::{
    ErrorGroup, ErrorRow, EvaluationRow, ExperimentRow, Groups, JudgeTotal, LimitTimeline,
    RepeatSums, RunRow, SampleRow, SampleScores, ScorePoint, SummaryReads,
};
pub use records::{
    CallStats, EndpointRun, EvaluationMeta, EvaluationStatus, RunTotals, SampleCounts,
    StartedEvaluation, StoredCall, StoredEvaluation, StoredSample,
};
pub use writer::{SampleRecord, ScoreRecord, Writer, WriterConfig};

use read::LimitStep;

/// The version of the records' layout that every backend migrates its
/// store to (`TooNew` past it).
pub const SCHEMA_VERSION: i64 = 13;

/// The default store, relative to the working directory.
pub const DEFAULT_PATH: &str = sqlite::DEFAULT_PATH;

/// The storage `--storage` names (a path, or `sqlite://path`; the default when
/// absent; a `postgres://` URL for a server). The one place a backend is chosen.
pub fn locate(arg: Option<&str>) -> Box<dyn Storage> {
    match arg {
        Some(url) if postgres::is_url(url) => Box::new(postgres::PgStorage::new(url)),
        _ => Box::new(sqlite::SqliteStorage::new(sqlite::resolve_path(arg))),
    }
}

/// Whether `--storage` names a database server (whose URL may hold a password).
pub fn is_server(arg: &str) -> bool {
    postgres::is_url(arg)
}

/// Why a run lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("evaluation `{evaluation}` of experiment `{experiment}` is already being run by another dotevals process{holder}")]
    Busy {
        experiment: String,
        evaluation: String,
        /// Who holds it, as the backend can tell (` (pid 12, since ...)`), or empty.
        holder: String,
    },
    /// The backend could not take it: `what` in its terms.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        source: std::io::Error,
    },
}

/// Held while a run of one evaluation is alive; dropping it lets the next run in.
pub struct RunLock(#[allow(dead_code)] Box<dyn Send>);

impl RunLock {
    /// Wraps whatever a backend holds to keep an evaluation to itself.
    pub fn new(held: impl Send + 'static) -> RunLock {
        RunLock(Box::new(held))
    }
}

/// Where a store lives, before it is opened. `Sync`, so a command may open
/// a second connection on another thread (`compare` reads both sides at once).
pub trait Storage: Sync {
    /// Where the store is, for messages.
    fn location(&self) -> &str;

    /// Opens the store for writing, creating it if missing.
    fn open_or_create(&self) -> Result<Box<dyn Store>, StoreError>;

    /// Opens an existing store for writing; `None` when there is none yet.
    /// A store this user cannot write is [`StoreError::ReadOnly`].
    fn open_existing(&self) -> Result<Option<Box<dyn Store>>, StoreError>;

    /// Opens an existing store for reading only (`list`, `show`); `None` when
    /// there is none yet. A store that must first be created or upgraded is
    /// opened for writing instead.
    fn open_read_only(&self) -> Result<Option<Box<dyn Store>>, StoreError>;

    /// Takes the lock for `evaluation` of `experiment` without waiting (works
    /// before the store exists); [`StoreError::Lock`] when another run holds it.
    fn lock(&self, experiment: &str, evaluation: &str) -> Result<RunLock, StoreError>;

    /// The lock of a run that may work beside other runs of the evaluation
    /// (a fleet's worker): shared where the store has fleets, so only a
    /// run that needs the evaluation to itself ([`lock`](Self::lock)) is
    /// kept out; elsewhere the same as `lock`.
    fn lock_worker(&self, experiment: &str, evaluation: &str) -> Result<RunLock, StoreError> {
        self.lock(experiment, evaluation)
    }
}

/// An open store: what a run records, what the views read, and the
/// management of experiments. A backend implements the three traits; the
/// rest of the program holds a `dyn Store`.
pub trait Store: Recorder + Reader + Admin {
    /// Where the store is, for messages.
    fn location(&self) -> &str;
}

/// What a run records, from its start to its end.
pub trait Recorder {
    /// Whether some process runs `evaluation` of `experiment` right now.
    fn is_running(&self, experiment: &str, evaluation: &str) -> bool;

    /// The evaluation `name` of `experiment`, if recorded.
    fn find_evaluation(
        &self,
        experiment: &str,
        name: &str,
    ) -> Result<Option<StoredEvaluation>, StoreError>;

    /// Creates the experiment if needed and the evaluation if new; marks it running.
    fn start_evaluation(
        &mut self,
        experiment: &str,
        meta: &EvaluationMeta,
        now: &str,
    ) -> Result<StartedEvaluation, StoreError>;

    /// Sets how many runs an evaluation has had, in place of the one
    /// `start_evaluation` counted: `merge` copies other stores' runs under
    /// the numbers that follow the target's own.
    fn set_runs(&self, evaluation_id: i64, runs: u64) -> Result<(), StoreError>;

    /// Commits the finished samples of one run (see [`writer::Writer`]).
    fn sink(&self, config: WriterConfig) -> Result<Box<dyn RecordSink>, StoreError>;

    /// Starts the writer thread of one run, with room for `capacity` records
    /// waiting; `on_commit` sees each committed batch.
    fn writer(
        &self,
        config: WriterConfig,
        capacity: usize,
        on_commit: writer::OnCommit,
    ) -> Result<Writer, StoreError> {
        Writer::spawn(self.sink(config)?, capacity, on_commit)
    }

    /// Looks up the stored samples of an evaluation, from any thread.
    fn lookup(&self, evaluation_id: i64) -> Result<Box<dyn SampleLookup>, StoreError>;

    /// Looks up response cache entries, from any thread.
    fn cache(&self) -> Result<std::sync::Arc<dyn crate::cache::CacheLookup>, StoreError>;

    /// Samples recorded and, of those, errored, from the evaluation's counters.
    fn counts(&self, evaluation_id: i64) -> Result<SampleCounts, StoreError>;

    /// Records the evaluation's wall time, earlier runs included.
    fn record_wall(&self, evaluation_id: i64, wall_us: u64) -> Result<(), StoreError>;

    /// Records how the concurrency limit moved during run `run`: (time since
    /// the run started, limit) at each change, the first included.
    fn record_limits(
        &mut self,
        evaluation_id: i64,
        run: i64,
        history: &[(Duration, usize)],
    ) -> Result<(), StoreError>;

    /// Records what run `run` of an evaluation saw (see [`RunTotals`]).
    fn record_run(&self, evaluation_id: i64, run: i64, t: &RunTotals) -> Result<(), StoreError>;

    /// The fleet of workers at work on evaluation `evaluation_id`, when one
    /// is alive; always `None` where one run works alone (SQLite).
    fn live_fleet(&self, _evaluation_id: i64) -> Result<Option<fleet::LiveFleet>, StoreError> {
        Ok(None)
    }

    /// The samples the fleet of `evaluation_id` loaded, in order, as (key,
    /// row hash): to name where another worker's dataset differs.
    fn fleet_samples(&self, _evaluation_id: i64) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }

    /// Joins the fleet working on an evaluation, or starts it (loading the
    /// queue) when no worker is alive; `None` where one run works alone.
    fn join_fleet(
        &self,
        _request: fleet::JoinRequest<'_>,
    ) -> Result<Option<fleet::Member>, StoreError> {
        Ok(None)
    }

    /// Records how a run of an evaluation ended.
    fn finish_evaluation(
        &self,
        id: i64,
        status: EvaluationStatus,
        now: &str,
    ) -> Result<(), StoreError>;
}

/// The queries behind `show`, `list`, `compare`, `report` and `export`.
pub trait Reader {
    /// What one evaluation's summary view needs, in one call: a backend
    /// reads it as one snapshot (and a server in one round trip).
    fn summary_reads(&self, e: &read::EvaluationRow) -> Result<SummaryReads, StoreError>;

    /// Every experiment, newest first, with aggregates.
    fn experiments(&self) -> Result<Vec<ExperimentRow>, StoreError>;

    /// One experiment, or `UnknownExperiment`.
    fn experiment(&self, name: &str) -> Result<ExperimentRow, StoreError>;

    /// Names of all experiments (for "did you mean").
    fn experiment_names(&self) -> Result<Vec<String>, StoreError>;

    /// Latencies of successful samples, in microseconds, ascending.
    fn latencies(&self, evaluation_id: i64) -> Result<Vec<u64>, StoreError>;

    /// Successful samples whose reply streamed, with when their text began.
    fn streamed(&self, evaluation_id: i64) -> Result<Vec<read::StreamedReply>, StoreError>;

    /// Per replica of the model (by URL), when it had several.
    fn endpoints(&self, evaluation_id: i64) -> Result<Vec<read::EndpointSamples>, StoreError>;

    /// The workers of the evaluation's latest fleet, while one is alive or
    /// when it had several (none where one run works alone).
    fn workers(&self, _evaluation_id: i64) -> Result<Vec<read::WorkerRow>, StoreError> {
        Ok(Vec::new())
    }

    /// Errored samples, in dataset order.
    fn errors(&self, evaluation_id: i64) -> Result<Vec<ErrorRow>, StoreError>;

    /// Errored samples grouped by kind, most frequent first, with one example each.
    fn error_groups(&self, evaluation_id: i64) -> Result<Vec<ErrorGroup>, StoreError>;

    /// Every recorded run of an evaluation, in order.
    fn runs(&self, evaluation_id: i64) -> Result<Vec<RunRow>, StoreError>;

    /// The concurrency limit at each change of run `run`.
    fn limit_steps(&self, evaluation_id: i64, run: u64) -> Result<Vec<LimitStep>, StoreError>;

    /// How the concurrency limit moved in the latest run of an evaluation.
    fn limit_timeline(&self, evaluation_id: i64) -> Result<LimitTimeline, StoreError>;

    /// Every sample record with its scores (`evaluators` of them) and judge
    /// calls, in dataset order.
    fn samples(&self, evaluation_id: i64, evaluators: usize) -> Result<Vec<SampleRow>, StoreError>;

    /// The same records one at a time, in dataset order, without holding them
    /// all (`export`); `each` answers [`ControlFlow::Break`] to stop early.
    fn for_each_sample(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        each: &mut dyn FnMut(SampleRow) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Each judging evaluator's calls, in evaluator order (none without judges).
    fn judge_totals(&self, evaluation_id: i64) -> Result<Vec<JudgeTotal>, StoreError>;

    /// Every recorded sample's key, row hash, scores (`evaluators` of them)
    /// and, when `cluster` names a column, its value there; ordered by key
    /// (byte order), for pairing with another evaluation.
    fn sample_scores(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<SampleScores>, StoreError>;

    /// Sums over the clusters of `column` of one evaluator's scores: per
    /// cluster value, the scored samples, their sum and the sum of their
    /// squares (`dataset.cluster`).
    fn cluster_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        column: &str,
    ) -> Result<Vec<(u64, f64, f64)>, StoreError>;

    /// One evaluator's scores summed per dataset row over the row's repeats
    /// (`repeats`), rows of one cluster of `cluster` (a dataset column) one
    /// after another; rows without a score are left out.
    fn repeat_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<RepeatSums>, StoreError>;
}

/// Deleting and renaming experiments, and managing the response cache.
pub trait Admin {
    /// Deletes an experiment and everything in it; answers its sample count.
    fn delete_experiment(&self, name: &str) -> Result<u64, StoreError>;

    /// Renames an experiment.
    fn rename_experiment(&self, from: &str, to: &str) -> Result<(), StoreError>;

    /// The response cache's entries, bytes and hits, in all and per model.
    fn cache_stats(&self) -> Result<crate::cache::CacheStats, StoreError>;

    /// Deletes cache entries written more than `older_than` ago (every one
    /// when `None`), only `model`'s when given; answers how many. Sample
    /// records are left as they are.
    fn cache_clear(
        &self,
        older_than: Option<Duration>,
        model: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// What `cache explain` needs about sample `sample` of `experiment`, one
    /// per evaluation holding it (empty: no such sample); `UnknownExperiment`.
    fn cache_explain_reads(
        &self,
        experiment: &str,
        sample: &str,
    ) -> Result<Vec<crate::cache::explain::SampleCache>, StoreError>;
}

/// Commits batches of finished samples for one run, on the writer thread.
pub trait RecordSink: Send {
    /// Commits `batch` in one transaction, with the run's wall time so far (so
    /// a crash leaves a wall time close to the truth). Errored records of
    /// earlier runs are replaced when the run resumes.
    fn commit(&mut self, batch: &[SampleRecord]) -> Result<(), StoreError>;
}

/// What resume and rescore need to know about one evaluation's stored samples.
pub trait SampleLookup: Send {
    /// Samples recorded for the evaluation, finished or errored.
    fn count(&self) -> Result<u64, StoreError>;

    /// The keys of the recorded samples, in dataset order.
    fn keys(&self) -> Result<Vec<String>, StoreError>;

    /// The stored state of sample `key`, if any.
    fn get(&self, key: &str) -> Result<Option<StoredSample>, StoreError>;

    /// What sample `key`'s model call left: its reply, or its error.
    fn call(&self, key: &str) -> Result<Option<StoredCall>, StoreError>;
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `location` is where the store is, as messages show it.
    #[error("cannot create the store {what} {location}: {source}")]
    Create {
        what: &'static str,
        location: String,
        source: std::io::Error,
    },
    #[error("{location} is not a dotevals store")]
    NotAStore { location: String },
    /// This user cannot write the store (`why` says what in the backend's
    /// terms, or is empty); `fix` says how to make it writable.
    #[error("the store {location} is read-only{why}")]
    ReadOnly {
        location: String,
        why: String,
        fix: String,
    },
    /// The store cannot even be read as it is: `why`, and what to do.
    #[error("cannot read the store {location}: {why}")]
    Unreadable {
        location: String,
        why: String,
        fix: String,
    },
    #[error(
        "{location} was written by a newer dotevals (schema {found}, this one knows {SCHEMA_VERSION})"
    )]
    TooNew { location: String, found: i64 },
    #[error("no experiment named `{0}`")]
    UnknownExperiment(String),
    #[error("an experiment named `{0}` already exists")]
    ExperimentExists(String),
    /// The evaluation's run lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The backend's own error (SQLite's, a server's).
    #[error("store error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("the store writer stopped unexpectedly")]
    WriterLost,
    #[error("cannot start the store writer: {0}")]
    Thread(std::io::Error),
}

/// Seconds since the Unix epoch: when cache entries were written.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, as RFC 3339 UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
