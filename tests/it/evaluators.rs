//! Each evaluator end to end: the test server gives a chosen reply per sample,
//! and the per-sample scores are read back from `show --full --format json`.
//! Its harness ([`run`]) is shared with the modules of newer evaluators.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::server::TestServer;
use crate::util::{EvaluationView, Out, Spec, TestDir};

/// One sample: its id, the reply the server gives it, and its other columns.
pub(crate) struct Case {
    id: &'static str,
    reply: &'static str,
    columns: Value,
}

pub(crate) fn case(id: &'static str, reply: &'static str, columns: Value) -> Case {
    Case { id, reply, columns }
}

/// Runs `cases` through a spec with `evaluators` (YAML list items) and returns
/// the run's output and the evaluation's full report.
pub(crate) fn run(cases: &[Case], evaluators: &str) -> (Out, EvaluationView) {
    let replies: HashMap<String, String> = cases
        .iter()
        .map(|c| (format!("question {}", c.id), c.reply.to_owned()))
        .collect();
    let server = TestServer::builder()
        .reply(move |prompt| {
            replies
                .get(prompt)
                .cloned()
                .unwrap_or_else(|| format!("unexpected prompt {prompt:?}"))
        })
        .start();
    let rows: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut row = c.columns.as_object().cloned().unwrap_or_default();
            row.insert("id".into(), json!(c.id));
            Value::Object(row)
        })
        .collect();
    let dir = TestDir::new();
    let spec = Spec::new("scoring", &server.url())
        .dataset(&format!(
            "  id: id\n  rows: {}\n",
            serde_json::to_string(&rows).unwrap()
        ))
        .quick()
        .prompt("\"question {{ id }}\"")
        .evaluators(evaluators)
        .to_string();
    dir.write("spec.yaml", &spec);
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    assert_eq!(
        server.count(),
        cases.len(),
        "one request per sample: {:?}",
        server.prompts()
    );
    let report = dir.show_full("x");
    let eval = report.only().clone();
    assert_eq!(eval.samples.total, cases.len() as u64);
    assert_eq!(eval.samples.recorded, cases.len() as u64);
    for c in cases {
        assert_eq!(
            eval.record(c.id).output.as_deref(),
            Some(c.reply),
            "the output is the reply as sent"
        );
    }
    (out, eval)
}

/// Asserts the scores of `evaluator` per sample id.
#[track_caller]
pub(crate) fn assert_scores(
    eval: &EvaluationView,
    evaluator: &str,
    expected: &[(&str, Option<f64>)],
) {
    let got: Vec<(String, Option<f64>)> = expected
        .iter()
        .map(|(id, _)| (id.to_string(), eval.score(id, evaluator)))
        .collect();
    let want: Vec<(String, Option<f64>)> = expected
        .iter()
        .map(|(id, s)| (id.to_string(), *s))
        .collect();
    assert_eq!(got, want, "scores of `{evaluator}`");
}

#[track_caller]
pub(crate) fn assert_summary(eval: &EvaluationView, evaluator: &str, scored: u64, passed: u64) {
    let e = eval.evaluator(evaluator);
    assert_eq!((e.scored, e.passed), (scored, passed), "{e:?}");
    let accuracy = e.accuracy.expect("accuracy when something was scored");
    assert!(
        (accuracy - passed as f64 / scored as f64).abs() < 1e-9,
        "{e:?}"
    );
}

pub(crate) const PASS: Option<f64> = Some(1.0);
pub(crate) const FAIL: Option<f64> = Some(0.0);

#[test]
fn exact_match_trims_and_ignore_case_folds() {
    let (out, eval) = run(
        &[
            case("a", " positive\n", json!({"expected": "positive"})),
            case("b", "Positive", json!({"expected": "positive"})),
            case("c", "positive!", json!({"expected": "positive"})),
            case("d", "negative", json!({"expected": "positive"})),
        ],
        "  - type: exact_match\n    expected: \"{{ expected }}\"\n  - {type: exact_match, name: exact_ci, expected: \"{{ expected }}\", ignore_case: true}\n",
    );
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "exact_match",
        &[("a", PASS), ("b", FAIL), ("c", FAIL), ("d", FAIL)],
    );
    assert_scores(
        &eval,
        "exact_ci",
        &[("a", PASS), ("b", PASS), ("c", FAIL), ("d", FAIL)],
    );
    assert_summary(&eval, "exact_match", 4, 1);
    assert_summary(&eval, "exact_ci", 4, 2);
    assert_eq!(eval.samples.finished, 4);
}

