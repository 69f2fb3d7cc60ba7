//! `dotevals merge SOURCE... --into TARGET`: the stores of a sharded run
//! combined into one. Each shard here is one spec run in a directory of its
//! own over its half of the rows (the dataset file has the same name in
//! each, so the spec text and its hash are the same), into a store of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::server::{Reply, TestServer};
use crate::support::{show_json, skip, uint, wait_bounded};
use crate::util::{wait_until, Out, Spec, TestDir};

const ROWS: usize = 20;

/// The spec every shard runs: `data.jsonl` beside it, ids from its `id`
/// column, one evaluator that passes the rows whose text holds a 1.
fn spec(url: &str, prompt: &str) -> String {
    Spec::new("qa", url)
        .dataset("  path: data.jsonl\n  id: id\n")
        .quick()
        .prompt(prompt)
        .evaluator("{type: contains, expected: \"1\"}")
        .to_string()
}

/// JSON lines of rows `range` of the dataset: `{"id": "s7", "text": "sample 7"}`.
fn rows(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{{\"id\": \"s{i}\", \"text\": \"sample {i}\"}}\n"))
        .collect()
}

/// A directory holding `spec_text` and rows `range`, run into its own store
/// as experiment `nightly` (which must exit 0).
fn shard(spec_text: &str, range: std::ops::Range<usize>) -> TestDir {
    let dir = TestDir::new();
    dir.write("spec.yaml", spec_text);
    dir.write("data.jsonl", &rows(range));
    dir.cmd(["run", "spec.yaml", "-e", "nightly", "-q"])
        .output()
        .assert_exit_code(0);
    dir
}

/// `dotevals merge SOURCES... --into TARGET --format json`, run in `dir`.
fn merge(dir: &TestDir, sources: &[String], into: &str) -> Out {
    dir.cmd(["merge"])
        .args(sources)
        .args(["--into", into, "--format", "json"])
        .output()
}

/// `dir`'s store, as an argument.
fn store(dir: &TestDir) -> String {
    dir.store().display().to_string()
}

/// The only evaluation `merge --format json` printed, checked against the schema.
#[track_caller]
fn merged(out: &Out) -> Value {
    out.assert_exit_code(0);
    let report: Value = out.json();
    assert_eq!(
        crate::schema::problems("merge", &report),
        Vec::<String>::new()
    );
    let evaluations = report["evaluations"].as_array().expect("evaluations");
    assert_eq!(evaluations.len(), 1, "{report:#}");
    evaluations[0].clone()
}

/// Sample id to (output, scores, error kind) of `export nightly` in `dir`.
fn exported(dir: &TestDir) -> BTreeMap<String, (Value, Value, Value)> {
    let out = dir.cmd(["export", "nightly"]).output();
    out.assert_exit_code(0);
    out.stdout
        .lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).expect("a JSON line");
            let id = r["id"].as_str().expect("an id").to_owned();
            (
                id,
                (
                    r["output"].clone(),
                    r["scores"].clone(),
                    r["error_kind"].clone(),
                ),
            )
        })
        .collect()
}

/// The figures of `show`'s only evaluation that one run and a merge agree on.
fn figures(report: &Value) -> Value {
    let e = crate::support::only(report);
    serde_json::json!({
        "samples": e["samples"],
        "evaluators": e["evaluators"],
        "status": e["status"],
    })
}

#[test]
fn two_shards_merge_into_what_one_run_of_the_whole_dataset_records() {
    let server = TestServer::echo();
    let text = spec(&server.url(), "\"{{ text }}\"");
    let (first, second) = (shard(&text, 0..ROWS / 2), shard(&text, ROWS / 2..ROWS));
    let whole = shard(&text, 0..ROWS);

    let out = TestDir::new();
    let target = out.store().display().to_string();
    let e = merged(&merge(&out, &[store(&first), store(&second)], &target));
    assert_eq!(
        (&e["experiment"], &e["evaluation"], &e["status"]),
        (&"nightly".into(), &"qa".into(), &"completed".into())
    );
    assert_eq!((uint(&e, "/copied"), uint(&e, "/total")), (20, 20));
    assert_eq!(uint(&e, "/overlaps"), 0);
    assert_eq!(e["overlap_examples"], serde_json::json!([]));

    // Every sample, the same scores and means as one run over every row.
    let (merged_report, one_run) = (
        show_json(&out, "nightly", &[]),
        show_json(&whole, "nightly", &[]),
    );
    assert_eq!(figures(&merged_report), figures(&one_run));
    let evaluator = &crate::support::only(&merged_report)["evaluators"][0];
    assert_eq!(evaluator["mean"], 11.0 / 20.0, "s1 and s10..s19 hold a 1");
    let merged_run = crate::support::only(&merged_report);
    assert_eq!(merged_run["runs"], 2, "each shard's run, copied");
    assert_eq!(exported(&out), exported(&whole));

    // The table says where it went and how to see it.
    let table = out
        .cmd(["merge", "--into", &target])
        .arg(first.store())
        .output();
    table.assert_exit_code(0);
    table.assert_stdout_contains(&format!(
        "merged into {target}: dotevals show nightly --storage {target}"
    ));
}

