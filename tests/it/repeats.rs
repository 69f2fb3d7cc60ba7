//! Repeats (`repeats: N`, `--repeats N`): each sample sent N times, stored
//! under `{id}#repeat-{r}` for r >= 1; resume per key; `show`'s error bars over
//! the per-sample means with the within-sample variance, computed here by
//! hand; `compare` pairing a repeated experiment with a single one by id.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::server::{Reply, TestServer};
use crate::support::{interrupt_once_recorded, wait_bounded};
use crate::util::{Spec, TestDir};

/// `n` rows with ids `q0`, `q1`, ..., prompted as their id.
fn spec(url: &str, n: usize, tail: &str) -> String {
    let rows: String = (0..n).map(|i| format!("    - {{id: q{i}}}\n")).collect();
    Spec::new("rep", url)
        .dataset(&format!("  id: id\n  rows:\n{rows}"))
        .quick()
        .prompt("\"{{ id }}\"")
        .evaluator("{type: contains, expected: right}")
        .tail(tail)
        .to_string()
}

fn show(dir: &TestDir, experiment: &str) -> Value {
    let out = dir.cmd(["show", experiment, "--format", "json"]).output();
    out.assert_exit_code(0);
    out.json()
}

/// (key, repeat) of every stored sample, sorted by key.
fn keys(dir: &TestDir) -> Vec<(String, i64)> {
    let conn = Connection::open_with_flags(dir.store(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare("SELECT sample_key, repeat FROM samples ORDER BY sample_key")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn expected_keys(ids: &[&str], repeats: i64) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = ids
        .iter()
        .flat_map(|id| {
            (0..repeats).map(move |r| match r {
                0 => (id.to_string(), 0),
                r => (format!("{id}#repeat-{r}"), r),
            })
        })
        .collect();
    out.sort();
    out
}

/// Answers `right` to every prompt but `q0` and `q1`, which it answers wrong
/// on their third request (so 2 of 3 repeats are right).
fn two_of_three() -> TestServer {
    TestServer::builder()
        .respond(|r| match (r.prompt.as_str(), r.attempt) {
            ("q0" | "q1", 3) => Reply::text("wrong"),
            _ => Reply::text("right"),
        })
        .start()
}

#[test]
fn each_sample_is_sent_n_times_and_stored_under_repeat_keys() {
    let dir = TestDir::new();
    let server = TestServer::builder().reply(|_| "right".into()).start();
    dir.write("spec.yaml", &spec(&server.url(), 3, "repeats: 3\n"));
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 9, "3 samples x 3 repeats");
    let mut prompts = server.sorted_prompts();
    prompts.dedup();
    assert_eq!(
        prompts,
        ["q0", "q1", "q2"],
        "each repeat sends its row as is"
    );
    assert_eq!(keys(&dir), expected_keys(&["q0", "q1", "q2"], 3));
    let report = show(&dir, "x");
    let e = &report["evaluations"][0];
    assert_eq!(e["repeats"], 3);
    assert_eq!(e["samples"]["total"], 9);
    assert_eq!(e["samples"]["recorded"], 9);
    assert_eq!(e["evaluators"][0]["scored"], 9);
    // Every repeat right: no variance within a sample.
    assert_eq!(e["evaluators"][0]["within_sample_variance"], 0.0);

    // `--repeats` overrides the spec; one repeat keeps the plain ids and
    // reports no within-sample variance.
    dir.cmd(["run", "spec.yaml", "-e", "one", "-q", "--repeats", "1"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 12);
    let report = show(&dir, "one");
    let e = &report["evaluations"][0];
    assert_eq!(e["repeats"], 1);
    assert_eq!(e["samples"]["total"], 3);
    assert_eq!(e["evaluators"][0]["within_sample_variance"], Value::Null);
    assert_eq!(e["evaluators"][0]["interval"], "wilson");
}

#[test]
fn resume_sends_only_missing_repeats_and_raising_repeats_sends_only_the_new_ones() {
    let dir = TestDir::new();
    let server = TestServer::builder().reply(|_| "right".into()).start();
    dir.write("spec.yaml", &spec(&server.url(), 4, "repeats: 2\n"));
    // `--samples` limits rows, each with all its repeats.
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q", "--samples", "1"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 2);
    assert_eq!(keys(&dir), expected_keys(&["q0"], 2));
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 8, "only the 3 rows left, twice each");
    assert_eq!(keys(&dir), expected_keys(&["q0", "q1", "q2", "q3"], 2));
    // Repeats are no part of the spec's identity: raising them resumes.
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q", "--repeats", "3"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 12, "only repeat 2 of each row");
    let mut third: Vec<String> = server.requests()[8..]
        .iter()
        .map(|r| r.prompt.clone())
        .collect();
    third.sort();
    assert_eq!(third, ["q0", "q1", "q2", "q3"]);
    assert_eq!(keys(&dir), expected_keys(&["q0", "q1", "q2", "q3"], 3));
    let report = show(&dir, "x");
    let e = &report["evaluations"][0];
    assert_eq!(
        (e["repeats"].as_u64(), e["samples"]["total"].as_u64()),
        (Some(3), Some(12))
    );
    assert_eq!(e["status"], "completed");
    // Nothing is left to send; fewer repeats than recorded are refused.
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q", "--repeats", "3"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 12);
    let out = dir.cmd(["run", "spec.yaml", "-e", "x", "-q"]).output();
    out.assert_exit_code(2)
        .assert_stderr_contains("holds 3 repeats")
        .assert_stderr_contains("--repeats 3");
    assert_eq!(server.count(), 12, "nothing is sent when refused");
}

#[test]
fn an_interrupted_run_prints_a_resume_command_with_its_repeats() {
    const N: usize = 10;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(150))
        .reply(|_| "right".into())
        .start();
    dir.write("spec.yaml", &spec(&server.url(), N, ""));
    let mut child = dir
        .cmd([
            "run",
            "spec.yaml",
            "-e",
            "x",
            "--concurrency",
            "2",
            "--repeats",
            "2",
        ])
        .spawn_logged(&dir, "first");
    interrupt_once_recorded(&dir, &child, "x", 2);
    let status = wait_bounded(&mut child, Duration::from_secs(20), "the interrupted run");
    let stderr = dir.read("first.err");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("dotevals run spec.yaml --experiment x --concurrency 2 --repeats 2"),
        "the resume command keeps --repeats:\n{stderr}"
    );
    let sent = server.count();
    assert!(sent < 2 * N, "interrupted before the end: {sent}");
    server.set_latency(Duration::ZERO);
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q", "--repeats", "2"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 2 * N, "every key sent exactly once in all");
    let ids: Vec<String> = (0..N).map(|i| format!("q{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(keys(&dir), expected_keys(&ids, 2));
}

#[test]
fn show_reports_error_bars_over_per_sample_means_and_the_within_sample_variance() {
    let dir = TestDir::new();
    let server = two_of_three();
    dir.write("spec.yaml", &spec(&server.url(), 3, "repeats: 3\n"));
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    let report = show(&dir, "x");
    assert_eq!(
        crate::schema::problems("show", &report),
        Vec::<String>::new()
    );
    let ev = &report["evaluations"][0]["evaluators"][0];
    // Scores: q0 and q1 1, 1, 0; q2 1, 1, 1. Mean of all 9: 7/9.
    let f = |v: &Value| v.as_f64().unwrap();
    assert!((f(&ev["mean"]) - 7.0 / 9.0).abs() < 1e-12, "{ev}");
    assert_eq!(
        (ev["passed"].as_u64(), ev["scored"].as_u64()),
        (Some(7), Some(9))
    );
    // Per-sample means 2/3, 2/3, 1: sd √(1/27), SE √(1/27)/√3 = 1/9.
    assert!((f(&ev["stderr"]) - 1.0 / 9.0).abs() < 1e-12, "{ev}");
    assert_eq!(ev["interval"], "t");
    // t(0.975, 2) = 4.302652729911275 (scipy.stats.t.ppf(0.975, 2)).
    let lo = 7.0 / 9.0 - 4.302652729911275 / 9.0;
    assert!((f(&ev["ci95"][0]) - lo).abs() < 1e-9, "{ev}");
    assert_eq!(f(&ev["ci95"][1]), 1.0);
    // Variances of the repeats: 1/3, 1/3, 0; their mean 2/9.
    assert!(
        (f(&ev["within_sample_variance"]) - 2.0 / 9.0).abs() < 1e-12,
        "{ev}"
    );

    let table = dir.cmd(["show", "x"]).output();
    table
        .assert_exit_code(0)
        .assert_stdout_contains("repeats 3 · within-sample variance 0.222");
}

#[test]
fn clustered_repeats_take_each_cluster_as_one_draw() {
    let dir = TestDir::new();
    let server = two_of_three();
    let rows =
        "    - {id: q0, g: a}\n    - {id: q1, g: a}\n    - {id: q2, g: b}\n    - {id: q3, g: c}\n";
    let text = Spec::new("rep", &server.url())
        .dataset(&format!("  id: id\n  cluster: g\n  rows:\n{rows}"))
        .quick()
        .prompt("\"{{ id }}\"")
        .evaluator("{type: contains, expected: right}")
        .tail("repeats: 3\n")
        .to_string();
    dir.write("spec.yaml", &text);
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    let report = show(&dir, "x");
    let ev = &report["evaluations"][0]["evaluators"][0];
    assert_eq!(ev["interval"], "clustered_t");
    assert_eq!(ev["clusters"], 3);
    // Each cluster one draw of the mean of every score (10 right of 12,
    // 5/6): cluster a holds 4 right of 6, b 3 of 3, c 3 of 3; residuals
    // 4 - 6(5/6) = -1, 0.5, 0.5; SE² = 3/2 · 1.5 / 12².
    let se = (1.5f64 * 1.5).sqrt() / 12.0;
    assert!((ev["stderr"].as_f64().unwrap() - se).abs() < 1e-12, "{ev}");
}

#[test]
fn compare_pairs_a_repeated_experiment_with_a_single_one_by_sample_id() {
    let dir = TestDir::new();
    let repeated = two_of_three();
    let single = TestServer::builder().reply(|_| "right".into()).start();
    dir.write("a.yaml", &spec(&repeated.url(), 3, "repeats: 3\n"));
    dir.write("b.yaml", &spec(&single.url(), 3, ""));
    for (file, name) in [("a.yaml", "A"), ("b.yaml", "B")] {
        dir.cmd(["run", file, "-e", name, "-q"])
            .output()
            .assert_exit_code(0);
    }
    let out = dir.cmd(["compare", "A", "B", "--format", "json"]).output();
    out.assert_exit_code(0);
    let report: Value = out.json();
    let e = &report["evaluations"][0];
    assert_eq!(e["samples"]["matched"], 3, "{e}");
    assert_eq!(e["samples"]["only_in_a"]["count"], 0);
    assert_eq!(e["samples"]["only_in_b"]["count"], 0);
    let ev = &e["evaluators"][0];
    // A's per-sample means 2/3, 2/3, 1 are not 0/1: a graded, paired t comparison.
    assert_eq!(ev["kind"], "graded", "{ev}");
    assert_eq!(ev["test"], "paired_t");
    assert_eq!(ev["n"], 3);
    let f = |v: &Value| v.as_f64().unwrap();
    assert!((f(&ev["mean_a"]) - 7.0 / 9.0).abs() < 1e-12, "{ev}");
    assert_eq!(f(&ev["mean_b"]), 1.0);
    assert!((f(&ev["difference"]) - 2.0 / 9.0).abs() < 1e-12, "{ev}");
    // 2 of 3 repeats passing is a pass: no verdict flipped.
    assert_eq!(
        (ev["pass_to_fail"].as_u64(), ev["fail_to_pass"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn bad_repeats_and_marked_ids_are_refused_before_any_request() {
    let dir = TestDir::new();
    let server = TestServer::builder().reply(|_| "right".into()).start();
    for bad in ["0", "101"] {
        dir.write(
            "spec.yaml",
            &spec(&server.url(), 1, &format!("repeats: {bad}\n")),
        );
        dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
            .output()
            .assert_exit_code(2)
            .assert_stderr_contains("it must be 1 to 100");
    }
    dir.write("spec.yaml", &spec(&server.url(), 1, ""));
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q", "--repeats", "0"])
        .output()
        .assert_exit_code(2);
    let marked = Spec::new("rep", &server.url())
        .dataset("  id: id\n  rows:\n    - {id: \"a#repeat-1\"}\n")
        .quick()
        .prompt("\"{{ id }}\"")
        .to_string();
    dir.write("marked.yaml", &marked);
    dir.cmd(["run", "marked.yaml", "-e", "m", "-q", "--repeats", "2"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("holds `#repeat-`");
    dir.write("marked2.yaml", &format!("{marked}repeats: 2\n"));
    dir.cmd(["validate", "marked2.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("holds `#repeat-`");
    assert_eq!(server.count(), 0);
    // With one repeat the id is a plain id.
    dir.cmd(["run", "marked.yaml", "-e", "m1", "-q"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 1);
}

#[test]
fn rescore_grades_every_stored_repeat_without_sending() {
    let dir = TestDir::new();
    let server = two_of_three();
    dir.write("spec.yaml", &spec(&server.url(), 3, "repeats: 3\n"));
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    // The edited evaluator passes `wrong` too; the spec's `repeats` is left out.
    let edited = spec(&server.url(), 3, "").replace("expected: right", "expected: r");
    dir.write("edited.yaml", &edited);
    dir.cmd(["rescore", "x", "--spec", "edited.yaml", "-q"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 9, "no request to the model");
    let report = show(&dir, "x-rescored");
    let e = &report["evaluations"][0];
    assert_eq!(e["repeats"], 3);
    assert_eq!(e["samples"]["recorded"], 9);
    assert_eq!(e["evaluators"][0]["passed"], 9);
    assert_eq!(e["evaluators"][0]["within_sample_variance"], 0.0);
}
