//! The store's schema and its versions.
//!
//! Version 1 is kept exactly as it first shipped; every later version is a
//! migration on top of it. A new store is built by the same path (version 1
//! plus every migration), so a fresh store and an upgraded one are the same
//! by construction. `meta.schema_version` says where a store stands.

use rusqlite::Connection;

/// The version this build writes.
pub const VERSION: i64 = crate::store::SCHEMA_VERSION;

/// Version 1, as first released.
pub const V1: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec_path TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    identity TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    evaluators TEXT NOT NULL,
    strategy TEXT NOT NULL,
    max_concurrency INTEGER NOT NULL,
    total INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    wall_us INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    UNIQUE (experiment_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    sample_key TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    row_hash INTEGER NOT NULL,
    run INTEGER NOT NULL,
    variables TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT,
    error_kind TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    latency_us INTEGER,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    UNIQUE (evaluation_id, sample_key)
);
-- Covers the timing and error aggregates of `show` and `list`, ordered by latency
-- for percentiles, so reports never read the wide sample rows.
CREATE INDEX IF NOT EXISTS samples_stats
    ON samples (evaluation_id, latency_us, error_kind, prompt_tokens, completion_tokens);
CREATE TABLE IF NOT EXISTS scores (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    evaluation_id INTEGER NOT NULL,
    evaluator INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (sample_id, evaluator)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_by_evaluation ON scores (evaluation_id, evaluator, value);
"#;

/// Migrations: `MIGRATIONS[i]` upgrades version `i + 1` to `i + 2`.
const MIGRATIONS: &[&str] = &[
    // 2: retries and throttling per sample; the concurrency limit over time; and
    // per-evaluation totals kept by triggers, so `list` and `show` read one row per
    // evaluation instead of scanning its samples.
    r#"
ALTER TABLE samples ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE samples ADD COLUMN wait_us INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS samples_stats;
CREATE INDEX samples_latency ON samples (evaluation_id, latency_us);
CREATE INDEX samples_errors ON samples (evaluation_id, error_kind) WHERE error_kind IS NOT NULL;
CREATE TABLE limits (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    run INTEGER NOT NULL,
    t_us INTEGER NOT NULL,
    value INTEGER NOT NULL
);
CREATE INDEX limits_by_evaluation ON limits (evaluation_id, run, t_us);

ALTER TABLE evaluations ADD COLUMN recorded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN errored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN latency_sum_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluations ADD COLUMN wait_us INTEGER NOT NULL DEFAULT 0;
UPDATE evaluations SET
    recorded = (SELECT count(*) FROM samples s WHERE s.evaluation_id = evaluations.id),
    errored = (SELECT count(error_kind) FROM samples s WHERE s.evaluation_id = evaluations.id),
    latency_sum_us = (SELECT coalesce(sum(latency_us), 0) FROM samples s WHERE s.evaluation_id = evaluations.id),
    prompt_tokens = (SELECT coalesce(sum(prompt_tokens), 0) FROM samples s WHERE s.evaluation_id = evaluations.id),
    completion_tokens = (SELECT coalesce(sum(completion_tokens), 0) FROM samples s WHERE s.evaluation_id = evaluations.id),
    retries = (SELECT coalesce(sum(attempts - 1), 0) FROM samples s WHERE s.evaluation_id = evaluations.id);
CREATE TABLE evaluation_scores (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    evaluator INTEGER NOT NULL,
    scored INTEGER NOT NULL,
    total REAL NOT NULL,
    PRIMARY KEY (evaluation_id, evaluator)
) WITHOUT ROWID;
INSERT INTO evaluation_scores
    SELECT evaluation_id, evaluator, count(value), coalesce(sum(value), 0) FROM scores GROUP BY evaluation_id, evaluator;
CREATE TRIGGER samples_add AFTER INSERT ON samples BEGIN
    UPDATE evaluations SET
        recorded = recorded + 1,
        errored = errored + (NEW.error_kind IS NOT NULL),
        latency_sum_us = latency_sum_us + coalesce(NEW.latency_us, 0),
        prompt_tokens = prompt_tokens + coalesce(NEW.prompt_tokens, 0),
        completion_tokens = completion_tokens + coalesce(NEW.completion_tokens, 0),
        retries = retries + NEW.attempts - 1,
        throttled = throttled + NEW.throttled,
        wait_us = wait_us + NEW.wait_us
    WHERE id = NEW.evaluation_id;
END;
CREATE TRIGGER samples_remove AFTER DELETE ON samples BEGIN
    UPDATE evaluations SET
        recorded = recorded - 1,
        errored = errored - (OLD.error_kind IS NOT NULL),
        latency_sum_us = latency_sum_us - coalesce(OLD.latency_us, 0),
        prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
        completion_tokens = completion_tokens - coalesce(OLD.completion_tokens, 0),
        retries = retries - (OLD.attempts - 1),
        throttled = throttled - OLD.throttled,
        wait_us = wait_us - OLD.wait_us
    WHERE id = OLD.evaluation_id;
END;
CREATE TRIGGER scores_add AFTER INSERT ON scores BEGIN
    INSERT INTO evaluation_scores VALUES (NEW.evaluation_id, NEW.evaluator, NEW.value IS NOT NULL, coalesce(NEW.value, 0))
    ON CONFLICT (evaluation_id, evaluator) DO UPDATE SET
        scored = scored + excluded.scored, total = total + excluded.total;
END;
CREATE TRIGGER scores_remove AFTER DELETE ON scores BEGIN
    UPDATE evaluation_scores SET
        scored = scored - (OLD.value IS NOT NULL), total = total - coalesce(OLD.value, 0)
    WHERE evaluation_id = OLD.evaluation_id AND evaluator = OLD.evaluator;
END;
"#,
    // 3: what each run of an evaluation saw, kept when a later run replaces its
    // samples: slot time, time at the server and blocked time (from the
    // limiter), attempts and 429s, and replies that had the server alone.
    r#"
CREATE TABLE runs (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    run INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    wall_us INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    throttled INTEGER NOT NULL,
    held_us INTEGER NOT NULL,
    at_server_us INTEGER NOT NULL,
    blocked_us INTEGER NOT NULL,
    unloaded INTEGER NOT NULL,
    unloaded_us INTEGER NOT NULL,
    PRIMARY KEY (evaluation_id, run)
) WITHOUT ROWID;
"#,
    // 4: the per-evaluation totals and the running wall time move out of
    // `evaluations` into a small row of their own. The triggers and the writer
    // updated them with every committed batch, and SQLite rewrites a whole row
    // to update one column of it: the spec snapshot included, so a 1 MB spec
    // made every write slow.
    r#"
CREATE TABLE evaluation_totals (
    evaluation_id INTEGER PRIMARY KEY REFERENCES evaluations(id) ON DELETE CASCADE,
    recorded INTEGER NOT NULL DEFAULT 0,
    errored INTEGER NOT NULL DEFAULT 0,
    latency_sum_us INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    throttled INTEGER NOT NULL DEFAULT 0,
    wait_us INTEGER NOT NULL DEFAULT 0,
    wall_us INTEGER NOT NULL DEFAULT 0
);
INSERT INTO evaluation_totals
    SELECT id, recorded, errored, latency_sum_us, prompt_tokens, completion_tokens, retries, throttled,
           wait_us, wall_us
    FROM evaluations;
DROP TRIGGER samples_add;
DROP TRIGGER samples_remove;
ALTER TABLE evaluations DROP COLUMN recorded;
ALTER TABLE evaluations DROP COLUMN errored;
ALTER TABLE evaluations DROP COLUMN latency_sum_us;
ALTER TABLE evaluations DROP COLUMN prompt_tokens;
ALTER TABLE evaluations DROP COLUMN completion_tokens;
ALTER TABLE evaluations DROP COLUMN retries;
ALTER TABLE evaluations DROP COLUMN throttled;
ALTER TABLE evaluations DROP COLUMN wait_us;
ALTER TABLE evaluations DROP COLUMN wall_us;
CREATE TRIGGER samples_add AFTER INSERT ON samples BEGIN
    INSERT INTO evaluation_totals (evaluation_id, recorded, errored, latency_sum_us, prompt_tokens,
        completion_tokens, retries, throttled, wait_us)
    VALUES (NEW.evaluation_id, 1, NEW.error_kind IS NOT NULL, coalesce(NEW.latency_us, 0),
        coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), NEW.attempts - 1,
        NEW.throttled, NEW.wait_us)
    ON CONFLICT (evaluation_id) DO UPDATE SET
        recorded = recorded + excluded.recorded,
        errored = errored + excluded.errored,
        latency_sum_us = latency_sum_us + excluded.latency_sum_us,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        retries = retries + excluded.retries,
        throttled = throttled + excluded.throttled,
        wait_us = wait_us + excluded.wait_us;
END;
CREATE TRIGGER samples_remove AFTER DELETE ON samples BEGIN
    UPDATE evaluation_totals SET
        recorded = recorded - 1,
        errored = errored - (OLD.error_kind IS NOT NULL),
        latency_sum_us = latency_sum_us - coalesce(OLD.latency_us, 0),
        prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
        completion_tokens = completion_tokens - coalesce(OLD.completion_tokens, 0),
        retries = retries - (OLD.attempts - 1),
        throttled = throttled - OLD.throttled,
        wait_us = wait_us - OLD.wait_us
    WHERE evaluation_id = OLD.evaluation_id;
END;
"#,
    // 5: scores are numbers in [0, 1] and a sample passes an evaluator when its
    // score reaches that evaluator's threshold, so whether it passed is stored
    // with the score (rounding the sum of fractional scores is no pass count),
    // with the evaluator's reason when it gave one. Scores stored before
    // thresholds passed at 1.
    r#"
ALTER TABLE scores ADD COLUMN passed INTEGER;
ALTER TABLE scores ADD COLUMN reason TEXT;
UPDATE scores SET passed = (value >= 1.0) WHERE value IS NOT NULL;
ALTER TABLE evaluation_scores ADD COLUMN passed INTEGER NOT NULL DEFAULT 0;
UPDATE evaluation_scores SET passed = (
    SELECT count(*) FROM scores s
    WHERE s.evaluation_id = evaluation_scores.evaluation_id
      AND s.evaluator = evaluation_scores.evaluator AND s.passed = 1);
DROP TRIGGER scores_add;
DROP TRIGGER scores_remove;
CREATE TRIGGER scores_add AFTER INSERT ON scores BEGIN
    INSERT INTO evaluation_scores (evaluation_id, evaluator, scored, total, passed)
    VALUES (NEW.evaluation_id, NEW.evaluator, NEW.value IS NOT NULL, coalesce(NEW.value, 0),
        coalesce(NEW.passed, 0))
    ON CONFLICT (evaluation_id, evaluator) DO UPDATE SET
        scored = scored + excluded.scored, total = total + excluded.total,
        passed = passed + excluded.passed;
END;
CREATE TRIGGER scores_remove AFTER DELETE ON scores BEGIN
    UPDATE evaluation_scores SET
        scored = scored - (OLD.value IS NOT NULL), total = total - coalesce(OLD.value, 0),
        passed = passed - coalesce(OLD.passed, 0)
    WHERE evaluation_id = OLD.evaluation_id AND evaluator = OLD.evaluator;
END;
"#,
    // 6: what each `llm_judge` call sent and got back, apart from the model's
    // request: the prompt, the raw reply (kept when it held no score), and its
    // own attempts, waits, latency and tokens. Its score is the sample's score row.
    r#"
CREATE TABLE judge_calls (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    evaluation_id INTEGER NOT NULL,
    evaluator INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    reply TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    throttled INTEGER NOT NULL,
    wait_us INTEGER NOT NULL,
    latency_us INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    PRIMARY KEY (sample_id, evaluator)
) WITHOUT ROWID;
CREATE INDEX judge_calls_by_evaluation ON judge_calls (evaluation_id, evaluator);
"#,
    // 7: error bars. The sum of squared scores per evaluator, kept by the
    // triggers beside the sum, gives a graded mean its standard error without
    // reading the scores; `cluster` names the dataset column whose groups the
    // standard error is clustered by (`dataset.cluster`), null for none; and
    // `fail_under` holds each evaluator's CI gate bar (a JSON list, null
    // entries for none), so `show` applies the bars the run had. Repeats:
    // `evaluations.repeats` is the spec's `repeats` (the latest run's), and
    // `samples.repeat` which send of its row a record is (0 for the first,
    // whose key is the plain sample id; see `crate::repeats`).
    r#"
ALTER TABLE evaluation_scores ADD COLUMN total_sq REAL NOT NULL DEFAULT 0;
UPDATE evaluation_scores SET total_sq = (
    SELECT coalesce(sum(s.value * s.value), 0) FROM scores s
    WHERE s.evaluation_id = evaluation_scores.evaluation_id AND s.evaluator = evaluation_scores.evaluator);
DROP TRIGGER scores_add;
DROP TRIGGER scores_remove;
CREATE TRIGGER scores_add AFTER INSERT ON scores BEGIN
    INSERT INTO evaluation_scores (evaluation_id, evaluator, scored, total, passed, total_sq)
    VALUES (NEW.evaluation_id, NEW.evaluator, NEW.value IS NOT NULL, coalesce(NEW.value, 0),
        coalesce(NEW.passed, 0), coalesce(NEW.value * NEW.value, 0))
    ON CONFLICT (evaluation_id, evaluator) DO UPDATE SET
        scored = scored + excluded.scored, total = total + excluded.total,
        passed = passed + excluded.passed, total_sq = total_sq + excluded.total_sq;
END;
CREATE TRIGGER scores_remove AFTER DELETE ON scores BEGIN
    UPDATE evaluation_scores SET
        scored = scored - (OLD.value IS NOT NULL), total = total - coalesce(OLD.value, 0),
        passed = passed - coalesce(OLD.passed, 0),
        total_sq = total_sq - coalesce(OLD.value * OLD.value, 0)
    WHERE evaluation_id = OLD.evaluation_id AND evaluator = OLD.evaluator;
END;
ALTER TABLE evaluations ADD COLUMN cluster TEXT;
ALTER TABLE evaluations ADD COLUMN fail_under TEXT;
ALTER TABLE evaluations ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE samples ADD COLUMN repeat INTEGER NOT NULL DEFAULT 0;
"#,
    // 8: a judge call's time queued for the judge's own window, apart from
    // its wait (backoff, pauses, rate limit); 0 for calls stored before.
    r#"
ALTER TABLE judge_calls ADD COLUMN queue_us INTEGER NOT NULL DEFAULT 0;
"#,
    // 9: the whole usage of a call (prompt tokens read from and written to
    // the provider's cache, reasoning tokens; see `crate::usage`) and a
    // streamed reply's time to its first text, for samples and judge calls;
    // the triggers sum the new counts per evaluation. Null before.
    r#"
ALTER TABLE samples ADD COLUMN cached_tokens INTEGER;
ALTER TABLE samples ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE samples ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE samples ADD COLUMN first_token_us INTEGER;
ALTER TABLE judge_calls ADD COLUMN cached_tokens INTEGER;
ALTER TABLE judge_calls ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE judge_calls ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE judge_calls ADD COLUMN first_token_us INTEGER;
ALTER TABLE evaluation_totals ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluation_totals ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluation_totals ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER samples_add;
DROP TRIGGER samples_remove;
CREATE TRIGGER samples_add AFTER INSERT ON samples BEGIN
    INSERT INTO evaluation_totals (evaluation_id, recorded, errored, latency_sum_us, prompt_tokens,
        completion_tokens, retries, throttled, wait_us, cached_tokens, cache_write_tokens,
        reasoning_tokens)
    VALUES (NEW.evaluation_id, 1, NEW.error_kind IS NOT NULL, coalesce(NEW.latency_us, 0),
        coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), NEW.attempts - 1,
        NEW.throttled, NEW.wait_us, coalesce(NEW.cached_tokens, 0),
        coalesce(NEW.cache_write_tokens, 0), coalesce(NEW.reasoning_tokens, 0))
    ON CONFLICT (evaluation_id) DO UPDATE SET
        recorded = recorded + excluded.recorded,
        errored = errored + excluded.errored,
        latency_sum_us = latency_sum_us + excluded.latency_sum_us,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        retries = retries + excluded.retries,
        throttled = throttled + excluded.throttled,
        wait_us = wait_us + excluded.wait_us,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens;
