//! The SQLite [`RecordSink`]: one transaction per batch of finished samples,
//! on a connection of its own.

use rusqlite::{params, Connection};

use crate::cache::CacheUse;
use crate::store::writer::{SampleRecord, WriterConfig};
use crate::store::{RecordSink, StoreError};

/// Commits one run's records.
pub struct SqliteSink {
    pub(super) conn: Connection,
    pub(super) config: WriterConfig,
}

impl RecordSink for SqliteSink {
    fn commit(&mut self, batch: &[SampleRecord]) -> Result<(), StoreError> {
        commit(&mut self.conn, &self.config, batch)
    }
}

fn commit(
    conn: &mut Connection,
    config: &WriterConfig,
    batch: &[SampleRecord],
) -> Result<(), StoreError> {
    // SQLite integers are signed; counts past i64::MAX cannot happen.
    let n = |v: Option<u64>| v.map(|v| v as i64);
    let tx = conn.transaction()?;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM samples WHERE evaluation_id = ?1 AND sample_key = ?2")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO samples (evaluation_id, sample_key, row_index, row_hash, run, variables, prompt, output,
                 error_kind, error, attempts, latency_us, start_us, end_us, prompt_tokens, completion_tokens,
                 throttled, wait_us, repeat, cached_tokens, cache_write_tokens, reasoning_tokens, first_token_us,
                 cache_key, cached, endpoint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
        )?;
        let mut score = tx.prepare_cached(
            "INSERT INTO scores (sample_id, evaluation_id, evaluator, value, passed, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut judge = tx.prepare_cached(
            "INSERT INTO judge_calls (sample_id, evaluation_id, evaluator, prompt, reply, error, attempts,
                 throttled, wait_us, latency_us, prompt_tokens, completion_tokens, queue_us, cached_tokens,
                 cache_write_tokens, reasoning_tokens, first_token_us, cache_key, cached)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?;
        let mut cache = CacheWrites::prepare(&tx)?;
        let now = crate::store::unix_now();
        for r in batch {
            if config.resuming || r.replaces {
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
                r.error_kind.map(|k| k.to_string()),
                r.error,
                r.call.attempts,
                r.call.latency_us.map(|v| v as i64),
                r.start_us as i64,
                r.end_us as i64,
                n(r.call.usage.prompt),
                n(r.call.usage.completion),
                r.call.throttled,
                r.call.wait_us as i64,
                r.repeat,
                n(r.call.usage.cached_prompt),
                n(r.call.usage.cache_write),
                n(r.call.usage.reasoning),
                n(r.call.first_token_us),
                r.cache.hash(),
                r.cache.is_hit(),
                r.endpoint.as_deref(),
            ])?;
            let sample_id = tx.last_insert_rowid();
            cache.write(&r.cache, &r.key, now)?;
            for (i, s) in r.scores.iter().enumerate() {
                score.execute(params![
                    sample_id,
                    config.evaluation_id,
                    i as i64,
                    s.as_ref().map(|s| s.value),
                    s.as_ref().map(|s| s.passed),
                    s.as_ref().and_then(|s| s.reason.as_deref()),
                ])?;
            }
            for j in &r.judge_calls {
                judge.execute(params![
                    sample_id,
                    config.evaluation_id,
                    j.evaluator as i64,
                    j.prompt,
                    j.reply,
                    j.error,
                    j.call.attempts,
                    j.call.throttled,
                    j.call.wait_us as i64,
                    j.call.latency_us.map(|v| v as i64),
                    n(j.call.usage.prompt),
                    n(j.call.usage.completion),
                    j.queue_us as i64,
                    n(j.call.usage.cached_prompt),
                    n(j.call.usage.cache_write),
                    n(j.call.usage.reasoning),
                    n(j.call.first_token_us),
                    j.cache.hash(),
                    j.cache.is_hit(),
                ])?;
                cache.write(&j.cache, &format!("{} judge {}", r.key, j.evaluator), now)?;
            }
        }
        update_wall(&tx, config.evaluation_id, config.wall_us())?;
    }
    tx.commit()?;
    Ok(())
}

/// The response cache's writes, in a batch's transaction: what each request
/// sent under the cache was keyed by, its reply when it succeeded, and the
/// uses of entries.
struct CacheWrites<'t> {
    key: rusqlite::CachedStatement<'t>,
    entry: rusqlite::CachedStatement<'t>,
    hit: rusqlite::CachedStatement<'t>,
}

