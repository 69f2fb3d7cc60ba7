//! Stores from elsewhere: a store at schema version 1 (built here with the
//! version 1 SQL as it first shipped) is migrated on first use and keeps its
//! results; a file that is not a dotevals store, or a store from a newer
//! dotevals, is refused with a clear message and exit code 2, and left
//! byte-for-byte as it was.

use std::path::Path;

use crate::server::TestServer;
use crate::support::{show_json, spec};
use crate::util::{prompt, ListView, TestDir};
use rusqlite::{params, Connection};

/// The schema as version 1 shipped it (a copy of `V1` in src/store/schema.rs:
/// the point is that it does not follow later changes).
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec_path TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    identity TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    evaluators TEXT NOT NULL,
    strategy TEXT NOT NULL,
    max_concurrency INTEGER NOT NULL,
    total INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    wall_us INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    UNIQUE (experiment_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    sample_key TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    row_hash INTEGER NOT NULL,
    run INTEGER NOT NULL,
    variables TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT,
    error_kind TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    latency_us INTEGER,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    UNIQUE (evaluation_id, sample_key)
);
CREATE INDEX IF NOT EXISTS samples_stats
    ON samples (evaluation_id, latency_us, error_kind, prompt_tokens, completion_tokens);
CREATE TABLE IF NOT EXISTS scores (
    sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
    evaluation_id INTEGER NOT NULL,
    evaluator INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (sample_id, evaluator)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_by_evaluation ON scores (evaluation_id, evaluator, value);
"#;

/// A version 1 store at `path` claiming schema version `version`, empty.
fn v1_store(path: &Path, version: &str) -> Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(V1).unwrap();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('app', 'dotevals')",
        [version],
    )
    .unwrap();
    conn
}

fn meta(path: &Path, key: &str) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .unwrap()
}

/// The output the version 1 store recorded for sample 0.
const V1_OUTPUT: &str = "sample 0, answered under schema v1";

