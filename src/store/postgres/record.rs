//! What a run records, and the management of experiments, on PostgreSQL;
//! and the run lock, a session advisory lock: held by a connection of its
//! own for the run's life, and dropped by the server with the connection of
//! a process that dies (no file to clean up).

use std::time::Duration;

use postgres::error::SqlState;

use super::db::Target;
use super::{cache, fleet, lookup, writer, Db, PgStore};
use crate::store::{
    Admin, EvaluationMeta, EvaluationStatus, LockError, RecordSink, Recorder, RunLock, RunTotals,
    SampleCounts, SampleLookup, StartedEvaluation, StoreError, StoredEvaluation, WriterConfig,
};

/// The two keys of an evaluation's advisory lock, as the server hashes them:
/// the schema's, then the evaluation's (the experiment's length first, so
/// `a`+`bc` and `ab`+`c` differ). Two evaluations whose 32-bit hashes
/// collide would wait for each other: one pair in four billion.
const LOCK_KEYS: &str = "hashtext($1), hashtext(length($2) || ':' || $2 || $3)";

/// Takes the run lock of `evaluation` of `experiment` without waiting:
/// `shared` by the workers of a fleet, which keeps out only a run that
/// needs the evaluation to itself (a rescore).
pub fn lock(
    target: &Target,
    experiment: &str,
    evaluation: &str,
    shared: bool,
) -> Result<RunLock, StoreError> {
    let db = Db::connect(target)?;
    let schema = target.schema.clone();
    let taken: bool = db.with(|c| {
        let kind = if shared { "_shared" } else { "" };
        let sql = format!("SELECT pg_try_advisory_lock{kind}({LOCK_KEYS})");
        Ok(c.query_one(&sql, &[&schema, &experiment, &evaluation])?
            .get(0))
    })?;
    if taken {
        return Ok(RunLock::new(HeldLock(db)));
    }
    let holder = holder(&db, &schema, experiment, evaluation).unwrap_or_default();
    Err(LockError::Busy {
        experiment: experiment.to_owned(),
        evaluation: evaluation.to_owned(),
        holder,
    }
    .into())
}

/// The connection that holds a run lock. Dropping it unlocks first: the
/// server frees a closed session's locks only once its backend has noticed
/// the close, and until then a next run would be refused.
struct HeldLock(Db);

impl Drop for HeldLock {
    fn drop(&mut self) {
        // A failure (or a connection already gone) leaves the lock to the
        // server, which frees it with the session.
        if !self.0.is_closed() {
            let _ = self
                .0
                .with(|c| c.execute("SELECT pg_advisory_unlock_all()", &[]));
        }
    }
}

/// Who holds the lock, as the server knows it: ` (pid 12 on 10.0.0.3, since ...)`.
fn holder(db: &Db, schema: &str, experiment: &str, evaluation: &str) -> Result<String, StoreError> {
    db.with(|c| {
        let sql = format!(
            "SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'),
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND (l.classid, l.objid) = (SELECT k1::oid, k2::oid FROM (SELECT {LOCK_KEYS}) AS k(k1, k2))"
        );
        let row = c.query_opt(&sql, &[&schema, &experiment, &evaluation])?;
        Ok(row.map_or_else(String::new, |r| {
            let (pid, host, since): (i32, String, String) = (r.get(0), r.get(1), r.get(2));
            format!(" (server process {pid}, client {host}, since {since})")
        }))
    })
}

