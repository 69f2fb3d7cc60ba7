//! The `--format json` contract of `show`, `list`, `run`, `validate`, `delete`
//! and `rename`: decoded into this suite's own types (see `util.rs`), with
//! every documented field required, and the values checked against what the
//! test server actually did.

use serde_json::Value;

use crate::server::{Reply, TestServer};
use crate::util::{text_rows, Checked, ExperimentView, ListView, Spec, TestDir};

/// A spec named `name` with `n` rows; prompts are `NAME i`, and a prompt
/// ending in `7` is answered 400 by [`server`].
fn spec(name: &str, url: &str, n: usize) -> String {
    Spec::new(name, url)
        .rows(&text_rows((0..n).map(|i| format!("{name} {i}"))))
        .quick()
        .evaluator(&format!("{{type: contains, expected: \"{name}\"}}"))
        .evaluator("{type: regex, name: even, pattern: '[02468]$'}")
        .to_string()
}

/// Answers `ok PROMPT`, but 400 to prompts ending in 7.
fn server() -> TestServer {
    TestServer::builder()
        .respond(|r| {
            if r.prompt.ends_with('7') {
                Reply::status(400, "{\"error\": {\"message\": \"bad prompt\"}}")
            } else {
                Reply::text(format!("ok {}", r.prompt))
            }
        })
        .start()
}

/// Keys of a JSON object.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

fn looks_like_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') && s.ends_with('Z')
}

#[test]
fn show_reports_counts_scores_timing_and_tokens() {
    let dir = TestDir::new();
    let server = server();
    dir.write("spec.yaml", &spec("alpha", &server.url(), 10));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);

    // Plain `show`: no per-sample detail.
    let out = dir.cmd(["show", "x", "--format", "json"]).output();
    out.assert_exit_code(0);
    let raw: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(raw["evaluations"][0].get("errors").is_none());
    assert!(raw["evaluations"][0].get("records").is_none());
    let report: ExperimentView = out.json();
    assert_eq!(report.experiment, "x");
    assert!(
        looks_like_rfc3339(&report.created_at),
        "{}",
        report.created_at
    );
    assert_eq!(report.status, "completed_with_errors");
    let e = report.only();
    assert_eq!(e.name, "alpha");
    assert_eq!(e.spec, "spec.yaml");
    assert_eq!(
        (e.provider.as_str(), e.model.as_str()),
        ("openai", "test-model")
    );
    assert_eq!(
        (e.strategy.as_str(), e.max_concurrency),
        ("sliding_window", 4)
    );
    assert_eq!(e.status, "completed_with_errors");
    assert!(looks_like_rfc3339(&e.started_at));
    assert!(e.ended_at.as_deref().is_some_and(looks_like_rfc3339));
    assert_eq!(e.runs, 1);
    assert_eq!(
        (
            e.samples.total,
            e.samples.recorded,
            e.samples.finished,
            e.samples.errored
        ),
        (10, 10, 9, 1)
    );
    // contains: every finished sample passes; even: 0, 2, 4, 6, 8 of the 9 finished.
    let names: Vec<&str> = e.evaluators.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["contains", "even"]);
    assert_eq!(
        (
            e.evaluator("contains").scored,
            e.evaluator("contains").passed
        ),
        (9, 9)
    );
    assert_eq!(e.evaluator("contains").accuracy, Some(1.0));
    assert_eq!(
        (e.evaluator("even").scored, e.evaluator("even").passed),
        (9, 5)
    );
    assert!((e.evaluator("even").accuracy.unwrap() - 5.0 / 9.0).abs() < 1e-9);

    let t = &e.timing;
    assert!(t.wall_seconds > 0.0 && t.wall_seconds < 30.0, "{t:?}");
    let throughput = t.throughput_per_second.expect("throughput");
    assert!(
        (throughput - 10.0 / t.wall_seconds).abs() < 1e-6 * throughput.max(1.0),
        "{t:?}"
    );
    let l = t
        .latency_seconds
        .clone()
        .expect("latency of finished samples");
    assert!(
        0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
    assert!(l.mean > 0.0 && l.mean <= l.max, "{l:?}");
    assert!(
        t.mean_in_flight.is_some() && t.mean_at_server.is_some(),
        "{t:?}"
    );
    // Whether a window run measured an unloaded latency (a request alone at
    // the server, such as the last on a loaded machine) depends on timing;
    // the rule itself is tested in timing.rs and concurrency.rs.
    if let Some(speedup) = t.speedup_over_sequential {
        assert!(speedup > 0.0, "{t:?}");
    }
    // Tokens are the sums of the server's `usage`: two words in, three out, 9 replies.
    assert_eq!((e.tokens.prompt, e.tokens.completion), (18, 27));

    // `--errors`: errors, still no records.
    let out = dir
        .cmd(["show", "x", "--errors", "--format", "json"])
        .output();
    out.assert_exit_code(0);
    let raw: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(raw["evaluations"][0].get("records").is_none());
    assert_eq!(
        keys(&raw["evaluations"][0]["errors"][0]),
        ["attempts", "id", "index", "kind", "message"]
    );
    let report: ExperimentView = out.json();
    let errors = report.only().errors.clone().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].id.as_str(), errors[0].index), ("7", 7));
    assert_eq!(
        (errors[0].kind.as_str(), errors[0].attempts),
        ("http_400", 1)
    );
}

