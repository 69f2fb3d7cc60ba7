//! Workers sharing an evaluation on PostgreSQL (see [`crate::store::fleet`]):
//! the queue, the leases, the heartbeat and the shared limits, each a
//! statement or two. Times are the server's (`clock_timestamp()`) and come
//! back as durations from now, so workers on machines whose clocks disagree
//! still agree on when a lease ends or a slot opens.

use std::time::Duration;

use postgres::{Client, Statement};

use super::db::Target;
use super::Db;
use crate::concurrency::share::{Peer, Report};
use crate::store::fleet::{
    Beat, Claim, ClaimedSample, DatasetPrint, Fleet, Joined, LiveFleet, QueuedSample, Samples,
    Unreadable, WorkerInfo,
};
use crate::store::read::WorkerRow;
use crate::store::StoreError;

/// The least time a transaction may sit open before the server ends it: a
/// healthy worker sends its statements back to back, but a busy machine
/// may pause a thread for a while.
const STALLED: Duration = Duration::from_secs(10);

/// Samples inserted into the queue per statement while loading it.
const LOAD_BATCH: usize = 1000;

/// A worker is alive while its last heartbeat is younger than its lease and
/// the server still has its connection: a process that dies (kill -9 too)
/// loses its connection at once, one cut off from the network its lease.
const ALIVE: &str =
    "state = 'running' AND heartbeat_at > clock_timestamp() - lease_us * interval '1 microsecond'
     AND backend_pid IN (SELECT pid FROM pg_stat_activity)";

/// Marks the workers of `$1` that are no longer alive as lost, and puts
/// the samples they held back in the queue. Rows a lost worker still has
/// locked (it stopped in the middle of a commit) are skipped, not waited
/// for: a later reap marks it, and claims take its samples once their
/// leases run out.
const REAP: &str = "WITH dead AS (
         SELECT run FROM workers
         WHERE evaluation_id = $1 AND state = 'running' AND NOT (ALIVE)
         FOR UPDATE SKIP LOCKED),
     lost AS (
         UPDATE workers SET state = 'lost'
         WHERE evaluation_id = $1 AND run IN (SELECT run FROM dead)
         RETURNING run),
     held AS (
         SELECT sample_key FROM queue
         WHERE evaluation_id = $1 AND NOT done AND worker IN (SELECT run FROM lost)
         FOR UPDATE SKIP LOCKED)
     UPDATE queue SET worker = NULL, lease_until = NULL
     WHERE evaluation_id = $1 AND sample_key IN (SELECT sample_key FROM held)";

fn reap_sql() -> String {
    REAP.replace("ALIVE", ALIVE)
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

/// Makes the server end a transaction this connection leaves open longer
/// than `lease`, and at least [`STALLED`] (its worker stopped or was cut off
/// in the middle of one): its row locks would otherwise hold every other
/// worker up until the server noticed the connection was gone, which can
/// take hours.
pub fn end_stalled_transactions(db: &Db, lease: std::time::Duration) -> Result<(), StoreError> {
    let ms = lease.max(STALLED).as_millis().min(i32::MAX as u128);
    db.with(|c| c.batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}")))
}

/// The fleet at work on evaluation `evaluation_id`, if a worker is alive.
pub fn live(db: &Db, evaluation_id: i64) -> Result<Option<LiveFleet>, StoreError> {
    db.with(|c| {
        let workers: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM workers WHERE evaluation_id = $1 AND {ALIVE}"),
                &[&evaluation_id],
            )?
            .get(0);
        if workers == 0 {
            return Ok(None);
        }
        let row = c.query_opt(
            "SELECT spec_hash, rows, samples, digest FROM fleets WHERE evaluation_id = $1",
            &[&evaluation_id],
        )?;
        Ok(row.map(|r| LiveFleet {
            spec_hash: r.get(0),
            print: DatasetPrint {
                rows: r.get::<_, i64>(1).max(0) as u64,
                samples: r.get::<_, i64>(2).max(0) as u64,
                digest: r.get::<_, i64>(3) as u64,
            },
            workers: workers as u64,
        }))
    })
}

