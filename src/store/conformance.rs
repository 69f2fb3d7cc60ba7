//! What every store backend must do, written against the traits alone:
//! each case takes a fresh, empty [`Storage`]. SQLite runs them in its
//! tests; a new backend runs them unchanged.

use std::time::Instant;

use super::read::ScoreTotal;
use super::writer::{SampleRecord, ScoreRecord, Writer, QUEUE};
use super::{
    now, EvaluationMeta, StartedEvaluation, Storage, StoreError, StoredSample, WriterConfig,
};
use crate::cache::{CacheKey, CacheStats, CacheUse};

/// One case: it gets a fresh, empty storage.
pub type Case = fn(&dyn Storage);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    (
        "records_survive_and_aggregate",
        records_survive_and_aggregate,
    ),
    (
        "passes_are_counted_by_threshold_not_by_rounding_scores",
        passes_are_counted_by_threshold_not_by_rounding_scores,
    ),
    (
        "sample_scores_of_interleaved_evaluations_stay_apart",
        sample_scores_of_interleaved_evaluations_stay_apart,
    ),
    (
        "experiments_are_renamed_and_deleted",
        experiments_are_renamed_and_deleted,
    ),
    (
        "a_run_lock_is_held_until_dropped",
        a_run_lock_is_held_until_dropped,
    ),
    (
        "cache_entries_are_counted_explained_and_cleared",
        cache_entries_are_counted_explained_and_cleared,
    ),
    (
        "replicas_are_read_back_by_url",
        replicas_are_read_back_by_url,
    ),
    (
        "a_record_read_back_is_written_again_whole",
        a_record_read_back_is_written_again_whole,
    ),
];

pub fn meta<'a>(evaluators: &'a [String]) -> EvaluationMeta<'a> {
    EvaluationMeta {
        name: "sentiment",
        spec_path: "evals/s.yaml",
        spec_text: "name: sentiment",
        spec_hash: "abc",
        identity: "{}",
        provider: "mock",
        model: "mock",
        evaluators,
        strategy: "sliding_window",
        max_concurrency: 4,
        total: 3,
        cluster: None,
        fail_under: &[],
        repeats: 1,
    }
}

pub fn record(key: &str, index: u64, score: Option<f64>, error: bool) -> SampleRecord {
    SampleRecord {
        key: key.into(),
        index,
        repeat: 0,
        row_hash: 42,
        variables: "{}".into(),
        prompt: "p".into(),
        output: (!error).then(|| "positive".into()),
        scores: if error {
            vec![]
        } else {
            vec![score.map(ScoreRecord::of)]
        },
        error_kind: error.then_some(crate::error_kind::ErrorKind::Timeout),
        error: error.then(|| "no reply".into()),
        call: crate::store::CallStats {
            attempts: 1,
            latency_us: (!error).then_some(1000 * (index + 1)),
            first_token_us: (!error).then_some(400),
            usage: crate::usage::Usage {
                prompt: Some(3),
                completion: Some(1),
                cached_prompt: Some(2),
                cache_write: None,
                reasoning: Some(1),
            },
            ..Default::default()
        },
        start_us: 0,
        end_us: 1000,
        judge_calls: Vec::new(),
        replaces: false,
        cache: crate::cache::CacheUse::Off,
        endpoint: None,
    }
}

/// Samples and runs of a model with replicas are read back per replica,
/// URLs in order; a replica that answered nothing is in the run's totals.
pub fn replicas_are_read_back_by_url(storage: &dyn Storage) {
    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    let (id, mut sink) = started_sink(store.as_mut(), "r", &meta(&names));
    let at = |mut r: SampleRecord, url: &str| {
        r.endpoint = Some(url.into());
        r
    };
    sink.commit(&[
        at(record("0", 0, Some(1.0), false), "http://b:8000/v1"),
        at(record("1", 1, Some(1.0), false), "http://a:8000/v1"),
        at(record("2", 2, None, true), "http://b:8000/v1"),
        at(record("3", 3, Some(0.0), false), "http://b:8000/v1"),
    ])
    .unwrap();
    drop(sink);
    let run = |url: &str, failed| crate::store::EndpointRun {
        url: url.into(),
        attempts: 4,
        failed,
        throttled: 1,
        rests: failed / 3,
    };
    let endpoints = vec![run("http://a:8000/v1", 0), run("http://c:8000/v1", 6)];
    store
        .record_run(
            id,
            1,
            &crate::store::RunTotals {
                strategy: "sliding_window".into(),
                wall: std::time::Duration::from_secs(1),
                limiter: Default::default(),
                endpoints: endpoints.clone(),
            },
        )
        .unwrap();
    let got = store.endpoints(id).unwrap();
    let summary: Vec<(&str, u64, u64, &[u64])> = got
        .iter()
        .map(|e| (e.url.as_str(), e.samples, e.errors, e.latencies.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            ("http://a:8000/v1", 1, 0, &[2000][..]),
            ("http://b:8000/v1", 3, 1, &[1000, 4000][..]),
        ]
    );
    assert_eq!(store.runs(id).unwrap()[0].endpoints, endpoints);
    // One endpoint: nothing per replica.
    let (one, mut sink) = started_sink(store.as_mut(), "one", &meta(&names));
    sink.commit(&[record("0", 0, Some(1.0), false)]).unwrap();
    assert!(store.endpoints(one).unwrap().is_empty());
}

