//! The SQLite [`SampleLookup`], on a read-only connection of its own.

use super::read::{call_columns, call_stats};
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::store::{SampleLookup, StoreError, StoredCall, StoredSample};

/// Looks up stored samples by key while a dataset is read, on its own connection.
pub struct SqliteLookup {
    conn: Connection,
    evaluation_id: i64,
}

impl SqliteLookup {
    /// Opens a second connection to the store at `path`.
    pub fn open(path: &Path, evaluation_id: i64) -> Result<SqliteLookup, StoreError> {
        let conn = reader(path)?;
        Ok(SqliteLookup {
            conn,
            evaluation_id,
        })
    }
}

/// A read-only connection of its own to the store at `path`, for a thread
/// that reads while the writer commits (WAL: neither waits for the other).
pub(super) fn reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl SampleLookup for SqliteLookup {
    fn count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT count(*) FROM samples WHERE evaluation_id = ?1",
                [self.evaluation_id],
                |r| r.get::<_, i64>(0),
            )?
            .max(0) as u64)
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT sample_key FROM samples WHERE evaluation_id = ?1 ORDER BY row_index, sample_key",
        )?;
        let keys = stmt
            .query_map([self.evaluation_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn get(&self, key: &str) -> Result<Option<StoredSample>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT row_hash, error_kind IS NULL, coalesce(error_kind IN ('evaluator', 'judge', 'ungraded') AND output IS NOT NULL, 0)
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

    fn call(&self, key: &str) -> Result<Option<StoredCall>, StoreError> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT prompt, output, error_kind, error, ",
            call_columns!(),
            " FROM samples WHERE evaluation_id = ?1 AND sample_key = ?2"
        ))?;
        Ok(stmt
            .query_row(params![self.evaluation_id, key], |r| {
                Ok(StoredCall {
                    prompt: r.get(0)?,
                    output: r.get(1)?,
                    error_kind: r.get(2)?,
                    error: r.get(3)?,
                    call: call_stats(r, 4)?,
                })
            })
            .optional()?)
    }
}
