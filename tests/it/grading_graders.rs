//! The string graders of issue 10 end to end (`f1`, `similarity`, `json_match`,
//! `choice`): a loopback server gives each sample a chosen reply, and the scores
//! are read back from `show --full --format json`, through the harness of
//! [`crate::evaluators`]. Spec mistakes in their arguments stop the run before
//! any request, with file:line:col.

use serde_json::json;

use crate::evaluators::{assert_scores, assert_summary, case, run, FAIL, PASS};
use crate::server::TestServer;
use crate::util::{EvaluationView, Spec, TestDir};

/// The score of `evaluator` for `id`, which must be there.
#[track_caller]
fn score(eval: &EvaluationView, id: &str, evaluator: &str) -> f64 {
    eval.score(id, evaluator)
        .unwrap_or_else(|| panic!("`{evaluator}` scored `{id}`"))
}

#[track_caller]
fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "score {got}, want {want}");
}

#[test]
fn f1_scores_tokens_as_squad_does() {
    let (out, eval) = run(
        &[
            case(
                "exact",
                "The Denver Broncos!",
                json!({"answer": "Denver Broncos"}),
            ),
            case(
                "longer",
                "Denver Broncos team",
                json!({"answer": "Denver Broncos"}),
            ),
            case(
                "partial",
                "Santa Clara",
                json!({"answer": "Levi's Stadium Santa"}),
            ),
            case(
                "none",
                "Carolina Panthers",
                json!({"answer": "Denver Broncos"}),
            ),
            case("empty", "", json!({"answer": "the"})),
            case("unicode", "ÉCOLE normale", json!({"answer": "école"})),
        ],
        concat!(
            "  - {type: f1, expected: \"{{ answer }}\"}\n",
            "  - {type: f1, name: strict, expected: \"{{ answer }}\", threshold: 1}\n",
        ),
    );
    out.assert_exit_code(0);
    assert_close(score(&eval, "exact", "f1"), 1.0);
    assert_close(score(&eval, "longer", "f1"), 0.8);
    assert_close(score(&eval, "partial", "f1"), 0.4);
    assert_close(score(&eval, "none", "f1"), 0.0);
    // Both sides normalise to no tokens: identical, as in SQuAD v2.
    assert_close(score(&eval, "empty", "f1"), 1.0);
    assert_close(score(&eval, "unicode", "f1"), 2.0 / 3.0);
    // Graded: passes from 0.5 by default (exact, longer, empty, unicode), or as set.
    assert_summary(&eval, "f1", 6, 4);
    assert_summary(&eval, "strict", 6, 2);
    assert_eq!(eval.samples.errored, 0);
}

#[test]
fn similarity_levenshtein_and_jaro_winkler() {
    let (out, eval) = run(
        &[
            case("same", " Paris\n", json!({"answer": "Paris"})),
            case("case", "PARIS", json!({"answer": "paris"})),
            case("kitten", "kitten", json!({"answer": "sitting"})),
            case("accent", "cafe", json!({"answer": "café"})),
            case("empty", "", json!({"answer": ""})),
        ],
        concat!(
            "  - {type: similarity, expected: \"{{ answer }}\"}\n",
            "  - {type: similarity, name: ci, expected: \"{{ answer }}\", ignore_case: true}\n",
            "  - {type: similarity, name: jw, expected: \"{{ answer }}\", method: jaro_winkler}\n",
        ),
    );
    out.assert_exit_code(0);
    assert_close(score(&eval, "same", "similarity"), 1.0);
    assert_close(score(&eval, "case", "similarity"), 0.0);
    assert_close(score(&eval, "case", "ci"), 1.0);
    assert_close(score(&eval, "kitten", "similarity"), 1.0 - 3.0 / 7.0);
    assert_close(score(&eval, "accent", "similarity"), 0.75);
    assert_close(score(&eval, "empty", "similarity"), 1.0);
    assert_close(
        score(&eval, "kitten", "jw"),
        strsim::jaro_winkler("kitten", "sitting"),
    );
    assert_close(
        score(&eval, "accent", "jw"),
        strsim::jaro_winkler("cafe", "café"),
    );
    assert_close(score(&eval, "empty", "jw"), 1.0);
    // Graded: 0.5 passes by default; kitten/sitting (0.571) does, PARIS/paris (0) only
    // with ignore_case.
    assert_summary(&eval, "similarity", 5, 4);
    assert_summary(&eval, "ci", 5, 5);
    assert_summary(&eval, "jw", 5, 4);
}

