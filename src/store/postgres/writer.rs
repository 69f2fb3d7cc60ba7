//! The PostgreSQL [`RecordSink`]: one transaction per batch of finished
//! samples, on a connection of its own, with the same rows and totals as
//! SQLite's (`sqlite/writer.rs`).
//!
//! A batch is written with a few multi-row statements (each column an
//! array, `unnest`ed) rather than SQLite's statement per row: on a server
//! every statement is a round trip, and a row at a time managed about
//! 2,000 records/s against a local server. The statements are prepared
//! once, when the sink opens. The per-evaluation totals follow from the
//! schema's triggers.

use std::collections::{HashMap, HashSet};

use postgres::types::ToSql;
use postgres::{Client, Statement, Transaction};

use super::db::Target;
use super::Db;
use crate::cache::{CacheUse, CachedReply};
use crate::store::writer::{JudgeRecord, SampleRecord, WriterConfig};
use crate::store::{RecordSink, StoreError};

/// Commits one run's records.
pub struct PgSink {
    db: Db,
    config: WriterConfig,
    statements: Statements,
}

/// Opens a connection of its own for one run's records.
pub fn open(target: &Target, config: WriterConfig) -> Result<PgSink, StoreError> {
    let db = Db::connect(target)?;
    if let Some(lease) = config.fleet {
        super::fleet::end_stalled_transactions(&db, lease)?;
    }
    let statements = db.with(Statements::prepare)?;
    Ok(PgSink {
        db,
        config,
        statements,
    })
}

impl RecordSink for PgSink {
    fn commit(&mut self, batch: &[SampleRecord]) -> Result<(), StoreError> {
        let (config, s) = (&self.config, &self.statements);
        self.db.with(|c| {
            let mut tx = c.transaction()?;
            commit(&mut tx, s, config, batch)?;
            tx.commit()
        })
    }
}

/// The statements of a batch, prepared on the sink's connection (a
/// statement belongs to the connection that prepared it).
struct Statements {
    delete: Statement,
    insert: Statement,
    score: Statement,
    judge: Statement,
    cache_key: Statement,
    cache_entry: Statement,
    cache_hit: Statement,
    wall: Statement,
    open_samples: Statement,
    finish_samples: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            delete: c.prepare(
                "DELETE FROM samples WHERE evaluation_id = $1 AND sample_key = ANY($2::text[])",
            )?,
            insert: c.prepare(
                "INSERT INTO samples (evaluation_id, run, sample_key, row_index, row_hash, variables, prompt,
                     output, error_kind, error, attempts, latency_us, start_us, end_us, prompt_tokens,
                     completion_tokens, throttled, wait_us, repeat, cached_tokens, cache_write_tokens,
                     reasoning_tokens, first_token_us, cache_key, cached, endpoint)
                 SELECT $1::bigint, $2::bigint, t.* FROM unnest($3::text[], $4::bigint[], $5::bigint[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                     $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
                     $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[],
                     $22::bigint[], $23::bigint[], $24::text[], $25::boolean[], $26::text[]) AS t
                 RETURNING id, sample_key",
            )?,
            score: c.prepare(
                "INSERT INTO scores (sample_id, evaluation_id, evaluator, value, passed, reason)
                 SELECT t.sample_id, $1::bigint, t.evaluator, t.value, t.passed, t.reason
                 FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::boolean[], $6::text[])
                     AS t(sample_id, evaluator, value, passed, reason)",
            )?,
            judge: c.prepare(
                "INSERT INTO judge_calls (evaluation_id, sample_id, evaluator, prompt, reply, error, attempts,
                     throttled, wait_us, latency_us, prompt_tokens, completion_tokens, queue_us, cached_tokens,
                     cache_write_tokens, reasoning_tokens, first_token_us, cache_key, cached)
                 SELECT $1::bigint, t.* FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[],
                     $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
                     $17::bigint[], $18::text[], $19::boolean[]) AS t",
            )?,
            // SQLite's `INSERT OR REPLACE` replaces whole rows: so here.
            cache_key: c.prepare(
                "INSERT INTO cache_keys (key, model, request, sample_key, sent_at)
                 SELECT t.*, $1::bigint FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS t
                 ON CONFLICT (key) DO UPDATE SET model = excluded.model, request = excluded.request,
                     sample_key = excluded.sample_key, sent_at = excluded.sent_at",
            )?,
            cache_entry: c.prepare(
                "INSERT INTO cache (key, model, output, prompt_tokens, completion_tokens, cached_tokens,
                     cache_write_tokens, reasoning_tokens, written_at, hits, last_hit_at)
                 SELECT t.key, t.model, t.output, t.prompt_tokens, t.completion_tokens, t.cached_tokens,
                     t.cache_write_tokens, t.reasoning_tokens, $1::bigint, t.hits,
                     CASE WHEN t.hits > 0 THEN $1::bigint END
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[], $9::bigint[], $10::bigint[])
                     AS t(key, model, output, prompt_tokens, completion_tokens, cached_tokens,
                         cache_write_tokens, reasoning_tokens, hits)
                 ON CONFLICT (key) DO UPDATE SET model = excluded.model, output = excluded.output,
                     prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
                     cached_tokens = excluded.cached_tokens, cache_write_tokens = excluded.cache_write_tokens,
                     reasoning_tokens = excluded.reasoning_tokens, written_at = excluded.written_at,
                     hits = excluded.hits, last_hit_at = excluded.last_hit_at",
            )?,
            cache_hit: c.prepare(
                "UPDATE cache SET hits = cache.hits + t.n, last_hit_at = $1::bigint
                 FROM unnest($2::text[], $3::bigint[]) AS t(key, n) WHERE cache.key = t.key",
            )?,
            wall: c.prepare(WALL)?,
            open_samples: c.prepare(
                "SELECT sample_key FROM queue
                 WHERE evaluation_id = $1 AND sample_key = ANY($2::text[]) AND NOT done FOR UPDATE",
            )?,
            finish_samples: c.prepare(
                "UPDATE queue SET done = TRUE
                 WHERE evaluation_id = $1 AND sample_key = ANY($2::text[]) AND NOT done
                 RETURNING sample_key",
            )?,
        })
    }
}

