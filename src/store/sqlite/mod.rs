//! The SQLite backend: one database file (WAL mode, so a crash at any instant
//! leaves it readable), its run locks as files beside it, the schema versioned
//! in `meta`. Finished samples are committed by a [`SqliteSink`] on a
//! connection of its own, in short batched transactions; resume reads through
//! a [`SqliteLookup`] on another.

mod cache;
pub mod lock;
mod lookup;
mod read;
pub(crate) mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::read::{
    ErrorGroup, ErrorRow, ExperimentRow, LimitStep, LimitTimeline, RunRow, SampleRow,
};
use super::{
    Admin, EvaluationMeta, EvaluationRow, EvaluationStatus, LockError, Reader, RecordSink,
    Recorder, RunLock, RunTotals, SampleCounts, SampleLookup, StartedEvaluation, Storage, Store,
    StoreError, StoredEvaluation, SummaryReads, WriterConfig,
};
pub use lookup::SqliteLookup;
pub use writer::SqliteSink;

/// The default store, relative to the working directory.
pub const DEFAULT_PATH: &str = ".dotevals/dotevals.db";

/// Turns `--storage` (a path, or `sqlite://path`) into the database file.
/// A folder, or a path without an extension, gets `dotevals.db` inside it.
pub fn resolve_path(arg: Option<&str>) -> PathBuf {
    let Some(arg) = arg.filter(|a| !a.is_empty()) else {
        return PathBuf::from(DEFAULT_PATH);
    };
    let raw = arg.strip_prefix("sqlite://").unwrap_or(arg);
    let path = PathBuf::from(raw);
    if path.is_dir() || (path.extension().is_none() && !path.exists()) {
        path.join("dotevals.db")
    } else {
        path
    }
}

/// A database file, opened on demand.
pub struct SqliteStorage {
    path: PathBuf,
    /// `path` as shown in messages.
    location: String,
}

impl SqliteStorage {
    pub fn new(path: PathBuf) -> SqliteStorage {
        SqliteStorage {
            location: path.display().to_string(),
            path,
        }
    }
}

impl Storage for SqliteStorage {
    fn location(&self) -> &str {
        &self.location
    }