END;
CREATE TRIGGER samples_remove AFTER DELETE ON samples BEGIN
    UPDATE evaluation_totals SET
        recorded = recorded - 1,
        errored = errored - (OLD.error_kind IS NOT NULL),
        latency_sum_us = latency_sum_us - coalesce(OLD.latency_us, 0),
        prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
        completion_tokens = completion_tokens - coalesce(OLD.completion_tokens, 0),
        retries = retries - (OLD.attempts - 1),
        throttled = throttled - OLD.throttled,
        wait_us = wait_us - OLD.wait_us,
        cached_tokens = cached_tokens - coalesce(OLD.cached_tokens, 0),
        cache_write_tokens = cache_write_tokens - coalesce(OLD.cache_write_tokens, 0),
        reasoning_tokens = reasoning_tokens - coalesce(OLD.reasoning_tokens, 0)
    WHERE evaluation_id = OLD.evaluation_id;
END;
"#,
    // 10: the response cache (`crate::cache`). `cache_keys` holds what each
    // request sent under the cache was keyed by (secrets scrubbed), success
    // or not, for `cache explain`; `cache` holds the successful replies, with
    // when they were written (the ttl) and how often they were used.
    // `samples.cache_key` and `judge_calls.cache_key` say which key a call
    // went under (null: the cache was off), `cached` that the reply came from
    // the cache (nothing sent); the totals count cached samples. A record
    // that made no attempt (a cache hit, a prompt that failed to render) no
    // longer counts -1 retries.
    r#"
