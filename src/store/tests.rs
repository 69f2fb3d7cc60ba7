use super::writer::*;
use super::*;
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
    }
}

fn record(key: &str, index: u64, score: Option<f64>, error: bool) -> SampleRecord {
    SampleRecord {
        key: key.into(),
        index,
        row_hash: 42,
        variables: "{}".into(),
        prompt: "p".into(),
        output: (!error).then(|| "positive".into()),
        scores: if error { vec![] } else { vec![score] },
        error_kind: error.then(|| "timeout".into()),
        error: error.then(|| "no reply".into()),
        attempts: 1,
        throttled: 0,
        wait_us: 0,
        latency_us: (!error).then_some(1000 * (index + 1)),
        start_us: 0,
        end_us: 1000,
        prompt_tokens: Some(3),
        completion_tokens: Some(1),
    }
}

#[test]
fn records_survive_and_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = Store::open(&path).unwrap();
    let (id, run, wall) = store
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
    let writer = Writer::spawn(&path, config, |_| {}).unwrap();
    let tx = writer.sender();
    tx.send(record("0", 0, Some(1.0), false)).unwrap();
    tx.send(record("1", 1, Some(0.0), false)).unwrap();
    tx.send(record("2", 2, None, true)).unwrap();
    drop(tx);
    writer.finish().unwrap();

    let x = store.experiment("baseline").unwrap();
    let e = &x.evaluations[0];
    assert_eq!((e.recorded, e.errored, e.latency_sum_us), (3, 1, 3000));
    assert_eq!(e.scores, vec![(2, 1.0)]);
    assert_eq!(store.latencies(id).unwrap(), vec![1000, 2000]);
    assert_eq!(store.errors(id).unwrap()[0].kind, "timeout");
    assert_eq!(store.samples(id, 1).unwrap()[1].scores, vec![Some(0.0)]);

    // Resume: the errored sample is replaced, the lookup sees its new state.
    let (id2, run2, _) = store
        .start_evaluation("baseline", &meta(&names), &now())
        .unwrap();
    assert_eq!((id2, run2), (id, 2));
    let lookup = SampleLookup::open(&path, id).unwrap();
    assert_eq!(
        lookup.get("2").unwrap(),
        Some(StoredSample {
            row_hash: 42,
            finished: false
        })
    );
    let config = WriterConfig {
        evaluation_id: id,
        run: 2,
        resuming: true,
        base_wall_us: 0,
        started: Instant::now(),
    };
    let writer = Writer::spawn(&path, config, |_| {}).unwrap();
    writer
        .sender()
        .send(record("2", 2, Some(1.0), false))
        .unwrap();
    writer.finish().unwrap();
    assert_eq!(
        lookup.get("2").unwrap(),
        Some(StoredSample {
            row_hash: 42,
            finished: true
        })
    );
    let e = &store.experiment("baseline").unwrap().evaluations[0];
    assert_eq!((e.recorded, e.errored, e.scores[0]), (3, 0, (3, 2.0)));
}

#[test]
fn rename_delete_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let names = vec!["exact_match".to_string()];
    let mut store = Store::open(&path).unwrap();
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
        Store::open(&foreign),
        Err(StoreError::NotAStore { .. })
    ));
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "hello, not a database at all, just some text that is long enough",
    )
    .unwrap();
    assert!(Store::open(&text).is_err());
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