/// The fleet's samples in order, as (key, row hash): to name where a
/// worker's dataset differs.
pub fn queued(db: &Db, evaluation_id: i64) -> Result<Vec<(String, u64)>, StoreError> {
    db.with(|c| {
        let rows = c.query(
            "SELECT sample_key, row_hash FROM queue WHERE evaluation_id = $1 ORDER BY row_index, repeat",
            &[&evaluation_id],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    })
}

/// Joins the fleet of `evaluation_id` as run `run`: when no worker is alive,
/// loads `samples` into a fresh queue (done where the store already has a
/// finished record) and starts the fleet. Under a transaction-scoped
/// advisory lock, so two workers starting at once agree on who is first.
pub fn join(
    target: &Target,
    evaluation_id: i64,
    run: i64,
    spec_hash: &str,
    worker: &WorkerInfo,
    print: DatasetPrint,
    samples: Option<&mut Samples<'_>>,
) -> Result<(PgFleet, Joined), StoreError> {
    let db = Db::connect(target)?;
    end_stalled_transactions(&db, worker.lease)?;
    let schema = db.schema.clone();
    let lease = micros(worker.lease);
    let joined = db.with(|c| {
        let mut tx = c.transaction()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext('fleet:' || $2::bigint))",
            &[&schema, &evaluation_id],
        )?;
        let alive: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM workers WHERE evaluation_id = $1 AND {ALIVE}"),
                &[&evaluation_id],
            )?
            .get(0);
        tx.execute(&reap_sql(), &[&evaluation_id])?;
        let samples = match (alive, samples) {
            (0, None) => return Ok(Joined::NoFleet),
            (_, samples) => samples,
        };
        let joined = if let (0, Some(samples)) = (alive, samples) {
            tx.execute("DELETE FROM queue WHERE evaluation_id = $1", &[&evaluation_id])?;
            tx.execute(
                "DELETE FROM fleet_limits WHERE evaluation_id = $1",
                &[&evaluation_id],
            )?;
            // Dropping the transaction undoes the part loaded.
            if load(&mut tx, evaluation_id, samples)?.is_err() {
                return Ok(Joined::NoFleet);
            }
            // The queue was filled in this transaction, so its statistics
            // may still say it is empty: a nested loop over it then takes
            // seconds (10 s at 4000 samples, holding every other worker
            // up). Numbering it is one hash join.
            tx.batch_execute("SET LOCAL enable_nestloop = off")?;
            let queued = tx.execute(
                "UPDATE queue q SET seq = p.n FROM (
                     SELECT sample_key, row_number() OVER (ORDER BY row_index, repeat) - 1 AS n
                     FROM queue WHERE evaluation_id = $1 AND NOT done) AS p
                 WHERE q.evaluation_id = $1 AND q.sample_key = p.sample_key",
                &[&evaluation_id],
            )? as i64;
            tx.batch_execute("SET LOCAL enable_nestloop = on")?;
            tx.execute(
                "INSERT INTO fleets AS f (evaluation_id, started_at, base_wall_us, rows, samples, digest,
                     spec_hash, queued, dispensed)
                 VALUES ($1, clock_timestamp(),
                     coalesce((SELECT wall_us FROM evaluation_totals WHERE evaluation_id = $1), 0),
                     $2, $3, $4, $5, $6, 0)
                 ON CONFLICT (evaluation_id) DO UPDATE SET started_at = excluded.started_at,
                     base_wall_us = excluded.base_wall_us, rows = excluded.rows,
                     samples = excluded.samples, digest = excluded.digest, spec_hash = excluded.spec_hash,
                     queued = excluded.queued, dispensed = 0",
                &[
                    &evaluation_id,
                    &(print.rows as i64),
                    &(print.samples as i64),
                    &(print.digest as i64),
                    &spec_hash,
                    &queued,
                ],
            )?;
            Joined::First {
                pending: pending(&mut tx, evaluation_id)?,
            }
        } else {
            let r = tx.query_one(
                "SELECT extract(epoch FROM clock_timestamp() - started_at)::float8, base_wall_us
                 FROM fleets WHERE evaluation_id = $1",
                &[&evaluation_id],
            )?;
            Joined::Beside {
                started_ago: seconds(r.get(0)),
                base_wall_us: r.get::<_, i64>(1).max(0) as u64,
                pending: pending(&mut tx, evaluation_id)?,
                workers: alive as u64,
            }
        };
        tx.execute(
            "INSERT INTO workers AS w (evaluation_id, run, host, pid, lease_us, backend_pid, started_at,
                 heartbeat_at, state)
             VALUES ($1, $2, $3, $4, $5, pg_backend_pid(), clock_timestamp(), clock_timestamp(), 'running')
             ON CONFLICT (evaluation_id, run) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                 lease_us = excluded.lease_us, backend_pid = excluded.backend_pid,
                 started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at, samples = 0, in_flight = 0, state = 'running'",
            &[
                &evaluation_id,
                &run,
                &worker.host,
                &i64::from(worker.pid),
                &lease,
            ],
        )?;
        tx.commit()?;
        Ok(joined)
    })?;
    let fleet = PgFleet::open(target.clone(), db, evaluation_id, run, lease)?;
    Ok((fleet, joined))
}

