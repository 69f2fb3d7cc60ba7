use super::*;
use crate::store::read::ScoreTotal;
use crate::store::writer::ScoreRecord;
use crate::store::writer::{SampleRecord, Writer, QUEUE};
use crate::store::{now, StoredSample, DEFAULT_PATH};
use std::time::Instant;

fn meta<'a>(evaluators: &'a [String]) -> EvaluationMeta<'a> {
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

fn record(key: &str, index: u64, score: Option<f64>, error: bool) -> SampleRecord {
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
            prompt_tokens: Some(3),
            completion_tokens: Some(1),
            ..Default::default()
        },
        start_us: 0,
        end_us: 1000,
        judge_calls: Vec::new(),
        replaces: false,
    }
}

#[test]
fn records_survive_and_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = SqliteStore::open(&path).unwrap();
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
    assert_eq!(store.latencies(id).unwrap(), vec![1000, 2000]);
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
    let lookup = SqliteLookup::open(&path, id).unwrap();
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

#[test]
fn rename_delete_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = SqliteStore::open(&path).unwrap();
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
    store.delete_experiment("c").unwrap();
    assert_eq!(store.experiments().unwrap().len(), 1);

    let foreign = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&foreign),
        Err(StoreError::NotAStore { .. })
    ));
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "hello, not a database at all, just some text that is long enough",
    )
    .unwrap();
    assert!(SqliteStore::open(&text).is_err());
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "hello, not a database at all, just some text that is long enough"
    );
}

#[test]
fn storage_argument_forms() {
    assert_eq!(resolve_path(None), PathBuf::from(DEFAULT_PATH));
    assert_eq!(
        resolve_path(Some("sqlite://x/y.db")),
        PathBuf::from("x/y.db")
    );
    assert_eq!(
        resolve_path(Some("some-new-folder")),
        PathBuf::from("some-new-folder/dotevals.db")
    );
}

/// The counters the triggers keep, next to the same totals recomputed from the rows.
fn totals_both_ways(store: &SqliteStore, id: i64) -> (Vec<i64>, Vec<i64>) {
    let kept: Vec<i64> = store
        .conn
        .query_row(
            "SELECT recorded, errored, latency_sum_us, prompt_tokens, completion_tokens, retries, throttled, wait_us,
                    (SELECT coalesce(sum(scored), 0) FROM evaluation_scores WHERE evaluation_id = ?1),
                    (SELECT coalesce(sum(total), 0) FROM evaluation_scores WHERE evaluation_id = ?1),
                    (SELECT coalesce(sum(passed), 0) FROM evaluation_scores WHERE evaluation_id = ?1)
             FROM evaluation_totals WHERE evaluation_id = ?1",
            [id],
            |r| (0..11).map(|i| r.get::<_, f64>(i).map(|v| v as i64)).collect(),
        )
        .unwrap();
    let fresh: Vec<i64> = store
        .conn
        .query_row(
            "SELECT count(*), count(error_kind), coalesce(sum(latency_us), 0), coalesce(sum(prompt_tokens), 0),
                    coalesce(sum(completion_tokens), 0), coalesce(sum(attempts - 1), 0), coalesce(sum(throttled), 0),
                    coalesce(sum(wait_us), 0),
                    (SELECT count(value) FROM scores WHERE evaluation_id = ?1),
                    (SELECT coalesce(sum(value), 0) FROM scores WHERE evaluation_id = ?1),
                    (SELECT coalesce(sum(passed), 0) FROM scores WHERE evaluation_id = ?1)
             FROM samples WHERE evaluation_id = ?1",
            [id],
            |r| (0..11).map(|i| r.get::<_, f64>(i).map(|v| v as i64)).collect(),
        )
        .unwrap();
    (kept, fresh)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, failure_persistence: None, ..Default::default() })]

    /// Whatever runs write, replace on resume or delete, the counters `list` reads
    /// equal the totals recomputed from the sample rows.
    #[test]
    fn kept_totals_match_the_rows(runs in proptest::collection::vec(
        proptest::collection::vec((0u64..12, proptest::option::of(0u8..2), proptest::bool::ANY, 1u32..4), 1..15), 1..4)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let names = vec!["a".to_string(), "b".to_string()];
        let mut store = SqliteStore::open(&path).unwrap();
        let mut id = 0;
        for run in runs {
            let StartedEvaluation { id: eid, run: n, .. } = store.start_evaluation("x", &meta(&names), &now()).unwrap();
            id = eid;
            let config = WriterConfig { evaluation_id: eid, run: n, resuming: n > 1, base_wall_us: 0, started: Instant::now() };
            let writer = Writer::spawn(store.sink(config).unwrap(), QUEUE, |_| {}).unwrap();
            let mut seen = std::collections::HashSet::new();
            for (key, score, error, attempts) in run {
                if !seen.insert(key) {
                    continue; // one record per sample and run, as the runner sends
                }
                let mut r = record(&key.to_string(), key, score.map(f64::from), error);
                r.scores.push(None);
                r.call.attempts = attempts;
                r.call.throttled = attempts - 1;
                r.call.wait_us = u64::from(attempts) * 10;
                writer.sender().blocking_send(r).unwrap();
            }
            writer.finish().unwrap();
            let (kept, fresh) = totals_both_ways(&store, id);
            proptest::prop_assert_eq!(kept, fresh);
        }
        store.delete_experiment("x").unwrap();
        let left: i64 = store.conn.query_row("SELECT count(*) FROM evaluation_scores", [], |r| r.get(0)).unwrap();
        proptest::prop_assert_eq!(left, 0);
        let _ = id;
    }
}