#[test]
fn show_full_records_every_sample() {
    let dir = TestDir::new();
    let server = server();
    dir.write("spec.yaml", &spec("alpha", &server.url(), 10));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);
    let out = dir
        .cmd(["show", "x", "--full", "--format", "json"])
        .output();
    out.assert_exit_code(0);
    let raw: Value = serde_json::from_str(&out.stdout).unwrap();
    let documented = [
        "attempts",
        "completion_tokens",
        "end_seconds",
        "error",
        "error_kind",
        "id",
        "index",
        "latency_seconds",
        "output",
        "prompt",
        "prompt_tokens",
        "scores",
        "start_seconds",
        "variables",
    ];
    for record in raw["evaluations"][0]["records"].as_array().unwrap() {
        let k = keys(record);
        for key in documented {
            assert!(k.contains(&key), "record lacks `{key}`: {record}");
        }
    }
    assert!(
        raw["evaluations"][0]["errors"].is_array(),
        "--full includes errors"
    );

    let report: ExperimentView = out.json();
    let e = report.only();
    let records = e.records();
    let indexes: Vec<u64> = records.iter().map(|r| r.index).collect();
    assert_eq!(
        indexes,
        (0..10).collect::<Vec<_>>(),
        "records in dataset order"
    );
    for r in records {
        assert_eq!(r.id, r.index.to_string());
        assert_eq!(r.variables["text"], format!("alpha {}", r.index));
        assert_eq!(r.prompt, Value::String(format!("alpha {}", r.index)));
        assert!(r.start_seconds <= r.end_seconds, "{r:?}");
        if r.index == 7 {
            assert_eq!(r.output, None);
            assert_eq!(r.error_kind.as_deref(), Some("http_400"));
            assert!(r.error.as_deref().unwrap().contains("bad prompt"), "{r:?}");
            assert_eq!(r.latency_seconds, None);
            assert!(r.scores.values().all(Option::is_none), "{r:?}");
        } else {
            assert_eq!(
                r.output.as_deref(),
                Some(format!("ok alpha {}", r.index).as_str())
            );
            assert_eq!((r.error_kind.as_deref(), r.error.as_deref()), (None, None));
            assert_eq!(r.attempts, 1);
            let latency = r.latency_seconds.expect("latency of a finished sample");
            assert!(
                latency > 0.0 && latency <= r.end_seconds - r.start_seconds + 1e-3,
                "{r:?}"
            );
            assert_eq!((r.prompt_tokens, r.completion_tokens), (Some(2), Some(3)));
            assert_eq!(r.scores["contains"], Some(1.0));
            let even = if r.index % 2 == 0 { 1.0 } else { 0.0 };
            assert_eq!(r.scores["even"], Some(even));
        }
    }
}