CREATE TABLE cache_keys (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    sample_key TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX cache_keys_by_sample ON cache_keys (sample_key);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    cache_write_tokens INTEGER,
    reasoning_tokens INTEGER,
    written_at INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit_at INTEGER
);
CREATE INDEX cache_by_model ON cache (model, written_at);
ALTER TABLE samples ADD COLUMN cache_key TEXT;
ALTER TABLE samples ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
ALTER TABLE judge_calls ADD COLUMN cache_key TEXT;
ALTER TABLE judge_calls ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evaluation_totals ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER samples_cached_add AFTER INSERT ON samples WHEN NEW.cached BEGIN
    UPDATE evaluation_totals SET cached = cached + 1 WHERE evaluation_id = NEW.evaluation_id;
END;
CREATE TRIGGER samples_cached_remove AFTER DELETE ON samples WHEN OLD.cached BEGIN
    UPDATE evaluation_totals SET cached = cached - 1 WHERE evaluation_id = OLD.evaluation_id;
END;
DROP TRIGGER samples_add;
DROP TRIGGER samples_remove;
CREATE TRIGGER samples_add AFTER INSERT ON samples BEGIN
    INSERT INTO evaluation_totals (evaluation_id, recorded, errored, latency_sum_us, prompt_tokens,
        completion_tokens, retries, throttled, wait_us, cached_tokens, cache_write_tokens,
        reasoning_tokens)
    VALUES (NEW.evaluation_id, 1, NEW.error_kind IS NOT NULL, coalesce(NEW.latency_us, 0),
        coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), max(NEW.attempts - 1, 0),
        NEW.throttled, NEW.wait_us, coalesce(NEW.cached_tokens, 0),
        coalesce(NEW.cache_write_tokens, 0), coalesce(NEW.reasoning_tokens, 0))
    ON CONFLICT (evaluation_id) DO UPDATE SET
        recorded = recorded + excluded.recorded,
        errored = errored + excluded.errored,
        latency_sum_us = latency_sum_us + excluded.latency_sum_us,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        retries = retries + excluded.retries,
        throttled = throttled + excluded.throttled,
        wait_us = wait_us + excluded.wait_us,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens;
