//! Views from store rows: the builders of what [`super`] declares, and the
//! store reads behind one experiment's view. Percentiles come from an HDR
//! histogram.

use super::*;
use crate::store::read::EndpointSamples;
use crate::store::{Groups, Store, StoreError, SummaryReads};

/// The status of an experiment from its evaluations'.
pub fn experiment_status(evals: &[EvaluationRow]) -> ExperimentStatus {
    use EvaluationStatus as E;
    let pressing = [
        (E::Running, ExperimentStatus::Running),
        (E::Failed, ExperimentStatus::Failed),
        (E::Interrupted, ExperimentStatus::Interrupted),
        (
            E::CompletedWithErrors,
            ExperimentStatus::CompletedWithErrors,
        ),
    ];
    for (evaluation, experiment) in pressing {
        if evals.iter().any(|e| e.status == evaluation) {
            return experiment;
        }
    }
    if evals.iter().any(|e| e.recorded < e.total) {
        return ExperimentStatus::Partial;
    }
    ExperimentStatus::Completed
}

fn counts(e: &EvaluationRow) -> SampleCounts {
    SampleCounts {
        total: e.total,
        recorded: e.recorded,
        finished: e.recorded - e.errored,
        errored: e.errored,
        cached: e.cached,
    }
}

/// Replies alone at the server needed before their mean is shown as the
/// unloaded latency.
const MIN_UNLOADED: u64 = 3;

/// A run blocked (nothing at the server) for more than half its wall time
/// waited on a quota: its speed-up says nothing of concurrency.
fn mostly_blocked(blocked: f64, wall: f64) -> bool {
    blocked > 0.5 * wall
}

/// Builds an evaluation's view; `latencies` are successful latencies in µs,
/// ascending; `runs` its recorded runs (none for stores before schema 3, or a
/// run killed before it could write its row).
pub fn evaluation(
    e: &EvaluationRow,
    latencies: &[u64],
    runs: &[RunRow],
) -> Result<EvaluationView, UnknownStrategy> {
    let wall = e.wall_us as f64 / US;
    let sum = |f: fn(&RunRow) -> u64| runs.iter().map(f).sum::<u64>();
    // Figures from the runs' own rows are over the walls of those runs only.
    let runs_wall = sum(|r| r.wall_us) as f64 / US;
    let mean_over_runs = |us: u64| {
        (!runs.is_empty())
            .then(|| ratio(us as f64 / US, runs_wall))
            .flatten()
    };
    let unloaded = (sum(|r| r.unloaded) >= MIN_UNLOADED)
        .then(|| sum(|r| r.unloaded_us) as f64 / US / sum(|r| r.unloaded) as f64);
    // Replies from the cache took no time at the server: the figures are
    // over the samples sent.
    let finished = (e.recorded - e.errored).saturating_sub(e.cached);
    let blocked = sum(|r| r.blocked_us) as f64 / US;
    let (retries, throttled) = if runs.is_empty() {
        (e.retries, e.throttled)
    } else {
        (
            sum(|r| r.attempts - r.samples.min(r.attempts)),
            sum(|r| r.throttled),
        )
    };
    Ok(EvaluationView {
        name: e.name.clone(),
        spec: e.spec_path.clone(),
        provider: e.provider.clone(),
        model: e.model.clone(),
        overrides: crate::spec::recorded_overrides(&e.spec_text),
        strategy: e.strategy.parse()?,
        max_concurrency: e.max_concurrency,
        status: e.status,
        started_at: e.started_at.clone(),
        ended_at: e.ended_at.clone(),
        runs: e.runs,
        repeats: e.repeats,
        samples: counts(e),
        evaluators: e
            .evaluators
            .iter()
            .zip(&e.scores)
            .enumerate()
            .map(|(i, (name, s))| {
                EvaluatorView::new(name, s).with_bar(e.fail_under.get(i).copied().flatten())
            })
            .collect(),
        timing: Timing {
            wall_seconds: wall,
            throughput_per_second: Some(e.recorded.saturating_sub(e.cached))
                .filter(|sent| *sent > 0 || e.recorded == 0)
                .and_then(|sent| ratio(sent as f64, wall)),
            latency_seconds: percentiles(latencies),
            time_to_first_token_seconds: None,
            output_tokens_per_second: None,
            streamed_replies: 0,
            streamed_without_usage: 0,
            effective_concurrency: ratio(e.latency_sum_us as f64 / US, wall),
            mean_in_flight: mean_over_runs(sum(|r| r.held_us)),
            mean_at_server: mean_over_runs(sum(|r| r.at_server_us)),
            unloaded_latency_seconds: unloaded,
            speedup_over_sequential: unloaded
                .filter(|_| finished > 0 && !mostly_blocked(blocked, wall))
                .and_then(|u| ratio(finished as f64 * u, wall)),
            retries,
            throttled,
            wait_seconds: e.wait_us as f64 / US,
            blocked_seconds: blocked,
            concurrency_limit: None,
            runs: runs
                .iter()
                .map(|r| {
                    Ok(RunView {
                        run: r.run,
                        strategy: r.strategy.parse()?,
                        wall_seconds: r.wall_us as f64 / US,
                        samples: r.samples,
                        retries: r.attempts - r.samples.min(r.attempts),
                        throttled: r.throttled,
                        blocked_seconds: r.blocked_us as f64 / US,
                        mean_in_flight: ratio(r.held_us as f64, r.wall_us as f64),
                        limit: None,
                    })
                })
                .collect::<Result<_, UnknownStrategy>>()?,
        },
        endpoints: Vec::new(),
        workers: Vec::new(),
        tokens: e.tokens,
        error_kinds: None,
        errors: None,
        records: None,
    })
}

