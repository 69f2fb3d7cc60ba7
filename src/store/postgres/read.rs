//! The queries behind the views, on PostgreSQL: SQLite's (`sqlite/read.rs`)
//! with the same results, in fewer round trips. Where SQLite asks once per
//! evaluation, sample or kind (cheap on a local file), these ask once for all
//! of them (`= ANY($1)`), since each question costs a trip to the server.
//!
//! Columns are read with `try_get`, so a value of an unexpected type is an
//! error as on SQLite, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use postgres::types::{FromSql, Type};
use postgres::{GenericClient, Row};

use super::lookup::{call_stats, CALL_COLUMNS};
use super::PgStore;
use crate::store::read::{
    EndpointSamples, ErrorGroup, ErrorRow, EvaluationRow, ExperimentRow, JudgeTotal, LimitStep,
    LimitTimeline, RepeatSums, RunRow, SampleRow, SampleScores, ScorePoint, ScoreTotal,
    StreamedReply, SummaryReads,
};
use crate::store::writer::{JudgeRecord, ScoreRecord};
use crate::store::{EvaluationStatus, Reader, Recorder, StoreError};
use crate::usage::TokenTotals;

type Pg<T> = Result<T, postgres::Error>;

/// Samples fetched from the cursor at a time by [`Reader::for_each_sample`].
const BATCH: i64 = 1000;

/// The cursor [`Reader::for_each_sample`] walks the samples with.
const CURSOR: &str = "dotevals_samples";

impl Reader for PgStore {
    fn summary_reads(&self, e: &EvaluationRow) -> Result<SummaryReads, StoreError> {
        // One snapshot, not figures from before and after a running
        // experiment's commit: opened in SQL on this connection, so the
        // shared reads, each a call on it, all run inside it.
        let snapshot = Snapshot::begin(self)?;
        let reads = crate::store::read::summary_reads(self, e)?;
        snapshot.commit()?;
        Ok(reads)
    }