#[test]
fn contains_with_and_without_ignore_case() {
    let (out, eval) = run(
        &[
            case("a", "The capital is Paris.", json!({"city": "Paris"})),
            case("b", "the capital is paris", json!({"city": "Paris"})),
            case("c", "Lyon, surely", json!({"city": "Paris"})),
        ],
        "  - {type: contains, expected: \"{{ city }}\"}\n  - {type: contains, name: contains_ci, expected: \"{{ city }}\", ignore_case: true}\n",
    );
    out.assert_exit_code(0);
    assert_scores(&eval, "contains", &[("a", PASS), ("b", FAIL), ("c", FAIL)]);
    assert_scores(
        &eval,
        "contains_ci",
        &[("a", PASS), ("b", PASS), ("c", FAIL)],
    );
    assert_summary(&eval, "contains", 3, 1);
    assert_summary(&eval, "contains_ci", 3, 2);
}

#[test]
fn regex_literal_and_templated_patterns() {
    let (out, eval) = run(
        &[
            case("a", "555-1234", json!({"expected": "555-1234"})),
            case("b", "call 555-1234 now", json!({"expected": "555-1234"})),
            case("c", "neutral", json!({"expected": "neutral"})),
            case("d", "neutral.", json!({"expected": "neutral"})),
        ],
        concat!(
            "  - {type: regex, name: phone, pattern: '^\\d{3}-\\d{4}$'}\n",
            "  - {type: regex, name: anywhere, pattern: '\\d{3}-\\d{4}'}\n",
            "  - {type: regex, name: whole, pattern: \"^{{ expected }}$\"}\n",
        ),
    );
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "phone",
        &[("a", PASS), ("b", FAIL), ("c", FAIL), ("d", FAIL)],
    );
    assert_scores(
        &eval,
        "anywhere",
        &[("a", PASS), ("b", PASS), ("c", FAIL), ("d", FAIL)],
    );
    assert_scores(
        &eval,
        "whole",
        &[("a", PASS), ("b", FAIL), ("c", PASS), ("d", FAIL)],
    );
    assert_summary(&eval, "phone", 4, 1);
    assert_summary(&eval, "anywhere", 4, 2);
    assert_summary(&eval, "whole", 4, 2);
}

#[test]
fn numeric_match_takes_the_last_number_within_tolerance() {
    let (out, eval) = run(
        &[
            case("a", "The answer is 1.24999", json!({"answer": 1.25})),
            case("b", "The answer is 1.3", json!({"answer": 1.25})),
            case("c", "no idea", json!({"answer": 1.25})),
            case("d", "3 apples and 4 pears: 7", json!({"answer": 7})),
            case("e", "total -1,234.5 units", json!({"answer": -1234.5})),
            case("f", "42", json!({"answer": "n/a"})),
        ],
        "  - {type: numeric_match, name: close, expected: \"{{ answer }}\", tolerance: 0.01}\n  - {type: numeric_match, name: strict, expected: \"{{ answer }}\"}\n",
    );
    let undecided = None;
    assert_scores(
        &eval,
        "close",
        &[
            ("a", PASS),
            ("b", FAIL),
            ("c", FAIL),
            ("d", PASS),
            ("e", PASS),
            ("f", undecided),
        ],
    );
    assert_scores(
        &eval,
        "strict",
        &[
            ("a", FAIL),
            ("b", FAIL),
            ("c", FAIL),
            ("d", PASS),
            ("e", PASS),
            ("f", undecided),
        ],
    );
    assert_summary(&eval, "close", 5, 3);
    assert_summary(&eval, "strict", 5, 2);
    // A sample whose `expected` is not a number cannot be scored: an evaluator error.
    let f = eval.record("f");
    assert_eq!(f.error_kind.as_deref(), Some("evaluator"), "{f:?}");
    assert!(
        f.error.as_deref().unwrap_or("").contains("n/a"),
        "the error names the bad value: {f:?}"
    );
    assert_eq!(eval.samples.errored, 1);
    assert_eq!(eval.samples.finished, 5);
    out.assert_exit_code(1);
}