/// p50/p90/p99/max/mean of ascending microsecond latencies.
pub fn percentiles(sorted_us: &[u64]) -> Option<Latency> {
    let max = *sorted_us.last()?;
    // 3 significant digits: p99 of 1.000 s is exact to the millisecond.
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_max(max.max(2), 3).ok()?;
    for v in sorted_us {
        hist.record(*v).ok()?;
    }
    let at = |q: f64| hist.value_at_quantile(q).min(max) as f64 / US;
    Some(Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: max as f64 / US,
        mean: sorted_us.iter().sum::<u64>() as f64 / sorted_us.len() as f64 / US,
    })
}

/// Sparkline width in characters.
const SPARK_WIDTH: usize = 40;

/// The time-weighted min, median and max of limit `steps` (ascending) over a
/// run of `span` µs. `None` without steps.
pub fn limit_summary(steps: &[LimitStep], span: u64) -> Option<LimitSummary> {
    let first = steps.first()?;
    let span = span.max(steps.last()?.t_us).max(1);
    // How long each limit was in force.
    let mut weighted: Vec<(u64, u64)> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.limit,
                steps
                    .get(i + 1)
                    .map_or(span, |n| n.t_us)
                    .saturating_sub(s.t_us),
            )
        })
        .collect();
    weighted.sort_unstable();
    let total: u64 = weighted.iter().map(|w| w.1).sum();
    let mut acc = 0;
    let median = weighted.iter().find(|(_, w)| {
        acc += w;
        acc * 2 >= total
    });
    Some(LimitSummary {
        min: steps.iter().map(|s| s.limit).min()?,
        median: median.map_or(first.limit, |m| m.0),
        max: steps.iter().map(|s| s.limit).max()?,
    })
}

/// Summarises limit `steps` (ascending) over a run whose samples finished at
/// `ends` (µs, ascending). `None` when there is nothing to show.
pub fn limit_view(steps: &[LimitStep], ends: &[u64]) -> Option<LimitView> {
    let first = steps.first()?;
    let span = ends
        .last()
        .copied()
        .unwrap_or(0)
        .max(steps.last()?.t_us)
        .max(1);
    let summary = limit_summary(steps, span)?;
    let slice = span as f64 / SPARK_WIDTH as f64;
    let limit_at = |t: f64| {
        steps
            .iter()
            .take_while(|s| (s.t_us as f64) <= t)
            .last()
            .map_or(first.limit, |s| s.limit) as f64
    };
    let limits: Vec<f64> = (0..SPARK_WIDTH)
        .map(|i| limit_at((i as f64 + 0.5) * slice))
        .collect();
    let mut counts = vec![0f64; SPARK_WIDTH];
    for e in ends {
        counts[((*e as f64 / slice) as usize).min(SPARK_WIDTH - 1)] += 1.0;
    }
    Some(LimitView {
        min: summary.min,
        median: summary.median,
        max: summary.max,
        changes: steps.len() as u64 - 1,
        limit_sparkline: sparkline(&limits),
        throughput_sparkline: sparkline(&counts),
    })
}

