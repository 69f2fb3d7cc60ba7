//! The store's schema on PostgreSQL, in a schema of its own (`dotevals` by
//! default), versioned in its `meta` table as SQLite's is.
//!
//! The layout is SQLite's at [`SCHEMA_VERSION`](crate::store::SCHEMA_VERSION)
//! (see `sqlite/schema.rs` for why each part is there): the same tables and
//! columns, with PostgreSQL's types (`BIGINT`, `DOUBLE PRECISION`,
//! `BOOLEAN` for flags) and its triggers in PL/pgSQL. A store is created at
//! version [`BASE`] (the first this backend shipped) and brought up to date
//! by [`MIGRATIONS`], as on SQLite, so a new store and an upgraded one are
//! the same by construction.

/// The version [`CURRENT`] creates; [`MIGRATIONS`] take it on from there.
pub const BASE: i64 = 10;

/// Migrations: `(from, statements)` upgrades version `from` to `from + 1`.
pub const MIGRATIONS: &[(i64, &str)] = &[
    // The replica that answered each sample (see the SQLite schema's v11).
    (
        10,
        "ALTER TABLE {schema}.samples ADD COLUMN endpoint TEXT;
         ALTER TABLE {schema}.runs ADD COLUMN endpoints TEXT;
         CREATE INDEX samples_endpoint ON {schema}.samples (evaluation_id, endpoint, latency_us)
             WHERE endpoint IS NOT NULL;",
    ),
    // Workers that run one evaluation together (`store::fleet`): the fleet
    // of an evaluation (when it started, the wall time before it, the
    // dataset it loaded), its work queue (every sample, claimed with a lease
    // that the holder's heartbeat extends, `done` once its result is
    // written; the samples pending when it started numbered by `seq`, which
    // claims take in ranges from the fleet's `dispensed`, so a claim costs
    // the same at the last sample as at the first), the workers (one per run, with their heartbeat and the
    // server process of their connection, gone at once when one dies), and the
    // limits every worker shares: a rate limit's next free instant (GCRA's
    // theoretical arrival time) and a throttling pause's end.
    (
        11,
        "CREATE TABLE {schema}.fleets (
             evaluation_id BIGINT PRIMARY KEY REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
             started_at TIMESTAMPTZ NOT NULL,
             base_wall_us BIGINT NOT NULL,
             rows BIGINT NOT NULL,
             samples BIGINT NOT NULL,
             digest BIGINT NOT NULL,
             spec_hash TEXT NOT NULL,
             queued BIGINT NOT NULL,
             dispensed BIGINT NOT NULL
         );
         CREATE TABLE {schema}.queue (
             evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
             sample_key TEXT NOT NULL,
             row_index BIGINT NOT NULL,
             repeat BIGINT NOT NULL,
             row_hash BIGINT NOT NULL,
             variables TEXT NOT NULL,
             done BOOLEAN NOT NULL,
             seq BIGINT,
             worker BIGINT,
             lease_until TIMESTAMPTZ,
             PRIMARY KEY (evaluation_id, sample_key)
         );
         CREATE INDEX queue_pending ON {schema}.queue (evaluation_id, row_index, repeat) WHERE NOT done;
         CREATE INDEX queue_seq ON {schema}.queue (evaluation_id, seq);
         CREATE INDEX queue_held ON {schema}.queue (evaluation_id, worker) WHERE NOT done;
         CREATE TABLE {schema}.workers (
             evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
             run BIGINT NOT NULL,
             host TEXT NOT NULL,
             pid BIGINT NOT NULL,
             lease_us BIGINT NOT NULL,
             backend_pid BIGINT NOT NULL,
             started_at TIMESTAMPTZ NOT NULL,
             heartbeat_at TIMESTAMPTZ NOT NULL,
             samples BIGINT NOT NULL DEFAULT 0,
             in_flight BIGINT NOT NULL DEFAULT 0,
             state TEXT NOT NULL,
             PRIMARY KEY (evaluation_id, run)
         );
         CREATE TABLE {schema}.fleet_limits (
             evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
             endpoint TEXT NOT NULL,
             kind TEXT NOT NULL,
             until TIMESTAMPTZ NOT NULL,
             PRIMARY KEY (evaluation_id, endpoint, kind)
         );",
    ),
    // The adaptive window a fleet's workers share (`concurrency::share`):
    // per worker and endpoint, the requests it has out, the replies (and
    // output tokens) it has had, whether it has samples to send, whether
    // it steers the window (adaptive) or only loads the server and, from
    // the leader, the fleet's window.
    (
        12,
        "CREATE TABLE {schema}.fleet_windows (
             evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
             run BIGINT NOT NULL,
             endpoint TEXT NOT NULL,
             in_flight BIGINT NOT NULL,
             delivered BIGINT NOT NULL,
             tokens BIGINT NOT NULL,
             wants BOOLEAN NOT NULL,
             steers BOOLEAN NOT NULL,
             fleet_window BIGINT,
             PRIMARY KEY (evaluation_id, run, endpoint)
         );",
    ),
];