END;
CREATE TRIGGER samples_remove AFTER DELETE ON samples BEGIN
    UPDATE evaluation_totals SET
        recorded = recorded - 1,
        errored = errored - (OLD.error_kind IS NOT NULL),
        latency_sum_us = latency_sum_us - coalesce(OLD.latency_us, 0),
        prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
        completion_tokens = completion_tokens - coalesce(OLD.completion_tokens, 0),
        retries = retries - max(OLD.attempts - 1, 0),
        throttled = throttled - OLD.throttled,
        wait_us = wait_us - OLD.wait_us,
        cached_tokens = cached_tokens - coalesce(OLD.cached_tokens, 0),
        cache_write_tokens = cache_write_tokens - coalesce(OLD.cache_write_tokens, 0),
        reasoning_tokens = reasoning_tokens - coalesce(OLD.reasoning_tokens, 0)
    WHERE evaluation_id = OLD.evaluation_id;
END;
UPDATE evaluation_totals SET retries = (
    SELECT coalesce(sum(max(s.attempts - 1, 0)), 0) FROM samples s
    WHERE s.evaluation_id = evaluation_totals.evaluation_id);
"#,
    // v10 -> v11: the replica that answered each sample, when the model has
    // several (`base_url` as a list); NULL for one endpoint.
    r#"
