//! Storage: experiments, evaluations and sample records in embedded SQLite.
//!
//! Layout: experiment ▸ evaluation (spec snapshot and hash, model, strategy,
//! times, status) ▸ sample record (id, variables, prompt, output, scores,
//! error, attempts, latency, start/end offsets, tokens). The database runs in
//! WAL mode, so a crash at any instant leaves it readable; the [`writer`]
//! commits finished samples in short batched transactions. The schema is
//! versioned in `meta`. Nothing here knows about HTTP or strategies.

pub mod lock;
pub mod read;
mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub use schema::VERSION as SCHEMA_VERSION;

/// What one run of an evaluation saw, for its row in `runs`.
#[derive(Debug, Clone)]
pub struct RunTotals {
    pub strategy: String,
    pub wall: std::time::Duration,
    pub limiter: crate::concurrency::Totals,
}

/// The default store, relative to the working directory.
pub const DEFAULT_PATH: &str = ".dotevals/dotevals.db";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a dotevals store")]
    NotAStore { path: PathBuf },
    /// The store (or, with `folder`, the folder SQLite keeps its journal in)
    /// cannot be written by this user, or the file is write-protected.
    #[error("the store {path} is read-only{}", if *folder { " (its folder cannot be written, and SQLite keeps its journal there)" } else { "" })]
    ReadOnly { path: PathBuf, folder: bool },
    #[error("cannot read the store {path}: its folder cannot be written and it was not closed cleanly ({path}-wal is left)")]
    Unreadable { path: PathBuf },
    #[error(
        "{path} was written by a newer dotevals (schema {found}, this one knows {SCHEMA_VERSION})"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("no experiment named `{0}`")]
    UnknownExperiment(String),
    #[error("an experiment named `{0}` already exists")]
    ExperimentExists(String),
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store writer stopped unexpectedly")]
    WriterLost,
    #[error("cannot start the store writer: {0}")]
    Thread(std::io::Error),
}

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

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// What a run records about an evaluation before its first sample.
#[derive(Debug, Clone)]
pub struct EvaluationMeta<'a> {
    pub name: &'a str,
    pub spec_path: &'a str,
    pub spec_text: &'a str,
    pub spec_hash: &'a str,
    pub identity: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// Evaluator names, in score order.
    pub evaluators: &'a [String],
    pub strategy: &'a str,
    pub max_concurrency: usize,
    pub total: u64,
}

/// An evaluation already in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub id: i64,
    pub spec_hash: String,
    pub identity: String,
    pub status: String,
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

