//! `dotevals export NAME [--format jsonl|csv] [-o FILE] [--eval NAME]`: every
//! sample record, with the fields `show --full` gives it, as JSON lines or CSV.

use serde_json::{Map, Value};

use crate::server::{Reply, TestServer};
use crate::util::{Spec, TestDir, QUICK};

/// Rows whose text needs CSV quoting: a comma, double quotes, a line break.
const TRICKY_ROWS: &str =
    r#"[{text: "plain"}, {text: "a, b"}, {text: "say \"hi\""}, {text: "two\nlines"}]"#;

/// Experiment `x` with two evaluations against an echo server: `first` (4
/// tricky rows, one evaluator) and `second` (2 rows sent twice, two evaluators).
fn two_evaluations(dir: &TestDir, server: &TestServer) {
    let first = Spec::new("first", &server.url())
        .rows(TRICKY_ROWS)
        .quick()
        .evaluator("{type: contains, expected: a}")
        .to_string();
    let second = Spec::new("second", &server.url())
        .samples(2)
        .quick()
        .evaluator("{type: contains, expected: sample}")
        .evaluator("{type: exact_match, expected: nope}")
        .tail("repeats: 2\n")
        .to_string();
    dir.write("first.yaml", &first);
    dir.write("second.yaml", &second);
    dir.cmd(["run", "first.yaml", "second.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
}

/// The lines of a JSONL export, parsed.
fn lines(stdout: &str) -> Vec<Map<String, Value>> {
    stdout
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("not a JSON object line: {l}: {other:?}"),
        })
        .collect()
}

/// `show NAME --full --format json`, as JSON.
fn show_full(dir: &TestDir, name: &str) -> Value {
    let out = dir
        .cmd(["show", name, "--full", "--format", "json"])
        .output();
    out.assert_exit_code(0);
    out.json()
}

/// A CSV export read back with an RFC 4180 reader: the header and the rows.
fn read_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .expect("a csv header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("a csv row").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

#[test]
fn jsonl_lines_are_show_full_records_with_their_evaluation_and_repeat() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    two_evaluations(&dir, &server);
    let out = dir.cmd(["export", "x"]).output();
    out.assert_exit_code(0);
    let got = lines(&out.stdout);
    let show = show_full(&dir, "x");
    let evaluations = show["evaluations"].as_array().expect("evaluations");
    let mut expected = Vec::new();
    for e in evaluations {
        for r in e["records"].as_array().expect("records") {
            expected.push((e["name"].as_str().expect("a name").to_owned(), r.clone()));
        }
    }
    assert_eq!(got.len(), 8, "4 rows, and 2 rows twice");
    assert_eq!(got.len(), expected.len());
    let mut repeats = Vec::new();
    for (line, (evaluation, record)) in got.iter().zip(&expected) {
        assert_eq!(line["evaluation"], evaluation.as_str());
        for (key, value) in record.as_object().expect("a record") {
            assert_eq!(&line[key], value, "{key} of {line:?}");
        }
        // Every line has every key, so tools infer one schema.
        for key in ["reasons", "judges"] {
            if record.get(key).is_none() {
                assert_eq!(line[key], Value::Object(Map::new()), "{key}");
            }
        }
        let extra: Vec<&String> = line
            .keys()
            .filter(|k| record.get(k.as_str()).is_none())
            .filter(|k| !["reasons", "judges"].contains(&k.as_str()))
            .collect();
        assert_eq!(extra, ["evaluation", "repeat"]);
        repeats.push((
            line["evaluation"].as_str().unwrap_or_default().to_owned(),
            line["index"].as_u64(),
            line["repeat"].as_u64(),
        ));
    }
    repeats.sort();
    let second: Vec<_> = repeats
        .iter()
        .filter(|r| r.0 == "second")
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(
        second,
        [
            (Some(0), Some(0)),
            (Some(0), Some(1)),
            (Some(1), Some(0)),
            (Some(1), Some(1))
        ]
    );
    assert_eq!(got[3]["output"], "two\nlines");

    // --eval keeps one evaluation.
    let only = dir
        .cmd(["export", "x", "--eval", "second", "--format", "jsonl"])
        .output();
    only.assert_exit_code(0);
    let only = lines(&only.stdout);
    assert_eq!(only.len(), 4);
    assert!(only.iter().all(|l| l["evaluation"] == "second"));
}