/// Values as block characters, lowest to highest.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BLOCKS[0]
            } else {
                BLOCKS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// An experiment's view of `views`, its evaluations'.
pub fn experiment(x: &ExperimentRow, views: Vec<EvaluationView>) -> ExperimentView {
    ExperimentView {
        experiment: x.name.clone(),
        created_at: x.created_at.clone(),
        status: experiment_status(&x.evaluations),
        evaluations: views,
        matrix: None,
    }
}

/// One `list` line.
pub fn summary(x: &ExperimentRow) -> ExperimentSummary {
    let mut samples = SampleCounts {
        total: 0,
        recorded: 0,
        finished: 0,
        errored: 0,
        cached: 0,
    };
    let (mut scored, mut passed, mut wall_us) = (0u64, 0u64, 0u64);
    let one_verdict_per_sample = x
        .evaluations
        .iter()
        .all(|e| e.scores.len() <= 1 && e.repeats <= 1);
    for e in &x.evaluations {
        let c = counts(e);
        samples.total += c.total;
        samples.recorded += c.recorded;
        samples.finished += c.finished;
        samples.errored += c.errored;
        samples.cached += c.cached;
        for s in &e.scores {
            scored += s.scored;
            passed += s.passed;
        }
        wall_us += e.wall_us;
    }
    ExperimentSummary {
        name: x.name.clone(),
        created_at: x.created_at.clone(),
        status: experiment_status(&x.evaluations),
        evaluations: x.evaluations.len() as u64,
        samples,
        accuracy: ratio(passed as f64, scored as f64),
        accuracy_ci95: stats::wilson(passed, scored, stats::Z_975)
            .filter(|_| one_verdict_per_sample)
            .map(stats::Interval::to_array),
        scored,
        wall_seconds: wall_us as f64 / US,
    }
}

/// A stored sample as a record view.
pub fn record(row: SampleRow, evaluators: &[String]) -> RecordView {
    let parse = |s: &str| {
        serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned()))
    };
    let prompt = parse(&row.prompt);
    let per = |f: &dyn Fn(&ScoreRecord) -> serde_json::Value| -> serde_json::Map<_, _> {
        evaluators
            .iter()
            .zip(&row.scores)
            .map(|(n, s)| (n.clone(), s.as_ref().map_or(serde_json::Value::Null, f)))
            .collect()
    };
    let scores = per(&|s| s.value.into());
    let passed = per(&|s| s.passed.into());
    let reasons = evaluators
        .iter()
        .zip(&row.scores)
        .filter_map(|(n, s)| Some((n.clone(), s.as_ref()?.reason.clone()?.into())))
        .collect();
    let judges = row
        .judge_calls
        .into_iter()
        .filter_map(|judged| {
            let name = evaluators.get(judged.evaluator)?.clone();
            let score = row.scores.get(judged.evaluator).cloned().flatten();
            let view = JudgeCallView {
                prompt: parse(&judged.prompt),
                reply: judged.reply,
                score: score.as_ref().map(|s| s.value),
                reason: score.and_then(|s| s.reason),
                error: judged.error,
                attempts: judged.call.attempts,
                throttled: judged.call.throttled,
                wait_seconds: judged.call.wait_us as f64 / US,
                queue_seconds: judged.queue_us as f64 / US,
                latency_seconds: judged.call.latency_us.map(|v| v as f64 / US),
                usage: CallUsageView::from(&judged.call),
            };
            Some((name, view))
        })
        .collect();
    RecordView {
        id: row.key,
        index: row.index,
        variables: parse(&row.variables),
        prompt,
        output: row.output,
        scores,
        passed,
        reasons,
        error_kind: row.error_kind,
        error: row.error,
        cached: row.cached,
        endpoint: row.endpoint,
        attempts: row.call.attempts,
        latency_seconds: row.call.latency_us.map(|v| v as f64 / US),
        start_seconds: row.start_us as f64 / US,
        end_seconds: row.end_us as f64 / US,
        usage: CallUsageView::from(&row.call),
        judges,
    }
}