ALTER TABLE samples ADD COLUMN endpoint TEXT;
ALTER TABLE runs ADD COLUMN endpoints TEXT;
CREATE INDEX samples_endpoint ON samples (evaluation_id, endpoint, latency_us)
    WHERE endpoint IS NOT NULL;
"#,
    // v11 -> v12: the work queue, workers and fleet-wide limits of runs that
    // share an evaluation live on a server only (see the PostgreSQL schema):
    // a SQLite store has one run at a time. Nothing changes here.
    "-- v12: nothing for SQLite",
    // v12 -> v13: the adaptive window a fleet's workers share (see the
    // PostgreSQL schema): nothing here either.
    "-- v13: nothing for SQLite",
];

/// What a database file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A dotevals store at [`VERSION`].
    Current,
    /// Not a dotevals store: never touch it.
    Foreign,
    /// A store written by a newer dotevals.
    Newer(i64),
}

enum Found {
    Empty,
    Version(i64),
    Foreign,
}

fn found(conn: &Connection) -> rusqlite::Result<Found> {
    let tables: i64 = match conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    ) {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            return Ok(Found::Foreign)
        }
        other => other?,
    };
    if tables == 0 {
        return Ok(Found::Empty);
    }
    let meta = |key: &str| -> Option<String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .ok()
    };
    if meta("app").as_deref() != Some("dotevals") {
        return Ok(Found::Foreign);
    }
    Ok(meta("schema_version")
        .and_then(|v| v.parse().ok())
        .map_or(Found::Foreign, Found::Version))
}

