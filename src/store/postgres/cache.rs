//! The response cache on PostgreSQL, as SQLite's (`sqlite/cache.rs`):
//! lookups on a connection of their own (the writer keeps entries with the
//! records that paid for them, see `writer.rs`), and the reads and deletes
//! behind `dotevals cache`.

use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, IsolationLevel, Statement};

use super::db::Target;
use super::Db;
use crate::cache::explain::{rfc3339, CachedRequest, SampleCache, SentRequest, MAX_ALTERNATIVES};
use crate::cache::{CacheLookup, CacheStats, CachedReply, LookupError, ModelStats};
use crate::store::unix_now;
use crate::store::StoreError;
use crate::usage::Usage;

/// Finds cache entries by key (shared by the dataset reader and the judges:
/// a point lookup holds the lock for one round trip).
pub struct PgCache {
    conn: Mutex<(Db, Statement)>,
}

/// Opens a connection of its own for cache lookups.
pub fn open(target: &Target) -> Result<PgCache, StoreError> {
    let db = Db::connect(target)?;
    let get = db.with(|c| {
        c.prepare(
            "SELECT output, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                    reasoning_tokens
             FROM cache WHERE key = $1 AND written_at >= $2",
        )
    })?;
    Ok(PgCache {
        conn: Mutex::new((db, get)),
    })
}

impl CacheLookup for PgCache {
    fn get(&self, hash: &str, ttl: Option<Duration>) -> Result<Option<CachedReply>, LookupError> {
        let since = ttl.map_or(i64::MIN, |ttl| {
            unix_now().saturating_sub(ttl.as_secs().min(i64::MAX as u64) as i64)
        });
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (db, get) = &*conn;
        let n = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        db.with(|c| {
            c.query_opt(get, &[&hash, &since])?
                .map(|r| {
                    Ok(CachedReply {
                        output: r.try_get(0)?,
                        usage: Usage {
                            prompt: n(r.try_get(1)?),
                            completion: n(r.try_get(2)?),
                            cached_prompt: n(r.try_get(3)?),
                            cache_write: n(r.try_get(4)?),
                            reasoning: n(r.try_get(5)?),
                        },
                    })
                })
                .transpose()
        })
        .map_err(Into::into)
    }
}

/// The cache's size and use, in all and per model (`cache stats`).
pub fn stats(db: &Db) -> Result<CacheStats, StoreError> {
    let n = |v: i64| v.max(0) as u64;
    // Bytes, not characters: `octet_length` of UTF-8 text, as SQLite's
    // `length` of a BLOB. Models in byte order, as SQLite sorts text.
    let models = db.with(|c| {
        c.query(
            "SELECT c.model, count(*),
                    coalesce(sum(octet_length(c.output) + coalesce(octet_length(k.request), 0)), 0)::bigint,
                    coalesce(sum(c.hits), 0)::bigint, min(c.written_at), max(c.written_at)
             FROM cache c LEFT JOIN cache_keys k ON k.key = c.key
             GROUP BY c.model ORDER BY c.model COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(ModelStats {
                model: r.try_get(0)?,
                entries: n(r.try_get(1)?),
                bytes: n(r.try_get(2)?),
                hits: n(r.try_get(3)?),
                oldest: r.try_get::<_, Option<i64>>(4)?.map(rfc3339),
                newest: r.try_get::<_, Option<i64>>(5)?.map(rfc3339),
            })
        })
        .collect::<Result<Vec<_>, postgres::Error>>()
    })?;
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
pub fn clear(
    db: &Db,
    older_than: Option<Duration>,
    model: Option<&str>,
) -> Result<u64, StoreError> {
    let before = older_than.map_or(i64::MAX, |d| {
        unix_now().saturating_sub(d.as_secs().min(i64::MAX as u64) as i64)
    });
    db.with(|c| {
        let mut tx = c.transaction()?;
        tx.execute(
            "DELETE FROM cache_keys WHERE key IN
                 (SELECT key FROM cache WHERE written_at < $1 AND ($2::text IS NULL OR model = $2))",
            &[&before, &model],
        )?;
        let deleted = tx.execute(
            "DELETE FROM cache WHERE written_at < $1 AND ($2::text IS NULL OR model = $2)",
            &[&before, &model],
        )?;
        tx.commit()?;
        Ok(deleted)
    })
}

