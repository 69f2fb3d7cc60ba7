//! Issue 8, "Data and templates": what testing from outside broke in datasets,
//! templates, `numeric_match`, YAML and `validate`, each pinned by the run of the
//! real binary that broke it.

use std::time::Duration;

use crate::server::TestServer;
use crate::util::{Out, Spec, TestDir};

/// `spec.yaml` for the server at `url`: `dataset` is the YAML under `dataset:`.
fn spec(url: &str, dataset: &str, prompt: &str, evaluators: &str) -> String {
    Spec::new("data", url)
        .dataset(dataset)
        .quick()
        .prompt(prompt)
        .evaluators(evaluators)
        .to_string()
}

const CONTAINS_X: &str = "  - {type: contains, expected: \"x\"}\n";

/// Runs `spec.yaml` sequentially into experiment `x`.
fn run(dir: &TestDir) -> Out {
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .args(["--concurrency", "sequential"])
        .output()
}

/// 1-based (line, column) of the first `needle` in `text`, columns in characters.
#[track_caller]
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

// --- 2. Runaway templates ---------------------------------------------------

const RUNAWAY: &str = "\"{% for a in text %}{% for b in text %}{% for c in text %}{% endfor %}{% endfor %}{% endfor %}\"";

fn runaway_spec(url: &str) -> String {
    let dataset = format!("  rows:\n    - {{text: {}}}\n", "x".repeat(3000));
    spec(url, &dataset, RUNAWAY, CONTAINS_X)
}

#[test]
fn a_runaway_template_fails_its_sample_with_a_step_error() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &runaway_spec(&server.url()));
    let out = run(&dir);
    out.assert_exit_code(1);
    assert!(
        out.elapsed < Duration::from_secs(30),
        "took {:?}",
        out.elapsed
    );
    assert_eq!(server.count(), 0, "nothing can be sent without a prompt");
    let report = dir.show_full("x");
    let record = &report.only().records()[0];
    assert_eq!(record.error_kind.as_deref(), Some("template"));
    let error = record.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("template used more than 1000000 steps"),
        "{error}"
    );
}

/// A template that is heavy but within bounds (90,000 loop steps, past what a
/// render may take on an async worker) is rendered on a blocking thread and sent.
#[test]
fn a_heavy_template_within_the_budget_renders_and_is_sent() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let dataset = format!("  rows:\n    - {{text: {}}}\n", "x".repeat(300));
    let heavy = "\"{% for a in text %}{% for b in text %}{% endfor %}{% endfor %}{{ text[:5] }}\"";
    dir.write(
        "spec.yaml",
        &spec(&server.url(), &dataset, heavy, CONTAINS_X),
    );
    run(&dir).assert_exit_code(0);
    assert_eq!(server.prompts(), vec!["xxxxx".to_owned()]);
}

#[test]
fn validate_refuses_a_runaway_template_at_the_prompt() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let text = runaway_spec(&server.url());
    dir.write("spec.yaml", &text);
    let out = dir.cmd(["validate", "spec.yaml"]).output();
    out.assert_exit_code(2);
    let (line, col) = pos(&text, RUNAWAY);
    out.assert_stderr_contains(&format!(
        "error: spec.yaml:{line}:{col}: template in `prompt` fails on row 1 (spec.yaml:4): template used more than 1000000 steps"
    ));
    assert!(
        out.elapsed < Duration::from_secs(30),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn validate_refuses_a_prompt_that_fails_on_an_early_row() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("data.jsonl", "{\"a\": \"1\"}\n{\"b\": \"2\"}\n");
    let text = spec(
        &server.url(),
        "  path: data.jsonl\n",
        "\"{{ row['a'] }}\"",
        CONTAINS_X,
    );
    dir.write("spec.yaml", &text);
    let out = dir.cmd(["validate", "spec.yaml"]).output();
    out.assert_exit_code(2);
    let (line, col) = pos(&text, "\"{{ row");
    out.assert_stderr_contains(&format!(
        "error: spec.yaml:{line}:{col}: template in `prompt` fails on row 2 (data.jsonl:2): "
    ));
}

// --- 17. Column names that are not identifiers; Jinja's own globals --------

#[test]
fn any_column_name_can_be_read_through_row() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("data.csv", "review text,note-1,naïve,n\ngood film,a,b,1\n");
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            "  path: data.csv\n",
            r#"'{{ row["review text"] }}|{{ row["note-1"] }}|{{ row["naïve"] }}|{{ n }}|{{ row.n }}'"#,
            CONTAINS_X,
        ),
    );
    run(&dir).assert_exit_code(0);
    assert_eq!(server.prompts(), ["good film|a|b|1|1"]);
}

#[test]
fn the_hint_for_a_column_with_a_space_suggests_row() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("data.csv", "review text,label\ngood film,a\n");
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            "  path: data.csv\n",
            "\"{{ review_text }}\"",
            CONTAINS_X,
        ),
    );
    let out = run(&dir);
    out.assert_exit_code(2);
    out.assert_stderr_contains("uses `review_text`, which is not a dataset column");
    out.assert_stderr_contains(
        r#"hint: did you mean `row["review text"]`? Available: row["review text"], label"#,
    );
}