impl<'t> CacheWrites<'t> {
    fn prepare(tx: &'t rusqlite::Transaction<'_>) -> Result<Self, StoreError> {
        Ok(CacheWrites {
            key: tx.prepare_cached(
                "INSERT OR REPLACE INTO cache_keys (key, model, request, sample_key, sent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            entry: tx.prepare_cached(
                "INSERT OR REPLACE INTO cache (key, model, output, prompt_tokens, completion_tokens,
                     cached_tokens, cache_write_tokens, reasoning_tokens, written_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            hit: tx.prepare_cached(
                "UPDATE cache SET hits = hits + 1, last_hit_at = ?2 WHERE key = ?1",
            )?,
        })
    }

    /// Records `cache` for the call of `sample_key`, at `now` (Unix seconds).
    fn write(&mut self, cache: &CacheUse, sample_key: &str, now: i64) -> Result<(), StoreError> {
        let n = |v: Option<u64>| v.map(|v| v as i64);
        match cache {
            CacheUse::Off | CacheUse::Copied { .. } => {}
            CacheUse::Hit(hash) => {
                self.hit.execute(params![hash, now])?;
            }
            CacheUse::Sent { key, model, reply } => {
                self.key
                    .execute(params![key.hash, model, key.request, sample_key, now])?;
                if let Some(reply) = reply {
                    let u = &reply.usage;
                    self.entry.execute(params![
                        key.hash,
                        model,
                        reply.output,
                        n(u.prompt),
                        n(u.completion),
                        n(u.cached_prompt),
                        n(u.cache_write),
                        n(u.reasoning),
                        now,
                    ])?;
                }
            }
        }
        Ok(())
    }
}

/// Records the evaluation's wall time, earlier runs included.
pub(super) fn update_wall(
    conn: &Connection,
    evaluation_id: i64,
    wall_us: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE evaluation_totals SET wall_us = ?2 WHERE evaluation_id = ?1",
        params![evaluation_id, wall_us as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::writer::Writer;
    use crate::store::{now, EvaluationMeta, Recorder};

    fn record(key: &str) -> SampleRecord {
        SampleRecord {
            key: key.into(),
            index: 0,
            repeat: 0,
            row_hash: 1,
            variables: "{}".into(),
            prompt: "\"p\"".into(),
            output: Some("out".into()),
            scores: vec![Some(crate::store::writer::ScoreRecord::of(1.0))],
            error_kind: None,
            error: None,
            call: crate::store::CallStats {
                attempts: 2,
                throttled: 1,
                wait_us: 5,
                latency_us: Some(1000),
                first_token_us: None,
                usage: crate::usage::Usage {
                    prompt: Some(3),
                    completion: Some(1),
                    ..Default::default()
                },
            },
            start_us: 0,
            end_us: 1000,
            judge_calls: Vec::new(),
            replaces: false,
            cache: CacheUse::Off,
            endpoint: None,
        }
    }

    fn started(path: &Path, spec_text: &str) -> (SqliteStore, WriterConfig) {
        let mut store = SqliteStore::open(path).unwrap();
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
            cluster: None,
            fail_under: &[],
            repeats: 1,
        };
        let started = store.start_evaluation("x", &meta, &now()).unwrap();
        let config = WriterConfig {
            evaluation_id: started.id,
            run: started.run,
            resuming: true,
            fleet: None,
            base_wall_us: started.wall_us,
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

    /// A reply from the cache made no attempt: it counts as cached, and not
    /// as -1 retries; replacing it takes both back.
    #[test]
    fn a_cached_record_counts_as_cached_and_no_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (_store, config) = started(&path, "name: e");
        let mut conn = Connection::open(&path).unwrap();
        let hit = SampleRecord {
            call: crate::store::CallStats::default(),
            cache: CacheUse::Hit("00".repeat(16)),
            ..record("a")
        };
        let totals = |conn: &Connection| -> (i64, i64, i64) {
            conn.query_row(
                "SELECT recorded, retries, cached FROM evaluation_totals WHERE evaluation_id = ?1",
                [config.evaluation_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        commit(&mut conn, &config, &[hit.clone(), record("b")]).unwrap();
        assert_eq!(totals(&conn), (2, 1, 1), "(recorded, retries, cached)");
        // Resuming replaces both records: the counters follow.
        commit(&mut conn, &config, &[record("a"), hit.clone()]).unwrap();
        assert_eq!(totals(&conn), (2, 1, 1));
    }

    /// While the writer cannot commit, its queue takes no more than its capacity.
    #[test]
    fn the_queue_is_bounded_while_the_writer_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (store, config) = started(&path, "name: e");
        let lock = Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = Writer::spawn(store.sink(config).unwrap(), 8, |_| {}).unwrap();
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