#[test]
fn version_1_store_is_migrated_on_first_use_and_resumes() {
    const N: usize = 5;
    let server = TestServer::echo();
    let text = spec("legacy", &server.url(), N, "", "");

    // What this spec's evaluation and its sample 0 look like in a store (spec
    // hash, identity, row hash), taken from a run into a scratch store; the
    // version 1 store below is written from them.
    let scratch = TestDir::new();
    scratch.write("spec.yaml", &text);
    scratch
        .cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "s",
            "--quiet",
            "--samples",
            "1",
        ])
        .output()
        .assert_exit_code(0);
    let s = Connection::open(scratch.store()).unwrap();
    let eval: [String; 9] = s
        .query_row(
            "SELECT spec_path, spec_text, spec_hash, identity, provider, model, evaluators, strategy,
                    CAST(max_concurrency AS TEXT) FROM evaluations",
            [],
            |r| {
                Ok([
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ])
            },
        )
        .unwrap();
    let (row_hash, variables, stored_prompt): (i64, String, String) = s
        .query_row(
            "SELECT row_hash, variables, prompt FROM samples WHERE sample_key = '0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    drop(s);
    let sent_by_scratch = server.count();

    let dir = TestDir::new();
    dir.write("spec.yaml", &text);
    let conn = v1_store(&dir.store(), "1");
    conn.execute(
        "INSERT INTO experiments (id, name, created_at) VALUES (1, 'legacy', '2025-01-02T03:04:05Z')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO evaluations (id, experiment_id, name, spec_path, spec_text, spec_hash, identity, provider,
             model, evaluators, strategy, max_concurrency, total, started_at, ended_at, wall_us, runs, status)
         VALUES (1, 1, 'legacy', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, '2025-01-02T03:04:05Z',
             '2025-01-02T03:04:06Z', 1000000, 1, 'interrupted')",
        params![
            eval[0],
            eval[1],
            eval[2],
            eval[3],
            eval[4],
            eval[5],
            eval[6],
            eval[7],
            eval[8].parse::<i64>().unwrap(),
            N as i64
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO samples (id, evaluation_id, sample_key, row_index, row_hash, run, variables, prompt, output,
             attempts, latency_us, start_us, end_us, prompt_tokens, completion_tokens)
         VALUES (1, 1, '0', 0, ?1, 1, ?2, ?3, ?4, 1, 250000, 0, 250000, 2, 7)",
        params![row_hash, variables, stored_prompt, V1_OUTPUT],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO scores (sample_id, evaluation_id, evaluator, value) VALUES (1, 1, 0, 1.0)",
        [],
    )
    .unwrap();
    drop(conn);

    // `list` is the first use: it works, and the store is now at the current version.
    let list: ListView = dir
        .cmd(["list", "--format", "json"])
        .output()
        .assert_exit_code(0)
        .json();
    assert_eq!(list.experiments.len(), 1, "{list:?}");
    let x = &list.experiments[0];
    assert_eq!(x.name, "legacy");
    assert_eq!(
        (x.samples.total, x.samples.recorded, x.samples.finished),
        (N as u64, 1, 1)
    );
    assert_eq!(x.accuracy, Some(1.0));
    assert_eq!(
        meta(&dir.store(), "schema_version"),
        dotevals::store::SCHEMA_VERSION.to_string(),
        "migrated on first use"
    );

    let report = show_json(&dir, "legacy", &["--full"]);
    let e = &report["evaluations"][0];
    assert_eq!(e["records"][0]["output"], V1_OUTPUT, "{e:#}");
    assert_eq!(e["records"][0]["latency_seconds"], 0.25);
    assert_eq!(e["tokens"]["completion"], 7);
    assert_eq!(e["timing"]["retries"], 0, "{:#}", e["timing"]);
    // A score stored before thresholds passed at 1, and counts as a pass.
    assert_eq!(e["records"][0]["passed"]["contains"], true, "{e:#}");
    let ev = &e["evaluators"][0];
    assert_eq!(
        (&ev["scored"], &ev["passed"], &ev["mean"], &ev["pass_rate"]),
        (&1.into(), &1.into(), &1.0.into(), &1.0.into()),
        "{ev:#}"
    );

    // A resumed run sends only what v1 had not finished, and completes.
    dir.cmd(["run", "spec.yaml", "--experiment", "legacy", "--quiet"])
        .output()
        .assert_exit_code(0);
    let mut resumed = server.prompts()[sent_by_scratch..].to_vec();
    resumed.sort();
    let expected: Vec<String> = {
        let mut v: Vec<String> = (1..N).map(prompt).collect();
        v.sort();
        v
    };
    assert_eq!(resumed, expected, "sample 0 was finished under v1");
    let report = dir.show_full("legacy");
    let e = report.only();
    assert_eq!(report.status, "completed");
    assert_eq!((e.samples.finished, e.runs), (N as u64, 2));
    assert_eq!(e.record("0").output.as_deref(), Some(V1_OUTPUT));
    for i in 1..N {
        assert_eq!(e.record(&i.to_string()).output, Some(prompt(i)));
    }
    // Passes counted across the migration: the v1 sample and the resumed ones.
    let report = show_json(&dir, "legacy", &[]);
    let ev = &report["evaluations"][0]["evaluators"][0];
    assert_eq!(
        (&ev["scored"], &ev["passed"]),
        (&(N as u64).into(), &(N as u64).into()),
        "{ev:#}"
    );
    assert_eq!(ev["pass_rate"], 1.0);
}

