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

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{params, Connection};
use tokio::sync::mpsc::{channel, Receiver, Sender};

use super::StoreError;

/// Most records per transaction.
pub const MAX_BATCH: usize = 2048;

/// Records that may wait for the writer (see [`Writer::spawn`]) by default.
pub const QUEUE: usize = 1024;

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
    /// Wall time recorded by earlier runs.
    pub base_wall_us: u64,
    pub started: Instant,
}

impl Writer {
    /// Starts the writer thread on its own connection to `path`, with room for
    /// [`QUEUE`] records waiting. `on_commit` sees each committed batch
    /// (progress counters live there).
    pub fn spawn(
        path: &Path,
        config: WriterConfig,
        on_commit: impl FnMut(&[SampleRecord]) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        Writer::with_capacity(path, config, QUEUE, on_commit)
    }

    /// [`Writer::spawn`] with room for `capacity` records waiting (at least 1).
    pub fn with_capacity(
        path: &Path,
        config: WriterConfig,
        capacity: usize,
        mut on_commit: impl FnMut(&[SampleRecord]) + Send + 'static,
    ) -> Result<Writer, StoreError> {
        let conn = Connection::open(path)?;
        super::configure(&conn)?;
        let (tx, mut rx) = channel(capacity.max(1));
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
        "UPDATE evaluation_totals SET wall_us = ?2 WHERE evaluation_id = ?1",
        params![config.evaluation_id, wall as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now, EvaluationMeta, Store};

    fn record(key: &str) -> SampleRecord {
        SampleRecord {
            key: key.into(),
            index: 0,
            row_hash: 1,
            variables: "{}".into(),
            prompt: "\"p\"".into(),
            output: Some("out".into()),
            scores: vec![Some(1.0)],
            error_kind: None,
            error: None,
            attempts: 2,
            throttled: 1,
            wait_us: 5,
            latency_us: Some(1000),
            start_us: 0,
            end_us: 1000,
            prompt_tokens: Some(3),
            completion_tokens: Some(1),
        }
    }

    fn started(path: &Path, spec_text: &str) -> (Store, WriterConfig) {
        let mut store = Store::open(path).unwrap();
        let evaluators = vec!["contains".to_string()];
        let meta = EvaluationMeta {
            name: "e",
            spec_path: "e.yaml",
            spec_text,
            spec_hash: "h",
            identity: "{}",
            provider: "mock",
            model: "mock",
            evaluators: &evaluators,
            strategy: "sliding_window",
            max_concurrency: 4,
            total: 10,
        };
        let (evaluation_id, run, base_wall_us) =
            store.start_evaluation("x", &meta, &now()).unwrap();
        let config = WriterConfig {
            evaluation_id,
            run,
            resuming: true,
            base_wall_us,
            started: Instant::now(),
        };
        (store, config)
    }

    /// Committing samples (and replacing them on resume) never rewrites the
    /// evaluation's row, which holds the spec snapshot, however big it is.
    #[test]
    fn commits_leave_the_row_holding_the_spec_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (_store, config) = started(&path, &"# a big spec\n".repeat(1000));
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TEMP TABLE touched (n INTEGER);
             CREATE TEMP TRIGGER evaluation_touched AFTER UPDATE ON main.evaluations BEGIN
                 INSERT INTO touched VALUES (1);
             END;",
        )
        .unwrap();
        for round in 0..2 {
            let batch: Vec<SampleRecord> =
                (0..5).map(|i| record(&format!("{round}-{i}"))).collect();
            commit(&mut conn, &config, &batch).unwrap();
            commit(&mut conn, &config, &batch[..2]).unwrap();
        }
        let touched: i64 = conn
            .query_row("SELECT count(*) FROM touched", [], |r| r.get(0))
            .unwrap();
        assert_eq!(touched, 0, "per-sample writes updated `evaluations`");
        let (recorded, wall): (i64, i64) = conn
            .query_row(
                "SELECT recorded, wall_us FROM evaluation_totals WHERE evaluation_id = ?1",
                [config.evaluation_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(recorded, 10);
        assert!(wall >= 0);
    }

    /// While the writer cannot commit, its queue takes no more than its capacity.
    #[test]
    fn the_queue_is_bounded_while_the_writer_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (_store, config) = started(&path, "name: e");
        let lock = Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = Writer::with_capacity(&path, config, 8, |_| {}).unwrap();
        let tx = writer.sender();
        let mut taken = 0;
        for i in 0..100 {
            if tx.try_send(record(&i.to_string())).is_ok() {
                taken += 1;
            }
            // Let the writer take its first batch and block on the lock.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            taken <= 8 + 8,
            "{taken} records queued past a capacity of 8"
        );
        lock.execute_batch("ROLLBACK").unwrap();
        drop(tx);
        writer.finish().unwrap();
    }
}