impl Recorder for PgStore {
    fn is_running(&self, experiment: &str, evaluation: &str) -> bool {
        let schema = self.db.schema.clone();
        self.db
            .with(|c| {
                let sql = format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks l
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                       AND (l.classid, l.objid) = (SELECT k1::oid, k2::oid FROM (SELECT {LOCK_KEYS}) AS k(k1, k2)))"
                );
                Ok(c.query_one(&sql, &[&schema, &experiment, &evaluation])?.get(0))
            })
            .unwrap_or(false)
    }

    fn find_evaluation(
        &self,
        experiment: &str,
        name: &str,
    ) -> Result<Option<StoredEvaluation>, StoreError> {
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT e.id, e.spec_hash, e.identity, e.status, e.repeats FROM evaluations e
                 JOIN experiments x ON x.id = e.experiment_id WHERE x.name = $1 AND e.name = $2",
                &[&experiment, &name],
            )
        })?;
        row.map(|r| {
            let status: String = r.get(3);
            Ok(StoredEvaluation {
                id: r.get(0),
                spec_hash: r.get(1),
                identity: r.get(2),
                status: status
                    .parse()
                    .map_err(|e| StoreError::Backend(Box::new(e)))?,
                repeats: r.get::<_, i64>(4).clamp(1, i64::from(u32::MAX)) as u32,
            })
        })
        .transpose()
    }

    fn start_evaluation(
        &mut self,
        experiment: &str,
        meta: &EvaluationMeta,
        now: &str,
    ) -> Result<StartedEvaluation, StoreError> {
        let evaluators = serde_json::to_string(meta.evaluators).unwrap_or_else(|_| "[]".into());
        let fail_under = serde_json::to_string(meta.fail_under).ok();
        let (max_concurrency, total) = (meta.max_concurrency as i64, meta.total as i64);
        let repeats = i64::from(meta.repeats);
        let (id, run, wall) = self.db.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO experiments (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&experiment, &now],
            )?;
            let experiment_id: i64 = tx
                .query_one("SELECT id FROM experiments WHERE name = $1", &[&experiment])?
                .get(0);
            tx.execute(
                "INSERT INTO evaluations AS e (experiment_id, name, spec_path, spec_text, spec_hash, identity,
                     provider, model, evaluators, strategy, max_concurrency, total, started_at, status,
                     cluster, fail_under, repeats)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'running', $14, $15, $16)
                 ON CONFLICT (experiment_id, name) DO UPDATE SET
                     spec_path = excluded.spec_path, spec_text = excluded.spec_text,
                     strategy = excluded.strategy, cluster = excluded.cluster,
                     fail_under = excluded.fail_under, repeats = excluded.repeats,
                     max_concurrency = excluded.max_concurrency,
                     total = greatest(e.total, excluded.total), status = 'running'",
                &[
                    &experiment_id,
                    &meta.name,
                    &meta.spec_path,
                    &meta.spec_text,
                    &meta.spec_hash,
                    &meta.identity,
                    &meta.provider,
                    &meta.model,
                    &evaluators,
                    &meta.strategy,
                    &max_concurrency,
                    &total,
                    &now,
                    &meta.cluster,
                    &fail_under,
                    &repeats,
                ],
            )?;
            let row = tx.query_one(
                "UPDATE evaluations SET runs = runs + 1 WHERE experiment_id = $1 AND name = $2
                 RETURNING id, runs",
                &[&experiment_id, &meta.name],
            )?;
            let (id, run): (i64, i64) = (row.get(0), row.get(1));
            tx.execute(
                "INSERT INTO evaluation_totals (evaluation_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&id],
            )?;
            let wall: i64 = tx
                .query_one(
                    "SELECT wall_us FROM evaluation_totals WHERE evaluation_id = $1",
                    &[&id],
                )?
                .get(0);
            tx.commit()?;
            Ok((id, run, wall))
        })?;
        Ok(StartedEvaluation {
            id,
            run,
            wall_us: wall.max(0) as u64,
        })
    }

    fn set_runs(&self, evaluation_id: i64, runs: u64) -> Result<(), StoreError> {
        let runs = runs.min(i64::MAX as u64) as i64;
        self.db.with(|c| {
            c.execute(
                "UPDATE evaluations SET runs = $2 WHERE id = $1",
                &[&evaluation_id, &runs],
            )
            .map(|_| ())
        })
    }

    fn sink(&self, config: WriterConfig) -> Result<Box<dyn RecordSink>, StoreError> {
        Ok(Box::new(writer::open(&self.target, config)?))
    }

    fn lookup(&self, evaluation_id: i64) -> Result<Box<dyn SampleLookup>, StoreError> {
        Ok(Box::new(lookup::open(&self.target, evaluation_id)?))
    }

    fn cache(&self) -> Result<std::sync::Arc<dyn crate::cache::CacheLookup>, StoreError> {
        Ok(std::sync::Arc::new(cache::open(&self.target)?))
    }

    fn counts(&self, evaluation_id: i64) -> Result<SampleCounts, StoreError> {
        let (recorded, errored): (i64, i64) = self.db.with(|c| {
            let r = c.query_one(
                "SELECT coalesce(max(recorded), 0), coalesce(max(errored), 0)
                 FROM evaluation_totals WHERE evaluation_id = $1",
                &[&evaluation_id],
            )?;
            Ok((r.get(0), r.get(1)))
        })?;
        Ok(SampleCounts {
            recorded: recorded.max(0) as u64,
            errored: errored.max(0) as u64,
        })
    }

    fn record_wall(&self, evaluation_id: i64, wall_us: u64) -> Result<(), StoreError> {
        writer::update_wall(&self.db, evaluation_id, wall_us)
    }

    fn record_limits(
        &mut self,
        evaluation_id: i64,
        run: i64,
        history: &[(Duration, usize)],
    ) -> Result<(), StoreError> {
        self.db.with(|c| {
            let mut tx = c.transaction()?;
            let insert = tx.prepare(
                "INSERT INTO limits (evaluation_id, run, t_us, value) VALUES ($1, $2, $3, $4)",
            )?;
            for (t, value) in history {
                let (t, value) = (t.as_micros() as i64, *value as i64);
                tx.execute(&insert, &[&evaluation_id, &run, &t, &value])?;
            }
            tx.commit()
        })
    }

    fn record_run(&self, evaluation_id: i64, run: i64, t: &RunTotals) -> Result<(), StoreError> {
        let us = |d: Duration| d.as_micros().min(i64::MAX as u128) as i64;
        let n = |x: u64| x.min(i64::MAX as u64) as i64;
        let l = &t.limiter;
        let values = [
            us(t.wall),
            n(l.samples),
            n(l.attempts),
            n(l.throttled),
            us(l.held),
            us(l.at_server),
            us(l.blocked),
            n(l.unloaded),
            us(l.unloaded_sum),
        ];
        let endpoints = crate::store::EndpointRun::to_column(&t.endpoints);
        self.db.with(|c| {
            c.execute(
                "INSERT INTO runs (evaluation_id, run, strategy, wall_us, samples, attempts,
                     throttled, held_us, at_server_us, blocked_us, unloaded, unloaded_us, endpoints)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (evaluation_id, run) DO UPDATE SET
                     strategy = excluded.strategy, wall_us = excluded.wall_us,
                     samples = excluded.samples, attempts = excluded.attempts,
                     throttled = excluded.throttled, held_us = excluded.held_us,
                     at_server_us = excluded.at_server_us, blocked_us = excluded.blocked_us,
                     unloaded = excluded.unloaded, unloaded_us = excluded.unloaded_us,
                     endpoints = excluded.endpoints",
                &[
                    &evaluation_id,
                    &run,
                    &t.strategy,
                    &values[0],
                    &values[1],
                    &values[2],
                    &values[3],
                    &values[4],
                    &values[5],
                    &values[6],
                    &values[7],
                    &values[8],
                    &endpoints,
                ],
            )
            .map(|_| ())
        })
    }

    fn live_fleet(
        &self,
        evaluation_id: i64,
    ) -> Result<Option<crate::store::fleet::LiveFleet>, StoreError> {
        fleet::live(&self.db, evaluation_id)
    }

    fn fleet_samples(&self, evaluation_id: i64) -> Result<Vec<(String, u64)>, StoreError> {
        fleet::queued(&self.db, evaluation_id)
    }

    fn join_fleet(
        &self,
        r: crate::store::fleet::JoinRequest<'_>,
    ) -> Result<Option<crate::store::fleet::Member>, StoreError> {
        let (fleet, joined) = fleet::join(
            &self.target,
            r.evaluation_id,
            r.run,
            r.spec_hash,
            &crate::store::fleet::WorkerInfo::this_process(r.lease),
            r.print,
            r.samples,
        )?;
        Ok(Some(crate::store::fleet::Member {
            fleet: Box::new(fleet),
            joined,
        }))
    }

    fn finish_evaluation(
        &self,
        id: i64,
        status: EvaluationStatus,
        now: &str,
    ) -> Result<(), StoreError> {
        self.db.with(|c| {
            c.execute(
                "UPDATE evaluations SET status = $2, ended_at = $3 WHERE id = $1",
                &[&id, &status.as_str(), &now],
            )
            .map(|_| ())
        })
    }
}