    fn experiments(&self) -> Result<Vec<ExperimentRow>, StoreError> {
        let (heads, evaluations) = self.db.with(|c| {
            let heads: Vec<(i64, String, String)> = c
                .query(
                    r#"SELECT id, name, created_at FROM experiments
                       ORDER BY created_at COLLATE "C" DESC, id DESC"#,
                    &[],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Pg<_>>()?;
            let ids: Vec<i64> = heads.iter().map(|h| h.0).collect();
            let evaluations = evaluations(c, &ids, false)?;
            Ok((heads, evaluations))
        })?;
        let mut by_experiment: HashMap<i64, Vec<EvaluationRow>> = HashMap::new();
        for (experiment_id, e) in evaluations {
            by_experiment.entry(experiment_id).or_default().push(e);
        }
        Ok(heads
            .into_iter()
            .map(|(id, name, created_at)| {
                let mut evaluations = by_experiment.remove(&id).unwrap_or_default();
                self.mark_interrupted(&name, &mut evaluations);
                ExperimentRow {
                    name,
                    created_at,
                    evaluations,
                }
            })
            .collect())
    }

    fn experiment(&self, name: &str) -> Result<ExperimentRow, StoreError> {
        let found = self.db.with(|c| {
            let Some(head) = c.query_opt(
                "SELECT id, created_at FROM experiments WHERE name = $1",
                &[&name],
            )?
            else {
                return Ok(None);
            };
            let (id, created_at): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
            let evaluations = evaluations(c, &[id], true)?;
            Ok(Some((created_at, evaluations)))
        })?;
        let (created_at, evaluations) =
            found.ok_or_else(|| StoreError::UnknownExperiment(name.to_owned()))?;
        let mut evaluations: Vec<EvaluationRow> = evaluations.into_iter().map(|(_, e)| e).collect();
        self.mark_interrupted(name, &mut evaluations);
        Ok(ExperimentRow {
            name: name.to_owned(),
            created_at,
            evaluations,
        })
    }

    fn experiment_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.with(|c| {
            // In name order, as SQLite answers (it reads its index on the names).
            c.query(
                r#"SELECT name FROM experiments ORDER BY name COLLATE "C""#,
                &[],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
        })
    }

    fn latencies(&self, evaluation_id: i64) -> Result<Vec<u64>, StoreError> {
        self.db.with(|c| latencies(c, evaluation_id))
    }

    fn streamed(&self, evaluation_id: i64) -> Result<Vec<StreamedReply>, StoreError> {
        self.db.with(|c| streamed(c, evaluation_id))
    }

    fn endpoints(&self, evaluation_id: i64) -> Result<Vec<EndpointSamples>, StoreError> {
        self.db.with(|c| endpoints(c, evaluation_id))
    }

    fn workers(
        &self,
        evaluation_id: i64,
    ) -> Result<Vec<crate::store::read::WorkerRow>, StoreError> {
        super::fleet::workers(&self.db, evaluation_id)
    }

    fn errors(&self, evaluation_id: i64) -> Result<Vec<ErrorRow>, StoreError> {
        self.db.with(|c| {
            // Ties (a row's repeats) in SQLite's order: it walks its index on
            // the error kinds, then sorts by row keeping that order.
            c.query(
                r#"SELECT sample_key, row_index, error_kind, coalesce(error, ''), attempts
                   FROM samples WHERE evaluation_id = $1 AND error_kind IS NOT NULL
                   ORDER BY row_index, error_kind COLLATE "C", id"#,
                &[&evaluation_id],
            )?
            .iter()
            .map(|r| {
                Ok(ErrorRow {
                    key: r.try_get(0)?,
                    index: r.try_get::<_, i64>(1)? as u64,
                    kind: r.try_get(2)?,
                    message: r.try_get(3)?,
                    attempts: small(r, 4)?,
                })
            })
            .collect()
        })
    }

    fn error_groups(&self, evaluation_id: i64) -> Result<Vec<ErrorGroup>, StoreError> {
        self.db.with(|c| {
            c.query(
                r#"SELECT k.error_kind, k.n, x.sample_key, x.message
                   FROM (SELECT error_kind, count(*) AS n FROM samples
                         WHERE evaluation_id = $1 AND error_kind IS NOT NULL GROUP BY error_kind) k
                   CROSS JOIN LATERAL (
                       SELECT sample_key, coalesce(error, '') AS message FROM samples
                       WHERE evaluation_id = $1 AND error_kind = k.error_kind
                       ORDER BY row_index, id LIMIT 1) x
                   ORDER BY k.n DESC, k.error_kind COLLATE "C""#,
                &[&evaluation_id],
            )?
            .iter()
            .map(|r| {
                Ok(ErrorGroup {
                    kind: r.try_get(0)?,
                    count: r.try_get::<_, i64>(1)? as u64,
                    example_key: r.try_get(2)?,
                    example: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn runs(&self, evaluation_id: i64) -> Result<Vec<RunRow>, StoreError> {
        self.db.with(|c| runs(c, evaluation_id))
    }

    fn limit_steps(&self, evaluation_id: i64, run: u64) -> Result<Vec<LimitStep>, StoreError> {
        self.db.with(|c| limit_steps(c, evaluation_id, run))
    }

    fn limit_timeline(&self, evaluation_id: i64) -> Result<LimitTimeline, StoreError> {
        self.db.with(|c| limit_timeline(c, evaluation_id))
    }

    fn samples(&self, evaluation_id: i64, evaluators: usize) -> Result<Vec<SampleRow>, StoreError> {
        let mut out = Vec::new();
        self.for_each_sample(evaluation_id, evaluators, &mut |row| {
            out.push(row);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// One snapshot, walked with a server-side cursor over the ids in dataset
    /// order (the server sorts just the (row, id) pairs, as SQLite does);
    /// each batch's records, scores and judge calls are then read by id. The
    /// cursor lives in a transaction opened in SQL: `each` may not be sent to
    /// the thread [`Db::with`](super::Db::with) may run on, so it is called
    /// between batches, outside `with`, and a client `Transaction` cannot
    /// outlive one call.
    fn for_each_sample(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        each: &mut dyn FnMut(SampleRow) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let walk = Walk::open(self, evaluation_id)?;
        loop {
            let judged = walk.judged;
            let batch = self.db.with(|c| next_samples(c, evaluators, judged))?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                if each(row).is_break() {
                    return walk.close();
                }
            }
        }
        walk.close()
    }

    fn judge_totals(&self, evaluation_id: i64) -> Result<Vec<JudgeTotal>, StoreError> {
        self.db.with(|c| judge_totals(c, evaluation_id))
    }

    fn sample_scores(
        &self,
        evaluation_id: i64,
        evaluators: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<SampleScores>, StoreError> {
        self.db
            .with(|c| sample_scores(c, evaluation_id, evaluators, cluster))
    }

    fn cluster_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        column: &str,
    ) -> Result<Vec<(u64, f64, f64)>, StoreError> {
        self.db
            .with(|c| cluster_sums(c, evaluation_id, evaluator, column))
    }

    fn repeat_sums(
        &self,
        evaluation_id: i64,
        evaluator: usize,
        cluster: Option<&str>,
    ) -> Result<Vec<RepeatSums>, StoreError> {
        self.db
            .with(|c| repeat_sums(c, evaluation_id, evaluator, cluster))
    }
}

impl PgStore {
    /// "running" with nobody holding the run's lock means the run died (kill
    /// -9, power loss): its finished samples are kept and a rerun resumes it.
    fn mark_interrupted(&self, experiment: &str, evaluations: &mut [EvaluationRow]) {
        for e in evaluations {
            if e.status == EvaluationStatus::Running && !self.is_running(experiment, &e.name) {
                e.status = EvaluationStatus::Interrupted;
            }
        }
    }
}

/// Column `i`, a counter: never negative in the store; the clamp only
/// guards the cast.
fn count(r: &Row, i: usize) -> Pg<u64> {
    Ok(r.try_get::<_, i64>(i)?.max(0) as u64)
}

/// Column `i`, a counter that may be absent.
fn maybe_count(r: &Row, i: usize) -> Pg<Option<u64>> {
    Ok(r.try_get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
}

/// Column `i`, a small counter (attempts, throttled answers). SQLite refuses
/// a value outside `u32`; here it is clamped, as a server error cannot be
/// made up.
fn small(r: &Row, i: usize) -> Pg<u32> {
    Ok(r.try_get::<_, i64>(i)?.clamp(0, i64::from(u32::MAX)) as u32)
}

/// A stored status, read as SQLite reads it: an unknown name is an error.
struct Status(EvaluationStatus);

impl<'a> FromSql<'a> for Status {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Status(<&str as FromSql>::from_sql(ty, raw)?.parse()?))
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// An evaluation with its totals (kept in their own table), then its
/// experiment's id and its spec text when `$2` asks for it.
const EVALUATION_COLUMNS: &str =
    "e.id, e.name, e.spec_path, e.provider, e.model, e.evaluators, e.strategy,
    e.max_concurrency, e.total, e.started_at, e.ended_at, coalesce(t.wall_us, 0), e.runs, e.status,
    coalesce(t.recorded, 0), coalesce(t.errored, 0), coalesce(t.latency_sum_us, 0),
    coalesce(t.prompt_tokens, 0), coalesce(t.completion_tokens, 0), coalesce(t.retries, 0),
    coalesce(t.throttled, 0), coalesce(t.wait_us, 0), e.cluster, e.fail_under, e.repeats,
    coalesce(t.cached_tokens, 0), coalesce(t.cache_write_tokens, 0), coalesce(t.reasoning_tokens, 0),
    coalesce(t.cached, 0), e.experiment_id, CASE WHEN $2 THEN e.spec_text ELSE '' END
    FROM evaluations e LEFT JOIN evaluation_totals t ON t.evaluation_id = e.id";

fn evaluation(r: &Row) -> Pg<EvaluationRow> {
    let evaluators: String = r.try_get(5)?;
    Ok(EvaluationRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        spec_path: r.try_get(2)?,
        provider: r.try_get(3)?,
        model: r.try_get(4)?,
        evaluators: serde_json::from_str(&evaluators).unwrap_or_default(),
        strategy: r.try_get(6)?,
        max_concurrency: count(r, 7)?,
        total: count(r, 8)?,
        started_at: r.try_get(9)?,
        ended_at: r.try_get(10)?,
        wall_us: count(r, 11)?,
        runs: count(r, 12)?,
        status: r.try_get::<_, Status>(13)?.0,
        recorded: count(r, 14)?,
        errored: count(r, 15)?,
        cached: count(r, 28)?,
        latency_sum_us: count(r, 16)?,
        tokens: TokenTotals {
            prompt: count(r, 17)?,
            completion: count(r, 18)?,
            cached_prompt: count(r, 25)?,
            cache_write: count(r, 26)?,
            reasoning: count(r, 27)?,
        },
        retries: count(r, 19)?,
        throttled: count(r, 20)?,
        wait_us: count(r, 21)?,
        // Read by `experiment` alone: `list` never shows them, and a spec
        // snapshot may be megabytes.
        spec_text: r.try_get(30)?,
        scores: Vec::new(),
        cluster: r.try_get(22)?,
        fail_under: r
            .try_get::<_, Option<String>>(23)?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        repeats: r.try_get::<_, i64>(24)?.clamp(1, i64::from(u32::MAX)) as u32,
    })
}

/// The evaluations of the experiments `experiment_ids`, each with its
/// experiment's id, in id order, with their totals and scores (and their
/// spec text when `spec`). The status is as stored: see
/// [`PgStore::mark_interrupted`].
fn evaluations(
    c: &mut impl GenericClient,
    experiment_ids: &[i64],
    spec: bool,
) -> Pg<Vec<(i64, EvaluationRow)>> {
    let mut rows: Vec<(i64, EvaluationRow)> = c
        .query(
            &format!("SELECT {EVALUATION_COLUMNS} WHERE e.experiment_id = ANY($1) ORDER BY e.id"),
            &[&experiment_ids, &spec],
        )?
        .iter()
        .map(|r| Ok((r.try_get(29)?, evaluation(r)?)))
        .collect::<Pg<_>>()?;
    let ids: Vec<i64> = rows.iter().map(|(_, e)| e.id).collect();
    let mut at: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    for (position, (_, e)) in rows.iter_mut().enumerate() {
        e.scores = vec![ScoreTotal::default(); e.evaluators.len()];
        at.insert(e.id, position);
    }
    for r in c.query(
        "SELECT evaluation_id, evaluator, scored, total, passed, total_sq
         FROM evaluation_scores WHERE evaluation_id = ANY($1)",
        &[&ids],
    )? {
        if let Some(slot) = score_slot(&mut rows, &at, &r)? {
            *slot = ScoreTotal {
                scored: count(&r, 2)?,
                sum: r.try_get(3)?,
                passed: count(&r, 4)?,
                sum_sq: r.try_get(5)?,
                unscored: 0,
            };
        }
    }
    // Evaluators that could not score a sample store a null score.
    for r in c.query(
        "SELECT evaluation_id, evaluator, count(*) FROM scores
         WHERE evaluation_id = ANY($1) AND value IS NULL GROUP BY evaluation_id, evaluator",
        &[&ids],
    )? {
        if let Some(slot) = score_slot(&mut rows, &at, &r)? {
            slot.unscored = count(&r, 2)?;
        }
    }
    Ok(rows)
}

/// The total of the evaluation (id in column 0, at `at` in `rows`) and
/// evaluator (column 1) `r` is about; `None` for an evaluator past the
/// evaluation's list.
fn score_slot<'r>(
    rows: &'r mut [(i64, EvaluationRow)],
    at: &HashMap<i64, usize>,
    r: &Row,
) -> Pg<Option<&'r mut ScoreTotal>> {
    let (id, i): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    Ok(match (at.get(&id), usize::try_from(i)) {
        (Some(p), Ok(i)) => rows.get_mut(*p).and_then(|(_, e)| e.scores.get_mut(i)),
        _ => None,
    })
}

/// Latencies of successful samples, in microseconds, ascending.
fn latencies(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<Vec<u64>> {
    c.query(
        "SELECT latency_us FROM samples
         WHERE evaluation_id = $1 AND latency_us IS NOT NULL ORDER BY latency_us",
        &[&evaluation_id],
    )?
    .iter()
    .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
    .collect()
}

/// Per replica (`samples.endpoint`), URLs in SQLite's (bytewise) order.
fn endpoints(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<Vec<EndpointSamples>> {
    let rows = c
        .query(
            r#"SELECT endpoint, latency_us, error_kind IS NOT NULL FROM samples
               WHERE evaluation_id = $1 AND endpoint IS NOT NULL
               ORDER BY endpoint COLLATE "C", latency_us"#,
            &[&evaluation_id],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<_, String>(0)?,
                r.try_get::<_, Option<i64>>(1)?.map(|v| v.max(0) as u64),
                r.try_get::<_, bool>(2)?,
            ))
        })
        .collect::<Pg<Vec<_>>>()?;
    Ok(crate::store::read::group_endpoints(rows))
}

/// Successful samples whose reply streamed, in the order SQLite reads them
/// (its index on the latencies).
fn streamed(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<Vec<StreamedReply>> {
    c.query(
        "SELECT first_token_us, latency_us, completion_tokens FROM samples
         WHERE evaluation_id = $1 AND first_token_us IS NOT NULL AND latency_us IS NOT NULL
           AND error_kind IS NULL
         ORDER BY latency_us, id",
        &[&evaluation_id],
    )?
    .iter()
    .map(|r| {
        Ok(StreamedReply {
            first_token_us: count(r, 0)?,
            latency_us: count(r, 1)?,
            completion_tokens: maybe_count(r, 2)?,
        })
    })
    .collect()
}

/// Every recorded run of an evaluation, in order.
fn runs(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<Vec<RunRow>> {
    c.query(
        "SELECT run, strategy, wall_us, samples, attempts, throttled, held_us, at_server_us,
                blocked_us, unloaded, unloaded_us, endpoints
         FROM runs WHERE evaluation_id = $1 ORDER BY run",
        &[&evaluation_id],
    )?
    .iter()
    .map(|r| {
        Ok(RunRow {
            run: count(r, 0)?,
            strategy: r.try_get(1)?,
            wall_us: count(r, 2)?,
            samples: count(r, 3)?,
            attempts: count(r, 4)?,
            throttled: count(r, 5)?,
            held_us: count(r, 6)?,
            at_server_us: count(r, 7)?,
            blocked_us: count(r, 8)?,
            unloaded: count(r, 9)?,
            unloaded_us: count(r, 10)?,
            endpoints: crate::store::EndpointRun::from_column(
                r.try_get::<_, Option<String>>(11)?.as_deref(),
            ),
        })
    })
    .collect()
}

/// The concurrency limit at each change of run `run`. Two changes in one
/// microsecond keep the order they were written in (`ctid`, as SQLite's rowid).
fn limit_steps(c: &mut impl GenericClient, evaluation_id: i64, run: u64) -> Pg<Vec<LimitStep>> {
    c.query(
        "SELECT t_us, value FROM limits WHERE evaluation_id = $1 AND run = $2 ORDER BY t_us, ctid",
        &[&evaluation_id, &(run as i64)],
    )?
    .iter()
    .map(|r| {
        Ok(LimitStep {
            t_us: count(r, 0)?,
            limit: count(r, 1)?,
        })
    })
    .collect()
}

/// How the concurrency limit moved in the latest run of an evaluation.
fn limit_timeline(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<LimitTimeline> {
    let run: Option<i64> = c
        .query_one(
            "SELECT max(run) FROM limits WHERE evaluation_id = $1",
            &[&evaluation_id],
        )?
        .try_get(0)?;
    let Some(run) = run else {
        return Ok(LimitTimeline::default());
    };
    let steps = limit_steps(c, evaluation_id, run.max(0) as u64)?;
    let ends = c
        .query(
            "SELECT end_us FROM samples WHERE evaluation_id = $1 AND run = $2 AND NOT cached
             ORDER BY end_us",
            &[&evaluation_id, &run],
        )?
        .iter()
        .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
        .collect::<Pg<_>>()?;
    Ok(LimitTimeline { steps, ends })
}

/// Each judging evaluator's calls over an evaluation, in evaluator order.
fn judge_totals(c: &mut impl GenericClient, evaluation_id: i64) -> Pg<Vec<JudgeTotal>> {
    let mut totals: Vec<JudgeTotal> = c
        .query(
            "SELECT evaluator, count(*), count(error), coalesce(sum(attempts - 1), 0)::bigint,
                    coalesce(sum(throttled), 0)::bigint, coalesce(sum(wait_us), 0)::bigint,
                    coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
                    coalesce(sum(queue_us), 0)::bigint, coalesce(sum(cached_tokens), 0)::bigint,
                    coalesce(sum(cache_write_tokens), 0)::bigint,
                    coalesce(sum(reasoning_tokens), 0)::bigint
             FROM judge_calls WHERE evaluation_id = $1 GROUP BY evaluator ORDER BY evaluator",
            &[&evaluation_id],
        )?
        .iter()
        .map(|r| {
            Ok(JudgeTotal {
                evaluator: count(r, 0)? as usize,
                calls: count(r, 1)?,
                failed: count(r, 2)?,
                retries: count(r, 3)?,
                throttled: count(r, 4)?,
                wait_us: count(r, 5)?,
                queue_us: count(r, 8)?,
                latencies_us: Vec::new(),
                tokens: TokenTotals {
                    prompt: count(r, 6)?,
                    completion: count(r, 7)?,
                    cached_prompt: count(r, 9)?,
                    cache_write: count(r, 10)?,
                    reasoning: count(r, 11)?,
                },
            })
        })
        .collect::<Pg<_>>()?;
    if totals.is_empty() {
        return Ok(totals);
    }
    let mut latencies: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for r in c.query(
        "SELECT evaluator, latency_us FROM judge_calls
         WHERE evaluation_id = $1 AND latency_us IS NOT NULL ORDER BY evaluator, latency_us",
        &[&evaluation_id],
    )? {
        latencies
            .entry(r.try_get(0)?)
            .or_default()
            .push(count(&r, 1)?);
    }
    for t in &mut totals {
        t.latencies_us = latencies
            .get(&(t.evaluator as i64))
            .cloned()
            .unwrap_or_default();
    }
    Ok(totals)
}

/// The value of a dataset column (`$3`, a key of `s.variables`; none when
/// null) as `v`, JSON.
const CLUSTER_VALUE: &str = "CROSS JOIN LATERAL (SELECT CASE WHEN $3::text IS NULL THEN NULL
    ELSE s.variables::jsonb -> $3::text END AS v) j";

/// What SQLite groups and sorts `json_extract(variables, '$."column"')` by,
/// as three columns `k_kind, k_number, k_text` of `v`: null (or missing)
/// first, then numbers (true and false being 1 and 0), then text in byte
/// order (strings as themselves, objects and arrays as JSON).
const CLUSTER_KEY: &str = r#"
    CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN 0
         WHEN jsonb_typeof(v) IN ('number', 'boolean') THEN 1 ELSE 2 END AS k_kind,
    CASE jsonb_typeof(v) WHEN 'number' THEN v::numeric
         WHEN 'boolean' THEN (v = 'true'::jsonb)::int::numeric END AS k_number,
    (CASE jsonb_typeof(v) WHEN 'string' THEN v #>> '{}'
         WHEN 'object' THEN v::text WHEN 'array' THEN v::text END) COLLATE "C" AS k_text"#;

/// Per value of dataset column `column`, the scored samples of `evaluator`,
/// the sum of their scores and of their squares, in SQLite's order of the
/// values.
fn cluster_sums(
    c: &mut impl GenericClient,
    evaluation_id: i64,
    evaluator: usize,
    column: &str,
) -> Pg<Vec<(u64, f64, f64)>> {
    c.query(
        &format!(
            "SELECT count(*), sum(value), sum(value * value) FROM (
                 SELECT sc.value, {CLUSTER_KEY}
                 FROM scores sc JOIN samples s ON s.id = sc.sample_id {CLUSTER_VALUE}
                 WHERE sc.evaluation_id = $1 AND sc.evaluator = $2 AND sc.value IS NOT NULL) x
             GROUP BY k_kind, k_number, k_text ORDER BY k_kind, k_number, k_text"
        ),
        &[&evaluation_id, &(evaluator as i64), &column],
    )?
    .iter()
    .map(|r| Ok((count(r, 0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect()
}

/// One evaluator's scores summed per dataset row over its repeats, ordered by
/// the value of `cluster` (a dataset column) when given, then by row; the
/// rows of one value share a cluster number, counted from 0 in that order.
fn repeat_sums(
    c: &mut impl GenericClient,
    evaluation_id: i64,
    evaluator: usize,
    cluster: Option<&str>,
) -> Pg<Vec<RepeatSums>> {
    c.query(
        &format!(
            "SELECT dense_rank() OVER (ORDER BY k_kind, k_number, k_text) - 1,
                    count(*), sum(value), sum(value * value) FROM (
                 SELECT sc.value, s.row_index, {CLUSTER_KEY}
                 FROM scores sc JOIN samples s ON s.id = sc.sample_id {CLUSTER_VALUE}
                 WHERE sc.evaluation_id = $1 AND sc.evaluator = $2 AND sc.value IS NOT NULL) x
             GROUP BY k_kind, k_number, k_text, row_index
             ORDER BY k_kind, k_number, k_text, row_index"
        ),
        &[&evaluation_id, &(evaluator as i64), &cluster],
    )?
    .iter()
    .map(|r| {
        Ok(RepeatSums {
            cluster: count(r, 0)?,
            n: count(r, 1)?,
            sum: r.try_get(2)?,
            sum_sq: r.try_get(3)?,
        })
    })
    .collect()
}

/// Every recorded sample's key, row hash and scores, by key in byte order.
/// The cluster value is SQLite's `json_quote(json_extract(..))`: the JSON
/// text of the value as stored (`"g1"`, `3`), `1`/`0` for true and false,
/// `null` when null or missing.
fn sample_scores(
    c: &mut impl GenericClient,
    evaluation_id: i64,
    evaluators: usize,
    cluster: Option<&str>,
) -> Pg<Vec<SampleScores>> {
    let mut at: HashMap<i64, usize> = HashMap::new();
    let mut out = Vec::new();
    for r in c.query(
        r#"SELECT s.id, s.sample_key, s.row_hash,
                  CASE WHEN $2::text IS NULL THEN NULL
                       WHEN v IS NULL OR json_typeof(v) = 'null' THEN 'null'
                       WHEN json_typeof(v) = 'boolean' THEN CASE WHEN v::text = 'true' THEN '1' ELSE '0' END
                       ELSE v::text END
           FROM samples s
           CROSS JOIN LATERAL (SELECT CASE WHEN $2::text IS NULL THEN NULL
                                ELSE s.variables::json -> $2::text END AS v) j
           WHERE s.evaluation_id = $1 ORDER BY s.sample_key COLLATE "C""#,
        &[&evaluation_id, &cluster],
    )? {
        at.insert(r.try_get(0)?, out.len());
        out.push(SampleScores {
            key: r.try_get(1)?,
            row_hash: r.try_get::<_, i64>(2)? as u64,
            cluster: r.try_get(3)?,
            scores: vec![None; evaluators],
        });
    }
    for r in c.query(
        "SELECT sc.sample_id, sc.evaluator, sc.value, sc.passed
         FROM scores sc JOIN samples s ON s.id = sc.sample_id WHERE s.evaluation_id = $1",
        &[&evaluation_id],
    )? {
        let sample = at.get(&r.try_get::<_, i64>(0)?).copied();
        let (Some(sample), Some(value)) = (
            sample.and_then(|p| out.get_mut(p)),
            r.try_get::<_, Option<f64>>(2)?,
        ) else {
            continue;
        };
        let slot = usize::try_from(r.try_get::<_, i64>(1)?)
            .ok()
            .and_then(|i| sample.scores.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(ScorePoint {
                value,
                passed: r.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
            });
        }
    }
    Ok(out)
}

/// A read-only snapshot opened in SQL on a store's connection, so that
/// calls on the connection in turn all read it; rolled back when dropped
/// unless committed (an error or a panic leaves the connection usable).
struct Snapshot<'a> {
    store: &'a PgStore,
    open: bool,
}

impl<'a> Snapshot<'a> {
    fn begin(store: &'a PgStore) -> Result<Snapshot<'a>, StoreError> {
        store
            .db
            .with(|c| c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))?;
        Ok(Snapshot { store, open: true })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        self.store.db.with(|c| c.batch_execute("COMMIT"))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.store.db.with(|c| c.batch_execute("ROLLBACK"));
        }
    }
}

/// A walk over one evaluation's samples: a [`Snapshot`] and the [`CURSOR`]
/// over its ids in dataset order (which ends with the snapshot).
struct Walk<'a> {
    snapshot: Snapshot<'a>,
    /// Whether any judge calls are stored for the evaluation (else they are not asked for).
    judged: bool,
}

impl<'a> Walk<'a> {
    fn open(store: &'a PgStore, evaluation_id: i64) -> Result<Walk<'a>, StoreError> {
        // From here on the transaction is ended whatever happens.
        let snapshot = Snapshot::begin(store)?;
        let judged = store.db.with(|c| {
            c.execute(
                &format!(
                    "DECLARE {CURSOR} NO SCROLL CURSOR FOR
                     SELECT id FROM samples WHERE evaluation_id = $1 ORDER BY row_index, id"
                ),
                &[&evaluation_id],
            )?;
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM judge_calls WHERE evaluation_id = $1)",
                &[&evaluation_id],
            )?
            .try_get(0)
        })?;
        Ok(Walk { snapshot, judged })
    }

    /// Ends the snapshot (the cursor with it).
    fn close(self) -> Result<(), StoreError> {
        self.snapshot.commit()
    }
}

/// The next [`BATCH`] sample records of the [`CURSOR`], in its order, with
/// their scores (`evaluators` of them) and, when `judged`, judge calls.
fn next_samples(c: &mut impl GenericClient, evaluators: usize, judged: bool) -> Pg<Vec<SampleRow>> {
    let ids: Vec<i64> = c
        .query(&format!("FETCH {BATCH} FROM {CURSOR}"), &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Pg<_>>()?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut records: HashMap<i64, SampleRow> = HashMap::with_capacity(ids.len());
    for r in c.query(
        &format!(
            "SELECT id, sample_key, row_index, variables, prompt, output, error_kind, error,
                    start_us, end_us, repeat, {CALL_COLUMNS}, cached, endpoint, row_hash, cache_key
             FROM samples WHERE id = ANY($1)"
        ),
        &[&ids],
    )? {
        records.insert(
            r.try_get(0)?,
            SampleRow {
                key: r.try_get(1)?,
                index: count(&r, 2)?,
                row_hash: r.try_get::<_, i64>(23)? as u64,
                variables: r.try_get(3)?,
                prompt: r.try_get(4)?,
                output: r.try_get(5)?,
                scores: vec![None; evaluators],
                scored: false,
                error_kind: r.try_get(6)?,
                error: r.try_get(7)?,
                start_us: count(&r, 8)?,
                end_us: count(&r, 9)?,
                repeat: r.try_get::<_, i64>(10)?.clamp(0, i64::from(u32::MAX)) as u32,
                call: call_stats(&r, 11)?,
                judge_calls: Vec::new(),
                cached: r.try_get(21)?,
                endpoint: r.try_get(22)?,
                cache_key: r.try_get(24)?,
            },
        );
    }
    for s in c.query(
        "SELECT sample_id, evaluator, value, passed, reason FROM scores
         WHERE sample_id = ANY($1) ORDER BY sample_id, evaluator",
        &[&ids],
    )? {
        let Some(row) = records.get_mut(&s.try_get::<_, i64>(0)?) else {
            continue;
        };
        row.scored = true;
        let (i, Some(value)) = (s.try_get::<_, i64>(1)?, s.try_get::<_, Option<f64>>(2)?) else {
            continue;
        };
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| row.scores.get_mut(i)) {
            *slot = Some(ScoreRecord {
                value,
                passed: s.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
                reason: s.try_get(4)?,
            });
        }
    }
    if judged {
        for r in c.query(
            &format!(
                "SELECT sample_id, evaluator, prompt, reply, error, queue_us, {CALL_COLUMNS},
                     cache_key, cached
                 FROM judge_calls WHERE sample_id = ANY($1) ORDER BY sample_id, evaluator"
            ),
            &[&ids],
        )? {
            let Some(row) = records.get_mut(&r.try_get::<_, i64>(0)?) else {
                continue;
            };
            row.judge_calls.push(JudgeRecord {
                evaluator: count(&r, 1)? as usize,
                prompt: r.try_get(2)?,
                reply: r.try_get(3)?,
                error: r.try_get(4)?,
                queue_us: count(&r, 5)?,
                call: call_stats(&r, 6)?,
                cache: crate::cache::CacheUse::copied(r.try_get(16)?, r.try_get(17)?),
            });
        }
    }
    // In the cursor's order; an id whose record is gone is skipped, as on SQLite.
    Ok(ids.iter().filter_map(|id| records.remove(id)).collect())
}

#[cfg(test)]
mod tests {
    //! Parity with SQLite: the same rows written into a SQLite store and a
    //! PostgreSQL one (in a schema of its own), the same reads asked of both.

    use std::ops::ControlFlow;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::store::{EvaluationStatus, Store, StoreError};

    /// The test server's URL: `DOTEVALS_TEST_POSTGRES` (each test skips, recorded, without it).
    fn server() -> String {
        if let Ok(url) = std::env::var("DOTEVALS_TEST_POSTGRES") {
            return url;
        }
        panic!("DOTEVALS_TEST_POSTGRES is not set")
    }

    /// A store in a fresh schema of the test server, and a plain client on
    /// it; the schema is dropped at the end.
    struct Pg {
        store: Box<dyn Store>,
        /// The store's URL (with its schema).
        url: String,
        client: postgres::Client,
        schema: String,
    }

    impl Pg {
        fn new(test: &str) -> Pg {
            static N: AtomicU32 = AtomicU32::new(0);
            let url = server();
            let schema = format!(
                "read_{test}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let separator = if url.contains('?') { '&' } else { '?' };
            let store_url = format!("{url}{separator}schema={schema}");
            let store = crate::store::locate(Some(&store_url))
                .open_or_create()
                .unwrap_or_else(|e| panic!("cannot open a store on {url}: {e}"));
            let mut client = postgres::Client::connect(&url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
            client
                .batch_execute(&format!("SET search_path TO \"{schema}\""))
                .unwrap();
            Pg {
                store,
                url: store_url,
                client,
                schema,
            }
        }
    }

    impl Drop for Pg {
        fn drop(&mut self) {
            let _ = self
                .client
                .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema));
        }
    }

    /// A SQLite store in a temporary folder, and a plain connection on it.
    struct Lite {
        store: Box<dyn Store>,
        path: std::path::PathBuf,
        conn: rusqlite::Connection,
        _dir: tempfile::TempDir,
    }

    impl Lite {
        fn new() -> Lite {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("dotevals.db");
            let store: Box<dyn Store> =
                Box::new(crate::store::sqlite::SqliteStore::open(&path).unwrap());
            let conn = rusqlite::Connection::open(&path).unwrap();
            Lite {
                store,
                path,
                conn,
                _dir: dir,
            }
        }
    }

    /// Both stores holding `sql` (written in the SQL both speak).
    fn both(test: &str, sql: &str) -> (Lite, Pg) {
        let lite = Lite::new();
        lite.conn.execute_batch(sql).unwrap();
        let mut pg = Pg::new(test);
        pg.client.batch_execute(sql).unwrap();
        (lite, pg)
    }

    /// Experiments and evaluations: names and times whose order differs by
    /// collation, every status but `running`, evaluations without samples,
    /// evaluator lists that are not JSON, repeats and clusters.
    const EVALUATIONS: &str = r#"
INSERT INTO experiments (id, name, created_at) VALUES
    (1, 'alpha', '2024-01-01T00:00:00Z'),
    (2, 'beta', '2024-02-01T00:00:00Z'),
    (3, 'Zeta', '2024-02-01T00:00:00Z'),
    (4, 'empty', '2023-12-31T00:00:00Z'),
    (5, 'émile', '2024-01-15T00:00:00Z');
INSERT INTO evaluations (id, experiment_id, name, spec_path, spec_text, spec_hash, identity, provider,
    model, evaluators, strategy, max_concurrency, total, started_at, ended_at, runs, status, cluster,
    fail_under, repeats) VALUES
    (10, 1, 'e1', 'a.yaml', 'spec one', 'h1', '{}', 'openai', 'gpt', '["exact","judge"]', 'adaptive',
        8, 40, '2024-01-01T00:00:01Z', '2024-01-01T00:10:00Z', 2, 'completed', NULL, '[0.5,null]', 1),
    (11, 1, 'e2', 'b.yaml', 'spec two', 'h2', '{}', 'openai', 'gpt', '["a"]', 'sliding_window',
        4, 30, '2024-01-01T00:00:02Z', NULL, 1, 'completed_with_errors', 'topic', NULL, 1),
    (12, 2, 'e3', 'c.yaml', 'spec three', 'h3', '{}', 'mock', 'm', '["a","b"]', 'adaptive',
        2, 12, '2024-02-01T00:00:01Z', '2024-02-01T00:01:00Z', 1, 'failed', 'topic', '[0.9]', 3),
    (13, 2, 'e4', 'd.yaml', 'spec four', 'h4', '{}', 'mock', 'm', 'not json', 'sliding_window',
        2, 8, '2024-02-01T00:00:02Z', NULL, 3, 'interrupted', NULL, 'nope', 2),
    (14, 3, 'e5', 'e.yaml', 'spec five', 'h5', '{}', 'mock', 'm', '["a"]', 'adaptive',
        1, 0, '2024-02-01T00:00:03Z', NULL, 0, 'completed', NULL, NULL, 0),
    (15, 5, 'e6', 'f.yaml', 'spec six', 'h6', '{}', 'mock', 'm', '["a"]', 'fixed',
        1, 2, '2024-01-15T00:00:03Z', NULL, 1, 'completed', NULL, NULL, 1);
INSERT INTO runs (evaluation_id, run, strategy, wall_us, samples, attempts, throttled, held_us,
    at_server_us, blocked_us, unloaded, unloaded_us) VALUES
    (10, 2, 'adaptive', 200, 20, 25, 3, 1000, 900, 50, 4, 400),
    (10, 1, 'adaptive', 100, 20, 21, 0, 800, 700, 10, 2, 150),
    (11, 1, 'sliding_window', 300, 30, 30, 1, 600, 500, 0, 0, 0),
    (12, 1, 'adaptive', 50, 12, 12, 0, 10, 9, 0, 0, 0);
INSERT INTO limits (evaluation_id, run, t_us, value) VALUES
    (10, 1, 0, 4), (10, 1, 100, 5), (10, 1, 100, 6), (10, 1, 250, 3),
    (10, 2, 50, 9), (10, 2, 0, 8), (12, 3, 0, 1);
"#;

    /// A dataset column's values: every JSON type, strings that sort
    /// differently by collation, values SQLite groups together (`true`, `1`).
    const TOPICS: &[Option<&str>] = &[
        Some(r#""b""#),
        Some(r#""a""#),
        Some(r#""B""#),
        Some("1"),
        Some("2.5"),
        Some("true"),
        Some("false"),
        Some("null"),
        None,
        Some(r#"{"x":1,"a":[2,3]}"#),
        Some(r#""1""#),
        Some("10"),
        Some(r#""é""#),
        Some(r#""a\nb \"q\"""#),
        Some("[1,2]"),
        Some("2.0"),
        Some("-3"),
    ];

    /// Samples, scores and judge calls for the evaluations of
    /// [`EVALUATIONS`], their ids interleaved, with every field's corner
    /// cases (nulls, ties in the orders, scores past the evaluators).
    fn samples_sql() -> String {
        let mut sql = String::new();
        let null = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
        let text = |v: &str| format!("'{}'", v.replace('\'', "''"));
        for (ev, rows, repeats, evaluators, judged) in [
            (10i64, 40u64, 1u64, 3i64, true),
            (11, 30, 1, 1, false),
            (12, 12, 3, 2, false),
            (13, 8, 2, 1, true),
            (15, 2, 1, 1, false),
        ] {
            for row in 0..rows {
                for rep in 0..repeats {
                    let k = row * repeats + rep;
                    let id = 1000 + k as i64 * 10 + (ev - 10);
                    let prefix = ["k", "K", "é", "k1"][(row % 4) as usize];
                    let key = format!("{prefix}{row}/{rep}");
                    let row_index = (row * 7) % rows;
                    let row_hash = (k as i64).wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64);
                    let run = if ev == 10 { 1 + k % 2 } else { 1 };
                    let topic = match TOPICS[(row % TOPICS.len() as u64) as usize] {
                        Some(v) => format!(r#","topic":{v}"#),
                        None => String::new(),
                    };
                    let variables = format!(r#"{{"q":"question {row}"{topic}}}"#);
                    // Some rows err in every repeat, of different kinds: ties in dataset order.
                    let error_kind = (k % 5 == 3 || (repeats > 1 && row % 4 == 0))
                        .then(|| ["timeout", "http_500", "timeout", "parse"][(k % 4) as usize]);
                    let error = (error_kind.is_some() && k % 2 == 0).then(|| format!("boom {k}"));
                    let output = error_kind.is_none().then(|| format!("out {k}"));
                    let attempts = if k % 11 == 0 { 0 } else { 1 + k % 3 };
                    let latency = error_kind.is_none().then(|| 1000 + (k * 37 % 13) * 10);
                    let first_token = (k % 3 == 0).then(|| k * 2);
                    sql.push_str(&format!(
                        "INSERT INTO samples (id, evaluation_id, sample_key, row_index, row_hash, run, \
                         variables, prompt, output, error_kind, error, attempts, latency_us, start_us, \
                         end_us, prompt_tokens, completion_tokens, throttled, wait_us, repeat, \
                         cached_tokens, cache_write_tokens, reasoning_tokens, first_token_us, cached) \
                         VALUES ({id}, {ev}, {}, {row_index}, {row_hash}, {run}, {}, {}, {}, {}, {}, \
                         {attempts}, {}, {}, {}, {}, {}, {}, {}, {rep}, {}, {}, {}, {}, {});\n",
                        text(&key),
                        text(&variables),
                        text(&format!("prompt {k}")),
                        null(output.map(|o| text(&o))),
                        null(error_kind.map(text)),
                        null(error.map(|e| text(&e))),
                        null(latency.map(|l| l.to_string())),
                        k * 100,
                        k * 100 + 50 + (k % 4) * 10,
                        null((k % 6 != 0).then(|| (k * 3).to_string())),
                        null((k % 5 != 1).then(|| (k % 9).to_string())),
                        k % 2,
                        k * 5,
                        null((k % 4 == 1).then(|| (k * 2).to_string())),
                        null((k % 4 == 2).then(|| k.to_string())),
                        null((k % 7 == 3).then(|| (k + 1).to_string())),
                        null(first_token.map(|t| t.to_string())),
                        if k % 7 == 0 { "TRUE" } else { "FALSE" },
                    ));
                    for j in 0..evaluators {
                        let value = ((k as i64 * 3 + j) % 5) as f64 / 4.0;
                        let (value, passed) = if (k as i64 + j) % 6 == 5 {
                            ("NULL".to_owned(), "NULL")
                        } else if k % 8 == 0 {
                            (value.to_string(), "NULL")
                        } else {
                            (
                                value.to_string(),
                                if value >= 0.5 { "TRUE" } else { "FALSE" },
                            )
                        };
                        let reason = null((k % 3 == 1).then(|| text(&format!("because {k}"))));
                        // The evaluators past the evaluation's list (the last
                        // of e1) are left out when read.
                        sql.push_str(&format!(
                            "INSERT INTO scores (sample_id, evaluation_id, evaluator, value, passed, reason) \
                             VALUES ({id}, {ev}, {j}, {value}, {passed}, {reason});\n"
                        ));
                    }
                    if judged {
                        for j in [1i64, 0].into_iter().filter(|j| *j == 1 || k % 3 == 0) {
                            let replied = k % 4 != 0;
                            sql.push_str(&format!(
                                "INSERT INTO judge_calls (sample_id, evaluation_id, evaluator, prompt, reply, \
                                 error, attempts, throttled, wait_us, latency_us, prompt_tokens, \
                                 completion_tokens, queue_us, cached_tokens, cache_write_tokens, \
                                 reasoning_tokens, first_token_us) VALUES ({id}, {ev}, {j}, {}, {}, {}, \
                                 {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
                                text(&format!("judge {k} {j}")),
                                null(replied.then(|| text(&format!("reply {k}")))),
                                null((!replied).then(|| text("no reply"))),
                                1 + k % 2,
                                k % 3,
                                k,
                                null(replied.then(|| (500 + k % 7).to_string())),
                                null((k % 5 != 0).then(|| (k * 4).to_string())),
                                null(replied.then(|| (k % 6).to_string())),
                                k * 2,
                                null((k % 2 == 0).then(|| k.to_string())),
                                null((k % 3 == 0).then(|| "1".to_owned())),
                                null((k % 5 == 0).then(|| "2".to_owned())),
                                null((k % 4 == 1).then(|| (k + 3).to_string())),
                            ));
                        }
                    }
                }
            }
        }
        sql.push_str("UPDATE evaluation_totals SET wall_us = 12345 WHERE evaluation_id = 10;\n");
        sql
    }

    fn fixture() -> String {
        format!("{EVALUATIONS}{}", samples_sql())
    }

    /// `$call` on both stores, the answers equal.
    macro_rules! same {
        ($lite:expr, $pg:expr, $($call:tt)*) => {{
            let lite = $lite.store.$($call)*.unwrap();
            let pg = $pg.store.$($call)*.unwrap();
            assert_eq!(pg, lite, "{} differs", stringify!($($call)*));
            pg
        }};
    }

    #[test]
    fn experiments_read_as_on_sqlite() {
        let Some(_) = crate::store::postgres::tests::server("experiments_read_as_on_sqlite") else {
            return;
        };
        let (lite, pg) = both("experiments", &fixture());
        let experiments = same!(lite, pg, experiments());
        assert_eq!(experiments.len(), 5);
        let e1 = &experiments
            .iter()
            .find(|x| x.name == "alpha")
            .unwrap()
            .evaluations[0];
        assert_eq!(e1.recorded, 40);
        assert_eq!(e1.scores.len(), 2);
        assert!(e1.scores[0].unscored > 0);
        assert_eq!(e1.spec_text, "");
        for name in ["alpha", "beta", "Zeta", "empty", "émile"] {
            let x = same!(lite, pg, experiment(name));
            assert!(x.evaluations.iter().all(|e| !e.spec_text.is_empty()));
        }
        same!(lite, pg, experiment_names());
        for store in [&lite.store, &pg.store] {
            assert!(matches!(
                store.experiment("nope"),
                Err(StoreError::UnknownExperiment(name)) if name == "nope"
            ));
        }
    }

    #[test]
    fn evaluation_reads_as_on_sqlite() {
        let Some(_) = crate::store::postgres::tests::server("evaluation_reads_as_on_sqlite") else {
            return;
        };
        let (lite, pg) = both("evaluation", &fixture());
        for id in [10, 11, 12, 13, 14, 15, 999] {
            same!(lite, pg, latencies(id));
            same!(lite, pg, streamed(id));
            same!(lite, pg, errors(id));
            same!(lite, pg, error_groups(id));
            same!(lite, pg, runs(id));
            for run in 0..4 {
                same!(lite, pg, limit_steps(id, run));
            }
            same!(lite, pg, limit_timeline(id));
            same!(lite, pg, judge_totals(id));
            for cluster in [
                None,
                Some("topic"),
                Some("q"),
                Some("missing"),
                Some("a\"b"),
            ] {
                same!(lite, pg, sample_scores(id, 2, cluster));
                same!(lite, pg, sample_scores(id, 0, cluster));
                for evaluator in 0..3 {
                    same!(lite, pg, repeat_sums(id, evaluator, cluster));
                    if let Some(column) = cluster {
                        same!(lite, pg, cluster_sums(id, evaluator, column));
                    }
                }
            }
        }
        let errors = same!(lite, pg, error_groups(10));
        assert_eq!(errors.len(), 3);
        let steps = same!(lite, pg, limit_steps(10, 1));
        assert_eq!(steps[1].limit, 5);
        let sums = same!(lite, pg, repeat_sums(11, 0, Some("topic")));
        assert!(sums.last().is_some_and(|s| s.cluster >= 10));
    }

    #[test]
    fn summary_reads_as_on_sqlite() {
        let Some(_) = crate::store::postgres::tests::server("summary_reads_as_on_sqlite") else {
            return;
        };
        let (lite, pg) = both("summary", &fixture());
        let experiments = same!(lite, pg, experiments());
        for e in experiments.iter().flat_map(|x| &x.evaluations) {
            // Variants that take every branch: repeats with and without a
            // cluster column, a cluster column alone, none.
            for (repeats, cluster) in [
                (e.repeats, e.cluster.clone()),
                (1, Some("topic".to_owned())),
                (3, None),
            ] {
                let e = crate::store::EvaluationRow {
                    repeats,
                    cluster,
                    ..e.clone()
                };
                let lite = lite.store.summary_reads(&e).unwrap();
                let pg = pg.store.summary_reads(&e).unwrap();
                assert_eq!(
                    format!("{pg:?}"),
                    format!("{lite:?}"),
                    "summary_reads of {}",
                    e.name
                );
            }
        }
    }

    #[test]
    fn samples_read_as_on_sqlite() {
        let Some(_) = crate::store::postgres::tests::server("samples_read_as_on_sqlite") else {
            return;
        };
        let (lite, pg) = both("samples", &fixture());
        for id in [10, 11, 12, 13, 14, 15, 999] {
            for evaluators in [0, 1, 2, 3] {
                same!(lite, pg, samples(id, evaluators));
            }
        }
        let rows = same!(lite, pg, samples(10, 2));
        assert!(rows.iter().any(|r| r.judge_calls.len() == 2));
        assert!(rows.iter().any(|r| r.scores.iter().any(Option::is_none)));
        // Stopping early: the first three, and the connection reads on.
        for store in [&lite.store, &pg.store] {
            let mut seen = Vec::new();
            store
                .for_each_sample(10, 2, &mut |row| {
                    seen.push(row);
                    match seen.len() {
                        3 => ControlFlow::Break(()),
                        _ => ControlFlow::Continue(()),
                    }
                })
                .unwrap();
            assert_eq!(seen, rows[..3]);
            assert_eq!(store.samples(10, 2).unwrap(), rows);
        }
    }

    /// More samples than one batch of the cursor, read in dataset order;
    /// also from inside an async runtime (where the client runs on a
    /// thread of its own), and with a panic in the middle.
    #[test]
    fn samples_stream_across_batches() {
        let Some(_) = crate::store::postgres::tests::server("samples_stream_across_batches") else {
            return;
        };
        let rows = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2500)";
        let sql = format!(
            "{EVALUATIONS}
             {rows} INSERT INTO samples (id, evaluation_id, sample_key, row_index, row_hash, run,
                 variables, prompt, attempts, start_us, end_us)
             SELECT 100000 + n, 11, 'k' || n, (n * 7919) % 2500, n, 1, '{{}}', 'p', 1, n, n + 1 FROM g;
             {rows} INSERT INTO scores (sample_id, evaluation_id, evaluator, value, passed)
             SELECT 100000 + n, 11, 0, 0.5, TRUE FROM g WHERE n % 3 = 1;"
        );
        let (lite, pg) = both("stream", &sql);
        same!(lite, pg, samples(11, 1));
        let rows = pg.store.samples(11, 1).unwrap();
        assert_eq!(rows.len(), 2500);
        assert!(rows.windows(2).all(|w| w[0].index < w[1].index));
        let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        let inside = runtime.block_on(async { pg.store.samples(11, 1).unwrap() });
        assert_eq!(inside, rows);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = pg.store.for_each_sample(11, 1, &mut |row| {
                assert!(row.index < 1500, "stop");
                ControlFlow::Continue(())
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(pg.store.samples(11, 1).unwrap(), rows);
    }

    /// A run that died leaves its evaluation "running": read as interrupted
    /// unless some process holds its run lock.
    #[test]
    fn a_running_evaluation_nobody_runs_reads_as_interrupted() {
        let Some(_) = crate::store::postgres::tests::server(
            "a_running_evaluation_nobody_runs_reads_as_interrupted",
        ) else {
            return;
        };
        let sql = format!(
            "{EVALUATIONS}UPDATE evaluations SET status = 'running' WHERE id IN (10, 11, 12);"
        );
        let (lite, pg) = both("running", &sql);
        let lite_path = lite.path.display().to_string();
        let _held = [
            crate::store::locate(Some(&lite_path))
                .lock("alpha", "e1")
                .unwrap(),
            crate::store::locate(Some(&pg.url))
                .lock("alpha", "e1")
                .unwrap(),
        ];
        let alpha = same!(lite, pg, experiment("alpha"));
        let status = |name: &str| {
            alpha
                .evaluations
                .iter()
                .find(|e| e.name == name)
                .unwrap()
                .status
        };
        assert_eq!(status("e1"), EvaluationStatus::Running);
        assert_eq!(status("e2"), EvaluationStatus::Interrupted);
        same!(lite, pg, experiments());
    }

    /// A million samples stream through `for_each_sample` in dataset order
    /// while the process's memory stays flat. Slow (a minute): run it
    /// alone, so the high-water mark is this test's:
    /// `cargo test --lib postgres::read::tests::a_million -- --ignored --exact`.
    #[test]
    #[ignore = "slow: a million samples"]
    fn a_million_samples_stream_in_flat_memory() {
        let Some(_) =
            crate::store::postgres::tests::server("a_million_samples_stream_in_flat_memory")
        else {
            return;
        };
        const N: i64 = 1_000_000;
        let mut pg = Pg::new("million");
        pg.client.batch_execute(EVALUATIONS).unwrap();
        // Without the totals' triggers: in one transaction each row's update
        // of the one totals row walks every earlier version of it.
        pg.client
            .batch_execute(&format!(
                "ALTER TABLE samples DISABLE TRIGGER samples_totals;
                 ALTER TABLE scores DISABLE TRIGGER scores_totals;
                 INSERT INTO samples (id, evaluation_id, sample_key, row_index, row_hash, run,
                     variables, prompt, output, attempts, latency_us, start_us, end_us)
                 SELECT n, 11, 'key-' || n, (n::bigint * 7919) % {N}, n, 1,
                     '{{\"q\":\"' || repeat('v', 200) || '\"}}', repeat('p', 300), repeat('o', 300),
                     1, n % 1000, n, n + 1
                 FROM generate_series(1, {N}) n;
                 INSERT INTO scores (sample_id, evaluation_id, evaluator, value, passed)
                 SELECT n, 11, 0, 0.5, TRUE FROM generate_series(1, {N}) n;"
            ))
            .unwrap();
        let high_water = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let before = high_water();
        let started = std::time::Instant::now();
        let (mut seen, mut last, mut bytes) = (0i64, None, 0usize);
        pg.store
            .for_each_sample(11, 1, &mut |row| {
                assert!(last.is_none_or(|l| l < row.index));
                assert!(row.scores[0].is_some());
                last = Some(row.index);
                bytes += row.prompt.len() + row.variables.len() + row.output.map_or(0, |o| o.len());
                seen += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        let grown_kb = high_water().saturating_sub(before);
        eprintln!(
            "{seen} samples ({} MB of text) in {:.1} s; peak memory grew {} MB",
            bytes >> 20,
            started.elapsed().as_secs_f64(),
            grown_kb >> 10
        );
        assert_eq!(seen, N);
        assert!(grown_kb < 64 << 10, "memory grew {grown_kb} kB");
    }
}