pub fn records_survive_and_aggregate(storage: &dyn Storage) {
    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    let StartedEvaluation {
        id,
        run,
        wall_us: wall,
    } = store
        .start_evaluation("baseline", &meta(&names), &now())
        .unwrap();
    assert_eq!((run, wall), (1, 0));
    let config = WriterConfig {
        evaluation_id: id,
        run,
        resuming: false,
        fleet: None,
        base_wall_us: 0,
        started: Instant::now(),
    };
    let writer = Writer::spawn(store.sink(config).unwrap(), QUEUE, |_| {}).unwrap();
    let tx = writer.sender();
    tx.blocking_send(record("0", 0, Some(1.0), false)).unwrap();
    tx.blocking_send(record("1", 1, Some(0.0), false)).unwrap();
    tx.blocking_send(record("2", 2, None, true)).unwrap();
    drop(tx);
    writer.finish().unwrap();

    let x = store.experiment("baseline").unwrap();
    let e = &x.evaluations[0];
    assert_eq!((e.recorded, e.errored, e.latency_sum_us), (3, 1, 3000));
    assert_eq!(
        e.scores,
        vec![ScoreTotal {
            scored: 2,
            sum: 1.0,
            sum_sq: 1.0,
            passed: 1,
            unscored: 0,
        }]
    );
    let tokens = crate::usage::TokenTotals {
        prompt: 9,
        completion: 3,
        cached_prompt: 6,
        cache_write: 0,
        reasoning: 3,
    };
    assert_eq!(e.tokens, tokens, "every count summed, unreported ones as 0");
    assert_eq!(
        store.samples(id, 1).unwrap()[0].call,
        record("0", 0, None, false).call,
        "a call's usage and time to first token come back as written"
    );
    assert_eq!(store.latencies(id).unwrap(), vec![1000, 2000]);
    // The summary's reads at once agree with the single queries.
    let reads = store.summary_reads(e).unwrap();
    assert_eq!(reads.latencies, vec![1000, 2000]);
    assert_eq!(reads.runs, store.runs(id).unwrap());
    assert!(reads.timeline.is_none() && reads.run_limits.is_empty());
    assert!(matches!(reads.groups[..], [super::Groups::None]));
    let mut streamed: Vec<(u64, u64)> = reads
        .streamed
        .iter()
        .map(|s| (s.first_token_us, s.latency_us))
        .collect();
    streamed.sort_unstable();
    assert_eq!(
        streamed,
        [(400, 1000), (400, 2000)],
        "the errored one is left out"
    );
    assert_eq!(store.errors(id).unwrap()[0].kind, "timeout");
    assert_eq!(
        store.samples(id, 1).unwrap()[1].scores,
        vec![Some(ScoreRecord::of(0.0))]
    );

    // Resume: the errored sample is replaced, the lookup sees its new state.
    let StartedEvaluation {
        id: id2, run: run2, ..
    } = store
        .start_evaluation("baseline", &meta(&names), &now())
        .unwrap();
    assert_eq!((id2, run2), (id, 2));
    let lookup = store.lookup(id).unwrap();
    assert_eq!(
        lookup.get("2").unwrap(),
        Some(StoredSample {
            row_hash: 42,
            finished: false,
            rescore: false
        })
    );
    let config = WriterConfig {
        evaluation_id: id,
        run: 2,
        resuming: true,
        fleet: None,
        base_wall_us: 0,
        started: Instant::now(),
    };
    let writer = Writer::spawn(store.sink(config).unwrap(), QUEUE, |_| {}).unwrap();
    writer
        .sender()
        .blocking_send(record("2", 2, Some(1.0), false))
        .unwrap();
    writer.finish().unwrap();
    assert_eq!(
        lookup.get("2").unwrap(),
        Some(StoredSample {
            row_hash: 42,
            finished: true,
            rescore: false
        })
    );
    let e = &store.experiment("baseline").unwrap().evaluations[0];
    assert_eq!(
        e.tokens, tokens,
        "a replaced record's counts are not summed twice"
    );
    assert_eq!(
        (e.recorded, e.errored, e.scores[0]),
        (
            3,
            0,
            ScoreTotal {
                scored: 3,
                sum: 2.0,
                sum_sq: 2.0,
                passed: 2,
                unscored: 0,
            }
        )
    );
}