#[test]
fn valid_json_with_and_without_schema() {
    let (out, eval) = run(
        &[
            case("a", r#"{"answer": 4}"#, json!({})),
            case("b", r#"{"answer": "four"}"#, json!({})),
            case("c", "{}", json!({})),
            case("d", "{a: 1}", json!({})),
            case("e", " [1, 2] \n", json!({})),
            case("f", "```json\n{\"answer\": 4}\n```", json!({})),
        ],
        "  - {type: valid_json, name: json}\n  - type: valid_json\n    name: schema\n    schema:\n      type: object\n      required: [answer]\n      properties: {answer: {type: integer}}\n",
    );
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "json",
        &[
            ("a", PASS),
            ("b", PASS),
            ("c", PASS),
            ("d", FAIL),
            ("e", PASS),
            ("f", FAIL),
        ],
    );
    assert_scores(
        &eval,
        "schema",
        &[
            ("a", PASS),
            ("b", FAIL),
            ("c", FAIL),
            ("d", FAIL),
            ("e", FAIL),
            ("f", FAIL),
        ],
    );
    assert_summary(&eval, "json", 6, 4);
    assert_summary(&eval, "schema", 6, 1);
}

#[test]
fn evaluator_arguments_may_use_the_output() {
    // `output` is a variable of evaluator templates: here the reply must echo the city.
    let (out, eval) = run(
        &[
            case("a", "Paris", json!({"city": "Paris"})),
            case("b", "Rome", json!({"city": "Paris"})),
        ],
        "  - {type: exact_match, name: echoed, expected: \"{{ output if output == city else 'no' }}\"}\n",
    );
    out.assert_exit_code(0);
    assert_scores(&eval, "echoed", &[("a", PASS), ("b", FAIL)]);
}

/// `similarity` on long rows runs on blocking threads: two rows of 8000
/// characters each (seconds of work in a debug build) leave the other
/// samples' latency alone, and a pair past the cap (40 000 x 40 000) is
/// refused at once with the lengths, never compared.
#[test]
fn long_similarity_rows_never_stall_the_other_samples() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let long = |n: usize, step: usize| -> String {
        (0..n)
            .map(|i| (b'a' + (i * step % 26) as u8) as char)
            .collect()
    };
    let mut rows = String::new();
    for i in 0..300 {
        let (text, expected) = match i {
            50 | 150 => (long(8_000, 7), long(8_000, 11)),
            250 => (long(40_000, 7), long(40_000, 11)),
            _ => (format!("short {i}"), format!("short {i}")),
        };
        rows.push_str(
            &json!({"id": i.to_string(), "text": text, "expected": expected}).to_string(),
        );
        rows.push('\n');
    }
    dir.write("rows.jsonl", &rows);
    let spec = Spec::new("long", &server.url())
        .dataset("  path: rows.jsonl\n  id: id\n")
        .quick()
        .evaluator("{type: similarity, expected: \"{{ expected }}\"}")
        .tail("concurrency: {strategy: sliding_window, max_concurrency: 8}\n")
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);
    let report = dir.show_full("x").only().clone();
    let records = report.records();
    assert_eq!(records.len(), 300);
    for r in records {
        match r.index {
            50 | 150 => assert!(r.scores["similarity"].is_some(), "{:?}", r.error),
            250 => {
                let e = r.error.as_deref().unwrap_or_default();
                assert!(
                    e.contains("(40000 characters)") && e.contains("too long to compare"),
                    "{e}"
                );
            }
            _ => assert_eq!(r.scores["similarity"], Some(1.0)),
        }
    }
    let p99 = report.timing.latency_seconds.expect("latency").p99;
    assert!(
        p99 < 0.5,
        "p99 latency {p99} s: long rows stalled the others"
    );
}