/// Everything version [`BASE`] holds; `{schema}` is replaced by the
/// schema's (quoted) name.
pub const CURRENT: &str = r#"
CREATE TABLE {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE {schema}.experiments (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE {schema}.evaluations (
    id BIGSERIAL PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES {schema}.experiments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec_path TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    identity TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    evaluators TEXT NOT NULL,
    strategy TEXT NOT NULL,
    max_concurrency BIGINT NOT NULL,
    total BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    runs BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    cluster TEXT,
    fail_under TEXT,
    repeats BIGINT NOT NULL DEFAULT 1,
    UNIQUE (experiment_id, name)
);
CREATE TABLE {schema}.samples (
    id BIGSERIAL PRIMARY KEY,
    evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
    sample_key TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    row_hash BIGINT NOT NULL,
    run BIGINT NOT NULL,
    variables TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT,
    error_kind TEXT,
    error TEXT,
    attempts BIGINT NOT NULL,
    latency_us BIGINT,
    start_us BIGINT NOT NULL,
    end_us BIGINT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    throttled BIGINT NOT NULL DEFAULT 0,
    wait_us BIGINT NOT NULL DEFAULT 0,
    repeat BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens BIGINT,
    first_token_us BIGINT,
    cache_key TEXT,
    cached BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (evaluation_id, sample_key)
);
CREATE INDEX samples_latency ON {schema}.samples (evaluation_id, latency_us);
CREATE INDEX samples_errors ON {schema}.samples (evaluation_id, error_kind)
    WHERE error_kind IS NOT NULL;
CREATE TABLE {schema}.scores (
    sample_id BIGINT NOT NULL REFERENCES {schema}.samples(id) ON DELETE CASCADE,
    evaluation_id BIGINT NOT NULL,
    evaluator BIGINT NOT NULL,
    value DOUBLE PRECISION,
    passed BOOLEAN,
    reason TEXT,
    PRIMARY KEY (sample_id, evaluator)
);
CREATE INDEX scores_by_evaluation ON {schema}.scores (evaluation_id, evaluator, value);
CREATE TABLE {schema}.limits (
    evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
    run BIGINT NOT NULL,
    t_us BIGINT NOT NULL,
    value BIGINT NOT NULL
);
CREATE INDEX limits_by_evaluation ON {schema}.limits (evaluation_id, run, t_us);
CREATE TABLE {schema}.evaluation_scores (
    evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
    evaluator BIGINT NOT NULL,
    scored BIGINT NOT NULL,
    total DOUBLE PRECISION NOT NULL,
    passed BIGINT NOT NULL DEFAULT 0,
    total_sq DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (evaluation_id, evaluator)
);
CREATE TABLE {schema}.runs (
    evaluation_id BIGINT NOT NULL REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
    run BIGINT NOT NULL,
    strategy TEXT NOT NULL,
    wall_us BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    throttled BIGINT NOT NULL,
    held_us BIGINT NOT NULL,
    at_server_us BIGINT NOT NULL,
    blocked_us BIGINT NOT NULL,
    unloaded BIGINT NOT NULL,
    unloaded_us BIGINT NOT NULL,
    PRIMARY KEY (evaluation_id, run)
);
CREATE TABLE {schema}.evaluation_totals (
    evaluation_id BIGINT PRIMARY KEY REFERENCES {schema}.evaluations(id) ON DELETE CASCADE,
    recorded BIGINT NOT NULL DEFAULT 0,
    errored BIGINT NOT NULL DEFAULT 0,
    latency_sum_us BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    throttled BIGINT NOT NULL DEFAULT 0,
    wait_us BIGINT NOT NULL DEFAULT 0,
    wall_us BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    cached BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE {schema}.judge_calls (
    sample_id BIGINT NOT NULL REFERENCES {schema}.samples(id) ON DELETE CASCADE,
    evaluation_id BIGINT NOT NULL,
    evaluator BIGINT NOT NULL,
    prompt TEXT NOT NULL,
    reply TEXT,
    error TEXT,
    attempts BIGINT NOT NULL,
    throttled BIGINT NOT NULL,
    wait_us BIGINT NOT NULL,
    latency_us BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    queue_us BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens BIGINT,
    first_token_us BIGINT,
    cache_key TEXT,
    cached BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (sample_id, evaluator)
);
CREATE INDEX judge_calls_by_evaluation ON {schema}.judge_calls (evaluation_id, evaluator);
CREATE TABLE {schema}.cache_keys (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    sample_key TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX cache_keys_by_sample ON {schema}.cache_keys (sample_key);
CREATE TABLE {schema}.cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cached_tokens BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens BIGINT,
    written_at BIGINT NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    last_hit_at BIGINT
);
CREATE INDEX cache_by_model ON {schema}.cache (model, written_at);

-- The per-evaluation totals follow the samples and scores, as SQLite's
-- triggers keep them; a record that made no attempt counts no retry. Once
-- per statement over its rows (a batch is a few statements), not once per
-- row: one update of a totals row per batch instead of a version per row.
CREATE FUNCTION {schema}.samples_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.evaluation_totals (evaluation_id)
        SELECT DISTINCT evaluation_id FROM changed
        ON CONFLICT (evaluation_id) DO NOTHING;
    END IF;
    UPDATE {schema}.evaluation_totals t SET
        recorded = t.recorded + d.recorded,
        errored = t.errored + d.errored,
        latency_sum_us = t.latency_sum_us + d.latency_sum_us,
        prompt_tokens = t.prompt_tokens + d.prompt_tokens,
        completion_tokens = t.completion_tokens + d.completion_tokens,
        retries = t.retries + d.retries,
        throttled = t.throttled + d.throttled,
        wait_us = t.wait_us + d.wait_us,
        cached_tokens = t.cached_tokens + d.cached_tokens,
        cache_write_tokens = t.cache_write_tokens + d.cache_write_tokens,
        reasoning_tokens = t.reasoning_tokens + d.reasoning_tokens,
        cached = t.cached + d.cached
    FROM (
        SELECT evaluation_id, s * count(*) AS recorded,
            s * count(error_kind) AS errored,
            s * coalesce(sum(latency_us), 0) AS latency_sum_us,
            s * coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
            s * coalesce(sum(completion_tokens), 0) AS completion_tokens,
            s * sum(greatest(attempts - 1, 0)) AS retries,
            s * sum(throttled) AS throttled,
            s * sum(wait_us) AS wait_us,
            s * coalesce(sum(cached_tokens), 0) AS cached_tokens,
            s * coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
            s * coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
            s * count(*) FILTER (WHERE cached) AS cached
        FROM changed, (SELECT CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END AS s) AS sign
        GROUP BY evaluation_id, s
    ) AS d
    WHERE t.evaluation_id = d.evaluation_id;
    RETURN NULL;
END $$;
CREATE TRIGGER samples_added AFTER INSERT ON {schema}.samples
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.samples_totals();
CREATE TRIGGER samples_removed AFTER DELETE ON {schema}.samples
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.samples_totals();

CREATE FUNCTION {schema}.scores_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.evaluation_scores (evaluation_id, evaluator, scored, total)
        SELECT DISTINCT evaluation_id, evaluator, 0, 0 FROM changed
        ON CONFLICT (evaluation_id, evaluator) DO NOTHING;
    END IF;
    UPDATE {schema}.evaluation_scores t SET
        scored = t.scored + d.scored,
        total = t.total + d.total,
        passed = t.passed + d.passed,
        total_sq = t.total_sq + d.total_sq
    FROM (
        SELECT evaluation_id, evaluator, s * count(value) AS scored,
            s * coalesce(sum(value), 0) AS total,
            s * count(*) FILTER (WHERE passed) AS passed,
            s * coalesce(sum(value * value), 0) AS total_sq
        FROM changed, (SELECT CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END AS s) AS sign
        GROUP BY evaluation_id, evaluator, s
    ) AS d
    WHERE t.evaluation_id = d.evaluation_id AND t.evaluator = d.evaluator;
    RETURN NULL;
END $$;
CREATE TRIGGER scores_added AFTER INSERT ON {schema}.scores
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.scores_totals();
CREATE TRIGGER scores_removed AFTER DELETE ON {schema}.scores
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.scores_totals();
"#;