#[test]
fn a_version_1_store_is_upgraded_with_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "{} INSERT INTO meta VALUES ('schema_version', '1'), ('app', 'dotevals');
         INSERT INTO experiments VALUES (1, 'old', '2026-01-01T00:00:00Z');
         INSERT INTO evaluations (id, experiment_id, name, spec_path, spec_text, spec_hash, identity, provider, model,
             evaluators, strategy, max_concurrency, total, started_at, wall_us, runs, status)
             VALUES (1, 1, 'e', 'e.yaml', '', 'h', '{{}}', 'mock', 'mock', '[\"exact_match\"]', 'sequential', 1, 2,
                     '2026-01-01T00:00:00Z', 2000000, 1, 'completed');
         INSERT INTO samples (id, evaluation_id, sample_key, row_index, row_hash, run, variables, prompt, output,
             attempts, latency_us, start_us, end_us, prompt_tokens, completion_tokens)
             VALUES (1, 1, '0', 0, 1, 1, '{{}}', '\"p\"', 'positive', 2, 1000000, 0, 1000000, 3, 1),
                    (2, 1, '1', 1, 2, 1, '{{}}', '\"p\"', 'negative', 1, 1000000, 1000000, 2000000, 3, 1);
         INSERT INTO scores VALUES (1, 1, 0, 1.0), (2, 1, 0, 0.0);",
        super::schema::V1
    ))
    .unwrap();
    drop(conn);
    let store = SqliteStore::open_existing(&path).unwrap().unwrap();
    let x = store.experiment("old").unwrap();
    let e = &x.evaluations[0];
    assert_eq!(
        (e.recorded, e.errored, e.latency_sum_us, e.retries),
        (2, 0, 2_000_000, 1)
    );
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
    let (kept, fresh) = totals_both_ways(&store, e.id);
    assert_eq!(kept, fresh);
}

#[test]
fn a_write_protected_store_is_read_only_for_writes_and_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Characters a URI would misread, for the immutable fallback.
    let path = dir.path().join("a b%?#").join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = SqliteStore::open(&path).unwrap();
    store.start_evaluation("x", &meta(&names), &now()).unwrap();
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    assert!(matches!(
        SqliteStore::open_existing(&path),
        Err(StoreError::ReadOnly { ref why, .. }) if why.is_empty()
    ));
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::ReadOnly { ref why, .. }) if why.is_empty()
    ));
    let store = SqliteStore::open_read_only(&path).unwrap().unwrap();
    assert_eq!(store.experiment_names().unwrap(), ["x"]);
    // The fallback for a folder where no shared-memory file can be made.
    let conn = Connection::open_with_flags(
        immutable_uri(&path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM experiments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn passes_are_counted_by_threshold_not_by_rounding_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["graded".to_string()];
    let mut store = SqliteStore::open(&path).unwrap();
    let started = store.start_evaluation("x", &meta(&names), &now()).unwrap();
    let config = WriterConfig {
        evaluation_id: started.id,
        run: started.run,
        resuming: true,
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
    let (kept, fresh) = totals_both_ways(&store, started.id);
    assert_eq!(kept, fresh);
}

/// Two evaluations written at the same time interleave their sample ids; each
/// one's pairing read holds its own samples and scores only, in key order.
#[test]
fn sample_scores_of_interleaved_evaluations_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = SqliteStore::open(&path).unwrap();
    let mut sink = |experiment: &str| {
        let started = store
            .start_evaluation(experiment, &meta(&names), &now())
            .unwrap();
        let config = WriterConfig {
            evaluation_id: started.id,
            run: started.run,
            resuming: false,
            base_wall_us: 0,
            started: Instant::now(),
        };
        (started.id, store.sink(config).unwrap())
    };
    let (a, mut sink_a) = sink("a");
    let (b, mut sink_b) = sink("b");
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