#[test]
fn a_different_spec_is_refused_and_the_target_left_as_it_was() {
    let server = TestServer::echo();
    let first = shard(&spec(&server.url(), "\"{{ text }}\""), 0..ROWS / 2);
    let edited = shard(&spec(&server.url(), "\"Q: {{ text }}\""), ROWS / 2..ROWS);
    let out = TestDir::new();
    let target = out.store();
    let refused = merge(
        &out,
        &[store(&first), store(&edited)],
        &target.display().to_string(),
    );
    refused.assert_exit_code(2);
    refused.assert_stderr_contains("from a different spec");
    refused.assert_stderr_contains("(changed: prompt)");
    refused.assert_stderr_contains(&first.store().display().to_string());
    refused.assert_stderr_contains(&edited.store().display().to_string());
    assert!(!target.exists(), "nothing was written");

    // Against what the target holds: refused too, and the target unchanged.
    merged(&merge(
        &out,
        &[store(&first)],
        &target.display().to_string(),
    ));
    let before = show_json(&out, "nightly", &["--full"]);
    let refused = merge(&out, &[store(&edited)], &target.display().to_string());
    refused.assert_exit_code(2);
    refused.assert_stderr_contains(&format!(
        "from a different spec in {} than in",
        target.display()
    ));
    assert_eq!(show_json(&out, "nightly", &["--full"]), before);

    // A source that is no store, or not there, is named.
    out.write("notes.txt", "not a store");
    let foreign = merge(&out, &["notes.txt".into()], &target.display().to_string());
    foreign.assert_exit_code(2);
    foreign.assert_stderr_contains("notes.txt is not a dotevals store");
    let missing = merge(&out, &["gone.db".into()], &target.display().to_string());
    missing.assert_exit_code(2);
    missing.assert_stderr_contains("no dotevals store at gone.db");
    // And an experiment a source does not hold.
    let unknown = out
        .cmd(["merge", "-e", "nightlyy", "--into", "t.db"])
        .arg(first.store())
        .output();
    unknown.assert_exit_code(2);
    unknown.assert_stderr_contains("has no experiment named `nightlyy`");
    unknown.assert_stderr_contains("did you mean `--experiment nightly`?");
}

#[test]
fn merging_a_store_twice_counts_overlaps_and_keeps_the_total() {
    let server = TestServer::echo();
    let first = shard(&spec(&server.url(), "\"{{ text }}\""), 0..ROWS / 2);
    let out = TestDir::new();
    let target = out.store().display().to_string();
    let e = merged(&merge(&out, &[store(&first), store(&first)], &target));
    assert_eq!(
        (
            uint(&e, "/copied"),
            uint(&e, "/overlaps"),
            uint(&e, "/total")
        ),
        (10, 10, 10)
    );
    assert_eq!(e["overlap_examples"], serde_json::json!(["s0", "s1", "s2"]));

    // Again into the same target: every sample is there already.
    let e = merged(&merge(&out, &[store(&first)], &target));
    assert_eq!(
        (
            uint(&e, "/copied"),
            uint(&e, "/overlaps"),
            uint(&e, "/total")
        ),
        (0, 10, 10)
    );
    assert_eq!(e["status"], "completed");
    let report = show_json(&out, "nightly", &[]);
    let e = crate::support::only(&report);
    assert_eq!(
        (uint(e, "/samples/recorded"), uint(e, "/samples/total")),
        (10, 10)
    );
    assert_eq!(e["runs"], 1, "a store that added nothing adds no run");
}