#[test]
fn jinja_globals_are_not_taken_for_columns() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            "  rows:\n    - {text: good}\n",
            "\"{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ dict(a=1).a }} {{ debug is defined }} {{ text }}\"",
            CONTAINS_X,
        ),
    );
    run(&dir).assert_exit_code(0);
    assert_eq!(server.prompts(), ["3 1 True good"]);
}

// --- 20. `validate` makes the checks `run` makes ---------------------------

/// Runs both commands on `specs` and checks they fail alike, with `message`.
#[track_caller]
fn run_and_validate_refuse(dir: &TestDir, specs: &[&str], message: &str) {
    let run = dir
        .cmd(["run", "--experiment", "x", "--quiet"])
        .args(specs)
        .output();
    run.assert_exit_code(2);
    run.assert_stderr_contains(message);
    let validate = dir.cmd(["validate"]).args(specs).output();
    validate.assert_exit_code(2);
    validate.assert_stderr_contains(message);
}

#[test]
fn validate_refuses_a_missing_api_key_like_run() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let text = spec(
        &server.url(),
        "  rows:\n    - {text: good}\n",
        "\"{{ text }}\"",
        CONTAINS_X,
    )
    .replace(
        "  name: test-model\n",
        "  name: test-model\n  api_key_env: DOTEVALS_IT_UNSET_KEY\n",
    );
    dir.write("spec.yaml", &text);
    run_and_validate_refuse(
        &dir,
        &["spec.yaml"],
        "error: spec.yaml: the API key variable DOTEVALS_IT_UNSET_KEY is not set",
    );
    assert_eq!(server.count(), 0);
}

#[test]
fn validate_refuses_two_specs_with_one_evaluation_name_like_run() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let text = spec(
        &server.url(),
        "  rows:\n    - {text: good}\n",
        "\"{{ text }}\"",
        CONTAINS_X,
    );
    dir.write("a.yaml", &text);
    dir.write("b.yaml", &text);
    run_and_validate_refuse(
        &dir,
        &["a.yaml", "b.yaml"],
        "error: a.yaml and b.yaml both define evaluation `data`",
    );
    assert_eq!(server.count(), 0);
}

// --- 16. Byte order marks, TSV quotes, CSV headers --------------------------

const BOM: &str = "\u{feff}";

/// Runs `data` as `file` with prompt `{{ text }}` and returns the prompts sent.
fn prompts_from(file: &str, data: &str) -> Vec<String> {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(file, data);
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            &format!("  path: {file}\n"),
            "\"{{ text }}\"",
            CONTAINS_X,
        ),
    );
    run(&dir).assert_exit_code(0);
    server.prompts()
}

#[test]
fn a_byte_order_mark_is_skipped_in_jsonl() {
    let data = format!("{BOM}{{\"text\": \"a\"}}\n{{\"text\": \"b\"}}\n");
    assert_eq!(prompts_from("data.jsonl", &data), ["a", "b"]);
}

#[test]
fn a_byte_order_mark_is_skipped_in_json() {
    let data = format!("{BOM}[{{\"text\": \"a\"}}, {{\"text\": \"b\"}}]\n");
    assert_eq!(prompts_from("data.json", &data), ["a", "b"]);
}

#[test]
fn a_byte_order_mark_is_skipped_in_csv_and_tsv() {
    assert_eq!(prompts_from("data.csv", &format!("{BOM}text\na\n")), ["a"]);
    assert_eq!(prompts_from("data.tsv", &format!("{BOM}text\na\n")), ["a"]);
}

#[test]
fn a_byte_order_mark_is_skipped_in_a_spec() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let text = spec(
        &server.url(),
        "  rows:\n    - {text: a}\n",
        "\"{{ text }}\"",
        CONTAINS_X,
    );
    dir.write("spec.yaml", &format!("{BOM}{text}"));
    run(&dir).assert_exit_code(0);
    assert_eq!(server.prompts(), ["a"]);
    dir.cmd(["validate", "spec.yaml"])
        .output()
        .assert_exit_code(0);
}

#[test]
fn tsv_takes_quotes_as_written() {
    let data = "text\tlabel\n\"Great\" she said\tpositive\n\"a, b\"\tx\nsay \"hi\"\ty\n";
    assert_eq!(
        prompts_from("data.tsv", data),
        ["\"Great\" she said", "\"a, b\"", "say \"hi\""]
    );
}

#[test]
fn csv_still_reads_quoted_fields() {
    let data = "text,label\n\"a, b\",x\n\"say \"\"hi\"\"\",y\n";
    assert_eq!(prompts_from("data.csv", data), ["a, b", "say \"hi\""]);
}