/// What `cache explain` needs about sample `sample` of `experiment`: one
/// [`SampleCache`] per evaluation holding it (none: no such sample).
pub fn explain_reads(
    db: &Db,
    experiment: &str,
    sample: &str,
) -> Result<Vec<SampleCache>, StoreError> {
    db.with(|c| explain_in_snapshot(c, experiment, sample))?
        .ok_or_else(|| StoreError::UnknownExperiment(experiment.to_owned()))
}

/// [`explain_reads`] in one snapshot (`REPEATABLE READ`: a run committing
/// meanwhile cannot split the reads, as SQLite's read transaction);
/// `None` for an unknown experiment.
fn explain_in_snapshot(
    c: &mut Client,
    experiment: &str,
    sample: &str,
) -> Result<Option<Vec<SampleCache>>, postgres::Error> {
    let mut tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let Some(experiment_id) = tx
        .query_opt("SELECT id FROM experiments WHERE name = $1", &[&experiment])?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()?
    else {
        return Ok(None);
    };
    let mut found = tx
        .query(
            "SELECT e.name, s.cache_key, s.cached, s.error_kind
             FROM samples s JOIN evaluations e ON e.id = s.evaluation_id
             WHERE e.experiment_id = $1 AND s.sample_key = $2 ORDER BY e.id",
            &[&experiment_id, &sample],
        )?
        .iter()
        .map(|r| {
            Ok(SampleCache {
                evaluation: r.try_get(0)?,
                key: r.try_get(1)?,
                cached: r.try_get(2)?,
                error_kind: r.try_get(3)?,
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, postgres::Error>>()?;
    let sent = tx.prepare("SELECT request, sent_at FROM cache_keys WHERE key = $1")?;
    let entry = tx.prepare("SELECT written_at FROM cache WHERE key = $1")?;
    let alternatives = tx.prepare(
        "SELECT k.key, k.request, c.written_at
         FROM cache_keys k JOIN cache c ON c.key = k.key
         WHERE k.sample_key = $1 AND k.key <> $2
         ORDER BY c.written_at DESC LIMIT $3",
    )?;
    for r in &mut found {
        let Some(key) = r.key.clone() else { continue };
        r.entry_written_at = tx
            .query_opt(&entry, &[&key])?
            .map(|row| row.try_get(0))
            .transpose()?;
        if r.cached {
            continue;
        }
        r.sent = tx
            .query_opt(&sent, &[&key])?
            .map(|row| {
                Ok::<_, postgres::Error>(SentRequest {
                    request: row.try_get(0)?,
                    sent_at: row.try_get(1)?,
                })
            })
            .transpose()?;
        r.alternatives = tx
            .query(&alternatives, &[&sample, &key, &(MAX_ALTERNATIVES as i64)])?
            .iter()
            .map(|row| {
                Ok(CachedRequest {
                    key: row.try_get(0)?,
                    request: row.try_get(1)?,
                    written_at: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()?;
    }
    tx.commit()?;
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::writer::testing::{self, Both};
    use super::*;
    use crate::store::{Admin, Recorder};

    const HOUR: Duration = Duration::from_secs(3600);

    /// Entries are found, and past their time-to-live missed, as on SQLite.
    #[test]
    fn lookups_find_what_sqlite_finds() {
        let Some(_) = crate::store::postgres::tests::server("lookups_find_what_sqlite_finds")
        else {
            return;
        };
        let mut both = Both::new("cache_get");
        testing::populate(&mut both);
        let lite = both.sqlite.cache().unwrap();
        let pg: Arc<dyn CacheLookup> = Arc::new(open(&both.pg.target).unwrap());
        let hashes = ["ka", "ka2", "kb", "kb2", "kf", "ja", "missing"];
        let compare = |ttl: Option<Duration>| {
            for hash in hashes {
                assert_eq!(
                    lite.get(hash, ttl).unwrap(),
                    pg.get(hash, ttl).unwrap(),
                    "{hash}, ttl {ttl:?}"
                );
            }
        };
        assert!(pg.get("ka", None).unwrap().is_some());
        compare(None);
        compare(Some(HOUR));
        both.execute("UPDATE cache SET written_at = written_at - 7200 WHERE model = 'm2'");
        assert!(pg.get("kb2", Some(HOUR)).unwrap().is_none());
        compare(Some(HOUR));
        // A time-to-live past the epoch keeps everything (SQLite's lookup
        // wraps it around to a time in the future, and finds nothing).
        let forever = Some(Duration::from_secs(u64::MAX));
        assert!(pg.get("kb2", forever).unwrap().is_some());
    }

    /// `cache stats`, `cache clear` and `cache explain` read and delete what
    /// they do on SQLite.
    #[test]
    fn stats_clear_and_explain_match_sqlite() {
        let Some(_) = crate::store::postgres::tests::server("stats_clear_and_explain_match_sqlite")
        else {
            return;
        };
        let mut both = Both::new("cache_admin");
        let since = unix_now();
        testing::populate(&mut both);
        let db = Db::connect(&both.pg.target).unwrap();
        testing::fix_cache_times(&both);

        let stats_match = || {
            let lite = both.sqlite.cache_stats().unwrap();
            assert_eq!(lite, stats(&db).unwrap());
            lite
        };
        let first = stats_match();
        assert!(first.entries > 0 && first.hits > 0 && first.models.len() > 1);

        for sample in ["a", "b", "c", "f", "j", "l", "m", "n", "never stored"] {
            let lite = both.sqlite.cache_explain_reads("x", sample).unwrap();
            assert_eq!(lite, explain_reads(&db, "x", sample).unwrap(), "{sample}");
        }
        let a = explain_reads(&db, "x", "a").unwrap();
        assert!(a
            .iter()
            .any(|r| r.sent.is_some() && !r.alternatives.is_empty()));
        assert!(matches!(
            explain_reads(&db, "nope", "a"),
            Err(StoreError::UnknownExperiment(name)) if name == "nope"
        ));
        assert!(matches!(
            both.sqlite.cache_explain_reads("nope", "a"),
            Err(StoreError::UnknownExperiment(_))
        ));

        // The tables compared whole after each clear, times now fixed.
        let same_cache = || {
            for (table, sql) in testing::tables(since) {
                if table.starts_with("cache") {
                    let (lite, pg) = both.rows(&sql);
                    assert_eq!(lite, pg, "{table}");
                }
            }
        };
        let now = unix_now();
        both.execute(&format!(
            "UPDATE cache SET written_at = {now} WHERE model <> 'm2';
             UPDATE cache SET written_at = {} WHERE model = 'm2';",
            now - 7200
        ));
        let clears: [(Option<Duration>, Option<&str>); 4] = [
            (Some(HOUR), Some("no such model")),
            (Some(HOUR), None),
            (None, Some("m1")),
            (None, None),
        ];
        for (older_than, model) in clears {
            let lite = both.sqlite.cache_clear(older_than, model).unwrap();
            let pg = clear(&db, older_than, model).unwrap();
            assert_eq!(lite, pg, "clear {older_than:?} {model:?}");
            same_cache();
            stats_match();
        }
        assert_eq!(stats_match(), CacheStats::default());
    }

    /// One lookup is shared by the dataset reader and the judges.
    #[test]
    fn the_lookup_is_shared_between_threads() {
        let Some(_) = crate::store::postgres::tests::server("the_lookup_is_shared_between_threads")
        else {
            return;
        };
        fn shared<T: Send + Sync>(_: &T) {}
        let mut both = Both::new("cache_threads");
        testing::populate(&mut both);
        let pg = Arc::new(open(&both.pg.target).unwrap());
        shared(&pg);
        let found: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let pg = &pg;
                    s.spawn(move || pg.get("ka", None).unwrap().is_some())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(found, [true; 4]);
    }
}
