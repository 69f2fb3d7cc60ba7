//! The store writer: a thread that commits finished samples in batches.
//!
//! Samples arrive on a channel as they finish; the writer takes whatever is
//! waiting (up to [`MAX_BATCH`]) and commits it in one transaction, so under
//! load records are batched and when idle each is committed at once. A crash
//! loses at most the samples still in flight or in the current batch.
//!
//! The channel is bounded: when the writer falls behind (a slow disk, another
//! process holding the store's write lock), senders wait for room instead of
//! piling finished records up in memory. The runner reserves a place before it
//! starts a sample, so a run slows to the writer's pace and its memory stays flat.

use crate::cache::CacheUse;
use crate::store::CallStats;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{channel, Receiver, Sender};

use super::{RecordSink, StoreError};
use crate::error_kind::ErrorKind;

/// Most records per transaction.
pub const MAX_BATCH: usize = 2048;

/// Records that may wait for the writer (see [`Writer::spawn`]) by default.
pub const QUEUE: usize = 1024;

/// One finished (or failed) sample, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub key: String,
    pub index: u64,
    /// Which send of its row this is (`repeats`): 0 for the first.
    pub repeat: u32,
    pub row_hash: u64,
    /// The row's values as a JSON object.
    pub variables: String,
    /// The rendered prompt (JSON messages when the spec uses `messages`).
    pub prompt: String,
    pub output: Option<String>,
    /// One per evaluator, in spec order; `None` when the evaluator could not decide.
    pub scores: Vec<Option<ScoreRecord>>,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    /// The model call (zero when none was made).
    pub call: CallStats,
    /// Offsets from the start of the run.
    pub start_us: u64,
    pub end_us: u64,
    /// The calls judges made to grade this sample, one per judging evaluator.
    pub judge_calls: Vec<JudgeRecord>,
    /// This run already stored the sample (its reply, before grading):
    /// this record takes that one's place.
    pub replaces: bool,
    /// What the response cache did for the model call.
    pub cache: CacheUse,
    /// The replica that answered (or last failed), when the model has several.
    pub endpoint: Option<Arc<str>>,
}

/// A stored error kind this build does not know: the record cannot be
/// copied without losing that it errored.
#[derive(Debug, thiserror::Error)]
#[error("sample `{key}` holds error kind `{kind}`, which this dotevals does not know")]
pub struct UnknownErrorKind {
    pub key: String,
    pub kind: String,
}

/// A record read back, to be written again as it was (`merge` copies
/// records between stores): everything but the run it belongs to, which is
/// the sink's, and its cache entries, which stay in the store they were in.
impl TryFrom<super::SampleRow> for SampleRecord {
    type Error = UnknownErrorKind;

    fn try_from(row: super::SampleRow) -> Result<Self, Self::Error> {
        let error_kind = match row.error_kind {
            Some(kind) => Some(kind.parse().map_err(|()| UnknownErrorKind {
                key: row.key.clone(),
                kind,
            })?),
            None => None,
        };
        Ok(SampleRecord {
            key: row.key,
            index: row.index,
            repeat: row.repeat,
            row_hash: row.row_hash,
            variables: row.variables,
            prompt: row.prompt,
            output: row.output,
            // A sample whose call failed has no scores stored, not unscored ones.
            scores: if row.scored { row.scores } else { Vec::new() },
            error_kind,
            error: row.error,
            call: row.call,
            start_us: row.start_us,
            end_us: row.end_us,
            judge_calls: row.judge_calls,
            replaces: false,
            cache: CacheUse::copied(row.cache_key, row.cached),
            endpoint: row.endpoint.map(Arc::from),
        })
    }
}

impl SampleRecord {
    /// A model's reply stored before grading: its graded record follows
    /// and takes its place.
    pub fn is_ungraded(&self) -> bool {
        self.error_kind == Some(ErrorKind::Ungraded)
    }
}

/// One call an `llm_judge` evaluator made for one sample: what it sent, what
/// came back and what it cost, apart from the model's own request. The score
/// and reason it gave are the evaluator's [`ScoreRecord`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JudgeRecord {
    /// The evaluator's index in the spec.
    pub evaluator: usize,
    /// The rendered messages, as JSON.
    pub prompt: String,
    /// The judge's raw reply; `None` when no reply came.
    pub reply: Option<String>,
    /// Why the call gave no score: the request failed, or the reply held none.
    pub error: Option<String>,
    pub call: CallStats,
    /// Time queued for the judge's own window (`max_concurrency`) first.
    pub queue_us: u64,
    /// What the response cache did for the call.
    pub cache: CacheUse,
}

/// One evaluator's verdict on one sample, as stored and read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    /// In [0, 1].
    pub value: f64,
    /// Whether `value` reached the evaluator's threshold when it was scored.
    pub passed: bool,
    /// Why, when the evaluator said.
    pub reason: Option<String>,
}

impl ScoreRecord {
    /// A score without a reason, passing when it is 1 (as every score stored
    /// before thresholds did).
    pub fn of(value: f64) -> Self {
        ScoreRecord {
            value,
            // Stores written before thresholds passed a perfect score only.
            passed: value >= 1.0,
            reason: None,
        }
    }
}

/// What sees each committed batch (the run's progress counters).
pub type OnCommit = Box<dyn FnMut(&[SampleRecord]) + Send>;

/// Where records go.
pub struct Writer {
    tx: Sender<SampleRecord>,
    handle: JoinHandle<Result<(), StoreError>>,
}

/// Settings for one run's writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub evaluation_id: i64,
    pub run: i64,
    /// Errored records of earlier runs may be replaced.
    pub resuming: bool,
    /// Set, to the worker's lease, when other workers record this evaluation
    /// too (`store::fleet`): a record is written only while its sample is not
    /// done, so a sample sent twice (a lease ran out) keeps its first result;
    /// and a transaction left open longer than the lease (at least 10 s: the
    /// worker stopped or was cut off mid-commit) is ended by the server, so
    /// its locks do not hold the other workers up.
    pub fleet: Option<std::time::Duration>,
    /// Wall time recorded by earlier runs.
    pub base_wall_us: u64,
    pub started: Instant,
}

impl WriterConfig {
    /// The evaluation's wall time so far, earlier runs included.
    pub fn wall_us(&self) -> u64 {
        self.base_wall_us + self.started.elapsed().as_micros() as u64
    }
}

impl Writer {
    /// Starts the writer thread, which commits through `sink`, with room for
    /// `capacity` records waiting (at least 1; [`QUEUE`] by default).
    /// `on_commit` sees each committed batch (progress counters live there).
    pub fn spawn(
        mut sink: Box<dyn RecordSink>,
        capacity: usize,
        mut on_commit: impl FnMut(&[SampleRecord]) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let (tx, mut rx) = channel(capacity.max(1));
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while next_batch(&mut rx, &mut batch) {
                    sink.commit(&batch)?;
                    on_commit(&batch);
                    batch.clear();
                }
                Ok(())
            })
            .map_err(StoreError::Thread)?;
        Ok(Writer { tx, handle })
    }

    /// A sender for finished samples.
    pub fn sender(&self) -> Sender<SampleRecord> {
        self.tx.clone()
    }

    /// Waits until every sent record is committed (all senders must be dropped).
    pub fn finish(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.handle.join().unwrap_or(Err(StoreError::WriterLost))
    }
}

/// Blocks for one record, then takes whatever else is waiting. False when closed.
fn next_batch(rx: &mut Receiver<SampleRecord>, batch: &mut Vec<SampleRecord>) -> bool {
    let Some(first) = rx.blocking_recv() else {
        return false;
    };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    true
}