#[test]
fn list_summarises_every_experiment() {
    let dir = TestDir::new();
    let out = dir.cmd(["list", "--format", "json"]).output();
    out.assert_exit_code(0);
    assert!(out.json::<ListView>().experiments.is_empty());

    let server = server();
    dir.write("alpha.yaml", &spec("alpha", &server.url(), 10));
    dir.write("beta.yaml", &spec("beta", &server.url(), 4));
    dir.cmd([
        "run",
        "alpha.yaml",
        "beta.yaml",
        "--experiment",
        "both",
        "--quiet",
    ])
    .output()
    .assert_exit_code(1);
    dir.cmd(["run", "beta.yaml", "--experiment", "one", "--quiet"])
        .output()
        .assert_exit_code(0);

    let out = dir.cmd(["list", "--format", "json"]).output();
    out.assert_exit_code(0);
    let raw: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        keys(&raw["experiments"][0]),
        [
            "accuracy",
            "accuracy_ci95",
            "created_at",
            "evaluations",
            "name",
            "samples",
            "scored",
            "status",
            "wall_seconds"
        ]
    );
    let list: ListView = out.json();
    let mut names: Vec<&str> = list.experiments.iter().map(|x| x.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["both", "one"]);
    let both = list.experiments.iter().find(|x| x.name == "both").unwrap();
    assert_eq!(both.evaluations, 2);
    assert_eq!(
        (
            both.samples.total,
            both.samples.recorded,
            both.samples.finished,
            both.samples.errored
        ),
        (14, 14, 13, 1)
    );
    assert_eq!(both.status, "completed_with_errors");
    assert!(looks_like_rfc3339(&both.created_at));
    // Pooled over both evaluators of both evaluations: contains 9/9 + 4/4, even 5/9 + 2/4.
    let pooled = (9.0 + 4.0 + 5.0 + 2.0) / 26.0;
    assert!((both.accuracy.unwrap() - pooled).abs() < 1e-9, "{both:?}");
    // Two verdicts per sample are not 26 independent draws: no interval.
    let both_raw = raw["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "both")
        .unwrap();
    assert_eq!(both_raw["accuracy_ci95"], Value::Null, "{both_raw}");
    let show = dir.show_full("both");
    let walls: f64 = show.evaluations.iter().map(|e| e.timing.wall_seconds).sum();
    assert!(
        (both.wall_seconds - walls).abs() < 1e-6,
        "{both:?} vs {walls}"
    );
    let one = list.experiments.iter().find(|x| x.name == "one").unwrap();
    assert_eq!((one.evaluations, one.status.as_str()), (1, "completed"));
    assert_eq!(one.samples.recorded, 4);
}

#[test]
fn run_prints_the_report_show_prints_for_what_it_ran() {
    let dir = TestDir::new();
    let server = server();
    dir.write("alpha.yaml", &spec("alpha", &server.url(), 3));
    dir.write("beta.yaml", &spec("beta", &server.url(), 2));
    let out = dir
        .cmd([
            "run",
            "alpha.yaml",
            "beta.yaml",
            "--experiment",
            "x",
            "--quiet",
        ])
        .args(["--format", "json"])
        .output();
    out.assert_exit_code(0);
    let ran: Value = serde_json::from_str(&out.stdout).expect("run --format json prints JSON only");
    let shown = dir.cmd(["show", "x", "--format", "json"]).output();
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(ran, shown);
    let _: ExperimentView = out.json();

    // Running one evaluation again reports only that evaluation.
    let out = dir
        .cmd([
            "run",
            "beta.yaml",
            "--experiment",
            "x",
            "--quiet",
            "--format",
            "json",
        ])
        .output();
    out.assert_exit_code(0);
    let ran: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut shown: Value =
        serde_json::from_str(&dir.cmd(["show", "x", "--format", "json"]).output().stdout).unwrap();
    shown["evaluations"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["name"] == "beta");
    assert_eq!(ran, shown);
    // Every sample was already finished: nothing was sent, so no run is recorded (issue 8).
    assert_eq!(ran["evaluations"][0]["runs"], 1);
}

