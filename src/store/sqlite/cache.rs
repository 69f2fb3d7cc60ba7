//! The response cache in SQLite: lookups on a read-only connection of
//! their own (the writer keeps entries with the records that paid for them,
//! see `writer.rs`).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::writer::unix_now;
use crate::cache::{CacheLookup, CachedReply};
use crate::store::StoreError;
use crate::usage::Usage;

/// Finds cache entries by key (shared by the dataset reader and the judges:
/// a point lookup holds the lock for microseconds).
pub struct SqliteCache {
    conn: Mutex<Connection>,
}

impl SqliteCache {
    pub fn open(path: &Path) -> Result<SqliteCache, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(SqliteCache {
            conn: Mutex::new(conn),
        })
    }
}

impl CacheLookup for SqliteCache {
    fn get(&self, hash: &str, ttl: Option<Duration>) -> Result<Option<CachedReply>, StoreError> {
        let since = ttl.map_or(i64::MIN, |ttl| unix_now() - ttl.as_secs() as i64);
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