/// How much per-sample detail a view carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detail {
    pub errors: bool,
    pub full: bool,
}

/// Fills the parts of `r` that need more than the evaluation's totals: the
/// adaptive limit, error bars over repeats or clusters, judges' calls, and
/// each adaptive run's limit.
/// Time to first token and output speed, from the replies that streamed.
pub fn streamed_timing(t: &mut Timing, streamed: &[crate::store::read::StreamedReply]) {
    let mut first_tokens: Vec<u64> = streamed.iter().map(|s| s.first_token_us).collect();
    first_tokens.sort_unstable();
    t.time_to_first_token_seconds = percentiles(&first_tokens);
    t.streamed_replies = streamed.len() as u64;
    t.streamed_without_usage = streamed
        .iter()
        .filter(|s| s.completion_tokens.is_none())
        .count() as u64;
    t.output_tokens_per_second = Quantiles::of(
        streamed
            .iter()
            .filter_map(|s| s.tokens_per_second())
            .collect(),
    );
}

/// Each replica's share, speed, latency and failures: from its samples, and
/// from the runs (a replica that answered nothing has only those).
pub fn endpoint_views(
    endpoints: &[EndpointSamples],
    runs: &[RunRow],
    wall_seconds: f64,
) -> Vec<EndpointView> {
    let sent: u64 = endpoints.iter().map(|e| e.samples).sum();
    let view = |url: &str, samples: u64, errors: u64, latencies: &[u64]| EndpointView {
        url: url.to_owned(),
        samples,
        errors,
        share: ratio(samples as f64, sent as f64).unwrap_or(0.0),
        attempts: 0,
        failed_attempts: 0,
        rests: 0,
        throughput_per_second: ratio(latencies.len() as f64, wall_seconds),
        latency_seconds: percentiles(latencies),
    };
    let mut views: Vec<EndpointView> = endpoints
        .iter()
        .map(|e| view(&e.url, e.samples, e.errors, &e.latencies))
        .collect();
    for r in runs.iter().flat_map(|r| &r.endpoints) {
        let at = match views.iter().position(|v| v.url == r.url) {
            Some(at) => at,
            None => {
                views.push(view(&r.url, 0, 0, &[]));
                views.len() - 1
            }
        };
        let v = &mut views[at];
        v.attempts += r.attempts;
        v.failed_attempts += r.failed;
        v.rests += r.rests;
    }
    views
}

/// The workers of a fleet, as the store last heard of them.
pub fn worker_views(workers: &[crate::store::read::WorkerRow]) -> Vec<WorkerView> {
    workers
        .iter()
        .map(|w| WorkerView {
            run: w.run,
            host: w.host.clone(),
            pid: w.pid,
            state: w.state.clone(),
            started_at: w.started_at.clone(),
            samples: w.samples,
            in_flight: w.in_flight,
            throughput_per_second: ratio(w.samples as f64, w.active_seconds),
            last_heartbeat_seconds_ago: w.heartbeat_seconds_ago,
            late: w.state == "running" && w.heartbeat_seconds_ago > w.lease_seconds / 3.0,
        })
        .collect()
}