#[test]
fn run_without_a_name_picks_one_and_keeps_stdout_for_json() {
    let dir = TestDir::new();
    let server = server();
    dir.write("alpha.yaml", &spec("alpha", &server.url(), 3));
    // No --quiet: progress goes to stderr, so stdout is still only JSON.
    let out = dir.cmd(["run", "alpha.yaml", "--format", "json"]).output();
    out.assert_exit_code(0);
    let report: ExperimentView = out.json();
    let name = report.experiment.clone();
    let stamp = name
        .strip_prefix("run-")
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        stamp.len() == 15
            && stamp.as_bytes()[8] == b'-'
            && stamp.replace('-', "").bytes().all(|b| b.is_ascii_digit()),
        "run-YYYYMMDD-HHMMSS: {name}"
    );
    out.assert_stderr_contains(&name);
    // A second unnamed run gets a new experiment, not a resume of the first.
    let second: ExperimentView = dir
        .cmd(["run", "alpha.yaml", "--format", "json", "--quiet"])
        .output()
        .json();
    assert_ne!(second.experiment, name);
    assert_eq!(server.count(), 6);
    let list: ListView = dir.cmd(["list", "--format", "json"]).output().json();
    assert_eq!(list.experiments.len(), 2);
}

#[test]
fn validate_json_describes_each_good_spec() {
    let dir = TestDir::new();
    dir.write("alpha.yaml", &spec("alpha", "http://127.0.0.1:9/v1", 3));
    dir.write(
        "beta.yaml",
        &format!(
            "{}concurrency: {{strategy: sequential}}\n",
            spec("beta", "http://127.0.0.1:9/v1", 5)
        ),
    );
    let out = dir
        .cmd(["validate", "alpha.yaml", "beta.yaml", "--format", "json"])
        .output();
    out.assert_exit_code(0);
    let raw: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        keys(&raw[0]),
        [
            "commands",
            "evaluators",
            "model",
            "name",
            "provider",
            "requests",
            "samples",
            "spec",
            "strategy"
        ]
    );
    let checked: Vec<Checked> = out.json();
    assert_eq!(checked.len(), 2);
    assert_eq!(
        (
            checked[0].spec.as_str(),
            checked[0].name.as_str(),
            checked[0].samples
        ),
        ("alpha.yaml", "alpha", 3)
    );
    assert_eq!(
        (checked[0].provider.as_str(), checked[0].model.as_str()),
        ("openai", "test-model")
    );
    assert_eq!(checked[0].evaluators, ["contains", "even"]);
    assert_eq!(checked[1].samples, 5);
    assert_eq!(checked[1].strategy, "sequential");
    assert_ne!(checked[0].strategy, checked[1].strategy);
}

#[test]
fn delete_and_rename_report_in_json() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("alpha.yaml", &spec("alpha", &server.url(), 3));
    dir.cmd(["run", "alpha.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);

    let out = dir.cmd(["rename", "x", "y", "--format", "json"]).output();
    out.assert_exit_code(0);
    assert_eq!(
        out.json::<Value>(),
        serde_json::json!({"renamed": "x", "to": "y"})
    );
    assert!(dir.try_show("x").is_none());
    assert_eq!(dir.show_full("y").only().samples.recorded, 3);

    let out = dir.cmd(["delete", "y", "--format", "json"]).output();
    out.assert_exit_code(0);
    assert_eq!(
        out.json::<Value>(),
        serde_json::json!({"deleted": "y", "samples": 3})
    );
    let list: ListView = dir.cmd(["list", "--format", "json"]).output().json();
    assert!(list.experiments.is_empty(), "{list:?}");
}