impl Admin for PgStore {
    fn delete_experiment(&self, name: &str) -> Result<u64, StoreError> {
        let samples: Option<i64> = self.db.with(|c| {
            let mut tx = c.transaction()?;
            let Some(id) = tx
                .query_opt("SELECT id FROM experiments WHERE name = $1", &[&name])?
                .map(|r| r.get::<_, i64>(0))
            else {
                return Ok(None);
            };
            let samples: i64 = tx
                .query_one(
                    "SELECT count(*) FROM samples WHERE evaluation_id IN
                     (SELECT id FROM evaluations WHERE experiment_id = $1)",
                    &[&id],
                )?
                .get(0);
            tx.execute("DELETE FROM experiments WHERE id = $1", &[&id])?;
            tx.commit()?;
            Ok(Some(samples))
        })?;
        samples
            .map(|n| n.max(0) as u64)
            .ok_or_else(|| StoreError::UnknownExperiment(name.to_owned()))
    }

    fn rename_experiment(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let changed = self.db.with(|c| {
            match c.execute(
                "UPDATE experiments SET name = $2 WHERE name = $1",
                &[&from, &to],
            ) {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
                other => other.map(Some),
            }
        })?;
        match changed {
            None => Err(StoreError::ExperimentExists(to.to_owned())),
            Some(0) => Err(StoreError::UnknownExperiment(from.to_owned())),
            Some(_) => Ok(()),
        }
    }

    fn cache_stats(&self) -> Result<crate::cache::CacheStats, StoreError> {
        cache::stats(&self.db)
    }

    fn cache_clear(
        &self,
        older_than: Option<Duration>,
        model: Option<&str>,
    ) -> Result<u64, StoreError> {
        cache::clear(&self.db, older_than, model)
    }

    fn cache_explain_reads(
        &self,
        experiment: &str,
        sample: &str,
    ) -> Result<Vec<crate::cache::explain::SampleCache>, StoreError> {
        cache::explain_reads(&self.db, experiment, sample)
    }
}