fn summarise(r: &mut EvaluationView, reads: &SummaryReads, clustered: bool) {
    streamed_timing(&mut r.timing, &reads.streamed);
    r.workers = worker_views(&reads.workers);
    r.endpoints = endpoint_views(&reads.endpoints, &reads.runs, r.timing.wall_seconds);
    let timeline = reads.timeline.as_ref();
    if let Some(t) = timeline.filter(|_| r.strategy == StrategyName::Adaptive) {
        r.timing.concurrency_limit = limit_view(&t.steps, &t.ends);
    }
    for (ev, groups) in r.evaluators.iter_mut().zip(&reads.groups) {
        match groups {
            // Repeats of a sample are not independent: the per-sample means
            // are (clustered by `dataset.cluster` when set).
            Groups::Repeats(rows) => {
                *ev = ev.clone().repeated(&crate::repeats::bars(rows, clustered));
            }
            Groups::Clusters(sums) => {
                let mut c = stats::Clustered::new();
                for &(n, sum, sum_sq) in sums {
                    c.push_cluster(&stats::Sums { n, sum, sum_sq });
                }
                *ev = ev.clone().clustered(&c);
            }
            Groups::None => {}
        }
    }
    for judge in &reads.judges {
        if let Some(ev) = r.evaluators.get_mut(judge.evaluator) {
            ev.judge = Some(JudgeView::new(judge));
        }
    }
    let latest = r.timing.runs.last().map(|run| run.run);
    let shown = r.timing.concurrency_limit.as_ref().map(|l| LimitSummary {
        min: l.min,
        median: l.median,
        max: l.max,
    });
    for run in r
        .timing
        .runs
        .iter_mut()
        .filter(|r| r.strategy == StrategyName::Adaptive)
    {
        run.limit = if Some(run.run) == latest {
            // The latest run's summary is the timeline shown beside it.
            shown
        } else {
            let span = (run.wall_seconds * 1e6) as u64;
            let steps = reads.run_limits.iter().find(|(n, _)| *n == run.run);
            steps.and_then(|(_, steps)| limit_summary(steps, span))
        };
    }
}

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// `known` are the store's experiment names, for a suggestion.
    #[error("no experiment named `{name}`")]
    UnknownExperiment { name: String, known: Vec<String> },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Strategy(#[from] UnknownStrategy),
    /// A reading thread died.
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for ViewError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownExperiment(name) => ViewError::UnknownExperiment {
                name,
                known: Vec::new(),
            },
            other => ViewError::Store(other),
        }
    }
}

/// Experiment `name`'s row; an unknown name comes with the names the store
/// holds.
pub fn experiment_row(store: &dyn Store, name: &str) -> Result<ExperimentRow, ViewError> {
    store.experiment(name).map_err(|e| match e {
        StoreError::UnknownExperiment(_) => ViewError::UnknownExperiment {
            name: name.to_owned(),
            known: store.experiment_names().unwrap_or_default(),
        },
        other => other.into(),
    })
}

/// The view of experiment `name` (what `show` prints).
pub fn load(store: &dyn Store, name: &str, detail: Detail) -> Result<ExperimentView, ViewError> {
    load_row(store, &experiment_row(store, name)?, detail, None)
}

/// The view of experiment row `x`, limited to the evaluations in `only`
/// when given.
pub fn load_row(
    store: &dyn Store,
    x: &ExperimentRow,
    detail: Detail,
    only: Option<&[String]>,
) -> Result<ExperimentView, ViewError> {
    let mut views = Vec::with_capacity(x.evaluations.len());
    for e in &x.evaluations {
        if only.is_some_and(|names| !names.contains(&e.name)) {
            continue;
        }
        views.push(evaluation_view(store, e, &store.summary_reads(e)?, detail)?);
    }
    Ok(experiment(x, views))
}