#[test]
fn a_finished_record_wins_over_an_errored_one() {
    // The first pass fails every prompt holding a 3 (500, retried, then recorded
    // as errors); the second answers all.
    let failing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    let server = TestServer::builder()
        .respond(
            move |r| match flag.load(Ordering::SeqCst) && r.prompt.contains('3') {
                true => Reply::status(500, "down"),
                false => Reply::text(r.prompt.clone()),
            },
        )
        .start();
    let text = spec(&server.url(), "\"{{ text }}\"");
    let flaky = TestDir::new();
    flaky.write("spec.yaml", &text);
    flaky.write("data.jsonl", &rows(0..ROWS / 2));
    flaky
        .cmd(["run", "spec.yaml", "-e", "nightly", "-q"])
        .output()
        .assert_exit_code(1);
    failing.store(false, Ordering::SeqCst);
    let good = shard(&text, 0..ROWS / 2);

    for order in [[&flaky, &good], [&good, &flaky]] {
        let out = TestDir::new();
        let e = merged(&merge(
            &out,
            &[store(order[0]), store(order[1])],
            &out.store().display().to_string(),
        ));
        assert_eq!((uint(&e, "/overlaps"), uint(&e, "/total")), (10, 10));
        assert_eq!(e["status"], "completed", "{e}");
        let report = show_json(&out, "nightly", &[]);
        let samples = &crate::support::only(&report)["samples"];
        assert_eq!(
            (uint(samples, "/finished"), uint(samples, "/errored")),
            (10, 0)
        );
    }
}

#[test]
fn an_evaluation_being_run_is_not_merged() {
    let server = TestServer::builder()
        .latency(Duration::from_millis(200))
        .reply(|p| p.to_owned())
        .start();
    let busy = TestDir::new();
    busy.write("spec.yaml", &spec(&server.url(), "\"{{ text }}\""));
    busy.write("data.jsonl", &rows(0..200));
    let mut run = busy
        .cmd([
            "run",
            "spec.yaml",
            "-e",
            "nightly",
            "-q",
            "-c",
            "sequential",
        ])
        .spawn_logged(&busy, "run");
    wait_until(Duration::from_secs(20), "the run's first sample", || {
        busy.try_show("nightly")
            .is_some_and(|x| x.only().samples.recorded > 0)
    });
    let out = TestDir::new();
    let refused = merge(&out, &[store(&busy)], &out.store().display().to_string());
    let _ = run.kill();
    wait_bounded(&mut run, Duration::from_secs(10), "the killed run");
    refused.assert_exit_code(2);
    refused.assert_stderr_contains("is being run right now in");
    assert!(!out.store().exists());
}

#[test]
fn shards_merge_into_postgres() {
    let Some(server_url) = std::env::var("DOTEVALS_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        skip(
            "merge::shards_merge_into_postgres",
            "DOTEVALS_TEST_POSTGRES is not set",
        );
        return;
    };
    let server = TestServer::echo();
    let text = spec(&server.url(), "\"{{ text }}\"");
    let first = shard(&text, 0..ROWS / 2);
    let whole = shard(&text, 0..ROWS);
    // The second shard runs into a schema of its own, the merge into another.
    let (source, target) = (Schema::new(&server_url), Schema::new(&server_url));
    let second = TestDir::new();
    second.write("spec.yaml", &text);
    second.write("data.jsonl", &rows(ROWS / 2..ROWS));
    second
        .cmd(["run", "spec.yaml", "-e", "nightly", "-q"])
        .env("DOTEVALS_STORAGE", source.url())
        .output()
        .assert_exit_code(0);

    let out = TestDir::new();
    let e = merged(&merge(&out, &[store(&first), source.url()], &target.url()));
    assert_eq!((uint(&e, "/copied"), uint(&e, "/total")), (20, 20));
    let on_server = |args: &[&str]| {
        let out = out.cmd(args).env("DOTEVALS_STORAGE", target.url()).output();
        out.assert_exit_code(0);
        out
    };
    let report: Value = on_server(&["show", "nightly", "--format", "json"]).json();
    assert_eq!(
        figures(&report),
        figures(&show_json(&whole, "nightly", &[]))
    );
    // Merging the same shard again into the server changes nothing.
    let e = merged(&merge(&out, &[source.url()], &target.url()));
    assert_eq!(
        (
            uint(&e, "/copied"),
            uint(&e, "/overlaps"),
            uint(&e, "/total")
        ),
        (0, 10, 20)
    );
    let again: Value = on_server(&["show", "nightly", "--format", "json"]).json();
    assert_eq!(figures(&again), figures(&report));
}

/// A schema of its own on the test server, dropped with everything in it.
struct Schema {
    server: String,
    name: String,
}

impl Schema {
    fn new(server: &str) -> Schema {
        Schema {
            server: server.to_owned(),
            name: format!("t_merge_{:08x}", fastrand::u32(..)),
        }
    }

    /// The store's URL.
    fn url(&self) -> String {
        let sep = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.server, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let dropped = postgres::Client::connect(&self.server, postgres::NoTls)
            .and_then(|mut c| c.batch_execute(&drop));
        if let Err(e) = dropped {
            eprintln!("{drop}: {e}");
        }
    }
}
