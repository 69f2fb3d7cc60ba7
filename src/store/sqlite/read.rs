//! Read queries behind `show` and `list`. Totals come from per-evaluation
//! counters the schema's triggers keep, so `list` reads one row per evaluation
//! however many samples it holds; `show` also reads the latencies (an index).

use crate::store::CallStats;
use crate::usage::{TokenTotals, Usage};
use std::path::Path;

use std::ops::ControlFlow;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::read::{
    ErrorGroup, ErrorRow, EvaluationRow, ExperimentRow, JudgeTotal, LimitStep, LimitTimeline,
    RepeatSums, RunRow, SampleRow, SampleScores, ScorePoint, ScoreTotal, StreamedReply,
};
use crate::store::writer::{JudgeRecord, ScoreRecord};
use crate::store::{EndpointRun, EvaluationStatus, StoreError};

/// An evaluation with its totals (kept in their own table, see the schema's version 4).
const EVALUATION_COLUMNS: &str =
    "e.id, e.name, e.spec_path, e.provider, e.model, e.evaluators, e.strategy,
    e.max_concurrency, e.total, e.started_at, e.ended_at, coalesce(t.wall_us, 0), e.runs, e.status,
    coalesce(t.recorded, 0), coalesce(t.errored, 0), coalesce(t.latency_sum_us, 0),
    coalesce(t.prompt_tokens, 0), coalesce(t.completion_tokens, 0), coalesce(t.retries, 0),
    coalesce(t.throttled, 0), coalesce(t.wait_us, 0), e.cluster, e.fail_under, e.repeats,
    coalesce(t.cached_tokens, 0), coalesce(t.cache_write_tokens, 0), coalesce(t.reasoning_tokens, 0),
    coalesce(t.cached, 0)
    FROM evaluations e LEFT JOIN evaluation_totals t ON t.evaluation_id = e.id";

fn evaluation(r: &Row) -> rusqlite::Result<EvaluationRow> {
    let evaluators: String = r.get(5)?;
    // Counters are never negative; the clamp only guards the cast.
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(EvaluationRow {
        id: r.get(0)?,
        name: r.get(1)?,
        spec_path: r.get(2)?,
        provider: r.get(3)?,
        model: r.get(4)?,
        evaluators: serde_json::from_str(&evaluators).unwrap_or_default(),
        strategy: r.get(6)?,
        max_concurrency: count(7)?,
        total: count(8)?,
        started_at: r.get(9)?,
        ended_at: r.get(10)?,
        wall_us: count(11)?,
        runs: count(12)?,
        status: r.get(13)?,
        recorded: count(14)?,
        errored: count(15)?,
        cached: count(28)?,
        latency_sum_us: count(16)?,
        tokens: TokenTotals {
            prompt: count(17)?,
            completion: count(18)?,
            cached_prompt: count(25)?,
            cache_write: count(26)?,
            reasoning: count(27)?,
        },
        retries: count(19)?,
        throttled: count(20)?,
        wait_us: count(21)?,
        // Read by `experiment` alone: `list` never shows them, and a spec
        // snapshot may be megabytes.
        spec_text: String::new(),
        scores: Vec::new(),
        cluster: r.get(22)?,
        fail_under: r
            .get::<_, Option<String>>(23)?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        repeats: r.get::<_, i64>(24)?.clamp(1, i64::from(u32::MAX)) as u32,
    })
}

/// Every experiment, newest first, with aggregates.
pub fn experiments(conn: &Connection, path: &Path) -> Result<Vec<ExperimentRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, created_at FROM experiments ORDER BY created_at DESC, id DESC",
    )?;
    let heads: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    heads
        .into_iter()
        .map(|(id, name, created_at)| {
            let evaluations = evaluations(conn, path, id, &name)?;
            Ok(ExperimentRow {
                name,
                created_at,
                evaluations,
            })
        })
        .collect()
}

