use super::*;
use crate::store::conformance::{self, meta, record};
use crate::store::read::ScoreTotal;
use crate::store::writer::{Writer, QUEUE};
use crate::store::{now, DEFAULT_PATH};
use std::time::Instant;

#[test]
fn foreign_files_are_no_store_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
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
            let config = WriterConfig { evaluation_id: eid, run: n, resuming: n > 1, fleet: None, base_wall_us: 0, started: Instant::now() };
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
fn sqlite_passes_the_conformance_suite() {
    for (name, case) in conformance::CASES {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::new(dir.path().join("s.db"));
        eprintln!("conformance: {name}");
        case(&storage);
    }
}