fn pending(tx: &mut postgres::Transaction<'_>, evaluation_id: i64) -> Result<u64, postgres::Error> {
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM queue WHERE evaluation_id = $1 AND NOT done",
            &[&evaluation_id],
        )?
        .get(0);
    Ok(n.max(0) as u64)
}

/// Inserts `samples` into the queue in batches; a sample is done when the
/// store holds a finished record of it (no error, nothing left to score).
fn load(
    tx: &mut postgres::Transaction<'_>,
    evaluation_id: i64,
    samples: &mut Samples<'_>,
) -> Result<Result<(), Unreadable>, postgres::Error> {
    let insert = tx.prepare(
        "INSERT INTO queue (evaluation_id, sample_key, row_index, repeat, row_hash, variables, done)
         SELECT $1::bigint, t.key, t.idx, t.rep, t.hash, t.vars,
             EXISTS (SELECT 1 FROM samples s WHERE s.evaluation_id = $1::bigint
                 AND s.sample_key = t.key AND s.error_kind IS NULL)
         FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
             AS t(key, idx, rep, hash, vars)
         ON CONFLICT (evaluation_id, sample_key) DO NOTHING",
    )?;
    let mut batch: Vec<QueuedSample> = Vec::with_capacity(LOAD_BATCH);
    loop {
        batch.clear();
        for sample in (&mut *samples).take(LOAD_BATCH) {
            match sample {
                Ok(sample) => batch.push(sample),
                Err(unreadable) => return Ok(Err(unreadable)),
            }
        }
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let keys: Vec<&str> = batch.iter().map(|s| s.key.as_str()).collect();
        let index: Vec<i64> = batch.iter().map(|s| s.index as i64).collect();
        let repeat: Vec<i64> = batch.iter().map(|s| i64::from(s.repeat)).collect();
        let hash: Vec<i64> = batch.iter().map(|s| s.row_hash as i64).collect();
        let vars: Vec<&str> = batch.iter().map(|s| s.variables.as_str()).collect();
        tx.execute(
            &insert,
            &[&evaluation_id, &keys, &index, &repeat, &hash, &vars],
        )?;
    }
}