/// One experiment, or `UnknownExperiment`.
pub fn experiment(conn: &Connection, path: &Path, name: &str) -> Result<ExperimentRow, StoreError> {
    let head: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, created_at FROM experiments WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, created_at) = head.ok_or_else(|| StoreError::UnknownExperiment(name.to_owned()))?;
    let mut evaluations = evaluations(conn, path, id, name)?;
    let mut spec = conn.prepare_cached("SELECT spec_text FROM evaluations WHERE id = ?1")?;
    for e in &mut evaluations {
        e.spec_text = spec.query_row([e.id], |r| r.get(0))?;
    }
    Ok(ExperimentRow {
        name: name.to_owned(),
        created_at,
        evaluations,
    })
}

/// Names of all experiments (for "did you mean").
pub fn experiment_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM experiments")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// The evaluations of one experiment, with their totals and scores.
fn evaluations(
    conn: &Connection,
    path: &Path,
    experiment_id: i64,
    experiment: &str,
) -> Result<Vec<EvaluationRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVALUATION_COLUMNS} WHERE e.experiment_id = ?1 ORDER BY e.id"
    ))?;
    let mut rows: Vec<EvaluationRow> = stmt
        .query_map([experiment_id], evaluation)?
        .collect::<Result<_, _>>()?;
    let mut scores = conn.prepare_cached(
        "SELECT evaluator, scored, total, passed, total_sq FROM evaluation_scores WHERE evaluation_id = ?1",
    )?;
    let mut unscored = conn.prepare_cached(
        "SELECT evaluator, count(*) FROM scores WHERE evaluation_id = ?1 AND value IS NULL GROUP BY evaluator",
    )?;
    for e in &mut rows {
        // "running" with nobody holding the run's lock means the run died (kill -9,
        // power loss): its finished samples are kept and a rerun resumes it.
        if e.status == EvaluationStatus::Running && !super::lock::is_held(path, experiment, &e.name)
        {
            e.status = EvaluationStatus::Interrupted;
        }
        let mut per = vec![ScoreTotal::default(); e.evaluators.len()];
        for row in scores.query_map([e.id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, f64>(4)?,
            ))
        })? {
            let (i, n, sum, passed, sum_sq) = row?;
            if let Some(slot) = per.get_mut(i as usize) {
                *slot = ScoreTotal {
                    scored: n.max(0) as u64,
                    sum,
                    passed: passed.max(0) as u64,
                    sum_sq,
                    unscored: 0,
                };
            }
        }
        // Evaluators that could not score a sample store a null score: few,
        // found through the scores' index (nulls sort first).
        for row in unscored.query_map([e.id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (i, n) = row?;
            if let Some(slot) = per.get_mut(i as usize) {
                slot.unscored = n.max(0) as u64;
            }
        }
        e.scores = per;
    }
    Ok(rows)
}

/// The calls judges made for sample `sample_id`, in evaluator order.
fn judge_calls_of(conn: &Connection, sample_id: i64) -> Result<Vec<JudgeRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT evaluator, prompt, reply, error, queue_us, ",
        call_columns!(),
        ", cache_key, cached FROM judge_calls WHERE sample_id = ?1 ORDER BY evaluator"
    ))?;
    let mut out = Vec::new();
    let mut rows = stmt.query([sample_id])?;
    while let Some(r) = rows.next()? {
        out.push(JudgeRecord {
            evaluator: r.get::<_, i64>(0)?.max(0) as usize,
            prompt: r.get(1)?,
            reply: r.get(2)?,
            error: r.get(3)?,
            queue_us: r.get::<_, i64>(4)?.max(0) as u64,
            call: call_stats(r, 5)?,
            cache: crate::cache::CacheUse::copied(r.get(15)?, r.get(16)?),
        });
    }
    Ok(out)
}

