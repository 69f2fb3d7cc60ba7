//! The PostgreSQL [`SampleLookup`], on a connection of its own (as SQLite's,
//! `sqlite/lookup.rs`): resume reads it while the writer commits.

use postgres::{Row, Statement};

use super::db::Target;
use super::Db;
use crate::store::{CallStats, SampleLookup, StoreError, StoredCall, StoredSample};
use crate::usage::Usage;

/// Looks up stored samples by key while a dataset is read, on its own connection.
pub struct PgLookup {
    db: Db,
    evaluation_id: i64,
    /// Prepared once: `get` runs once per dataset row.
    get: Statement,
    call: Statement,
}

/// Opens a connection of its own to look up `evaluation_id`'s samples.
pub fn open(target: &Target, evaluation_id: i64) -> Result<PgLookup, StoreError> {
    let db = Db::connect(target)?;
    let (get, call) = db.with(|c| {
        Ok((
            c.prepare(
                "SELECT row_hash, error_kind IS NULL,
                        coalesce(error_kind IN ('evaluator', 'judge', 'ungraded') AND output IS NOT NULL, FALSE)
                 FROM samples WHERE evaluation_id = $1 AND sample_key = $2",
            )?,
            c.prepare(&format!(
                "SELECT prompt, output, error_kind, error, {CALL_COLUMNS}
                 FROM samples WHERE evaluation_id = $1 AND sample_key = $2"
            ))?,
        ))
    })?;
    Ok(PgLookup {
        db,
        evaluation_id,
        get,
        call,
    })
}

/// The columns of a call's cost, in the order [`call_stats`] reads them.
pub(super) const CALL_COLUMNS: &str = "attempts, throttled, wait_us, latency_us, prompt_tokens, \
     completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, first_token_us";

/// A call's cost from the [`CALL_COLUMNS`] from `at` on. Values out of range
/// (never written by dotevals) are clamped rather than refused.
pub(super) fn call_stats(r: &Row, at: usize) -> Result<CallStats, postgres::Error> {
    let n = |i: usize| -> Result<Option<u64>, postgres::Error> {
        Ok(r.try_get::<_, Option<i64>>(at + i)?
            .map(|v| v.max(0) as u64))
    };
    let small = |i: usize| -> Result<u32, postgres::Error> {
        Ok(r.try_get::<_, i64>(at + i)?.clamp(0, i64::from(u32::MAX)) as u32)
    };
    Ok(CallStats {
        attempts: small(0)?,
        throttled: small(1)?,
        wait_us: r.try_get::<_, i64>(at + 2)?.max(0) as u64,
        latency_us: n(3)?,
        usage: Usage {
            prompt: n(4)?,
            completion: n(5)?,
            cached_prompt: n(6)?,
            cache_write: n(7)?,
            reasoning: n(8)?,
        },
        first_token_us: n(9)?,
    })
}

impl SampleLookup for PgLookup {
    fn count(&self) -> Result<u64, StoreError> {
        let id = self.evaluation_id;
        let n: i64 = self.db.with(|c| {
            c.query_one(
                "SELECT count(*) FROM samples WHERE evaluation_id = $1",
                &[&id],
            )?
            .try_get(0)
        })?;
        Ok(n.max(0) as u64)
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let id = self.evaluation_id;
        // Keys tied on `row_index` in byte order, as SQLite sorts text.
        self.db.with(|c| {
            c.query(
                "SELECT sample_key FROM samples WHERE evaluation_id = $1
                 ORDER BY row_index, sample_key COLLATE \"C\"",
                &[&id],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
        })
    }

    fn get(&self, key: &str) -> Result<Option<StoredSample>, StoreError> {
        let (id, stmt) = (self.evaluation_id, &self.get);
        self.db.with(|c| {
            c.query_opt(stmt, &[&id, &key])?
                .map(|r| {
                    Ok(StoredSample {
                        row_hash: r.try_get::<_, i64>(0)? as u64,
                        finished: r.try_get(1)?,
                        rescore: r.try_get(2)?,
                    })
                })
                .transpose()
        })
    }

    fn call(&self, key: &str) -> Result<Option<StoredCall>, StoreError> {
        let (id, stmt) = (self.evaluation_id, &self.call);
        self.db.with(|c| {
            c.query_opt(stmt, &[&id, &key])?
                .map(|r| {
                    Ok(StoredCall {
                        prompt: r.try_get(0)?,
                        output: r.try_get(1)?,
                        error_kind: r.try_get(2)?,
                        error: r.try_get(3)?,
                        call: call_stats(&r, 4)?,
                    })
                })
                .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::writer::testing::{self, Both};
    use super::*;
    use crate::store::Recorder;

    /// Every lookup answers what SQLite's answers, for every stored key
    /// of both evaluations and for a key never stored.
    #[test]
    fn lookups_answer_what_sqlite_answers() {
        let Some(_) = crate::store::postgres::tests::server("lookups_answer_what_sqlite_answers")
        else {
            return;
        };
        let mut both = Both::new("lookup_parity");
        for (lite_id, pg_id) in testing::populate(&mut both) {
            let lite = both.sqlite.lookup(lite_id).unwrap();
            let pg: Box<dyn SampleLookup> = Box::new(open(&both.pg.target, pg_id).unwrap());
            assert_eq!(lite.count().unwrap(), pg.count().unwrap());
            let keys = lite.keys().unwrap();
            assert!(!keys.is_empty());
            assert_eq!(keys, pg.keys().unwrap());
            for key in keys.iter().map(String::as_str).chain(["never stored"]) {
                assert_eq!(lite.get(key).unwrap(), pg.get(key).unwrap(), "get {key}");
                assert_eq!(lite.call(key).unwrap(), pg.call(key).unwrap(), "call {key}");
            }
        }
    }

    /// The runner looks samples up from async tasks: the client's blocking
    /// calls must not trip the runtime. (The lookup is opened and dropped
    /// outside it: dropping a `Db` inside one panics, see `db.rs`.)
    #[test]
    fn lookups_work_inside_an_async_runtime() {
        let Some(_) = crate::store::postgres::tests::server("lookups_work_inside_an_async_runtime")
        else {
            return;
        };
        let mut both = Both::new("lookup_async");
        let [(_, pg_id), _] = testing::populate(&mut both);
        let pg = open(&both.pg.target, pg_id).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let (sample, count) = runtime.block_on(async {
            tokio::task::yield_now().await;
            (pg.get("a").unwrap(), pg.count().unwrap())
        });
        let sample = sample.expect("sample a is stored");
        assert!(sample.finished && !sample.rescore);
        assert!(count > 0);
    }
}