/// Makes `conn` a current store: creates the schema in an empty database and
/// upgrades an older one; reports a foreign or newer one untouched. Creation
/// and upgrades run under a write lock and look again once they hold it, so
/// two processes opening one store at once agree.
pub fn ensure(conn: &Connection) -> rusqlite::Result<State> {
    match found(conn)? {
        Found::Version(v) if v == VERSION => return Ok(State::Current),
        Found::Version(v) if v > VERSION => return Ok(State::Newer(v)),
        Found::Foreign => return Ok(State::Foreign),
        Found::Empty | Found::Version(_) => {}
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let from = match found(conn)? {
            Found::Empty => {
                conn.execute_batch(V1)?;
                conn.execute_batch("INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('app', 'dotevals');")?;
                1
            }
            Found::Version(v) if v < VERSION => v,
            Found::Version(v) if v > VERSION => return Ok(State::Newer(v)),
            Found::Version(_) => return Ok(State::Current),
            Found::Foreign => return Ok(State::Foreign),
        };
        for step in MIGRATIONS.iter().skip((from - 1).max(0) as usize) {
            conn.execute_batch(step)?;
        }
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
            [VERSION.to_string()],
        )?;
        Ok(State::Current)
    })();
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    if result.is_ok() {
        wal(conn)?;
    }
    result
}

/// Switches to WAL (readers never wait for the writer; a crash cannot tear a
/// commit). Changing the journal mode needs the file to itself for a moment and
/// does not wait for a busy peer by itself, so it is retried briefly.
fn wal(conn: &Connection) -> rusqlite::Result<()> {
    let busy = |e: &rusqlite::Error| {
        matches!(e, rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    };
    let mut tries = 0;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Err(e) if busy(&e) && tries < 500 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn upgraded_v1_equals_fresh() {
        let fresh = Connection::open_in_memory().unwrap();
        assert_eq!(ensure(&fresh).unwrap(), State::Current);
        let old = Connection::open_in_memory().unwrap();
        old.execute_batch(&format!(
            "{V1} INSERT INTO meta VALUES ('schema_version', '1'), ('app', 'dotevals');"
        ))
        .unwrap();
        assert_eq!(ensure(&old).unwrap(), State::Current);
        assert_eq!(columns(&fresh), columns(&old));
        let v: String = old
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, VERSION.to_string());
    }
}