/// The view of evaluation `e` from its summary's `reads`, with the detail
/// asked for read from `store`.
pub fn evaluation_view(
    store: &dyn Store,
    e: &EvaluationRow,
    reads: &SummaryReads,
    detail: Detail,
) -> Result<EvaluationView, ViewError> {
    let mut r = evaluation(e, &reads.latencies, &reads.runs)?;
    summarise(&mut r, reads, e.cluster.is_some());
    if detail.errors {
        r.error_kinds = Some(
            store
                .error_groups(e.id)?
                .into_iter()
                .map(|g| ErrorKindView {
                    kind: g.kind,
                    count: g.count,
                    example_id: g.example_key,
                    example: g.example,
                })
                .collect(),
        );
        r.errors = Some(
            store
                .errors(e.id)?
                .into_iter()
                .map(|x| ErrorView {
                    id: x.key,
                    index: x.index,
                    kind: x.kind,
                    message: x.message,
                    attempts: x.attempts,
                })
                .collect(),
        );
    }
    if detail.full {
        r.records = Some(
            store
                .samples(e.id, e.evaluators.len())?
                .into_iter()
                .map(|s| record(s, &e.evaluators))
                .collect(),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_view_is_time_weighted() {
        // 4 for 1 s, 32 for 8 s, 16 for 1 s.
        let steps = [(0, 4), (1_000_000, 32), (9_000_000, 16)]
            .map(|(t_us, limit)| LimitStep { t_us, limit });
        let ends: Vec<u64> = (1..=100).map(|i| i * 100_000).collect();
        let r = limit_view(&steps, &ends).unwrap();
        assert_eq!((r.min, r.median, r.max, r.changes), (4, 32, 32, 2));
        assert_eq!(r.limit_sparkline.chars().count(), SPARK_WIDTH);
        let chars: Vec<char> = r.limit_sparkline.chars().collect();
        assert!(chars[0] < chars[20], "{}", r.limit_sparkline);
        assert_eq!(chars[20], '█');
        assert!(chars[39] < chars[20]);
        assert!(limit_view(&[], &ends).is_none());
    }

    #[test]
    fn evaluator_figures_count_passes_not_rounded_sums() {
        // Three scores of 0.7 under threshold 0.8: the mean is 0.7, no sample passed.
        let r = EvaluatorView::new(
            "graded",
            &ScoreTotal {
                scored: 3,
                sum: 2.1,
                sum_sq: 1.47,
                passed: 0,
                unscored: 0,
            },
        );
        assert_eq!((r.scored, r.passed), (3, 0));
        assert!((r.mean.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(r.pass_rate, Some(0.0));
        assert_eq!(r.accuracy, r.pass_rate);
        let r = EvaluatorView::new(
            "graded",
            &ScoreTotal {
                scored: 4,
                sum: 1.0,
                sum_sq: 1.0,
                passed: 3,
                unscored: 0,
            },
        );
        assert_eq!(
            (r.mean, r.pass_rate, r.accuracy),
            (Some(0.25), Some(0.75), Some(0.75))
        );
        let none = EvaluatorView::new("x", &ScoreTotal::default());
        assert_eq!(
            (none.mean, none.pass_rate, none.accuracy),
            (None, None, None)
        );
    }

    #[test]
    fn a_record_shows_reasons_only_where_given() {
        let row = SampleRow {
            key: "a".into(),
            index: 0,
            row_hash: 0,
            variables: "{}".into(),
            prompt: "\"p\"".into(),
            output: Some("o".into()),
            scores: vec![
                Some(ScoreRecord {
                    value: 0.5,
                    passed: true,
                    reason: Some("half right".into()),
                }),
                Some(ScoreRecord::of(0.0)),
                None,
            ],
            scored: true,
            error_kind: None,
            error: None,
            call: crate::store::CallStats {
                attempts: 1,
                ..Default::default()
            },
            start_us: 0,
            end_us: 0,
            repeat: 0,
            judge_calls: Vec::new(),
            cached: false,
            cache_key: None,
            endpoint: None,
        };
        let names = ["j".to_string(), "e".to_string(), "n".to_string()];
        let r = serde_json::to_value(record(row.clone(), &names)).unwrap();
        assert_eq!(
            r["scores"],
            serde_json::json!({"j": 0.5, "e": 0.0, "n": null})
        );
        assert_eq!(
            r["passed"],
            serde_json::json!({"j": true, "e": false, "n": null})
        );
        assert_eq!(r["reasons"], serde_json::json!({"j": "half right"}));
        let mut plain = row;
        plain.scores[0] = Some(ScoreRecord::of(1.0));
        let r = serde_json::to_value(record(plain, &names)).unwrap();
        assert!(r.get("reasons").is_none(), "{r}");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let q = Quantiles::of((1..=100).rev().map(f64::from).collect()).unwrap();
        assert_eq!((q.p50, q.p90, q.p99), (50.0, 90.0, 99.0));
        assert_eq!(Quantiles::of(vec![7.0]).unwrap().p99, 7.0);
        assert!(Quantiles::of(Vec::new()).is_none());
    }

    #[test]
    fn percentiles_of_known_values() {
        let v: Vec<u64> = (1..=100).map(|i| i * 10_000).collect();
        let l = percentiles(&v).unwrap();
        assert!((l.p50 - 0.5).abs() < 0.001, "{l:?}");
        assert!((l.p90 - 0.9).abs() < 0.001, "{l:?}");
        assert!((l.p99 - 0.99).abs() < 0.001, "{l:?}");
        assert_eq!(l.max, 1.0);
        assert!((l.mean - 0.505).abs() < 1e-9);
        assert!(percentiles(&[]).is_none());
    }
}