impl Store {
    /// Opens or creates the store at `path`, for writing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        Self::open_writable(path, OpenFlags::default())
    }

    /// Opens an existing store for writing; `None` when there is none yet.
    /// A store this user cannot write is [`StoreError::ReadOnly`].
    pub fn open_existing(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        Self::open_writable(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map(Some)
    }

    fn open_writable(path: &Path, flags: OpenFlags) -> Result<Store, StoreError> {
        let read_only = |folder| StoreError::ReadOnly {
            path: path.to_owned(),
            folder,
        };
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
        let store = Store {
            conn,
            path: path.to_owned(),
        };
        match store.init() {
            Err(StoreError::Sqlite(e)) if is_read_only(&e) => Err(read_only(true)),
            other => other.map(|()| store),
        }
    }

    /// Opens an existing store for reading only (`list`, `show`); `None` when
    /// there is none yet. Works on a store this user cannot write, even in a
    /// folder where SQLite cannot make its shared-memory file. A store that
    /// must first be created or upgraded is opened for writing instead.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
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
                    path: path.to_owned(),
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
                    path: path.to_owned(),
                });
            }
            conn = Connection::open_with_flags(
                immutable_uri(path),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?;
            readable(&conn)?;
        }
        let store = Store {
            conn,
            path: path.to_owned(),
        };
        match store.init() {
            Ok(()) => Ok(Some(store)),
            // Creating or upgrading the schema needs a writable store.
            Err(StoreError::Sqlite(e)) if is_read_only(&e) => Self::open_existing(path),
            Err(e) => Err(e),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
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
                path: self.path.clone(),
                found,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn not_a_store(&self) -> StoreError {
        StoreError::NotAStore {
            path: self.path.clone(),
        }
    }

    /// The evaluation `name` of `experiment`, if recorded.
    pub fn find_evaluation(
        &self,
        experiment: &str,
        name: &str,
    ) -> Result<Option<Existing>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT e.id, e.spec_hash, e.identity, e.status FROM evaluations e
                 JOIN experiments x ON x.id = e.experiment_id WHERE x.name = ?1 AND e.name = ?2",
                params![experiment, name],
                |r| {
                    Ok(Existing {
                        id: r.get(0)?,
                        spec_hash: r.get(1)?,
                        identity: r.get(2)?,
                        status: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Creates the experiment if needed and the evaluation if new; marks it running.
    /// Returns the evaluation id, the run number (1 for a fresh evaluation) and the
    /// wall time earlier runs recorded.
    pub fn start_evaluation(
        &mut self,
        experiment: &str,
        meta: &EvaluationMeta,
        now: &str,
    ) -> Result<(i64, i64, u64), StoreError> {
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
                 evaluators, strategy, max_concurrency, total, started_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'running')
             ON CONFLICT (experiment_id, name) DO UPDATE SET
                 spec_path = excluded.spec_path, spec_text = excluded.spec_text, strategy = excluded.strategy,
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
                now
            ],
        )?;
        let (id, runs): (i64, i64) = tx.query_row(
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
        Ok((id, runs, wall.max(0) as u64))
    }

    /// Samples recorded and, of those, errored, from the evaluation's counters.
    pub fn counts(&self, evaluation_id: i64) -> Result<(u64, u64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT coalesce(max(recorded), 0), coalesce(max(errored), 0) FROM evaluation_totals WHERE evaluation_id = ?1",
            [evaluation_id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            },
        )?)
    }

    /// Records how a run of an evaluation ended.
    pub fn finish_evaluation(&self, id: i64, status: &str, now: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE evaluations SET status = ?2, ended_at = ?3 WHERE id = ?1",
            params![id, status, now],
        )?;
        Ok(())
    }

    /// Records how the concurrency limit moved during run `run`: (time since
    /// the run started, limit) at each change, the first included.
    pub fn record_limits(
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

    /// Records what run `run` of an evaluation saw (see [`RunTotals`]).
    pub fn record_run(
        &self,
        evaluation_id: i64,
        run: i64,
        t: &RunTotals,
    ) -> Result<(), StoreError> {
        let us = |d: std::time::Duration| d.as_micros().min(i64::MAX as u128) as i64;
        let n = |x: u64| x.min(i64::MAX as u64) as i64;
        self.conn.execute(
            "INSERT OR REPLACE INTO runs (evaluation_id, run, strategy, wall_us, samples, attempts,
                 throttled, held_us, at_server_us, blocked_us, unloaded, unloaded_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
            ],
        )?;
        Ok(())
    }

    /// Deletes an experiment and everything in it.
    pub fn delete_experiment(&self, name: &str) -> Result<u64, StoreError> {
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

    /// Renames an experiment.
    pub fn rename_experiment(&self, from: &str, to: &str) -> Result<(), StoreError> {
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

/// Looks up stored samples by key while a dataset is read, on its own connection.
pub struct SampleLookup {
    conn: Connection,
    evaluation_id: i64,
}

/// A stored sample's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSample {
    pub row_hash: u64,
    /// Finished without error: never sent again.
    pub finished: bool,
    /// The model answered but an evaluator failed on the answer: scored again
    /// from the stored reply (see [`SampleLookup::reply`]), never sent again.
    pub rescore: bool,
}

/// What a sample's stored record says about its model call, to score it again.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    /// The prompt as stored (JSON).
    pub prompt: String,
    pub output: String,
    pub attempts: u32,
    pub throttled: u32,
    pub wait_us: u64,
    pub latency_us: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

impl SampleLookup {
    /// Opens a second connection to the store at `path`.
    pub fn open(path: &Path, evaluation_id: i64) -> Result<SampleLookup, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(SampleLookup {
            conn,
            evaluation_id,
        })
    }

    /// Samples recorded for the evaluation, finished or errored.
    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT count(*) FROM samples WHERE evaluation_id = ?1",
                [self.evaluation_id],
                |r| r.get::<_, i64>(0),
            )?
            .max(0) as u64)
    }

    /// The keys of the recorded samples, in dataset order.
    pub fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT sample_key FROM samples WHERE evaluation_id = ?1 ORDER BY row_index, sample_key",
        )?;
        let keys = stmt
            .query_map([self.evaluation_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    /// The stored state of sample `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<StoredSample>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT row_hash, error_kind IS NULL, coalesce(error_kind = 'evaluator' AND output IS NOT NULL, 0)
                 FROM samples WHERE evaluation_id = ?1 AND sample_key = ?2")?;
        Ok(stmt
            .query_row(params![self.evaluation_id, key], |r| {
                Ok(StoredSample {
                    row_hash: r.get::<_, i64>(0)? as u64,
                    finished: r.get(1)?,
                    rescore: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// The stored model reply of sample `key`, if it has one.
    pub fn reply(&self, key: &str) -> Result<Option<StoredReply>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT prompt, output, attempts, throttled, wait_us, latency_us, prompt_tokens, completion_tokens
             FROM samples WHERE evaluation_id = ?1 AND sample_key = ?2 AND output IS NOT NULL",
        )?;
        let n = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        Ok(stmt
            .query_row(params![self.evaluation_id, key], |r| {
                Ok(StoredReply {
                    prompt: r.get(0)?,
                    output: r.get(1)?,
                    attempts: r.get(2)?,
                    throttled: r.get(3)?,
                    wait_us: r.get::<_, i64>(4)?.max(0) as u64,
                    latency_us: n(r.get(5)?),
                    prompt_tokens: n(r.get(6)?),
                    completion_tokens: n(r.get(7)?),
                })
            })
            .optional()?)
    }
}

/// Now, as RFC 3339 UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
