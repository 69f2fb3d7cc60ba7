//! The store writer: a thread that commits finished samples in batches.
//!
//! Samples arrive on a channel as they finish; the writer takes whatever is
//! waiting (up to [`MAX_BATCH`]) and commits it in one transaction, so under
//! load records are batched and when idle each is committed at once. A crash
//! loses at most the samples still in flight or in the current batch.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{params, Connection};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::StoreError;

/// Most records per transaction.
pub const MAX_BATCH: usize = 2048;

/// One finished (or failed) sample, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub key: String,
    pub index: u64,
    pub row_hash: u64,
    /// The row's values as a JSON object.
    pub variables: String,
    /// The rendered prompt (JSON messages when the spec uses `messages`).
    pub prompt: String,
    pub output: Option<String>,
    /// One per evaluator, in spec order; `None` when the evaluator could not decide.
    pub scores: Vec<Option<f64>>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    /// Answers that said slow down (429/503).
    pub throttled: u32,
    /// Time spent waiting: retry backoff and the rate limiter.
    pub wait_us: u64,
    pub latency_us: Option<u64>,
    /// Offsets from the start of the run.
    pub start_us: u64,
    pub end_us: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// Where records go.
pub struct Writer {
    tx: UnboundedSender<SampleRecord>,
    handle: JoinHandle<Result<(), StoreError>>,
}

/// Settings for one run's writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub evaluation_id: i64,
    pub run: i64,
    /// Errored records of earlier runs may be replaced.
    pub resuming: bool,
    /// Wall time recorded by earlier runs.
    pub base_wall_us: u64,
    pub started: Instant,
}

impl Writer {
    /// Starts the writer thread on its own connection to `path`.
    /// `on_commit` sees each committed batch (progress counters live there).
    pub fn spawn(
        path: &Path,
        config: WriterConfig,
        mut on_commit: impl FnMut(&[SampleRecord]) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let conn = Connection::open(path)?;
        super::configure(&conn)?;
        let (tx, mut rx) = unbounded_channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut conn = conn;
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while next_batch(&mut rx, &mut batch) {
                    commit(&mut conn, &config, &batch)?;
                    on_commit(&batch);
                    batch.clear();
                }
                Ok(())
            })
            .map_err(StoreError::Thread)?;
        Ok(Writer { tx, handle })
    }

    /// A sender for finished samples.
    pub fn sender(&self) -> UnboundedSender<SampleRecord> {
        self.tx.clone()
    }

    /// Waits until every sent record is committed (all senders must be dropped).
    pub fn finish(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.handle.join().unwrap_or(Err(StoreError::WriterLost))
    }
}

/// Blocks for one record, then takes whatever else is waiting. False when closed.
fn next_batch(rx: &mut UnboundedReceiver<SampleRecord>, batch: &mut Vec<SampleRecord>) -> bool {
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

fn commit(
    conn: &mut Connection,
    config: &WriterConfig,
    batch: &[SampleRecord],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM samples WHERE evaluation_id = ?1 AND sample_key = ?2")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO samples (evaluation_id, sample_key, row_index, row_hash, run, variables, prompt, output,
                 error_kind, error, attempts, latency_us, start_us, end_us, prompt_tokens, completion_tokens,
                 throttled, wait_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        let mut score = tx.prepare_cached("INSERT INTO scores (sample_id, evaluation_id, evaluator, value) VALUES (?1, ?2, ?3, ?4)")?;
        for r in batch {
            if config.resuming {
                delete.execute(params![config.evaluation_id, r.key])?;
            }
            insert.execute(params![
                config.evaluation_id,
                r.key,
                r.index as i64,
                r.row_hash as i64,
                config.run,
                r.variables,
                r.prompt,
                r.output,
                r.error_kind,
                r.error,
                r.attempts,
                r.latency_us.map(|v| v as i64),
                r.start_us as i64,
                r.end_us as i64,
                r.prompt_tokens.map(|v| v as i64),
                r.completion_tokens.map(|v| v as i64),
                r.throttled,
                r.wait_us as i64,
            ])?;
            let sample_id = tx.last_insert_rowid();
            for (i, value) in r.scores.iter().enumerate() {
                score.execute(params![sample_id, config.evaluation_id, i as i64, value])?;
            }
        }
        update_wall(&tx, config)?;
    }
    tx.commit()?;
    Ok(())
}

/// Records the run's wall time so far (earlier runs included); called with each
/// batch, so a crash leaves a wall time close to the truth, and once at the end.
pub fn update_wall(conn: &Connection, config: &WriterConfig) -> Result<(), StoreError> {
    let wall = config.base_wall_us + config.started.elapsed().as_micros() as u64;
    conn.execute(
        "UPDATE evaluations SET wall_us = ?2 WHERE id = ?1",
        params![config.evaluation_id, wall as i64],
    )?;
    Ok(())
}