#[test]
fn a_csv_header_naming_a_column_twice_is_refused() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let data = "text,label,\"text\"\na,b,c\n";
    dir.write("data.csv", data);
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            "  path: data.csv\n",
            "\"{{ text }}\"",
            CONTAINS_X,
        ),
    );
    let message = "error: data.csv:1:12: the header names column `text` twice (columns 1 and 3)";
    let out = run(&dir);
    out.assert_exit_code(2);
    out.assert_stderr_contains(message);
    let out = dir.cmd(["validate", "spec.yaml"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains(message);
    assert_eq!(server.count(), 0);
}

#[test]
fn an_empty_csv_says_it_is_empty() {
    for file in ["data.csv", "data.tsv"] {
        let dir = TestDir::new();
        let server = TestServer::echo();
        dir.write(file, "");
        dir.write(
            "spec.yaml",
            &spec(
                &server.url(),
                &format!("  path: {file}\n"),
                "\"{{ text }}\"",
                CONTAINS_X,
            ),
        );
        let out = run(&dir);
        out.assert_exit_code(2);
        out.assert_stderr_contains(&format!("error: {file}: the dataset file is empty"));
        assert!(
            !out.stderr.contains("available variables"),
            "{}",
            out.stderr
        );
    }
}

// --- 18. numeric_match's grammar -------------------------------------------

#[test]
fn numeric_match_reads_numbers_by_its_documented_grammar() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    // (output, expected, passes?)
    let cases = [
        ("1,2", "12", Some(false)),
        ("2024-01-05", "-5", Some(false)),
        ("12345678901234567891", "12345678901234567890", Some(false)),
        ("12345678901234567890", "12345678901234567890", Some(true)),
        ("the result is \u{2212}5", "-5", Some(true)),
        ("the result is \u{2212}5", "5", Some(false)),
        ("1,234,567", "1234567", Some(true)),
        ("inf", "NaN", None),
        ("1e308", "1e309", None),
    ];
    let rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|(out, answer, _)| serde_json::json!({"out": out, "answer": answer}))
        .collect();
    dir.write(
        "spec.yaml",
        &spec(
            &server.url(),
            &format!("  rows: {}\n", serde_json::to_string(&rows).unwrap()),
            "\"{{ out }}\"",
            "  - {type: numeric_match, expected: \"{{ answer }}\"}\n",
        ),
    );
    run(&dir).assert_exit_code(1);
    let report = dir.show_full("x");
    for (i, (out, answer, passes)) in cases.iter().enumerate() {
        let record = report.only().record(&i.to_string());
        let score = record.scores.get("numeric_match").copied().flatten();
        assert_eq!(
            score.map(|s| s == 1.0),
            *passes,
            "output {out:?}, expected {answer:?}: {record:?}"
        );
        if passes.is_none() {
            assert_eq!(record.error_kind.as_deref(), Some("evaluator"));
        }
    }
}

#[test]
fn numeric_match_refuses_a_literal_expected_that_is_not_a_finite_number() {
    for literal in [
        ".nan",
        "NaN",
        ".inf",
        "\"1e309\"",
        "\"1,2\"",
        "\"2024-01-05\"",
    ] {
        let dir = TestDir::new();
        let server = TestServer::echo();
        let text = spec(
            &server.url(),
            "  rows:\n    - {text: a}\n",
            "\"{{ text }}\"",
            &format!("  - type: numeric_match\n    expected: {literal}\n"),
        );
        dir.write("spec.yaml", &text);
        let (line, col) = pos(&text, "expected:");
        let out = run(&dir);
        out.assert_exit_code(2);
        out.assert_stderr_contains(&format!("error: spec.yaml:{line}:{col}: expected `"));
        assert_eq!(server.count(), 0);
    }
}

// --- 19. Deeply nested YAML --------------------------------------------------

#[test]
fn a_spec_nested_100k_levels_deep_is_refused_quickly() {
    let n = 100_000;
    for (name, nested) in [
        ("lists", format!("{}{}", "[".repeat(n), "]".repeat(n))),
        ("maps", format!("{}1{}", "{a: ".repeat(n), "}".repeat(n))),
        ("unclosed", "[".repeat(n)),
        ("block", format!("\n  {}x", "- ".repeat(n))),
    ] {
        let dir = TestDir::new();
        let text = format!(
            "name: deep\ndescription: {nested}\ndataset:\n  rows: [{{text: a}}]\nmodel: {{provider: mock, replies: [{{reply: a}}]}}\nprompt: hi\n"
        );
        dir.write("spec.yaml", &text);
        for command in ["run", "validate"] {
            let out = dir.cmd([command, "spec.yaml"]).output();
            out.assert_exit_code(2);
            out.assert_stderr_contains("error: spec.yaml:");
            out.assert_stderr_contains("the spec nests deeper than 64 levels");
            assert!(
                out.elapsed < Duration::from_secs(5),
                "{name}: {command} took {:?}",
                out.elapsed
            );
        }
    }
}