pub fn passes_are_counted_by_threshold_not_by_rounding_scores(storage: &dyn Storage) {
    let names = vec!["graded".to_string()];
    let mut store = storage.open_or_create().unwrap();
    let started = store.start_evaluation("x", &meta(&names), &now()).unwrap();
    let config = WriterConfig {
        evaluation_id: started.id,
        run: started.run,
        resuming: true,
        fleet: None,
        base_wall_us: 0,
        started: Instant::now(),
    };
    // Threshold 0.8: three scores of 0.7 sum to 2.1 (2 by rounding) yet none passes;
    // 0.9 passes with a reason.
    let writer = Writer::spawn(store.sink(config.clone()).unwrap(), QUEUE, |_| {}).unwrap();
    for (i, value) in [0.7, 0.7, 0.7, 0.9].into_iter().enumerate() {
        let mut r = record(&i.to_string(), i as u64, None, false);
        r.scores = vec![Some(ScoreRecord {
            value,
            passed: value >= 0.8,
            reason: (value > 0.8).then(|| "close enough".into()),
        })];
        writer.sender().blocking_send(r).unwrap();
    }
    writer.finish().unwrap();
    let e = &store.experiment("x").unwrap().evaluations[0];
    assert_eq!(e.scores[0].scored, 4);
    assert_eq!(e.scores[0].passed, 1);
    assert!((e.scores[0].sum - 3.0).abs() < 1e-9);
    let samples = store.samples(started.id, 1).unwrap();
    let reasons: Vec<_> = samples
        .iter()
        .map(|s| s.scores[0].as_ref().unwrap().reason.clone())
        .collect();
    assert_eq!(
        reasons,
        [None, None, None, Some("close enough".to_string())]
    );
    // Replacing a sample on resume takes its pass back out of the count.
    let writer = Writer::spawn(store.sink(config).unwrap(), QUEUE, |_| {}).unwrap();
    let mut r = record("3", 3, None, false);
    r.scores = vec![Some(ScoreRecord {
        value: 0.1,
        passed: false,
        reason: None,
    })];
    writer.sender().blocking_send(r).unwrap();
    writer.finish().unwrap();
    let e = &store.experiment("x").unwrap().evaluations[0];
    assert_eq!((e.scores[0].scored, e.scores[0].passed), (4, 0));
}

/// Starts evaluation `m` of `experiment` (a first run) and the sink of its
/// records; answers its id too.
fn started_sink(
    store: &mut dyn super::Store,
    experiment: &str,
    m: &EvaluationMeta,
) -> (i64, Box<dyn super::RecordSink>) {
    let started = store.start_evaluation(experiment, m, &now()).unwrap();
    let config = WriterConfig {
        evaluation_id: started.id,
        run: started.run,
        resuming: false,
        fleet: None,
        base_wall_us: 0,
        started: Instant::now(),
    };
    (started.id, store.sink(config).unwrap())
}

/// Two evaluations written at the same time interleave their sample ids; each
/// one's pairing read holds its own samples and scores only, in key order.
pub fn sample_scores_of_interleaved_evaluations_stay_apart(storage: &dyn Storage) {
    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    let (a, mut sink_a) = started_sink(store.as_mut(), "a", &meta(&names));
    let (b, mut sink_b) = started_sink(store.as_mut(), "b", &meta(&names));
    for i in 0..4u64 {
        sink_a
            .commit(&[record(&format!("k{}", 3 - i), i, Some(1.0), false)])
            .unwrap();
        sink_b
            .commit(&[record(&format!("k{i}"), i, Some(0.0), false)])
            .unwrap();
    }
    for (id, score) in [(a, 1.0), (b, 0.0)] {
        let rows = store.sample_scores(id, 1, None).unwrap();
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"]);
        assert!(rows.iter().all(|r| r.scores
            == [Some(crate::store::ScorePoint {
                value: score,
                passed: score == 1.0
            })]));
    }
}