/// The workers of `evaluation_id`'s latest fleet, while one is alive or
/// when it had several.
pub fn workers(db: &Db, evaluation_id: i64) -> Result<Vec<WorkerRow>, StoreError> {
    let (rows, alive) = db.with(|c| {
        let sql = format!(
            r#"SELECT w.run, w.host, w.pid, w.state,
                   to_char(w.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   extract(epoch FROM w.heartbeat_at - w.started_at)::float8,
                   extract(epoch FROM clock_timestamp() - w.heartbeat_at)::float8,
                   w.lease_us, w.samples, w.in_flight, {ALIVE}
               FROM workers w JOIN fleets f ON f.evaluation_id = w.evaluation_id
               WHERE w.evaluation_id = $1 AND w.started_at >= f.started_at
               ORDER BY w.run"#
        );
        let mut alive = false;
        let rows = c
            .query(&sql, &[&evaluation_id])?
            .iter()
            .map(|r| {
                alive |= r.try_get::<_, bool>(10)?;
                let n = |i: usize| -> Result<u64, postgres::Error> {
                    Ok(r.try_get::<_, i64>(i)?.max(0) as u64)
                };
                Ok(WorkerRow {
                    run: n(0)?,
                    host: r.try_get(1)?,
                    pid: n(2)?,
                    state: r.try_get(3)?,
                    started_at: r.try_get(4)?,
                    active_seconds: r.try_get::<_, f64>(5)?.max(0.0),
                    heartbeat_seconds_ago: r.try_get::<_, f64>(6)?.max(0.0),
                    lease_seconds: n(7)? as f64 / 1e6,
                    samples: n(8)?,
                    in_flight: n(9)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()?;
        Ok((rows, alive))
    })?;
    Ok(match alive || rows.len() > 1 {
        true => rows,
        false => Vec::new(),
    })
}

/// One worker's connection to its fleet.
pub struct PgFleet {
    target: Target,
    db: Db,
    evaluation_id: i64,
    run: i64,
    lease_us: i64,
    claim: Statement,
    take_over: Statement,
    extend: Statement,
    share: Statement,
}

impl PgFleet {
    fn open(
        target: Target,
        db: Db,
        evaluation_id: i64,
        run: i64,
        lease_us: i64,
    ) -> Result<PgFleet, StoreError> {
        let (claim, take_over, extend, share) = db.with(|c: &mut Client| {
            Ok((
                // The next range of the samples pending at the start.
                c.prepare(
                    "WITH r AS (
                         UPDATE fleets f SET dispensed = least(f.dispensed + $3, f.queued)
                         FROM (SELECT dispensed AS lo FROM fleets
                               WHERE evaluation_id = $1 AND dispensed < queued FOR UPDATE) AS o
                         WHERE f.evaluation_id = $1
                         RETURNING o.lo, f.dispensed AS hi)
                     UPDATE queue q SET worker = $2,
                         lease_until = clock_timestamp() + $4::bigint * interval '1 microsecond'
                     FROM r WHERE q.evaluation_id = $1 AND q.seq >= r.lo AND q.seq < r.hi AND NOT q.done
                     RETURNING q.sample_key, q.row_index, q.repeat, q.row_hash, q.variables,
                         EXISTS (SELECT 1 FROM samples s
                             WHERE s.evaluation_id = $1 AND s.sample_key = q.sample_key),
                         FALSE",
                )?,
                // Once every range is out: samples a worker gave back or
                // let its lease run out on, skipping rows another worker is
                // claiming right now, so claims never wait on each other. A
                // worker's own samples are in its hands, even when a late
                // heartbeat let their lease run out: it never claims them twice.
                c.prepare(
                    "WITH picked AS (
                         SELECT sample_key, worker FROM queue
                         WHERE evaluation_id = $1 AND NOT done AND worker IS DISTINCT FROM $2
                             AND (lease_until IS NULL OR lease_until < clock_timestamp())
                         ORDER BY row_index, repeat
                         LIMIT $3 FOR UPDATE SKIP LOCKED)
                     UPDATE queue q SET worker = $2,
                         lease_until = clock_timestamp() + $4::bigint * interval '1 microsecond'
                     FROM picked WHERE q.evaluation_id = $1 AND q.sample_key = picked.sample_key
                     RETURNING q.sample_key, q.row_index, q.repeat, q.row_hash, q.variables,
                         EXISTS (SELECT 1 FROM samples s
                             WHERE s.evaluation_id = $1 AND s.sample_key = q.sample_key),
                         picked.worker IS NOT NULL AND picked.worker <> $2",
                )?,
                c.prepare(
                    "UPDATE queue SET lease_until = clock_timestamp() + $3::bigint * interval '1 microsecond'
                     WHERE evaluation_id = $1 AND worker = $2 AND NOT done",
                )?,
                // This worker's part of a shared window in, the other live
                // workers' out (the write runs once, whether read or not).
                c.prepare(&format!(
                    "WITH mine AS (
                         INSERT INTO fleet_windows AS f
                             (evaluation_id, run, endpoint, in_flight, delivered, tokens, wants, steers,
                              fleet_window)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (evaluation_id, run, endpoint) DO UPDATE
                             SET in_flight = excluded.in_flight, delivered = excluded.delivered,
                                 tokens = excluded.tokens, wants = excluded.wants,
                                 steers = excluded.steers, fleet_window = excluded.fleet_window
                         RETURNING 1)
                     SELECT f.run, f.in_flight, f.delivered, f.tokens, f.wants, f.steers,
                         f.fleet_window
                     FROM fleet_windows f JOIN workers w
                         ON w.evaluation_id = f.evaluation_id AND w.run = f.run
                     WHERE f.evaluation_id = $1 AND f.endpoint = $3 AND f.run <> $2
                         AND {ALIVE}
                     ORDER BY f.run"
                ))?,
            ))
        })?;
        Ok(PgFleet {
            target,
            db,
            evaluation_id,
            run,
            lease_us,
            claim,
            take_over,
            extend,
            share,
        })
    }
}

impl Fleet for PgFleet {
    fn claim(&mut self, n: usize) -> Result<Claim, StoreError> {
        let (id, run, lease) = (self.evaluation_id, self.run, self.lease_us);
        let limit = n.max(1) as i64;
        let (claim, take_over) = (&self.claim, &self.take_over);
        self.db.with(|c| {
            let mut rows = Vec::new();
            if n > 0 {
                rows = c.query(claim, &[&id, &run, &limit, &lease])?;
                if rows.is_empty() {
                    rows = c.query(take_over, &[&id, &run, &limit, &lease])?;
                }
            }
            if !rows.is_empty() {
                let mut claimed: Vec<ClaimedSample> = rows
                    .iter()
                    .map(|r| ClaimedSample {
                        sample: QueuedSample {
                            key: r.get(0),
                            index: r.get::<_, i64>(1).max(0) as u64,
                            repeat: r.get::<_, i64>(2).clamp(0, i64::from(u32::MAX)) as u32,
                            row_hash: r.get::<_, i64>(3) as u64,
                            variables: r.get(4),
                        },
                        recorded: r.get(5),
                        taken_over: r.get(6),
                    })
                    .collect();
                claimed.sort_by_key(|c| (c.sample.index, c.sample.repeat));
                return Ok(Claim::Samples(claimed));
            }
            // Samples this worker holds are its own to finish: it waits
            // only for those held by others, whose leases may run out.
            let r = c.query_one(
                "SELECT count(*),
                     count(*) FILTER (WHERE worker IS NULL OR lease_until < clock_timestamp()),
                     extract(epoch FROM min(lease_until) - clock_timestamp())::float8
                 FROM queue WHERE evaluation_id = $1 AND NOT done AND worker IS DISTINCT FROM $2",
                &[&id, &run],
            )?;
            let (left, free): (i64, i64) = (r.get(0), r.get(1));
            Ok(match left {
                0 => Claim::Done,
                _ if n == 0 && free > 0 => Claim::Samples(Vec::new()),
                _ => Claim::Wait(seconds(r.get::<_, Option<f64>>(2).unwrap_or(0.0))),
            })
        })
    }

    fn beat(&mut self, beat: Beat) -> Result<(), StoreError> {
        let (id, run, lease) = (self.evaluation_id, self.run, self.lease_us);
        let (samples, in_flight) = (beat.samples as i64, beat.in_flight as i64);
        let extend = &self.extend;
        self.db.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE workers SET heartbeat_at = clock_timestamp(), samples = $3, in_flight = $4
                 WHERE evaluation_id = $1 AND run = $2",
                &[&id, &run, &samples, &in_flight],
            )?;
            tx.execute(extend, &[&id, &run, &lease])?;
            tx.commit()?;
            // Apart, so that nothing the dead hold back delays the beat.
            c.execute(&reap_sql(), &[&id]).map(drop)
        })
    }

    fn lease_rate(
        &mut self,
        endpoint: &str,
        limit: &str,
        units: u64,
        per_unit: Duration,
    ) -> Result<Duration, StoreError> {
        let id = self.evaluation_id;
        let span = micros(per_unit.saturating_mul(units.min(u32::MAX as u64) as u32));
        let starts: f64 = self.db.with(|c| {
            Ok(c.query_one(
                "INSERT INTO fleet_limits AS l (evaluation_id, endpoint, kind, until)
                 VALUES ($1, $2, $3, clock_timestamp() + $4::bigint * interval '1 microsecond')
                 ON CONFLICT (evaluation_id, endpoint, kind) DO UPDATE
                     SET until = greatest(l.until, clock_timestamp()) + $4::bigint * interval '1 microsecond'
                 RETURNING extract(epoch FROM until - clock_timestamp())::float8 - $4::bigint / 1e6",
                &[&id, &endpoint, &limit, &span],
            )?
            .get(0))
        })?;
        Ok(seconds(starts))
    }

    fn share_pause(&mut self, endpoint: &str, remaining: Duration) -> Result<Duration, StoreError> {
        let id = self.evaluation_id;
        // Most of the time nobody is paused: then only read.
        if remaining.is_zero() {
            let left: Option<f64> = self.db.with(|c| {
                Ok(c.query_opt(
                    "SELECT extract(epoch FROM until - clock_timestamp())::float8 FROM fleet_limits
                     WHERE evaluation_id = $1 AND endpoint = $2 AND kind = 'pause'",
                    &[&id, &endpoint],
                )?
                .map(|r| r.get(0)))
            })?;
            return Ok(seconds(left.unwrap_or(0.0)));
        }
        let remaining = micros(remaining);
        let left: f64 = self.db.with(|c| {
            Ok(c.query_one(
                "INSERT INTO fleet_limits AS l (evaluation_id, endpoint, kind, until)
                 VALUES ($1, $2, 'pause', clock_timestamp() + $3::bigint * interval '1 microsecond')
                 ON CONFLICT (evaluation_id, endpoint, kind) DO UPDATE
                     SET until = greatest(l.until, excluded.until)
                 RETURNING extract(epoch FROM until - clock_timestamp())::float8",
                &[&id, &endpoint, &remaining],
            )?
            .get(0))
        })?;
        Ok(seconds(left))
    }

    fn share_window(&mut self, endpoint: &str, mine: &Report) -> Result<Vec<Peer>, StoreError> {
        let (id, run) = (self.evaluation_id, self.run);
        let n = |v: u64| v.min(i64::MAX as u64) as i64;
        let (in_flight, delivered, tokens) = (n(mine.in_flight), n(mine.delivered), n(mine.tokens));
        let window = mine.window.map(n);
        let share = &self.share;
        self.db.with(|c| {
            let rows = c.query(
                share,
                &[
                    &id,
                    &run,
                    &endpoint,
                    &in_flight,
                    &delivered,
                    &tokens,
                    &mine.wants,
                    &mine.steers,
                    &window,
                ],
            )?;
            Ok(rows
                .iter()
                .map(|r| Peer {
                    run: r.get(0),
                    report: Report {
                        in_flight: r.get::<_, i64>(1).max(0) as u64,
                        delivered: r.get::<_, i64>(2).max(0) as u64,
                        tokens: r.get::<_, i64>(3).max(0) as u64,
                        wants: r.get(4),
                        steers: r.get(5),
                        window: r.get::<_, Option<i64>>(6).map(|w| w.max(0) as u64),
                    },
                })
                .collect())
        })
    }

    fn run(&self) -> i64 {
        self.run
    }

    fn leave(&mut self, state: &str) -> Result<(), StoreError> {
        let (id, run) = (self.evaluation_id, self.run);
        self.db.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE workers SET state = $3, heartbeat_at = clock_timestamp()
                 WHERE evaluation_id = $1 AND run = $2",
                &[&id, &run, &state],
            )?;
            tx.execute(
                "UPDATE queue SET worker = NULL, lease_until = NULL
                 WHERE evaluation_id = $1 AND worker = $2 AND NOT done",
                &[&id, &run],
            )?;
            tx.commit()
        })
    }

    fn another(&self) -> Result<Box<dyn Fleet>, StoreError> {
        let db = Db::connect(&self.target)?;
        let lease = std::time::Duration::from_micros(self.lease_us.max(0) as u64);
        end_stalled_transactions(&db, lease)?;
        Ok(Box::new(PgFleet::open(
            self.target.clone(),
            db,
            self.evaluation_id,
            self.run,
            self.lease_us,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cache::CacheUse;
    use crate::error_kind::ErrorKind;
    use crate::store::postgres::writer::{self, testing};
    use crate::store::{RecordSink, SampleRecord, WriterConfig};

    fn queued(n: u64) -> Vec<QueuedSample> {
        (0..n)
            .map(|i| QueuedSample {
                key: format!("s{i}"),
                index: i,
                repeat: 0,
                row_hash: i,
                variables: "{}".into(),
            })
            .collect()
    }

    fn worker(lease: Duration) -> WorkerInfo {
        WorkerInfo {
            host: "test".into(),
            pid: 1,
            lease,
        }
    }

    fn keys(claim: Claim) -> Vec<String> {
        match claim {
            Claim::Samples(s) => s.into_iter().map(|c| c.sample.key).collect(),
            other => panic!("no samples: {other:?}"),
        }
    }

    fn sink(schema: &testing::TestSchema, id: i64, run: i64) -> writer::PgSink {
        let config = WriterConfig {
            evaluation_id: id,
            run,
            resuming: false,
            fleet: Some(Duration::from_secs(60)),
            base_wall_us: 0,
            started: Instant::now(),
        };
        writer::open(&schema.target, config).unwrap()
    }

    fn record(key: &str, output: &str, ungraded: bool) -> SampleRecord {
        SampleRecord {
            output: Some(output.into()),
            error_kind: ungraded.then_some(ErrorKind::Ungraded),
            ..testing::record(key, 0, CacheUse::Off)
        }
    }

    /// Two workers: the first loads the queue and claims in ranges, the
    /// second joins beside it; a sample's first result is kept and a second
    /// dropped (a reply stored before grading gives way to the graded one);
    /// a lease that runs out lets the other worker take the sample over;
    /// leaving gives the rest back.
    #[test]
    fn claims_leases_and_one_result_per_sample() {
        let Some(_) = crate::store::postgres::tests::server("fleet_claims_and_leases") else {
            return;
        };
        let schema = testing::TestSchema::new("fleet");
        let (id, run) = testing::pg_start(&mut schema.client(), "x", "e");
        let print = DatasetPrint {
            rows: 6,
            samples: 6,
            digest: 1,
        };
        let long = worker(Duration::from_secs(60));
        let mut samples = queued(6).into_iter().map(Ok);
        let (mut a, joined) = join(
            &schema.target,
            id,
            run,
            "h",
            &long,
            print,
            Some(&mut samples),
        )
        .unwrap();
        assert!(matches!(joined, Joined::First { pending: 6 }), "{joined:?}");
        let live = live(&Db::connect(&schema.target).unwrap(), id).unwrap();
        assert_eq!(live.map(|l| (l.workers, l.print)), Some((1, print)));

        let mut none = std::iter::empty();
        let short = worker(Duration::from_millis(1));
        let (mut b, joined) = join(
            &schema.target,
            id,
            run + 1,
            "h",
            &short,
            print,
            Some(&mut none),
        )
        .unwrap();
        assert!(
            matches!(
                joined,
                Joined::Beside {
                    pending: 6,
                    workers: 1,
                    ..
                }
            ),
            "{joined:?}"
        );

        assert_eq!(keys(a.claim(2).unwrap()), ["s0", "s1"]);
        assert_eq!(keys(b.claim(2).unwrap()), ["s2", "s3"]);
        // s2 and s3 are b's for 1 ms: then a takes them over.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(keys(a.claim(2).unwrap()), ["s4", "s5"]);
        match a.claim(4).unwrap() {
            Claim::Samples(s) => {
                let k: Vec<_> = s
                    .iter()
                    .map(|c| (c.sample.key.as_str(), c.taken_over))
                    .collect();
                assert_eq!(k, [("s2", true), ("s3", true)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(a.claim(4).unwrap(), Claim::Done),
            "a holds the rest"
        );

        let (mut sa, mut sb) = (sink(&schema, id, run), sink(&schema, id, run + 1));
        sa.commit(&[record("s2", "from a", false)]).unwrap();
        sb.commit(&[record("s2", "from b", false)]).unwrap();
        sb.commit(&[record("s3", "b before grading", true)])
            .unwrap();
        sa.commit(&[record("s3", "from a", false)]).unwrap();
        sb.commit(&[record("s3", "b graded", false)]).unwrap();
        let rows: Vec<(String, Option<String>)> = schema
            .client()
            .query(
                "SELECT sample_key, output FROM samples ORDER BY sample_key",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let want = [("s2", "from a"), ("s3", "from a")];
        assert_eq!(
            rows,
            want.map(|(k, o)| (k.to_owned(), Some(o.to_owned()))),
            "one result per sample, the first"
        );

        // Leaving gives back what a worker held: the other can claim it.
        a.leave("interrupted").unwrap();
        assert_eq!(keys(b.claim(8).unwrap()), ["s0", "s1", "s4", "s5"]);
        let workers = workers(&Db::connect(&schema.target).unwrap(), id).unwrap();
        let states: Vec<_> = workers.iter().map(|w| w.state.as_str()).collect();
        assert_eq!(states, ["interrupted", "running"]);

        // With no worker alive, one without the dataset cannot start a
        // fleet, and changes nothing.
        b.leave("finished").unwrap();
        let (_, joined) = join(&schema.target, id, run + 2, "h", &long, print, None).unwrap();
        assert!(matches!(joined, Joined::NoFleet), "{joined:?}");
        let n = |sql: &str| -> i64 { schema.client().query_one(sql, &[]).unwrap().get(0) };
        assert_eq!(n("SELECT count(*) FROM workers"), 2);
        assert_eq!(n("SELECT count(*) FROM queue"), 6);
        // Nor one whose dataset cannot be read to its end: the queue is
        // loaded whole or not at all.
        let mut broken = queued(2)
            .into_iter()
            .map(Ok)
            .chain([Err(crate::store::fleet::Unreadable)]);
        let (_, joined) = join(
            &schema.target,
            id,
            run + 2,
            "h",
            &long,
            print,
            Some(&mut broken),
        )
        .unwrap();
        assert!(matches!(joined, Joined::NoFleet), "{joined:?}");
        assert_eq!(n("SELECT count(*) FROM queue"), 6);
        assert_eq!(n("SELECT count(*) FROM workers"), 2);
    }

    /// Slices of one rate limit leased by two workers follow each other:
    /// the limit's schedule is one, whoever leases.
    #[test]
    fn rate_slices_follow_each_other() {
        let Some(_) = crate::store::postgres::tests::server("fleet_rate_slices") else {
            return;
        };
        let schema = testing::TestSchema::new("fleet_rate");
        let (id, run) = testing::pg_start(&mut schema.client(), "x", "e");
        let long = worker(Duration::from_secs(60));
        let mut none = std::iter::empty();
        let (mut a, _) = join(
            &schema.target,
            id,
            run,
            "h",
            &long,
            DatasetPrint::default(),
            Some(&mut none),
        )
        .unwrap();
        let mut b = a.another().unwrap();
        let tenth = Duration::from_millis(100);
        let first = a.lease_rate("u m", "requests", 5, tenth).unwrap();
        let second = b.lease_rate("u m", "requests", 5, tenth).unwrap();
        let third = a.lease_rate("u m", "requests", 5, tenth).unwrap();
        assert!(first < Duration::from_millis(50), "{first:?}");
        let near = |d: Duration, want: u64| {
            let ms = d.as_millis() as i64;
            (ms - want as i64).abs() < 60
        };
        assert!(near(second, 500), "{second:?}");
        assert!(near(third, 1000), "{third:?}");
        // Another limit, or another endpoint, has its own schedule.
        assert!(a.lease_rate("u m", "tokens", 5, tenth).unwrap() < Duration::from_millis(50));
        assert!(a.lease_rate("v m", "requests", 5, tenth).unwrap() < Duration::from_millis(50));
        // A pause published by one is the other's.
        assert_eq!(
            a.share_pause("u m", Duration::ZERO).unwrap(),
            Duration::ZERO
        );
        b.share_pause("u m", Duration::from_secs(2)).unwrap();
        let left = a.share_pause("u m", Duration::ZERO).unwrap();
        assert!(left > Duration::from_millis(1800), "{left:?}");
    }
}