#[test]
fn csv_has_a_header_a_column_per_evaluator_and_one_row_per_sample() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    two_evaluations(&dir, &server);
    let out = dir.cmd(["export", "x", "--format", "csv"]).output();
    out.assert_exit_code(0);
    let (header, rows) = read_csv(&out.stdout);
    assert_eq!(
        header,
        [
            "evaluation",
            "id",
            "index",
            "repeat",
            "variables",
            "prompt",
            "output",
            "score.contains",
            "score.exact_match",
            "passed.contains",
            "passed.exact_match",
            "reasons",
            "error_kind",
            "error",
            "cached",
            "attempts",
            "latency_seconds",
            "start_seconds",
            "end_seconds",
            "prompt_tokens",
            "completion_tokens",
            "cached_prompt_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "time_to_first_token_seconds",
            "judges",
            "endpoint",
        ]
    );
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r.len() == header.len()));
    // The same records as the JSONL export, cell by cell.
    let json = lines(&dir.cmd(["export", "x"]).output().stdout);
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (row, line) in rows.iter().zip(&json) {
        for name in [
            "evaluation",
            "id",
            "index",
            "repeat",
            "prompt",
            "output",
            "error_kind",
            "error",
            "attempts",
            "latency_seconds",
            "start_seconds",
            "end_seconds",
            "prompt_tokens",
            "completion_tokens",
        ] {
            assert_eq!(row[col(name)], text(&line[name]), "{name}");
        }
        for nested in ["variables", "reasons", "judges"] {
            let cell: Value = serde_json::from_str(&row[col(nested)]).expect("JSON text");
            assert_eq!(cell, line[nested], "{nested}");
        }
        for ev in ["contains", "exact_match"] {
            let score = line["scores"].get(ev).cloned().unwrap_or(Value::Null);
            let passed = line["passed"].get(ev).cloned().unwrap_or(Value::Null);
            assert_eq!(row[col(&format!("score.{ev}"))], text(&score), "{ev}");
            assert_eq!(row[col(&format!("passed.{ev}"))], text(&passed), "{ev}");
        }
    }
    // Quoting round-trips commas, quotes and line breaks; an evaluator the
    // evaluation does not have is an empty cell.
    let outputs: Vec<&str> = rows
        .iter()
        .take(4)
        .map(|r| r[col("output")].as_str())
        .collect();
    assert_eq!(outputs, ["plain", "a, b", "say \"hi\"", "two\nlines"]);
    assert_eq!(rows[1][col("score.contains")], "1.0");
    assert_eq!(rows[3][col("passed.contains")], "false");
    assert_eq!(rows[0][col("score.exact_match")], "");
    assert_eq!(rows[4][col("score.exact_match")], "0.0");
}

#[test]
fn output_file_is_written_whole_and_nothing_else_is_left() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    two_evaluations(&dir, &server);
    let stdout = dir.cmd(["export", "x"]).output().stdout;
    let out = dir.cmd(["export", "x", "-o", "out/x.jsonl"]).output();
    out.assert_exit_code(2)
        .assert_stderr_contains("out/x.jsonl");
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let out = dir.cmd(["export", "x", "-o", "out/x.jsonl"]).output();
    out.assert_exit_code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(dir.read("out/x.jsonl"), stdout);
    let csv = dir
        .cmd(["export", "x", "--format", "csv", "--output", "out/x.csv"])
        .output();
    csv.assert_exit_code(0);
    assert_eq!(read_csv(&dir.read("out/x.csv")).1.len(), 8);
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .expect("read out/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["x.csv", "x.jsonl"], "no temporary file is left");
}