/// Sets an evaluation's wall time (`$1` the evaluation, `$2` the time).
/// Workers of a fleet each write theirs, reckoned from the fleet's start:
/// the latest wins.
const WALL: &str =
    "UPDATE evaluation_totals SET wall_us = greatest(wall_us, $2) WHERE evaluation_id = $1";

/// A count as the server's BIGINT: counts past `i64::MAX` cannot happen,
/// and hashes are stored as their bits, as on SQLite.
fn big(v: u64) -> i64 {
    v as i64
}

fn big_opt(v: Option<u64>) -> Option<i64> {
    v.map(big)
}

/// Writes `batch` in `tx` as SQLite writes it a row at a time: each record
/// deleted first when it replaces one, then inserted with its scores and
/// judge calls, then the cache's writes, then the wall time.
fn commit(
    tx: &mut Transaction<'_>,
    s: &Statements,
    config: &WriterConfig,
    batch: &[SampleRecord],
) -> Result<(), postgres::Error> {
    let kept;
    let batch = match config.fleet {
        None => batch,
        Some(_) => match firsts(tx, s, config.evaluation_id, batch)? {
            None => batch,
            Some(firsts) => {
                kept = firsts;
                &kept[..]
            }
        },
    };
    let mut start = 0;
    while start < batch.len() {
        let end = run_of_distinct_keys(batch, start);
        write_samples(tx, s, config, &batch[start..end])?;
        start = end;
    }
    CacheWrites::of(batch).write(tx, s, crate::store::unix_now())?;
    tx.execute(&s.wall, &[&config.evaluation_id, &big(config.wall_us())])?;
    Ok(())
}