pub fn experiments_are_renamed_and_deleted(storage: &dyn Storage) {
    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    store.start_evaluation("a", &meta(&names), &now()).unwrap();
    store.start_evaluation("b", &meta(&names), &now()).unwrap();
    assert!(matches!(
        store.rename_experiment("a", "b"),
        Err(StoreError::ExperimentExists(_))
    ));
    store.rename_experiment("a", "c").unwrap();
    assert!(matches!(
        store.experiment("a"),
        Err(StoreError::UnknownExperiment(_))
    ));
    assert_eq!(store.experiment_names().unwrap().len(), 2);
    store.delete_experiment("c").unwrap();
    assert_eq!(store.experiments().unwrap().len(), 1);
    assert!(matches!(
        store.delete_experiment("c"),
        Err(StoreError::UnknownExperiment(_))
    ));
}

pub fn a_run_lock_is_held_until_dropped(storage: &dyn Storage) {
    let held = storage.lock("x", "e").unwrap();
    assert!(matches!(
        storage.lock("x", "e"),
        Err(StoreError::Lock(super::LockError::Busy { .. }))
    ));
    // Another evaluation, or another experiment, is free.
    let _other = storage.lock("x", "f").unwrap();
    let _elsewhere = storage.lock("y", "e").unwrap();
    drop(held);
    storage.lock("x", "e").unwrap();
}

/// A record of sample `key` whose call went under cache key `hash`
/// (`request` its parts), its reply kept unless it errored.
fn sent(
    key: &str,
    index: u64,
    hash: &str,
    model: &str,
    request: &str,
    error: bool,
) -> SampleRecord {
    let mut cache = CacheUse::Sent {
        key: CacheKey {
            hash: hash.into(),
            request: request.into(),
        },
        model: model.into(),
        reply: None,
    };
    if !error {
        cache.keep("positive", crate::usage::Usage::default());
    }
    SampleRecord {
        cache,
        ..record(key, index, (!error).then_some(1.0), error)
    }
}