#[test]
fn unknown_names_and_formats_are_usage_errors_with_a_hint() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    // Before any store exists.
    dir.cmd(["export", "x"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("no experiment named `x`");
    two_evaluations(&dir, &server);
    let out = dir.cmd(["export", "y"]).output();
    out.assert_exit_code(2)
        .assert_stderr_contains("no experiment named `y`")
        .assert_stderr_contains("hint:");
    assert_eq!(out.stdout, "");
    dir.cmd(["export", "x", "--eval", "secnd"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("no evaluation named `secnd`")
        .assert_stderr_contains("did you mean `--eval second`");
    dir.cmd(["export", "x", "--format", "json"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("[possible values: jsonl, csv]");
    // `--format` belongs to each command: given before one, clap points at it.
    dir.cmd(["--format", "json", "export", "x"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("'export --format' exists");
    // ... and export's formats do not reach the other commands.
    dir.cmd(["show", "x", "--format", "csv"])
        .output()
        .assert_exit_code(2);
    dir.cmd(["show", "x", "--format", "json"])
        .output()
        .assert_exit_code(0);
}

#[test]
fn a_judges_calls_are_exported() {
    let model = TestServer::echo();
    let judge = TestServer::builder()
        .respond(|_| Reply::text(r#"{"score": 0.75, "reason": "mostly"}"#))
        .start();
    let dir = TestDir::new();
    let spec = Spec::new("judged", &model.url())
        .samples(3)
        .quick()
        .evaluators(&format!(
            "  - type: llm_judge\n    name: judged\n    rubric: \"Repeats {{{{ text }}}}.\"\n    model:\n      provider: openai\n      base_url: {}\n      name: judge-model\n{}",
            judge.url(),
            QUICK.replace("  ", "      ")
        ))
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "-e", "j", "-q"])
        .output()
        .assert_exit_code(0);
    let got = lines(&dir.cmd(["export", "j"]).output().stdout);
    assert_eq!(got.len(), 3);
    let show = show_full(&dir, "j");
    for (line, record) in got.iter().zip(
        show["evaluations"][0]["records"]
            .as_array()
            .expect("records"),
    ) {
        let call = &line["judges"]["judged"];
        assert_eq!(call["reply"], r#"{"score": 0.75, "reason": "mostly"}"#);
        assert_eq!(call["score"], 0.75);
        assert_eq!(call["attempts"], 1);
        assert!(call["prompt"].is_array(), "{call}");
        assert_eq!(line["judges"], record["judges"]);
        assert_eq!(line["reasons"]["judged"], "mostly");
    }
    let csv = dir.cmd(["export", "j", "--format", "csv"]).output();
    csv.assert_exit_code(0);
    let (header, rows) = read_csv(&csv.stdout);
    let judges = header.iter().position(|h| h == "judges").expect("judges");
    for (row, line) in rows.iter().zip(&got) {
        let cell: Value = serde_json::from_str(&row[judges]).expect("JSON text");
        assert_eq!(cell, line["judges"]);
    }
}

/// Cells a spreadsheet would run as formulas (OWASP's list: =, +, -, @, tab,
/// carriage return) get a leading `'` in csv; `--raw` writes them as stored,
/// and jsonl is never touched.
#[test]
fn csv_neutralises_formula_cells_unless_raw() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let texts = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\ry", "plain"];
    let rows: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    dir.write("rows.jsonl", &(rows.join("\n") + "\n"));
    let spec = Spec::new("cells", &server.url())
        .dataset("  path: rows.jsonl\n")
        .quick()
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    let output_column = |args: &[&str]| -> Vec<String> {
        let out = dir.cmd(args).output();
        out.assert_exit_code(0);
        let (header, rows) = read_csv(&out.stdout);
        let at = header.iter().position(|h| h == "output").unwrap();
        rows.into_iter().map(|r| r[at].clone()).collect()
    };
    let safe = output_column(&["export", "x", "--format", "csv"]);
    let expected: Vec<String> = texts
        .iter()
        .map(|t| {
            if *t == "plain" {
                t.to_string()
            } else {
                format!("'{t}")
            }
        })
        .collect();
    assert_eq!(safe, expected);
    let raw = output_column(&["export", "x", "--format", "csv", "--raw"]);
    assert_eq!(raw, texts.map(str::to_owned));
    let jsonl = dir.cmd(["export", "x"]).output();
    assert!(
        jsonl.stdout.contains(r#""output":"=1+1""#),
        "{}",
        jsonl.stdout
    );
}