#[test]
fn json_match_compares_values_at_a_pointer() {
    let (out, eval) = run(
        &[
            case(
                "plain",
                r#"{"answer": 42, "why": "because"}"#,
                json!({"answer": "42"}),
            ),
            case(
                "fenced",
                "Here:\n```json\n{\"answer\": 42.0}\n```\nDone.",
                json!({"answer": "42"}),
            ),
            case("string", r#"{"answer": "42"}"#, json!({"answer": "42"})),
            case("prose", "The answer is 42.", json!({"answer": "42"})),
            case("missing", r#"{"result": 42}"#, json!({"answer": "42"})),
            case("word", r#"{"answer": "Paris"}"#, json!({"answer": "Paris"})),
        ],
        "  - {type: json_match, path: /answer, expected: \"{{ answer }}\"}\n",
    );
    // Output that is not JSON, or lacks the key, fails; it is not an evaluator error.
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "json_match",
        &[
            ("plain", PASS),
            ("fenced", PASS),
            ("string", FAIL),
            ("prose", FAIL),
            ("missing", FAIL),
            ("word", PASS),
        ],
    );
    assert_summary(&eval, "json_match", 6, 3);
    assert_eq!(eval.samples.errored, 0);
    // A fail says why; a pass says nothing.
    let reason = |id: &str| eval.record(id).reasons.get("json_match").cloned();
    assert_eq!(reason("plain"), None);
    assert_eq!(
        reason("string").as_deref(),
        Some(r#"found "42", expected 42"#)
    );
    assert_eq!(
        reason("prose").as_deref(),
        Some("the output is not JSON, nor holds a JSON object or array")
    );
    assert_eq!(
        reason("missing").as_deref(),
        Some("the JSON has nothing at `/answer`")
    );
}

#[test]
fn json_match_whole_nested_objects_ignore_key_order() {
    // The same expectation written in the spec and given by a structured column.
    let want = json!({"want": {"a": "é", "b": {"x": null, "y": [1, 2]}}});
    let (out, eval) = run(
        &[
            case(
                "same",
                r#"{"b": {"y": [1, 2], "x": null}, "a": "é"}"#,
                want.clone(),
            ),
            case(
                "order",
                r#"{"a": "é", "b": {"x": null, "y": [1.0, 2]}}"#,
                want.clone(),
            ),
            case(
                "array",
                r#"{"a": "é", "b": {"x": null, "y": [2, 1]}}"#,
                want.clone(),
            ),
            case(
                "extra",
                r#"{"a": "é", "b": {"x": null, "y": [1, 2]}, "c": 1}"#,
                want.clone(),
            ),
            case(
                "fence",
                "```json\n{\"a\": \"é\", \"b\": {\"y\": [1, 2], \"x\": null}}\n```",
                want,
            ),
        ],
        concat!(
            "  - type: json_match\n",
            "    expected: {a: é, b: {x: null, y: [1, 2]}}\n",
            "  - {type: json_match, name: column, expected: \"{{ want | tojson }}\"}\n",
        ),
    );
    out.assert_exit_code(0);
    let scores = [
        ("same", PASS),
        ("order", PASS),
        ("array", FAIL),
        ("extra", FAIL),
        ("fence", PASS),
    ];
    assert_scores(&eval, "json_match", &scores);
    assert_scores(&eval, "column", &scores);
    assert_summary(&eval, "json_match", 5, 3);
    assert_summary(&eval, "column", 5, 3);
}

#[test]
fn choice_reads_the_answer_letter() {
    let (out, eval) = run(
        &[
            case(
                "explicit",
                "Let me think.\nANSWER: B",
                json!({"answer": "B"}),
            ),
            case("parens", "Answer: (b)", json!({"answer": "B"})),
            case(
                "changed",
                "ANSWER: A\nNo, wait.\nANSWER: C",
                json!({"answer": "C"}),
            ),
            case("first", "I'd say (A), not B.", json!({"answer": "A"})),
            case("dot", "D. Paris", json!({"answer": "d"})),
            case("lone", "E", json!({"answer": "E"})),
            case("wrong", "ANSWER: A", json!({"answer": "B"})),
            case("none", "I do not know.", json!({"answer": "B"})),
            case("outside", "(B)", json!({"answer": "Q"})),
        ],
        "  - {type: choice, expected: \"{{ answer }}\"}\n",
    );
    assert_scores(
        &eval,
        "choice",
        &[
            ("explicit", PASS),
            ("parens", PASS),
            ("changed", PASS),
            ("first", PASS),
            ("dot", PASS),
            ("lone", PASS),
            ("wrong", FAIL),
            ("none", FAIL),
            ("outside", None),
        ],
    );
    // An `expected` outside the choices cannot be decided: an evaluator error.
    let outside = eval.record("outside");
    assert_eq!(
        outside.error_kind.as_deref(),
        Some("evaluator"),
        "{outside:?}"
    );
    assert!(
        outside
            .error
            .as_deref()
            .unwrap_or("")
            .contains("`Q` is not one of the choices A, B, C, D, E"),
        "{outside:?}"
    );
    assert_eq!(eval.samples.errored, 1);
    // The letter read is kept as the reason.
    let reason = |id: &str| eval.record(id).reasons.get("choice").cloned();
    assert_eq!(reason("changed").as_deref(), Some("answered C"));
    assert_eq!(reason("wrong").as_deref(), Some("answered A, expected B"));
    assert_eq!(reason("none").as_deref(), Some("no answer letter found"));
    out.assert_exit_code(1);
}

#[test]
fn choice_with_more_choices() {
    let (out, eval) = run(
        &[
            case("g", "ANSWER: G", json!({"answer": "G"})),
            case("h", "H)", json!({"answer": "H"})),
        ],
        "  - {type: choice, expected: \"{{ answer }}\", choices: [A, B, C, D, E, F, G, H]}\n",
    );
    out.assert_exit_code(0);
    assert_scores(&eval, "choice", &[("g", PASS), ("h", PASS)]);
}

#[test]
fn f1_takes_the_best_of_several_answers() {
    let answers = |list: &[&str]| json!({"answers": list, "first": list[0]});
    let (out, eval) = run(
        &[
            case("second", "Broncos", answers(&["Denver Broncos", "Broncos"])),
            case(
                "first",
                "Denver Broncos team",
                answers(&["Denver Broncos", "x"]),
            ),
            case("none", "Panthers", answers(&["Denver Broncos", "Broncos"])),
        ],
        concat!(
            "  - type: f1\n",
            "    expected: [\"{{ first }}\", Broncos]\n",
            "  - {type: f1, name: column, expected: \"{{ answers | tojson }}\"}\n",
        ),
    );
    out.assert_exit_code(0);
    for evaluator in ["f1", "column"] {
        assert_close(score(&eval, "second", evaluator), 1.0);
        assert_close(score(&eval, "first", evaluator), 0.8);
        assert_close(score(&eval, "none", evaluator), 0.0);
        assert_summary(&eval, evaluator, 3, 2);
    }
    // An empty list is refused before any request.
    let line = "  - {type: f1, expected: []}";
    assert_refused(
        "{type: f1, expected: []}",
        line.find("expected").unwrap() + 1,
        "expected is an empty list",
    );
}

#[test]
fn json_match_finds_json_in_prose() {
    let (out, eval) = run(
        &[
            case(
                "prose",
                r#"Here is the result: {"answer": 42}. Done."#,
                json!({"answer": "42"}),
            ),
            case(
                "skips",
                r#"See [ref] and {oops}; the JSON is {"answer": 42, "n": [1]}."#,
                json!({"answer": "42"}),
            ),
            case(
                "first",
                r#"{"answer": 41} or maybe {"answer": 42}"#,
                json!({"answer": "42"}),
            ),
            case("none", "The answer is 42.", json!({"answer": "42"})),
        ],
        "  - {type: json_match, path: /answer, expected: \"{{ answer }}\"}\n",
    );
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "json_match",
        &[
            ("prose", PASS),
            ("skips", PASS),
            ("first", FAIL),
            ("none", FAIL),
        ],
    );
    let reason = |id: &str| eval.record(id).reasons.get("json_match").cloned();
    assert_eq!(reason("first").as_deref(), Some("found 41, expected 42"));
}

#[test]
fn choice_reads_the_answer_in_a_sentence() {
    let (out, eval) = run(
        &[
            case("is", "The answer is B", json!({"answer": "B"})),
            case("colon", "The correct answer is: C", json!({"answer": "C"})),
            case(
                "would",
                "(A) is tempting, but the answer would be **D**.",
                json!({"answer": "D"}),
            ),
            case("glued", "The answer is Bravo", json!({"answer": "B"})),
            case("wrong", "I think the answer is [A]", json!({"answer": "B"})),
        ],
        "  - {type: choice, expected: \"{{ answer }}\"}\n",
    );
    out.assert_exit_code(0);
    assert_scores(
        &eval,
        "choice",
        &[
            ("is", PASS),
            ("colon", PASS),
            ("would", PASS),
            ("glued", FAIL),
            ("wrong", FAIL),
        ],
    );
    let reason = |id: &str| eval.record(id).reasons.get("choice").cloned();
    assert_eq!(reason("would").as_deref(), Some("answered D"));
    assert_eq!(reason("wrong").as_deref(), Some("answered A, expected B"));
    assert_eq!(reason("glued").as_deref(), Some("no answer letter found"));
}

/// `evaluator` (one flow mapping) is refused before any request, by `run` and
/// `validate`, with `message` at column `col` of its line (where the key at fault
/// starts, as for every spec error in an evaluator).
#[track_caller]
fn assert_refused(evaluator: &str, col: usize, message: &str) {
    let server = TestServer::builder().reply(|_| "A".into()).start();
    let dir = TestDir::new();
    let spec = Spec::new("graders", &server.url())
        .quick()
        .evaluator(evaluator)
        .to_string();
    let line = spec
        .lines()
        .position(|l| l == format!("  - {evaluator}"))
        .expect("the evaluator's line")
        + 1;
    dir.write("spec.yaml", &spec);
    for command in ["run", "validate"] {
        let out = dir.cmd([command, "spec.yaml"]).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains(&format!("spec.yaml:{line}:{col}: {message}"));
    }
    assert_eq!(server.count(), 0, "no request may be sent");
}

#[test]
fn bad_grader_arguments_stop_the_run_with_their_position() {
    let line = "  - {type: choice, expected: F}";
    assert_refused(
        "{type: choice, expected: F}",
        line.find("expected").unwrap() + 1,
        "expected `F` is not one of the choices A, B, C, D, E",
    );
    let line = "  - {type: choice, expected: A, choices: [A, AB]}";
    assert_refused(
        "{type: choice, expected: A, choices: [A, AB]}",
        line.find("choices").unwrap() + 1,
        "choice `AB` is not a single letter",
    );
    let line = "  - {type: json_match, expected: 1, path: answer}";
    assert_refused(
        "{type: json_match, expected: 1, path: answer}",
        line.find("path").unwrap() + 1,
        "path `answer` is not a JSON Pointer: it must start with `/`",
    );
    let line = "  - {type: similarity, expected: x, method: hamming}";
    assert_refused(
        "{type: similarity, expected: x, method: hamming}",
        line.find("hamming").unwrap() + 1,
        "unknown value `hamming` in `evaluators[0].method`",
    );
    // A missing key is reported at the entry's first key.
    assert_refused("{type: f1}", 6, "f1 needs `expected`");
}