/// Bytes of every file in `dir`, by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs `list`, `show`, `run`, `delete` and `rename` against the store file
/// `name` in `dir`; each must exit 2 with `needle` on stderr, send nothing
/// and leave every file of the folder byte-for-byte as it was. Returns what
/// went wrong, one line per command.
fn refusals(dir: &TestDir, name: &str, needle: &str) -> Vec<String> {
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("e", &server.url(), 2, "", ""));
    let folder = dir.path().join("stores");
    let before = snapshot(&folder);
    let storage = folder.join(name);
    let mut wrong = Vec::new();
    for args in [
        vec!["list"],
        vec!["show", "x"],
        vec!["run", "spec.yaml", "--experiment", "x"],
        vec!["delete", "x"],
        vec!["rename", "x", "y"],
    ] {
        let out = dir.cmd(&args).arg("--storage").arg(&storage).output();
        if out.code != Some(2) || !out.stderr.contains(needle) {
            wrong.push(format!(
                "{name}: `{}` exited {:?} (expected 2 with {needle:?}): {}",
                args.join(" "),
                out.code,
                out.stderr.trim()
            ));
        }
        if snapshot(&folder) != before {
            wrong.push(format!(
                "{name}: `{}` changed the files of {}",
                args.join(" "),
                folder.display()
            ));
        }
    }
    if server.count() > 0 {
        wrong.push(format!("{name}: {} requests were sent", server.count()));
    }
    wrong
}

#[test]
fn files_that_are_not_dotevals_stores_are_refused_and_left_untouched() {
    let dir = TestDir::new();
    let folder = dir.path().join("stores");
    std::fs::create_dir_all(&folder).unwrap();
    // Somebody else's SQLite database.
    let other = Connection::open(folder.join("app.db")).unwrap();
    other
        .execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users (name) VALUES ('ada'), ('grace');",
        )
        .unwrap();
    drop(other);
    // One with a `meta` table of its own, but not ours.
    let other = Connection::open(folder.join("meta.db")).unwrap();
    other
        .execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '1'), ('app', 'something-else');",
        )
        .unwrap();
    drop(other);
    // Not a database at all.
    std::fs::write(folder.join("notes.db"), "remember the milk\n".repeat(100)).unwrap();
    std::fs::write(folder.join("results.json"), "{\"accuracy\": 0.9}\n").unwrap();

    let wrong: Vec<String> = ["app.db", "meta.db", "notes.db", "results.json"]
        .iter()
        .flat_map(|name| refusals(&dir, name, "is not a dotevals store"))
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn store_from_a_newer_dotevals_is_refused_and_left_untouched() {
    let dir = TestDir::new();
    let newer = (dotevals::store::SCHEMA_VERSION + 1).to_string();
    let conn = v1_store(&dir.path().join("stores").join("future.db"), &newer);
    conn.execute(
        "INSERT INTO experiments (name, created_at) VALUES ('x', '2030-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
    drop(conn);
    let wrong = refusals(&dir, "future.db", "newer");
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    let out = dir
        .cmd(["list", "--storage"])
        .arg(dir.path().join("stores").join("future.db"))
        .output();
    out.assert_stderr_contains(&format!("schema {newer}"));
}

#[test]
fn version_1_store_opened_by_several_processes_at_once_is_migrated_once() {
    // `list` in one terminal while a run starts in another: both find the old
    // store and both want to migrate it; both must work.
    let mut wrong = Vec::new();
    for round in 0..5 {
        let dir = TestDir::new();
        let conn = v1_store(&dir.store(), "1");
        conn.execute(
            "INSERT INTO experiments (name, created_at) VALUES ('legacy', '2025-01-02T03:04:05Z')",
            [],
        )
        .unwrap();
        drop(conn);
        let children: Vec<_> = (0..4)
            .map(|i| {
                dir.cmd(["list", "--format", "json"])
                    .spawn_logged(&dir, &format!("list{i}"))
            })
            .collect();
        for (i, mut child) in children.into_iter().enumerate() {
            let status = crate::support::wait_bounded(
                &mut child,
                std::time::Duration::from_secs(30),
                "list",
            );
            if status.code() != Some(0) {
                wrong.push(format!(
                    "round {round}, process {i}: exited {:?}: {}",
                    status.code(),
                    dir.read(&format!("list{i}.err")).trim()
                ));
            }
        }
        assert_eq!(
            meta(&dir.store(), "schema_version"),
            dotevals::store::SCHEMA_VERSION.to_string()
        );
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