pub fn cache_entries_are_counted_explained_and_cleared(storage: &dyn Storage) {
    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    assert_eq!(store.cache_stats().unwrap(), CacheStats::default());
    let commit = |store: &mut Box<dyn super::Store>, evaluation: &str, batch: &[SampleRecord]| {
        let m = EvaluationMeta {
            name: evaluation,
            ..meta(&names)
        };
        let (_, mut sink) = started_sink(store.as_mut(), "x", &m);
        sink.commit(batch).unwrap();
    };
    let (r16, r17) = (r#"{"v":1,"max_tokens":16}"#, r#"{"v":1,"max_tokens":17}"#);
    commit(
        &mut store,
        "first",
        &[
            sent("a", 0, "ka", "m1", r16, false),
            sent("b", 1, "kb", "m2", r#"{"v":1,"b":1}"#, false),
            sent("c", 2, "kc", "m1", r16, true),
            record("d", 3, Some(1.0), false),
        ],
    );
    commit(
        &mut store,
        "second",
        &[
            sent("a", 0, "ka2", "m1", r17, false),
            SampleRecord {
                cache: CacheUse::Hit("ka".into()),
                ..record("e", 1, Some(1.0), false)
            },
        ],
    );

    let stats = store.cache_stats().unwrap();
    assert_eq!((stats.entries, stats.hits), (3, 1), "errors are not cached");
    let models: Vec<(&str, u64, u64)> = stats
        .models
        .iter()
        .map(|m| (m.model.as_str(), m.entries, m.hits))
        .collect();
    assert_eq!(models, [("m1", 2, 1), ("m2", 1, 0)]);
    let m2 = &stats.models[1];
    assert_eq!(
        m2.bytes,
        ("positive".len() + r#"{"v":1,"b":1}"#.len()) as u64
    );
    assert_eq!(
        stats.bytes,
        stats.models.iter().map(|m| m.bytes).sum::<u64>()
    );
    assert!(
        m2.oldest.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{m2:?}"
    );

    let a = store.cache_explain_reads("x", "a").unwrap();
    let evaluations: Vec<&str> = a.iter().map(|r| r.evaluation.as_str()).collect();
    assert_eq!(evaluations, ["first", "second"]);
    let second = &a[1];
    assert_eq!(second.key.as_deref(), Some("ka2"));
    assert!(!second.cached && second.entry_written_at.is_some());
    assert_eq!(second.sent.as_ref().map(|s| s.request.as_str()), Some(r17));
    let alternatives: Vec<(&str, &str)> = second
        .alternatives
        .iter()
        .map(|c| (c.key.as_str(), c.request.as_str()))
        .collect();
    assert_eq!(
        alternatives,
        [("ka", r16)],
        "cached requests of the same sample only"
    );
    let c = &store.cache_explain_reads("x", "c").unwrap()[0];
    assert!(c.error_kind.is_some() && c.entry_written_at.is_none() && c.sent.is_some());
    let d = &store.cache_explain_reads("x", "d").unwrap()[0];
    assert_eq!(d.key, None, "the cache was off");
    let e = &store.cache_explain_reads("x", "e").unwrap()[0];
    assert!(e.cached && e.entry_written_at.is_some());
    assert!(store.cache_explain_reads("x", "zz").unwrap().is_empty());
    assert!(matches!(
        store.cache_explain_reads("y", "a"),
        Err(StoreError::UnknownExperiment(_))
    ));

    let hour = Some(std::time::Duration::from_secs(3600));
    assert_eq!(
        store.cache_clear(hour, None).unwrap(),
        0,
        "nothing is that old"
    );
    assert_eq!(store.cache_clear(None, Some("m2")).unwrap(), 1);
    assert_eq!(store.cache_stats().unwrap().entries, 2);
    assert_eq!(store.cache_clear(None, None).unwrap(), 2);
    assert_eq!(store.cache_stats().unwrap(), CacheStats::default());
    // The records stay; a cleared entry's request goes with it, an error's stays.
    let x = store.experiment("x").unwrap();
    assert_eq!(x.evaluations.iter().map(|e| e.recorded).sum::<u64>(), 6);
    assert!(store.cache_explain_reads("x", "a").unwrap()[1]
        .sent
        .is_none());
    assert!(store.cache_explain_reads("x", "c").unwrap()[0]
        .sent
        .is_some());
}

/// A record read back and written again into another evaluation (what
/// `merge` does) reads back the same: row hash, scores (none at all for a
/// failed call, null for an evaluator that could not decide), judge calls
/// and cache columns included. A run started after the runs were set
/// follows them.
pub fn a_record_read_back_is_written_again_whole(storage: &dyn Storage) {
    use crate::error_kind::ErrorKind;
    use crate::store::writer::JudgeRecord;

    let names = vec!["exact_match".to_string()];
    let mut store = storage.open_or_create().unwrap();
    let (from, mut sink) = started_sink(store.as_mut(), "x", &meta(&names));
    let judged = SampleRecord {
        row_hash: 7,
        repeat: 1,
        cache: CacheUse::Hit("ka".into()),
        endpoint: Some("http://replica-b/v1".into()),
        judge_calls: vec![JudgeRecord {
            prompt: "[]".into(),
            reply: Some("1".into()),
            queue_us: 5,
            cache: CacheUse::Hit("kj".into()),
            ..JudgeRecord::default()
        }],
        ..record("a", 0, Some(1.0), false)
    };
    let undecided = SampleRecord {
        scores: vec![None],
        error_kind: Some(ErrorKind::Evaluator),
        error: Some("no number".into()),
        ..record("b", 1, None, false)
    };
    sink.commit(&[judged, undecided, record("c", 2, None, true)])
        .unwrap();
    let rows = store.samples(from, 1).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.scored).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(rows[0].cache_key.as_deref(), Some("ka"));
    assert_eq!(
        rows[0].judge_calls[0].cache,
        CacheUse::Copied {
            hash: "kj".into(),
            hit: true
        }
    );

    let copy = EvaluationMeta {
        name: "copy",
        ..meta(&names)
    };
    let (to, mut sink) = started_sink(store.as_mut(), "x", &copy);
    let records: Vec<SampleRecord> = rows
        .iter()
        .map(|r| SampleRecord::try_from(r.clone()).unwrap())
        .collect();
    sink.commit(&records).unwrap();
    assert_eq!(store.samples(to, 1).unwrap(), rows);
    let x = store.experiment("x").unwrap();
    let (a, b) = (&x.evaluations[0], &x.evaluations[1]);
    assert_eq!(
        (b.recorded, b.errored, b.cached, b.scores.clone()),
        (a.recorded, a.errored, a.cached, a.scores.clone())
    );
    assert_eq!(b.scores[0].unscored, 1, "a failed call is not unscored");

    store.set_runs(to, 3).unwrap();
    let again = store.start_evaluation("x", &copy, &now()).unwrap();
    assert_eq!(again.run, 4, "three runs set, then this one");
}
