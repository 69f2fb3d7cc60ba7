//! The response cache in SQLite: lookups on a read-only connection of
//! their own (the writer keeps entries with the records that paid for them,
//! see `writer.rs`), and the reads and deletes behind `dotevals cache`.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::cache::explain::{rfc3339, CachedRequest, SampleCache, SentRequest, MAX_ALTERNATIVES};
use crate::cache::{CacheLookup, CacheStats, CachedReply, LookupError, ModelStats};
use crate::store::unix_now;
use crate::store::StoreError;
use crate::usage::Usage;

/// Finds cache entries by key (shared by the dataset reader and the judges:
/// a point lookup holds the lock for microseconds).
pub struct SqliteCache {
    conn: Mutex<Connection>,
}

impl SqliteCache {
    pub fn open(path: &Path) -> Result<SqliteCache, StoreError> {
        Ok(SqliteCache {
            conn: Mutex::new(super::lookup::reader(path)?),
        })
    }
}

impl CacheLookup for SqliteCache {
    fn get(&self, hash: &str, ttl: Option<Duration>) -> Result<Option<CachedReply>, LookupError> {
        let since = ttl.map_or(i64::MIN, |ttl| {
            unix_now().saturating_sub(ttl.as_secs().min(i64::MAX as u64) as i64)
        });
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT output, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                    reasoning_tokens
             FROM cache WHERE key = ?1 AND written_at >= ?2",
        )?;
        let n = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        Ok(stmt
            .query_row(params![hash, since], |r| {
                Ok(CachedReply {
                    output: r.get(0)?,
                    usage: Usage {
                        prompt: n(r.get(1)?),
                        completion: n(r.get(2)?),
                        cached_prompt: n(r.get(3)?),
                        cache_write: n(r.get(4)?),
                        reasoning: n(r.get(5)?),
                    },
                })
            })
            .optional()?)
    }
}

/// The cache's size and use, in all and per model (`cache stats`).
pub(super) fn stats(conn: &Connection) -> Result<CacheStats, StoreError> {
    // Bytes, not characters: `length` of text counts characters.
    let mut stmt = conn.prepare_cached(
        "SELECT c.model, count(*),
                coalesce(sum(length(CAST(c.output AS BLOB)) + coalesce(length(CAST(k.request AS BLOB)), 0)), 0),
                coalesce(sum(c.hits), 0), min(c.written_at), max(c.written_at)
         FROM cache c LEFT JOIN cache_keys k ON k.key = c.key
         GROUP BY c.model ORDER BY c.model",
    )?;
    let n = |v: i64| v.max(0) as u64;
    let models = stmt
        .query_map([], |r| {
            Ok(ModelStats {
                model: r.get(0)?,
                entries: n(r.get(1)?),
                bytes: n(r.get(2)?),
                hits: n(r.get(3)?),
                oldest: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                newest: r.get::<_, Option<i64>>(5)?.map(rfc3339),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CacheStats {
        entries: models.iter().map(|m| m.entries).sum(),
        bytes: models.iter().map(|m| m.bytes).sum(),
        hits: models.iter().map(|m| m.hits).sum(),
        models,
    })
}

/// Deletes the entries written more than `older_than` ago (all when
/// `None`), of `model` only when given, with their keys' rows; answers how
/// many. Samples keep their `cache_key`: it names a key, not an entry.
pub(super) fn clear(
    conn: &Connection,
    older_than: Option<Duration>,
    model: Option<&str>,
) -> Result<u64, StoreError> {
    let before = older_than.map_or(i64::MAX, |d| {
        unix_now().saturating_sub(d.as_secs().min(i64::MAX as u64) as i64)
    });
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "DELETE FROM cache_keys WHERE key IN
             (SELECT key FROM cache WHERE written_at < ?1 AND (?2 IS NULL OR model = ?2))",
        params![before, model],
    )?;
    let deleted = tx.execute(
        "DELETE FROM cache WHERE written_at < ?1 AND (?2 IS NULL OR model = ?2)",
        params![before, model],
    )?;
    tx.commit()?;
    Ok(deleted as u64)
}

/// What `cache explain` needs about sample `sample` of `experiment`: one
/// [`SampleCache`] per evaluation holding it (none: no such sample).
pub(super) fn explain_reads(
    conn: &Connection,
    experiment: &str,
    sample: &str,
) -> Result<Vec<SampleCache>, StoreError> {
    // One snapshot: a run committing meanwhile cannot split the reads.
    let snapshot = conn.unchecked_transaction()?;
    let experiment_id: i64 = snapshot
        .query_row(
            "SELECT id FROM experiments WHERE name = ?1",
            [experiment],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::UnknownExperiment(experiment.to_owned()))?;
    let mut records = snapshot.prepare_cached(
        "SELECT e.name, s.cache_key, s.cached, s.error_kind
         FROM samples s JOIN evaluations e ON e.id = s.evaluation_id
         WHERE e.experiment_id = ?1 AND s.sample_key = ?2 ORDER BY e.id",
    )?;
    let mut found = records
        .query_map(params![experiment_id, sample], |r| {
            Ok(SampleCache {
                evaluation: r.get(0)?,
                key: r.get(1)?,
                cached: r.get(2)?,
                error_kind: r.get(3)?,
                ..Default::default()
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut sent =
        snapshot.prepare_cached("SELECT request, sent_at FROM cache_keys WHERE key = ?1")?;
    let mut entry = snapshot.prepare_cached("SELECT written_at FROM cache WHERE key = ?1")?;
    let mut alternatives = snapshot.prepare_cached(
        "SELECT k.key, k.request, c.written_at
         FROM cache_keys k JOIN cache c ON c.key = k.key
         WHERE k.sample_key = ?1 AND k.key <> ?2
         ORDER BY c.written_at DESC LIMIT ?3",
    )?;
    for r in &mut found {
        let Some(key) = r.key.clone() else { continue };
        r.entry_written_at = entry.query_row([&key], |row| row.get(0)).optional()?;
        if r.cached {
            continue;
        }
        r.sent = sent
            .query_row([&key], |row| {
                Ok(SentRequest {
                    request: row.get(0)?,
                    sent_at: row.get(1)?,
                })
            })
            .optional()?;
        r.alternatives = alternatives
            .query_map(params![sample, key, MAX_ALTERNATIVES as i64], |row| {
                Ok(CachedRequest {
                    key: row.get(0)?,
                    request: row.get(1)?,
                    written_at: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    drop((records, sent, entry, alternatives));
    snapshot.finish()?;
    Ok(found)
}