/// Each judging evaluator's calls over an evaluation, in evaluator order.
pub fn judge_totals(conn: &Connection, evaluation_id: i64) -> Result<Vec<JudgeTotal>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT evaluator, count(*), count(error), coalesce(sum(attempts - 1), 0), coalesce(sum(throttled), 0),
                coalesce(sum(wait_us), 0), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                coalesce(sum(queue_us), 0), coalesce(sum(cached_tokens), 0),
                coalesce(sum(cache_write_tokens), 0), coalesce(sum(reasoning_tokens), 0)
         FROM judge_calls WHERE evaluation_id = ?1 GROUP BY evaluator ORDER BY evaluator",
    )?;
    let u = |v: i64| v.max(0) as u64;
    let mut totals: Vec<JudgeTotal> = stmt
        .query_map([evaluation_id], |r| {
            Ok(JudgeTotal {
                evaluator: r.get::<_, i64>(0)?.max(0) as usize,
                calls: u(r.get(1)?),
                failed: u(r.get(2)?),
                retries: u(r.get(3)?),
                throttled: u(r.get(4)?),
                wait_us: u(r.get(5)?),
                queue_us: u(r.get(8)?),
                latencies_us: Vec::new(),
                tokens: TokenTotals {
                    prompt: u(r.get(6)?),
                    completion: u(r.get(7)?),
                    cached_prompt: u(r.get(9)?),
                    cache_write: u(r.get(10)?),
                    reasoning: u(r.get(11)?),
                },
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut latencies = conn.prepare_cached(
        "SELECT latency_us FROM judge_calls
         WHERE evaluation_id = ?1 AND evaluator = ?2 AND latency_us IS NOT NULL ORDER BY latency_us",
    )?;
    for t in &mut totals {
        t.latencies_us = latencies
            .query_map(params![evaluation_id, t.evaluator as i64], |r| {
                Ok(r.get::<_, i64>(0)?.max(0) as u64)
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(totals)
}

/// Every recorded sample's key, row hash and scores, by key (one query, each
/// sample's scores on the rows that follow it).
pub fn sample_scores(
    conn: &Connection,
    evaluation_id: i64,
    evaluators: usize,
    cluster: Option<&str>,
) -> Result<Vec<SampleScores>, StoreError> {
    // Sequential reads of the evaluation's id range, samples then scores
    // (both kept in id order), matched and sorted here: reading the wide
    // sample rows in key order, or joining the scores one sample at a time,
    // jumps about the file and takes several times as long on 100k samples.
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(id), max(id) FROM samples WHERE evaluation_id = ?1")?
        .query_row([evaluation_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    // The cluster's value as JSON text (`"g1"`, `3`), so values of any type compare.
    let mut stmt = conn.prepare_cached(
        "SELECT id, evaluation_id, sample_key, row_hash,
                CASE WHEN ?3 IS NULL THEN NULL ELSE json_quote(json_extract(variables, ?3)) END
         FROM samples WHERE id BETWEEN ?1 AND ?2",
    )?;
    let path = cluster.map(json_path);
    // Sample id to position in `out`, over the id range (other evaluations'
    // samples may sit inside it when runs overlapped): 8 bytes an id.
    let mut at = vec![usize::MAX; (hi - lo + 1) as usize];
    let mut out = Vec::new();
    let mut rows = stmt.query(params![lo, hi, path])?;
    while let Some(r) = rows.next()? {
        if r.get::<_, i64>(1)? != evaluation_id {
            continue;
        }
        at[(r.get::<_, i64>(0)? - lo) as usize] = out.len();
        out.push(SampleScores {
            key: r.get(2)?,
            row_hash: r.get::<_, i64>(3)? as u64,
            cluster: r.get(4)?,
            scores: vec![None; evaluators],
        });
    }
    let mut scores = conn.prepare_cached(
        "SELECT sample_id, evaluator, value, passed FROM scores WHERE sample_id BETWEEN ?1 AND ?2",
    )?;
    let mut rows = scores.query(params![lo, hi])?;
    while let Some(r) = rows.next()? {
        let position = at[(r.get::<_, i64>(0)? - lo) as usize];
        let (Some(sample), Some(value)) = (out.get_mut(position), r.get::<_, Option<f64>>(2)?)
        else {
            continue;
        };
        if let Some(slot) = sample.scores.get_mut(r.get::<_, i64>(1)? as usize) {
            *slot = Some(ScorePoint {
                value,
                passed: r.get::<_, Option<bool>>(3)?.unwrap_or(false),
            });
        }
    }
    out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The JSON path of column `column` of a stored row (`$."review text"`):
/// quoted, so any column name reads as itself.
fn json_path(column: &str) -> String {
    format!("$.{}", serde_json::to_string(column).unwrap_or_default())
}

/// Per value of dataset column `column`, the scored samples of `evaluator`,
/// the sum of their scores and of their squares.
pub fn cluster_sums(
    conn: &Connection,
    evaluation_id: i64,
    evaluator: usize,
    column: &str,
) -> Result<Vec<(u64, f64, f64)>, StoreError> {
    let path = json_path(column);
    let mut stmt = conn.prepare_cached(
        "SELECT count(*), sum(sc.value), sum(sc.value * sc.value) FROM scores sc JOIN samples s ON s.id = sc.sample_id
         WHERE sc.evaluation_id = ?1 AND sc.evaluator = ?2 AND sc.value IS NOT NULL
         GROUP BY json_extract(s.variables, ?3)",
    )?;
    let sums = stmt
        .query_map(params![evaluation_id, evaluator as i64, path], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(sums)
}

/// One evaluator's scores summed per dataset row over its repeats, ordered by
/// the value of `cluster` (a dataset column) when given, then by row.
pub fn repeat_sums(
    conn: &Connection,
    evaluation_id: i64,
    evaluator: usize,
    cluster: Option<&str>,
) -> Result<Vec<RepeatSums>, StoreError> {
    // A JSON path quotes the key, so any column name reads as itself; without
    // a column the path is null and so is every row's cluster value.
    let path = cluster.map(|c| format!("$.{}", serde_json::to_string(c).unwrap_or_default()));
    let mut stmt = conn.prepare_cached(
        "SELECT json_extract(s.variables, ?3) AS c, count(*), sum(sc.value), sum(sc.value * sc.value)
         FROM scores sc JOIN samples s ON s.id = sc.sample_id
         WHERE sc.evaluation_id = ?1 AND sc.evaluator = ?2 AND sc.value IS NOT NULL
         GROUP BY c, s.row_index ORDER BY c, s.row_index",
    )?;
    let mut rows = stmt.query(params![evaluation_id, evaluator as i64, path])?;
    let mut out = Vec::new();
    let mut last: Option<rusqlite::types::Value> = None;
    let mut cluster = 0u64;
    while let Some(r) = rows.next()? {
        let value: rusqlite::types::Value = r.get(0)?;
        if last.as_ref().is_some_and(|l| *l != value) {
            cluster += 1;
        }
        last = Some(value);
        out.push(RepeatSums {
            cluster,
            n: r.get::<_, i64>(1)?.max(0) as u64,
            sum: r.get(2)?,
            sum_sq: r.get(3)?,
        });
    }
    Ok(out)
}

/// Latencies of successful samples, in microseconds, ascending.
pub fn latencies(conn: &Connection, evaluation_id: i64) -> Result<Vec<u64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT latency_us FROM samples INDEXED BY samples_latency
         WHERE evaluation_id = ?1 AND latency_us IS NOT NULL ORDER BY latency_us",
    )?;
    let out = stmt
        .query_map([evaluation_id], |r| Ok(r.get::<_, i64>(0)? as u64))?
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// Per replica (`samples.endpoint`), through the index that holds only
/// samples of models with replicas: nothing to read for the others.
pub fn endpoints(
    conn: &Connection,
    evaluation_id: i64,
) -> Result<Vec<crate::store::read::EndpointSamples>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint, latency_us, error_kind IS NOT NULL FROM samples INDEXED BY samples_endpoint
         WHERE evaluation_id = ?1 AND endpoint IS NOT NULL ORDER BY endpoint, latency_us",
    )?;
    let rows = stmt
        .query_map([evaluation_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.map(|v| v.max(0) as u64),
                r.get::<_, bool>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::read::group_endpoints(rows))
}

/// Successful samples whose reply streamed.
pub fn streamed(conn: &Connection, evaluation_id: i64) -> Result<Vec<StreamedReply>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_token_us, latency_us, completion_tokens FROM samples
         WHERE evaluation_id = ?1 AND first_token_us IS NOT NULL AND latency_us IS NOT NULL
           AND error_kind IS NULL",
    )?;
    let u = |v: i64| v.max(0) as u64;
    let out = stmt
        .query_map([evaluation_id], |r| {
            Ok(StreamedReply {
                first_token_us: u(r.get(0)?),
                latency_us: u(r.get(1)?),
                completion_tokens: r.get::<_, Option<i64>>(2)?.map(u),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// Errored samples, in dataset order.
pub fn errors(conn: &Connection, evaluation_id: i64) -> Result<Vec<ErrorRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT sample_key, row_index, error_kind, coalesce(error, ''), attempts FROM samples
         WHERE evaluation_id = ?1 AND error_kind IS NOT NULL ORDER BY row_index",
    )?;
    let out = stmt
        .query_map([evaluation_id], |r| {
            Ok(ErrorRow {
                key: r.get(0)?,
                index: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                message: r.get(3)?,
                attempts: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// Every recorded run of an evaluation, in order.
pub fn runs(conn: &Connection, evaluation_id: i64) -> Result<Vec<RunRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT run, strategy, wall_us, samples, attempts, throttled, held_us, at_server_us,
                blocked_us, unloaded, unloaded_us, endpoints
         FROM runs WHERE evaluation_id = ?1 ORDER BY run",
    )?;
    let rows = stmt
        .query_map([evaluation_id], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(RunRow {
                run: n(0)?,
                strategy: r.get(1)?,
                wall_us: n(2)?,
                samples: n(3)?,
                attempts: n(4)?,
                throttled: n(5)?,
                held_us: n(6)?,
                at_server_us: n(7)?,
                blocked_us: n(8)?,
                unloaded: n(9)?,
                unloaded_us: n(10)?,
                endpoints: EndpointRun::from_column(r.get::<_, Option<String>>(11)?.as_deref()),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The concurrency limit at each change of run `run`.
pub fn limit_steps(
    conn: &Connection,
    evaluation_id: i64,
    run: u64,
) -> Result<Vec<LimitStep>, StoreError> {
    let mut steps = conn.prepare_cached(
        "SELECT t_us, value FROM limits WHERE evaluation_id = ?1 AND run = ?2 ORDER BY t_us",
    )?;
    let steps = steps
        .query_map(params![evaluation_id, run as i64], |r| {
            Ok(LimitStep {
                t_us: r.get::<_, i64>(0)?.max(0) as u64,
                limit: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(steps)
}

/// How the concurrency limit moved in the latest run of an evaluation.
pub fn limit_timeline(conn: &Connection, evaluation_id: i64) -> Result<LimitTimeline, StoreError> {
    let run: Option<i64> = conn.query_row(
        "SELECT max(run) FROM limits WHERE evaluation_id = ?1",
        [evaluation_id],
        |r| r.get(0),
    )?;
    let Some(run) = run else {
        return Ok(LimitTimeline::default());
    };
    let steps = limit_steps(conn, evaluation_id, run.max(0) as u64)?;
    let mut ends = conn.prepare_cached(
        "SELECT end_us FROM samples WHERE evaluation_id = ?1 AND run = ?2 AND NOT cached ORDER BY end_us",
    )?;
    let ends = ends
        .query_map(params![evaluation_id, run], |r| {
            Ok(r.get::<_, i64>(0)? as u64)
        })?
        .collect::<Result<_, _>>()?;
    Ok(LimitTimeline { steps, ends })
}

/// Errored samples grouped by kind, most frequent first, with one example each.
pub fn error_groups(conn: &Connection, evaluation_id: i64) -> Result<Vec<ErrorGroup>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT error_kind, count(*) AS n FROM samples INDEXED BY samples_errors
         WHERE evaluation_id = ?1 AND error_kind IS NOT NULL GROUP BY error_kind ORDER BY n DESC, error_kind",
    )?;
    let kinds: Vec<(String, i64)> = stmt
        .query_map([evaluation_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut example = conn.prepare_cached(
        "SELECT sample_key, coalesce(error, '') FROM samples
         WHERE evaluation_id = ?1 AND error_kind = ?2 ORDER BY row_index LIMIT 1",
    )?;
    kinds
        .into_iter()
        .map(|(kind, count)| {
            let (example_key, message) =
                example.query_row(params![evaluation_id, kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(ErrorGroup {
                kind,
                count: count as u64,
                example_key,
                example: message,
            })
        })
        .collect()
}

/// Every sample record with its scores, in dataset order.
pub fn samples(
    conn: &Connection,
    evaluation_id: i64,
    evaluators: usize,
) -> Result<Vec<SampleRow>, StoreError> {
    let mut out = Vec::new();
    for_each_sample(conn, evaluation_id, evaluators, &mut |row| {
        out.push(row);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Hands every sample record of an evaluation, with its scores and judge
/// calls, to `each` in dataset order, one at a time: memory stays flat however
/// many samples there are. One query walks the ids in dataset order (SQLite
/// sorts just the (row, id) pairs, spilling to a temporary file when large);
/// each record, its scores and its judge calls are then read by key.
pub fn for_each_sample(
    conn: &Connection,
    evaluation_id: i64,
    evaluators: usize,
    each: &mut dyn FnMut(SampleRow) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let mut ids = conn
        .prepare_cached("SELECT id FROM samples WHERE evaluation_id = ?1 ORDER BY row_index, id")?;
    let mut record = conn.prepare_cached(concat!(
        "SELECT sample_key, row_index, variables, prompt, output, error_kind, error, start_us, end_us,
                repeat, ",
        call_columns!(),
        ", cached, endpoint, row_hash, cache_key FROM samples WHERE id = ?1"
    ))?;
    let mut scores = conn.prepare_cached(
        "SELECT evaluator, value, passed, reason FROM scores WHERE sample_id = ?1 ORDER BY evaluator",
    )?;
    let judged: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM judge_calls WHERE evaluation_id = ?1)",
        [evaluation_id],
        |r| r.get(0),
    )?;
    let mut rows = ids.query([evaluation_id])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let Some(mut row) = record
            .query_row([id], |r| {
                Ok(SampleRow {
                    key: r.get(0)?,
                    index: r.get::<_, i64>(1)?.max(0) as u64,
                    row_hash: r.get::<_, i64>(22)? as u64,
                    variables: r.get(2)?,
                    prompt: r.get(3)?,
                    output: r.get(4)?,
                    scores: vec![None; evaluators],
                    scored: false,
                    error_kind: r.get(5)?,
                    error: r.get(6)?,
                    start_us: r.get::<_, i64>(7)?.max(0) as u64,
                    end_us: r.get::<_, i64>(8)?.max(0) as u64,
                    repeat: r.get::<_, i64>(9)?.clamp(0, i64::from(u32::MAX)) as u32,
                    call: call_stats(r, 10)?,
                    judge_calls: Vec::new(),
                    cached: r.get(20)?,
                    endpoint: r.get(21)?,
                    cache_key: r.get(23)?,
                })
            })
            .optional()?
        else {
            // Replaced by a resume since the walk began.
            continue;
        };
        let mut scored = scores.query([id])?;
        while let Some(s) = scored.next()? {
            row.scored = true;
            let (i, Some(value)) = (s.get::<_, i64>(0)?, s.get::<_, Option<f64>>(1)?) else {
                continue;
            };
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| row.scores.get_mut(i)) {
                *slot = Some(ScoreRecord {
                    value,
                    passed: s.get::<_, Option<bool>>(2)?.unwrap_or(false),
                    reason: s.get(3)?,
                });
            }
        }
        if judged {
            row.judge_calls = judge_calls_of(conn, id)?;
        }
        if each(row).is_break() {
            break;
        }
    }
    Ok(())
}

/// The columns a call's cost is stored in, in the order [`call_stats`] reads them.
macro_rules! call_columns {
    () => {
        "attempts, throttled, wait_us, latency_us, prompt_tokens, completion_tokens, cached_tokens,
         cache_write_tokens, reasoning_tokens, first_token_us"
    };
}
pub(super) use call_columns;

/// A call's cost from the [`call_columns`] from `at` on.
pub(super) fn call_stats(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CallStats> {
    let n = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(at + i)?.map(|v| v.max(0) as u64))
    };
    Ok(CallStats {
        attempts: r.get(at)?,
        throttled: r.get(at + 1)?,
        wait_us: r.get::<_, i64>(at + 2)?.max(0) as u64,
        latency_us: n(3)?,
        usage: Usage {
            prompt: n(4)?,
            completion: n(5)?,
            cached_prompt: n(6)?,
            cache_write: n(7)?,
            reasoning: n(8)?,
        },
        first_token_us: n(9)?,
    })
}