    fn open_or_create(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(SqliteStore::open(&self.path)?))
    }

    fn open_existing(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        Ok(SqliteStore::open_existing(&self.path)?.map(|s| Box::new(s) as Box<dyn Store>))
    }

    fn open_read_only(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        Ok(SqliteStore::open_read_only(&self.path)?.map(|s| Box::new(s) as Box<dyn Store>))
    }

    fn lock(&self, experiment: &str, evaluation: &str) -> Result<RunLock, StoreError> {
        match lock::lock(&self.path, experiment, evaluation) {
            Ok(held) => Ok(RunLock::new(held)),
            // The lock file lives beside the store: a folder this user cannot
            // write refuses it as it would refuse the store.
            Err(LockError::Failed { ref source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                Err(read_only(&self.path, true))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An open database file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// `path` as shown in messages.
    location: String,
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// True for SQLite's "cannot write" answers (a read-only file or folder).
fn is_read_only(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen))
}

impl SqliteStore {
    /// Opens or creates the store at `path`, for writing.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Create {
                what: "folder",
                location: dir.display().to_string(),
                source,
            })?;
        }
        Self::open_writable(path, OpenFlags::default())
    }

    /// Opens an existing store for writing; `None` when there is none yet.
    /// A store this user cannot write is [`StoreError::ReadOnly`].
    pub fn open_existing(path: &Path) -> Result<Option<SqliteStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        Self::open_writable(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map(Some)
    }

    fn open_writable(path: &Path, flags: OpenFlags) -> Result<SqliteStore, StoreError> {
        let read_only = |folder| read_only(path, folder);
        // Write protection is honoured even where it does not bind (root): a
        // store someone made read-only is not written to.
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly()) {
            return Err(read_only(false));
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| {
            if is_read_only(&e) && !path.exists() {
                read_only(true)
            } else {
                e.into()
            }
        })?;
        // SQLite opens a file it may not write read-only, without a word.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(read_only(false));
        }
        let store = SqliteStore {
            conn,
            path: path.to_owned(),
            location: path.display().to_string(),
        };
        match store.init() {
            Err(e) if sqlite_error(&e).is_some_and(is_read_only) => Err(read_only(true)),
            other => other.map(|()| store),
        }
    }

    /// Opens an existing store for reading only (`list`, `show`); `None` when
    /// there is none yet. Works on a store this user cannot write, even in a
    /// folder where SQLite cannot make its shared-memory file. A store that
    /// must first be created or upgraded is opened for writing instead.
    pub fn open_read_only(path: &Path) -> Result<Option<SqliteStore>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readable = |conn: &Connection| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        };
        let mut conn = Connection::open_with_flags(path, flags)?;
        if let Err(e) = readable(&conn) {
            if !is_read_only(&e) {
                return Err(StoreError::NotAStore {
                    location: path.display().to_string(),
                }
                .or_sqlite(e));
            }
            // A WAL store needs its shared-memory file, which cannot be made in a
            // folder this user cannot write. With no journal left beside it, the
            // file holds every committed sample and can be read as immutable.
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(StoreError::Unreadable {
                    location: path.display().to_string(),
                    why: format!("its folder cannot be written and it was not closed cleanly ({}-wal is left)", path.display()),
                    fix: "someone who can write that folder can fold the journal into the store by running `dotevals list` there once; or copy the store and its -wal file to a folder you can write".into(),
                });
            }
            conn = Connection::open_with_flags(
                immutable_uri(path),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?;
            readable(&conn)?;
        }
        let store = SqliteStore {
            conn,
            path: path.to_owned(),
            location: path.display().to_string(),
        };
        match store.init() {
            Ok(()) => Ok(Some(store)),
            // Creating or upgrading the schema needs a writable store.
            Err(e) if sqlite_error(&e).is_some_and(is_read_only) => Self::open_existing(path),
            Err(e) => Err(e),
        }
    }

    /// Creates, upgrades or refuses the database behind `conn`.
    fn init(&self) -> Result<(), StoreError> {
        configure(&self.conn).map_err(|e| {
            if is_read_only(&e) {
                e.into()
            } else {
                self.not_a_store()
            }
        })?;
        match schema::ensure(&self.conn) {
            Ok(schema::State::Current) => Ok(()),
            Ok(schema::State::Foreign) => Err(self.not_a_store()),
            Ok(schema::State::Newer(found)) => Err(StoreError::TooNew {
                location: self.location.clone(),
                found,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn not_a_store(&self) -> StoreError {
        StoreError::NotAStore {
            location: self.location.clone(),
        }
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &str {
        self.location.as_str()
    }
}

impl Recorder for SqliteStore {
    fn find_evaluation(
        &self,
        experiment: &str,
        name: &str,
    ) -> Result<Option<StoredEvaluation>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT e.id, e.spec_hash, e.identity, e.status, e.repeats FROM evaluations e
                 JOIN experiments x ON x.id = e.experiment_id WHERE x.name = ?1 AND e.name = ?2",
                params![experiment, name],
                |r| {
                    Ok(StoredEvaluation {
                        id: r.get(0)?,
                        spec_hash: r.get(1)?,
                        identity: r.get(2)?,
                        status: r.get(3)?,
                        repeats: r.get::<_, i64>(4)?.clamp(1, i64::from(u32::MAX)) as u32,
                    })
                },
            )
            .optional()?)
    }

    fn start_evaluation(
        &mut self,
        experiment: &str,
        meta: &EvaluationMeta,
        now: &str,
    ) -> Result<StartedEvaluation, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?1, ?2)",
            params![experiment, now],
        )?;
        let experiment_id: i64 = tx.query_row(
            "SELECT id FROM experiments WHERE name = ?1",
            [experiment],
            |r| r.get(0),
        )?;
        let evaluators = serde_json::to_string(meta.evaluators).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO evaluations (experiment_id, name, spec_path, spec_text, spec_hash, identity, provider, model,
                 evaluators, strategy, max_concurrency, total, started_at, status, cluster, fail_under, repeats)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'running', ?14, ?15, ?16)
             ON CONFLICT (experiment_id, name) DO UPDATE SET
                 spec_path = excluded.spec_path, spec_text = excluded.spec_text, strategy = excluded.strategy,
                 cluster = excluded.cluster, fail_under = excluded.fail_under, repeats = excluded.repeats,
                 max_concurrency = excluded.max_concurrency, total = max(total, excluded.total), status = 'running'",
            params![
                experiment_id,
                meta.name,
                meta.spec_path,
                meta.spec_text,
                meta.spec_hash,
                meta.identity,
                meta.provider,
                meta.model,
                evaluators,
                meta.strategy,
                meta.max_concurrency as i64,
                meta.total as i64,
                now,
                meta.cluster,
                serde_json::to_string(meta.fail_under).ok(),
                meta.repeats,
            ],
        )?;
        let (id, run): (i64, i64) = tx.query_row(
            "UPDATE evaluations SET runs = runs + 1 WHERE experiment_id = ?1 AND name = ?2 RETURNING id, runs",
            params![experiment_id, meta.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO evaluation_totals (evaluation_id) VALUES (?1)",
            [id],
        )?;
        let wall: i64 = tx.query_row(
            "SELECT wall_us FROM evaluation_totals WHERE evaluation_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(StartedEvaluation {
            id,
            run,
            wall_us: wall.max(0) as u64,
        })
    }

    fn set_runs(&self, evaluation_id: i64, runs: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE evaluations SET runs = ?2 WHERE id = ?1",
            params![evaluation_id, runs.min(i64::MAX as u64) as i64],
        )?;
        Ok(())
    }

    fn sink(&self, config: WriterConfig) -> Result<Box<dyn RecordSink>, StoreError> {
        let conn = Connection::open(&self.path)?;
        configure(&conn)?;
        Ok(Box::new(SqliteSink { conn, config }))
    }

    fn lookup(&self, evaluation_id: i64) -> Result<Box<dyn SampleLookup>, StoreError> {
        Ok(Box::new(SqliteLookup::open(&self.path, evaluation_id)?))
    }

    fn cache(&self) -> Result<std::sync::Arc<dyn crate::cache::CacheLookup>, StoreError> {
        Ok(std::sync::Arc::new(cache::SqliteCache::open(&self.path)?))
    }

    fn counts(&self, evaluation_id: i64) -> Result<SampleCounts, StoreError> {
        Ok(self.conn.query_row(
            "SELECT coalesce(max(recorded), 0), coalesce(max(errored), 0) FROM evaluation_totals WHERE evaluation_id = ?1",
            [evaluation_id],
            |r| {
                Ok(SampleCounts {
                    recorded: r.get::<_, i64>(0)?.max(0) as u64,
                    errored: r.get::<_, i64>(1)?.max(0) as u64,
                })
            },
        )?)
    }

    fn record_wall(&self, evaluation_id: i64, wall_us: u64) -> Result<(), StoreError> {
        writer::update_wall(&self.conn, evaluation_id, wall_us)
    }

    fn finish_evaluation(
        &self,
        id: i64,
        status: EvaluationStatus,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE evaluations SET status = ?2, ended_at = ?3 WHERE id = ?1",
            params![id, status, now],
        )?;
        Ok(())
    }

    fn record_limits(
        &mut self,
        evaluation_id: i64,
        run: i64,
        history: &[(Duration, usize)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO limits (evaluation_id, run, t_us, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (t, value) in history {
                insert.execute(params![
                    evaluation_id,
                    run,
                    t.as_micros() as i64,
                    *value as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn record_run(&self, evaluation_id: i64, run: i64, t: &RunTotals) -> Result<(), StoreError> {
        let us = |d: std::time::Duration| d.as_micros().min(i64::MAX as u128) as i64;
        let n = |x: u64| x.min(i64::MAX as u64) as i64;
        self.conn.execute(
            "INSERT OR REPLACE INTO runs (evaluation_id, run, strategy, wall_us, samples, attempts,
                 throttled, held_us, at_server_us, blocked_us, unloaded, unloaded_us, endpoints)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                evaluation_id,
                run,
                t.strategy,
                us(t.wall),
                n(t.limiter.samples),
                n(t.limiter.attempts),
                n(t.limiter.throttled),
                us(t.limiter.held),
                us(t.limiter.at_server),
                us(t.limiter.blocked),
                n(t.limiter.unloaded),
                us(t.limiter.unloaded_sum),
                crate::store::EndpointRun::to_column(&t.endpoints),
            ],
        )?;
        Ok(())
    }

    fn is_running(&self, experiment: &str, evaluation: &str) -> bool {
        lock::is_held(&self.path, experiment, evaluation)
    }
}

impl Reader for SqliteStore {
    fn summary_reads(&self, e: &EvaluationRow) -> Result<SummaryReads, StoreError> {
        // One read transaction: a snapshot, not figures from before and
        // after a running experiment's commit.
        let snapshot = self.conn.unchecked_transaction()?;
        let reads = crate::store::read::summary_reads(self, e)?;
        snapshot.finish()?;
        Ok(reads)
    }

    fn experiments(&self) -> Result<Vec<ExperimentRow>, StoreError> {
        read::experiments(&self.conn, &self.path)
    }

    fn experiment(&self, name: &str) -> Result<ExperimentRow, StoreError> {
        read::experiment(&self.conn, &self.path, name)
    }

    fn experiment_names(&self) -> Result<Vec<String>, StoreError> {
        read::experiment_names(&self.conn)
    }

    fn latencies(&self, evaluation_id: i64) -> Result<Vec<u64>, StoreError> {
        read::latencies(&self.conn, evaluation_id)
    }

    fn streamed(
        &self,
        evaluation_id: i64,
    ) -> Result<Vec<crate::store::read::StreamedReply>, StoreError> {
        read::streamed(&self.conn, evaluation_id)
    }

    fn endpoints(
        &self,
        evaluation_id: i64,
    ) -> Result<Vec<crate::store::read::EndpointSamples>, StoreError> {
        read::endpoints(&self.conn, evaluation_id)
    }

    fn errors(&self, evaluation_id: i64) -> Result<Vec<ErrorRow>, StoreError> {
        read::errors(&self.conn, evaluation_id)
    }

    fn error_groups(&self, evaluation_id: i64) -> Result<Vec<ErrorGroup>, StoreError> {
        read::error_groups(&self.conn, evaluation_id)
    }

    fn runs(&self, evaluation_id: i64) -> Result<Vec<RunRow>, StoreError> {
        read::runs(&self.conn, evaluation_id)
    }

    fn limit_steps(&self, evaluation_id: i64, run: u64) -> Result<Vec<LimitStep>, StoreError> {
        read::limit_steps(&self.conn, evaluation_id, run)
    }

    fn limit_timeline(&self, evaluation_id: i64) -> Result<LimitTimeline, StoreError> {
        read::limit_timeline(&self.conn, evaluation_id)
    }

    fn samples(&self, evaluation_id: i64, evaluators: usize) -> Result<Vec<SampleRow>, StoreError> {
        read::samples(&self.conn, evaluation_id, evaluators)
    }

    fn for_each_sample(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        each: &mut dyn FnMut(SampleRow) -> std::ops::ControlFlow<()>,
    ) -> Result<(), StoreError> {
        read::for_each_sample(&self.conn, evaluation_id, evaluators, each)
    }

    fn judge_totals(
        &self,
        evaluation_id: i64,
    ) -> Result<Vec<crate::store::JudgeTotal>, StoreError> {
        read::judge_totals(&self.conn, evaluation_id)
    }

    fn sample_scores(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<crate::store::SampleScores>, StoreError> {
        read::sample_scores(&self.conn, evaluation_id, evaluators, cluster)
    }

    fn cluster_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        column: &str,
    ) -> Result<Vec<(u64, f64, f64)>, StoreError> {
        read::cluster_sums(&self.conn, evaluation_id, evaluator, column)
    }

    fn repeat_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<crate::store::RepeatSums>, StoreError> {
        read::repeat_sums(&self.conn, evaluation_id, evaluator, cluster)
    }
}

impl Admin for SqliteStore {
    fn delete_experiment(&self, name: &str) -> Result<u64, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let id: i64 = tx
            .query_row("SELECT id FROM experiments WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::UnknownExperiment(name.to_owned()))?;
        let samples: i64 = tx.query_row(
            "SELECT count(*) FROM samples WHERE evaluation_id IN (SELECT id FROM evaluations WHERE experiment_id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM experiments WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(samples as u64)
    }

    fn rename_experiment(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) FROM experiments WHERE name = ?1",
            [to],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if exists {
            return Err(StoreError::ExperimentExists(to.to_owned()));
        }
        let changed = self.conn.execute(
            "UPDATE experiments SET name = ?2 WHERE name = ?1",
            params![from, to],
        )?;
        if changed == 0 {
            return Err(StoreError::UnknownExperiment(from.to_owned()));
        }
        Ok(())
    }

    fn cache_stats(&self) -> Result<crate::cache::CacheStats, StoreError> {
        cache::stats(&self.conn)
    }

    fn cache_clear(
        &self,
        older_than: Option<Duration>,
        model: Option<&str>,
    ) -> Result<u64, StoreError> {
        cache::clear(&self.conn, older_than, model)
    }

    fn cache_explain_reads(
        &self,
        experiment: &str,
        sample: &str,
    ) -> Result<Vec<crate::cache::explain::SampleCache>, StoreError> {
        cache::explain_reads(&self.conn, experiment, sample)
    }
}

/// Statuses are stored as their names.
impl ToSql for EvaluationStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for EvaluationStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// The store at `path` cannot be written by this user (`folder`: because
/// its folder, where SQLite keeps its journal, cannot be).
fn read_only(path: &Path, folder: bool) -> StoreError {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let (why, fix) = match (folder, dir) {
        (true, Some(dir)) => (
            " (its folder cannot be written, and SQLite keeps its journal there)",
            format!("make its folder writable (chmod u+w {})", dir.display()),
        ),
        (true, None) => (
            " (its folder cannot be written, and SQLite keeps its journal there)",
            format!("make it writable (chmod u+w {})", path.display()),
        ),
        (false, _) => (
            "",
            format!("make it writable (chmod u+w {})", path.display()),
        ),
    };
    StoreError::ReadOnly {
        location: path.display().to_string(),
        why: why.into(),
        fix,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The SQLite error behind `e`, if it is one.
fn sqlite_error(e: &StoreError) -> Option<&rusqlite::Error> {
    match e {
        StoreError::Backend(e) => e.downcast_ref(),
        _ => None,
    }
}

impl StoreError {
    /// `self` when SQLite says the file is no database, else the SQLite error.
    fn or_sqlite(self, e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                self
            }
            _ => e.into(),
        }
    }
}

/// `file:PATH?immutable=1`, the path made absolute and percent-encoded.
fn immutable_uri(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut uri = String::from("file:");
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().replace('\\', "/").into_bytes();
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests;