/// In a fleet, the records of `batch` that are their sample's first result
/// (`None`: all of them, the usual case). A final record turns its queue row
/// `done` and is kept only if it was not; a reply written before grading
/// (`ungraded`) is kept while the row is not done. The queue rows stay
/// locked to the end of the transaction, so two workers' commits of one
/// sample never both see it not done.
fn firsts(
    tx: &mut Transaction<'_>,
    s: &Statements,
    evaluation_id: i64,
    batch: &[SampleRecord],
) -> Result<Option<Vec<SampleRecord>>, postgres::Error> {
    let keys = |want: bool| -> Vec<&str> {
        batch
            .iter()
            .filter(|r| r.is_ungraded() == want)
            .map(|r| r.key.as_str())
            .collect()
    };
    let (early, last) = (keys(true), keys(false));
    let open: HashSet<String> = match early.is_empty() {
        true => HashSet::new(),
        false => tx
            .query(&s.open_samples, &[&evaluation_id, &early])?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    let won: HashSet<String> = tx
        .query(&s.finish_samples, &[&evaluation_id, &last])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let first = |r: &SampleRecord| match r.is_ungraded() {
        true => open.contains(&r.key),
        false => won.contains(&r.key),
    };
    Ok(match batch.iter().all(first) {
        true => None,
        false => Some(batch.iter().filter(|r| first(r)).cloned().collect()),
    })
}

/// Where the records from `start` on first repeat a key: a record that
/// replaces one of the same batch must follow its insert, so the records
/// are written in runs of distinct keys (one run, but for such a batch).
fn run_of_distinct_keys(batch: &[SampleRecord], start: usize) -> usize {
    let mut seen = HashSet::new();
    batch[start..]
        .iter()
        .position(|r| !seen.insert(r.key.as_str()))
        .map_or(batch.len(), |at| start + at)
}

/// Writes records of distinct keys: deletes the ones they replace, inserts
/// them, then their scores and judge calls. The same rows as one record at
/// a time, since no two of them touch the same sample.
fn write_samples(
    tx: &mut Transaction<'_>,
    s: &Statements,
    config: &WriterConfig,
    records: &[SampleRecord],
) -> Result<(), postgres::Error> {
    let id = &config.evaluation_id;
    // In a fleet another worker may have stored a reply before grading, or
    // an earlier run an error: whatever is there makes way.
    let replaced: Vec<&str> = records
        .iter()
        .filter(|r| config.resuming || config.fleet.is_some() || r.replaces)
        .map(|r| r.key.as_str())
        .collect();
    if !replaced.is_empty() {
        tx.execute(&s.delete, &[id, &replaced])?;
    }
    let col = |f: &dyn Fn(&SampleRecord) -> Option<u64>| -> Vec<Option<i64>> {
        records.iter().map(|r| big_opt(f(r))).collect()
    };
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let error_kinds: Vec<Option<String>> = records
        .iter()
        .map(|r| r.error_kind.map(|k| k.to_string()))
        .collect();
    let columns: [&(dyn ToSql + Sync); 26] = [
        id,
        &config.run,
        &keys,
        &col(&|r| Some(r.index)),
        &col(&|r| Some(r.row_hash)),
        &records
            .iter()
            .map(|r| r.variables.as_str())
            .collect::<Vec<_>>(),
        &records
            .iter()
            .map(|r| r.prompt.as_str())
            .collect::<Vec<_>>(),
        &records
            .iter()
            .map(|r| r.output.as_deref())
            .collect::<Vec<_>>(),
        &error_kinds,
        &records
            .iter()
            .map(|r| r.error.as_deref())
            .collect::<Vec<_>>(),
        &col(&|r| Some(r.call.attempts.into())),
        &col(&|r| r.call.latency_us),
        &col(&|r| Some(r.start_us)),
        &col(&|r| Some(r.end_us)),
        &col(&|r| r.call.usage.prompt),
        &col(&|r| r.call.usage.completion),
        &col(&|r| Some(r.call.throttled.into())),
        &col(&|r| Some(r.call.wait_us)),
        &col(&|r| Some(r.repeat.into())),
        &col(&|r| r.call.usage.cached_prompt),
        &col(&|r| r.call.usage.cache_write),
        &col(&|r| r.call.usage.reasoning),
        &col(&|r| r.call.first_token_us),
        &records.iter().map(|r| r.cache.hash()).collect::<Vec<_>>(),
        &records.iter().map(|r| r.cache.is_hit()).collect::<Vec<_>>(),
        &records
            .iter()
            .map(|r| r.endpoint.as_deref())
            .collect::<Vec<_>>(),
    ];
    let mut sample_ids = HashMap::with_capacity(records.len());
    for row in tx.query(&s.insert, &columns)? {
        sample_ids.insert(row.try_get::<_, String>(1)?, row.try_get::<_, i64>(0)?);
    }
    // Every record was inserted: the ids of its rows are there.
    let sample_id = |r: &SampleRecord| sample_ids.get(&r.key).copied().unwrap_or_default();

    let scores: Vec<(i64, i64, Option<&crate::store::ScoreRecord>)> = records
        .iter()
        .flat_map(|r| {
            let id = sample_id(r);
            r.scores
                .iter()
                .enumerate()
                .map(move |(i, score)| (id, i as i64, score.as_ref()))
        })
        .collect();
    if !scores.is_empty() {
        tx.execute(
            &s.score,
            &[
                id,
                &scores.iter().map(|s| s.0).collect::<Vec<_>>(),
                &scores.iter().map(|s| s.1).collect::<Vec<_>>(),
                &scores
                    .iter()
                    .map(|s| s.2.map(|s| s.value))
                    .collect::<Vec<_>>(),
                &scores
                    .iter()
                    .map(|s| s.2.map(|s| s.passed))
                    .collect::<Vec<_>>(),
                &scores
                    .iter()
                    .map(|s| s.2.and_then(|s| s.reason.as_deref()))
                    .collect::<Vec<_>>(),
            ],
        )?;
    }

    let judged: Vec<(i64, &JudgeRecord)> = records
        .iter()
        .flat_map(|r| r.judge_calls.iter().map(move |j| (sample_id(r), j)))
        .collect();
    if !judged.is_empty() {
        let col = |f: &dyn Fn(&JudgeRecord) -> Option<u64>| -> Vec<Option<i64>> {
            judged.iter().map(|(_, j)| big_opt(f(j))).collect()
        };
        tx.execute(
            &s.judge,
            &[
                id,
                &judged.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                &col(&|j| Some(j.evaluator as u64)),
                &judged
                    .iter()
                    .map(|(_, j)| j.prompt.as_str())
                    .collect::<Vec<_>>(),
                &judged
                    .iter()
                    .map(|(_, j)| j.reply.as_deref())
                    .collect::<Vec<_>>(),
                &judged
                    .iter()
                    .map(|(_, j)| j.error.as_deref())
                    .collect::<Vec<_>>(),
                &col(&|j| Some(j.call.attempts.into())),
                &col(&|j| Some(j.call.throttled.into())),
                &col(&|j| Some(j.call.wait_us)),
                &col(&|j| j.call.latency_us),
                &col(&|j| j.call.usage.prompt),
                &col(&|j| j.call.usage.completion),
                &col(&|j| Some(j.queue_us)),
                &col(&|j| j.call.usage.cached_prompt),
                &col(&|j| j.call.usage.cache_write),
                &col(&|j| j.call.usage.reasoning),
                &col(&|j| j.call.first_token_us),
                &judged
                    .iter()
                    .map(|(_, j)| j.cache.hash())
                    .collect::<Vec<_>>(),
                &judged
                    .iter()
                    .map(|(_, j)| j.cache.is_hit())
                    .collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

/// What a batch's cache uses leave in the cache, worked out from the uses
/// in order as SQLite applies them one by one: the last request sent under
/// each key; the last reply kept under each key (which, replacing the
/// entry, starts its hit count again) with the hits that came after it;
/// and the hits on entries the batch did not write.
#[derive(Default)]
struct CacheWrites<'b> {
    /// Key, model, request, and the call's sample key.
    keys: Vec<(&'b str, &'b str, &'b str, String)>,
    key_at: HashMap<&'b str, usize>,
    /// Key, model, reply, and hits since it was written.
    entries: Vec<(&'b str, &'b str, &'b CachedReply, i64)>,
    entry_at: HashMap<&'b str, usize>,
    /// Key and hits, on entries written before the batch.
    hits: Vec<(&'b str, i64)>,
    hit_at: HashMap<&'b str, usize>,
}

impl<'b> CacheWrites<'b> {
    /// The cache uses of `batch`, in order: each record's, then its judges'.
    fn of(batch: &'b [SampleRecord]) -> CacheWrites<'b> {
        let mut writes = CacheWrites::default();
        for r in batch {
            writes.add(&r.cache, || r.key.clone());
            for j in &r.judge_calls {
                writes.add(&j.cache, || format!("{} judge {}", r.key, j.evaluator));
            }
        }
        writes
    }

    fn add(&mut self, cache: &'b CacheUse, sample_key: impl FnOnce() -> String) {
        match cache {
            CacheUse::Off | CacheUse::Copied { .. } => {}
            CacheUse::Hit(hash) => match self.entry_at.get(hash.as_str()) {
                Some(&at) => self.entries[at].3 += 1,
                None => {
                    let at = *self.hit_at.entry(hash).or_insert_with(|| {
                        self.hits.push((hash, 0));
                        self.hits.len() - 1
                    });
                    self.hits[at].1 += 1;
                }
            },
            CacheUse::Sent { key, model, reply } => {
                let row = (
                    key.hash.as_str(),
                    model.as_str(),
                    key.request.as_str(),
                    sample_key(),
                );
                match self.key_at.get(key.hash.as_str()) {
                    Some(&at) => self.keys[at] = row,
                    None => {
                        self.key_at.insert(&key.hash, self.keys.len());
                        self.keys.push(row);
                    }
                }
                if let Some(reply) = reply {
                    let row = (key.hash.as_str(), model.as_str(), reply, 0);
                    match self.entry_at.get(key.hash.as_str()) {
                        Some(&at) => self.entries[at] = row,
                        None => {
                            self.entry_at.insert(&key.hash, self.entries.len());
                            self.entries.push(row);
                        }
                    }
                    // Hits on the entry it replaces are lost with it.
                    if let Some(&at) = self.hit_at.get(key.hash.as_str()) {
                        self.hits[at].1 = 0;
                    }
                }
            }
        }
    }

    /// Writes them at `now` (Unix seconds).
    fn write(
        &self,
        tx: &mut Transaction<'_>,
        s: &Statements,
        now: i64,
    ) -> Result<(), postgres::Error> {
        if !self.keys.is_empty() {
            let k = &self.keys;
            tx.execute(
                &s.cache_key,
                &[
                    &now,
                    &k.iter().map(|k| k.0).collect::<Vec<_>>(),
                    &k.iter().map(|k| k.1).collect::<Vec<_>>(),
                    &k.iter().map(|k| k.2).collect::<Vec<_>>(),
                    &k.iter().map(|k| k.3.as_str()).collect::<Vec<_>>(),
                ],
            )?;
        }
        if !self.entries.is_empty() {
            let e = &self.entries;
            let usage = |f: &dyn Fn(&crate::usage::Usage) -> Option<u64>| -> Vec<Option<i64>> {
                e.iter().map(|e| big_opt(f(&e.2.usage))).collect()
            };
            tx.execute(
                &s.cache_entry,
                &[
                    &now,
                    &e.iter().map(|e| e.0).collect::<Vec<_>>(),
                    &e.iter().map(|e| e.1).collect::<Vec<_>>(),
                    &e.iter().map(|e| e.2.output.as_str()).collect::<Vec<_>>(),
                    &usage(&|u| u.prompt),
                    &usage(&|u| u.completion),
                    &usage(&|u| u.cached_prompt),
                    &usage(&|u| u.cache_write),
                    &usage(&|u| u.reasoning),
                    &e.iter().map(|e| e.3).collect::<Vec<_>>(),
                ],
            )?;
        }
        let hits: Vec<&(&str, i64)> = self.hits.iter().filter(|h| h.1 > 0).collect();
        if !hits.is_empty() {
            tx.execute(
                &s.cache_hit,
                &[
                    &now,
                    &hits.iter().map(|h| h.0).collect::<Vec<_>>(),
                    &hits.iter().map(|h| h.1).collect::<Vec<_>>(),
                ],
            )?;
        }
        Ok(())
    }
}

/// Records the evaluation's wall time, earlier runs included (the recorder's
/// `record_wall`).
pub fn update_wall(db: &Db, evaluation_id: i64, wall_us: u64) -> Result<(), StoreError> {
    db.with(|c| c.execute(WALL, &[&evaluation_id, &big(wall_us)]).map(drop))
}

/// Helpers shared by the PostgreSQL tests of this file, `lookup.rs` and
/// `cache.rs`: a test schema on the server, and the same evaluations
/// started in a SQLite store beside it, to compare the two backends.
#[cfg(test)]
pub(super) mod testing {
    use std::path::PathBuf;
    use std::time::Instant;

    use postgres::types::Type;
    use postgres::{Client, NoTls};

    use super::super::db::{quote_ident, Target};
    use crate::cache::{CacheKey, CacheUse, CachedReply};
    use crate::error_kind::ErrorKind;
    use crate::store::sqlite::SqliteStore;
    use crate::store::writer::{JudgeRecord, SampleRecord, ScoreRecord, WriterConfig};
    use crate::store::{CallStats, EvaluationMeta, Recorder};
    use crate::usage::Usage;

    /// The test server's URL: `DOTEVALS_TEST_POSTGRES` (each test skips, recorded, without it).
    pub fn url() -> String {
        if let Ok(url) = std::env::var("DOTEVALS_TEST_POSTGRES") {
            if !url.trim().is_empty() {
                return url.trim().to_owned();
            }
        }
        panic!("DOTEVALS_TEST_POSTGRES is not set")
    }

    /// A client on the test server, with `schema` first on its search path.
    pub fn client(schema: &str) -> Client {
        let mut c = Client::connect(&url(), NoTls).expect("connect to the test server");
        c.batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
            .unwrap();
        c
    }

    /// A store in a schema of its own on the test server, dropped with it.
    pub struct TestSchema {
        pub name: String,
        pub target: Target,
    }

    impl TestSchema {
        /// Creates the store (its tables) in a new schema named after `tag`.
        pub fn new(tag: &str) -> TestSchema {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let name = format!("t_{tag}_{}_{nanos}", std::process::id());
            let base = url();
            let sep = if base.contains('?') { '&' } else { '?' };
            let with_schema = format!("{base}{sep}schema={name}");
            crate::store::locate(Some(&with_schema))
                .open_or_create()
                .expect("create the test store");
            let target = super::super::parse(&with_schema).expect("a test URL");
            TestSchema { name, target }
        }

        pub fn client(&self) -> Client {
            client(&self.name)
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let dropped = Client::connect(&url(), NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&self.name)
                ))
            });
            if let Err(e) = dropped {
                eprintln!("could not drop the test schema {}: {e}", self.name);
            }
        }
    }

    /// Starts evaluation `name` of experiment `experiment` (again) with plain
    /// SQL, as the recorder would: answers its id and run.
    pub fn pg_start(c: &mut Client, experiment: &str, name: &str) -> (i64, i64) {
        c.execute(
            "INSERT INTO experiments (name, created_at) VALUES ($1, '2024-01-01T00:00:00Z')
             ON CONFLICT (name) DO NOTHING",
            &[&experiment],
        )
        .unwrap();
        let row = c
            .query_one(
                "INSERT INTO evaluations (experiment_id, name, spec_path, spec_text, spec_hash, identity,
                     provider, model, evaluators, strategy, max_concurrency, total, started_at, status, runs)
                 SELECT id, $2, 'e.yaml', 'name: e', 'h', '{}', 'mock', 'mock', '[\"a\",\"b\"]',
                     'sliding_window', 4, 10, '2024-01-01T00:00:00Z', 'running', 1
                 FROM experiments WHERE name = $1
                 ON CONFLICT (experiment_id, name) DO UPDATE SET runs = evaluations.runs + 1
                 RETURNING id, runs",
                &[&experiment, &name],
            )
            .unwrap();
        let (id, run): (i64, i64) = (row.get(0), row.get(1));
        c.execute(
            "INSERT INTO evaluation_totals (evaluation_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id],
        )
        .unwrap();
        (id, run)
    }

    /// A PostgreSQL store and a SQLite store holding the same evaluations.
    pub struct Both {
        pub pg: TestSchema,
        pub sqlite: SqliteStore,
        pub path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Both {
        pub fn new(tag: &str) -> Both {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            Both {
                pg: TestSchema::new(tag),
                sqlite: SqliteStore::open(&path).unwrap(),
                path,
                _dir: dir,
            }
        }

        /// Starts (or resumes) evaluation `name` of experiment `x` on both:
        /// the writer settings of each, SQLite's first.
        pub fn start(&mut self, name: &str, resuming: bool) -> (WriterConfig, WriterConfig) {
            let evaluators = vec!["a".to_string(), "b".to_string()];
            let meta = EvaluationMeta {
                name,
                spec_path: "e.yaml",
                spec_text: "name: e",
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
            let started = self
                .sqlite
                .start_evaluation("x", &meta, "2024-01-01T00:00:00Z")
                .unwrap();
            let (pg_id, pg_run) = pg_start(&mut self.pg.client(), "x", name);
            assert_eq!(pg_run, started.run, "runs counted alike");
            let config = |evaluation_id| WriterConfig {
                evaluation_id,
                run: started.run,
                resuming,
                fleet: None,
                base_wall_us: 0,
                started: Instant::now(),
            };
            (config(started.id), config(pg_id))
        }

        /// Commits `batch` on both, each through its own sink.
        pub fn commit(&self, configs: &(WriterConfig, WriterConfig), batch: &[SampleRecord]) {
            self.sqlite
                .sink(configs.0.clone())
                .unwrap()
                .commit(batch)
                .unwrap();
            let mut pg = super::open(&self.pg.target, configs.1.clone()).unwrap();
            crate::store::RecordSink::commit(&mut pg, batch).unwrap();
        }

        /// Runs `sql` (no parameters) on both; answers SQLite's rows, then
        /// PostgreSQL's.
        pub fn rows(&self, sql: &str) -> (Vec<Vec<V>>, Vec<Vec<V>>) {
            let conn = rusqlite::Connection::open(&self.path).unwrap();
            (sqlite_rows(&conn, sql), pg_rows(&mut self.pg.client(), sql))
        }

        /// Runs `sql` (no parameters, no result) on both.
        pub fn execute(&self, sql: &str) {
            let conn = rusqlite::Connection::open(&self.path).unwrap();
            conn.execute_batch(sql).unwrap();
            self.pg.client().batch_execute(sql).unwrap();
        }
    }

    /// A value read back from either backend: flags read as integers, as
    /// SQLite stores them, and integers equal to the same float.
    #[derive(Debug, Clone)]
    pub enum V {
        Null,
        I(i64),
        F(f64),
        T(String),
    }

    impl PartialEq for V {
        fn eq(&self, other: &V) -> bool {
            match (self, other) {
                (V::Null, V::Null) => true,
                (V::I(a), V::I(b)) => a == b,
                (V::F(a), V::F(b)) => a == b,
                (V::I(a), V::F(b)) | (V::F(b), V::I(a)) => *a as f64 == *b,
                (V::T(a), V::T(b)) => a == b,
                _ => false,
            }
        }
    }

    pub fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<V>> {
        use rusqlite::types::ValueRef;
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => V::Null,
                        ValueRef::Integer(v) => V::I(v),
                        ValueRef::Real(v) => V::F(v),
                        ValueRef::Text(t) => V::T(String::from_utf8(t.to_vec()).unwrap()),
                        ValueRef::Blob(_) => panic!("a blob in {sql}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    pub fn pg_rows(c: &mut Client, sql: &str) -> Vec<Vec<V>> {
        c.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        let t = r.columns()[i].type_().clone();
                        let v = if t == Type::INT8 {
                            r.get::<_, Option<i64>>(i).map(V::I)
                        } else if t == Type::INT4 {
                            r.get::<_, Option<i32>>(i).map(|v| V::I(v.into()))
                        } else if t == Type::FLOAT8 {
                            r.get::<_, Option<f64>>(i).map(V::F)
                        } else if t == Type::BOOL {
                            r.get::<_, Option<bool>>(i).map(|v| V::I(v.into()))
                        } else if t == Type::TEXT {
                            r.get::<_, Option<String>>(i).map(V::T)
                        } else {
                            panic!("column {i} of {sql} is {t}")
                        };
                        v.unwrap_or(V::Null)
                    })
                    .collect()
            })
            .collect()
    }

    /// Every row a commit writes, by table, with times checked to be now
    /// (1) rather than compared, and ids replaced by what they stand for.
    pub fn tables(since: i64) -> Vec<(&'static str, String)> {
        let until = crate::store::unix_now() + 5;
        let now = |col: &str| format!("({col} BETWEEN {since} AND {until})");
        vec![
            (
                "samples",
                "SELECT e.name, s.sample_key, s.row_index, s.row_hash, s.run, s.variables, s.prompt,
                        s.output, s.error_kind, s.error, s.attempts, s.latency_us, s.start_us, s.end_us,
                        s.prompt_tokens, s.completion_tokens, s.throttled, s.wait_us, s.repeat,
                        s.cached_tokens, s.cache_write_tokens, s.reasoning_tokens, s.first_token_us,
                        s.cache_key, s.cached, s.endpoint
                 FROM samples s JOIN evaluations e ON e.id = s.evaluation_id
                 ORDER BY e.name, s.sample_key"
                    .into(),
            ),
            (
                "scores",
                "SELECT e.name, s.sample_key, c.evaluator, c.value, c.passed, c.reason,
                        c.evaluation_id = s.evaluation_id
                 FROM scores c JOIN samples s ON s.id = c.sample_id
                     JOIN evaluations e ON e.id = s.evaluation_id
                 ORDER BY e.name, s.sample_key, c.evaluator"
                    .into(),
            ),
            (
                "judge_calls",
                "SELECT e.name, s.sample_key, j.evaluator, j.prompt, j.reply, j.error, j.attempts,
                        j.throttled, j.wait_us, j.latency_us, j.prompt_tokens, j.completion_tokens,
                        j.queue_us, j.cached_tokens, j.cache_write_tokens, j.reasoning_tokens,
                        j.first_token_us, j.cache_key, j.cached, j.evaluation_id = s.evaluation_id
                 FROM judge_calls j JOIN samples s ON s.id = j.sample_id
                     JOIN evaluations e ON e.id = s.evaluation_id
                 ORDER BY e.name, s.sample_key, j.evaluator"
                    .into(),
            ),
            (
                "cache",
                format!(
                    "SELECT key, model, output, prompt_tokens, completion_tokens, cached_tokens,
                            cache_write_tokens, reasoning_tokens, hits, {}, {}
                     FROM cache ORDER BY key",
                    now("written_at"),
                    now("last_hit_at")
                ),
            ),
            (
                "cache_keys",
                format!(
                    "SELECT key, model, request, sample_key, {} FROM cache_keys ORDER BY key",
                    now("sent_at")
                ),
            ),
            (
                "evaluation_totals",
                "SELECT e.name, t.recorded, t.errored, t.latency_sum_us, t.prompt_tokens,
                        t.completion_tokens, t.retries, t.throttled, t.wait_us,
                        t.cached_tokens, t.cache_write_tokens, t.reasoning_tokens, t.cached,
                        (t.wall_us > 0 AND t.wall_us < 60000000)
                 FROM evaluation_totals t JOIN evaluations e ON e.id = t.evaluation_id
                 ORDER BY e.name"
                    .into(),
            ),
            (
                "evaluation_scores",
                "SELECT e.name, t.evaluator, t.scored, t.total, t.passed, t.total_sq
                 FROM evaluation_scores t JOIN evaluations e ON e.id = t.evaluation_id
                 ORDER BY e.name, t.evaluator"
                    .into(),
            ),
        ]
    }

    /// Asserts both stores hold the same rows in every table a commit writes.
    pub fn assert_same_rows(both: &Both, since: i64) {
        for (table, sql) in tables(since) {
            let (lite, pg) = both.rows(&sql);
            assert!(!lite.is_empty(), "no rows in {table}");
            assert_eq!(lite.len(), pg.len(), "rows in {table}");
            for (l, p) in lite.iter().zip(&pg) {
                assert_eq!(l, p, "a row of {table} (SQLite, then PostgreSQL)");
            }
        }
    }

    /// A record with every column set: `key` at `index`, scored by two
    /// evaluators, under `cache`.
    pub fn record(key: &str, index: u64, cache: CacheUse) -> SampleRecord {
        SampleRecord {
            key: key.into(),
            index,
            repeat: 1,
            row_hash: u64::MAX - index,
            variables: r#"{"q":"¿qué? ✓"}"#.into(),
            prompt: "\"p\"".into(),
            output: Some(format!("réponse {key} ✓")),
            scores: vec![
                Some(ScoreRecord {
                    value: 0.25,
                    passed: false,
                    reason: Some("a quarter".into()),
                }),
                None,
            ],
            error_kind: None,
            error: None,
            call: CallStats {
                attempts: 3,
                throttled: 1,
                wait_us: 17,
                latency_us: Some(1000 + index),
                first_token_us: Some(40),
                usage: Usage {
                    prompt: Some(11),
                    completion: Some(7),
                    cached_prompt: Some(5),
                    cache_write: None,
                    reasoning: Some(2),
                },
            },
            start_us: 10 * index,
            end_us: 10 * index + 1000,
            judge_calls: Vec::new(),
            replaces: false,
            cache,
            endpoint: Some("http://replica:8000/v1".into()),
        }
    }

    /// A call sent under cache key `hash` for `model`, its reply kept
    /// unless `reply` is `None`.
    pub fn sent(hash: &str, model: &str, request: &str, reply: Option<&str>) -> CacheUse {
        CacheUse::Sent {
            key: CacheKey {
                hash: hash.into(),
                request: request.into(),
            },
            model: model.into(),
            reply: reply.map(|output| CachedReply {
                output: output.into(),
                usage: Usage {
                    prompt: Some(11),
                    completion: None,
                    cached_prompt: Some(3),
                    cache_write: Some(1),
                    reasoning: None,
                },
            }),
        }
    }

    /// A judge's call for evaluator 1 under `cache`.
    pub fn judged(cache: CacheUse) -> JudgeRecord {
        JudgeRecord {
            evaluator: 1,
            prompt: "[{\"role\":\"user\"}]".into(),
            reply: Some("SCORE: 1 ✓".into()),
            error: None,
            call: CallStats {
                attempts: 1,
                throttled: 0,
                wait_us: 3,
                latency_us: Some(90),
                first_token_us: None,
                usage: Usage {
                    prompt: Some(20),
                    completion: Some(4),
                    ..Default::default()
                },
            },
            queue_us: 8,
            cache,
        }
    }

    /// Two evaluations, `e1` committed in two batches and resumed with a
    /// third, `e2` in one: every kind of record, cache use and
    /// replacement the writer handles. Answers the evaluations' ids, each
    /// as (SQLite's, PostgreSQL's).
    pub fn populate(both: &mut Both) -> [(i64, i64); 2] {
        let e1 = both.start("e1", false);
        let errored = SampleRecord {
            output: None,
            scores: vec![],
            error_kind: Some(ErrorKind::Timeout),
            error: Some("no reply".into()),
            call: CallStats {
                attempts: 2,
                latency_us: None,
                first_token_us: None,
                usage: Usage::default(),
                ..record("b", 1, CacheUse::Off).call
            },
            ..record("b", 1, sent("kb", "m2", r#"{"v":1,"b":"é"}"#, None))
        };
        let hit = |key: &str, index: u64, hash: &str| SampleRecord {
            call: CallStats::default(),
            ..record(key, index, CacheUse::Hit(hash.into()))
        };
        let unscored = SampleRecord {
            error_kind: Some(ErrorKind::Evaluator),
            error: Some("no verdict".into()),
            scores: vec![None, Some(ScoreRecord::of(1.0))],
            ..record("d", 3, CacheUse::Off)
        };
        let judged_record = SampleRecord {
            judge_calls: vec![judged(sent("ja", "judge", "{\"j\":1}", Some("SCORE: 1 ✓")))],
            ..record("f", 5, sent("kf", "m2", r#"{"v":"ü"}"#, Some("ünïcode ✓")))
        };
        let judge_hit = SampleRecord {
            judge_calls: vec![judged(CacheUse::Hit("ja".into()))],
            ..hit("g", 6, "kf")
        };
        both.commit(
            &e1,
            &[
                record("a", 0, sent("ka", "m1", r#"{"v":1}"#, Some("réponse a ✓"))),
                errored.clone(),
                hit("c", 2, "ka"),
                unscored,
                hit("e", 4, "ka"),
                judged_record,
                judge_hit,
                // Replaces "a" of this batch, and its cache entry (hits reset).
                SampleRecord {
                    replaces: true,
                    ..record("a", 0, sent("ka", "m1", r#"{"v":1}"#, Some("again")))
                },
            ],
        );
        both.commit(&e1, &[hit("h", 7, "ka"), hit("i", 8, "missing")]);
        // A run resuming `e1`: "b" now answered, "d" scored, "f" judged
        // again; entries of earlier batches hit, replaced and hit again.
        let resumed = both.start("e1", true);
        both.commit(
            &resumed,
            &[
                record("b", 1, sent("kb2", "m2", r#"{"v":2,"b":"é"}"#, Some("b ✓"))),
                SampleRecord {
                    scores: vec![Some(ScoreRecord::of(1.0)), Some(ScoreRecord::of(0.0))],
                    ..record("d", 3, CacheUse::Off)
                },
                hit("j", 9, "kf"),
                hit("k", 10, "kf"),
                record("l", 11, sent("kf", "m3", r#"{"v":"l"}"#, Some("new"))),
                hit("j", 9, "kf"),
                // Sent again without a reply kept: its key's row changes,
                // its entry stays.
                record("m", 12, sent("ka", "m1", r#"{"v":"m"}"#, None)),
                hit("n", 13, "ka"),
                SampleRecord {
                    judge_calls: vec![judged(CacheUse::Hit("kf".into()))],
                    scores: vec![Some(ScoreRecord::of(0.1)), Some(ScoreRecord::of(0.7))],
                    ..record("f", 5, CacheUse::Off)
                },
            ],
        );
        let e2 = both.start("e2", false);
        both.commit(
            &e2,
            &[
                record("a", 0, sent("ka2", "m1", r#"{"v":2}"#, Some("autre ✓"))),
                errored,
                hit("c", 2, "ka"),
            ],
        );
        [
            (e1.0.evaluation_id, e1.1.evaluation_id),
            (e2.0.evaluation_id, e2.1.evaluation_id),
        ]
    }

    /// Sets the cache's times (written, sent, hit) to distinct fixed values,
    /// the same on both stores, so that reads showing them compare.
    pub fn fix_cache_times(both: &Both) {
        both.execute(
            "UPDATE cache SET written_at = 1700000000 + 10 * (SELECT count(*) FROM cache c WHERE c.key < cache.key),
                 last_hit_at = CASE WHEN last_hit_at IS NULL THEN NULL ELSE 1700000001 END;
             UPDATE cache_keys SET sent_at = 1600000000 + (SELECT count(*) FROM cache_keys k WHERE k.key < cache_keys.key);",
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::testing::{self, Both};
    use super::*;
    use crate::cache::CacheUse;

    /// The same batches leave the same rows as on SQLite, table by table,
    /// the triggers' totals included.
    #[test]
    fn commits_write_what_sqlite_writes() {
        let Some(_) = crate::store::postgres::tests::server("commits_write_what_sqlite_writes")
        else {
            return;
        };
        let since = crate::store::unix_now();
        let mut both = Both::new("writer_parity");
        testing::populate(&mut both);
        testing::assert_same_rows(&both, since);
    }

    /// A failing batch leaves nothing behind: its transaction is rolled
    /// back, and the sink commits the next batch.
    #[test]
    fn a_failed_batch_is_rolled_back() {
        let Some(_) = crate::store::postgres::tests::server("a_failed_batch_is_rolled_back") else {
            return;
        };
        let mut both = Both::new("writer_rollback");
        let (_, config) = both.start("e", false);
        let mut sink = open(&both.pg.target, config).unwrap();
        let a = testing::record("a", 0, CacheUse::Off);
        // The same key twice, not replacing: the second breaks the batch.
        assert!(sink.commit(&[a.clone(), a.clone()]).is_err());
        let mut c = both.pg.client();
        let recorded: i64 = c
            .query_one("SELECT recorded FROM evaluation_totals", &[])
            .unwrap()
            .get(0);
        assert_eq!(recorded, 0);
        sink.commit(&[a]).unwrap();
        let recorded: i64 = c
            .query_one("SELECT recorded FROM evaluation_totals", &[])
            .unwrap()
            .get(0);
        assert_eq!(recorded, 1);
    }

    /// `update_wall` sets the wall time kept with the totals.
    #[test]
    fn the_wall_time_is_recorded() {
        let Some(_) = crate::store::postgres::tests::server("the_wall_time_is_recorded") else {
            return;
        };
        let mut both = Both::new("writer_wall");
        let (_, config) = both.start("e", false);
        let db = Db::connect(&both.pg.target).unwrap();
        update_wall(&db, config.evaluation_id, 123_456).unwrap();
        let wall: i64 = both
            .pg
            .client()
            .query_one(
                "SELECT wall_us FROM evaluation_totals WHERE evaluation_id = $1",
                &[&config.evaluation_id],
            )
            .unwrap()
            .get(0);
        assert_eq!(wall, 123_456);
    }

    /// Records per second committed in batches of 512 (`cargo test --
    /// --ignored --nocapture commit_throughput`); `DOTEVALS_TEST_RECORDS`
    /// sets how many (100,000 by default).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn commit_throughput() {
        let Some(_) = crate::store::postgres::tests::server("commit_throughput") else {
            return;
        };
        let total: usize = std::env::var("DOTEVALS_TEST_RECORDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        let schema = testing::TestSchema::new("writer_throughput");
        let (id, run) = testing::pg_start(&mut schema.client(), "x", "e");
        let config = WriterConfig {
            evaluation_id: id,
            run,
            resuming: false,
            fleet: None,
            base_wall_us: 0,
            started: Instant::now(),
        };
        let mut sink = open(&schema.target, config).unwrap();
        let records: Vec<SampleRecord> = (0..total)
            .map(|i| SampleRecord {
                scores: vec![Some(crate::store::ScoreRecord::of(1.0))],
                ..testing::record(&format!("s{i}"), i as u64, CacheUse::Off)
            })
            .collect();
        let start = Instant::now();
        for batch in records.chunks(512) {
            sink.commit(batch).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{total} records in batches of 512 in {secs:.2} s: {:.0} records/s",
            total as f64 / secs
        );
    }
}
