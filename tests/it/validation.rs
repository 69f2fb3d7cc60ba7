//! Spec and dataset errors: each must stop `run` with exit 2 before a single
//! request, name `FILE:LINE:COL` of the offending token (the spec's, or the data
//! file's), show the spec line with a caret under it, and give a hint. The
//! expected position is found by searching the file for the offending text, so
//! these tests pin *where* an error points, not just that there is one.

use crate::server::TestServer;
use crate::util::{Checked, Out, TestDir};

/// 1-based (line, column) of the first occurrence of `needle` in `text`.
/// Columns count characters, as editors and rustc do (not bytes).
#[track_caller]
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A good spec against `url`; tests break one part of it.
fn base(url: &str) -> String {
    format!(
        r#"name: checks
dataset:
  columns: [text, expected]
  rows:
    - ["good film", positive]
    - ["bad film", negative]
model:
  provider: openai
  base_url: {url}
  name: test-model
  retry:
    max_attempts: 2
prompt: "Classify: {{{{ text }}}}"
evaluators:
  - type: exact_match
    expected: "{{{{ expected }}}}"
"#
    )
}

/// The same spec reading its rows from `path` instead.
fn with_path(url: &str, path: &str, extra: &str) -> String {
    base(url).replace(
        "  columns: [text, expected]\n  rows:\n    - [\"good film\", positive]\n    - [\"bad film\", negative]\n",
        &format!("  path: {path}\n{extra}"),
    )
}

/// Runs `spec.yaml` (already written) and checks that it was refused with a
/// diagnostic at `file`:`line`:`col` containing `message`, and that nothing was
/// sent or stored.
#[track_caller]
fn assert_refused(
    dir: &TestDir,
    server: &TestServer,
    file: &str,
    (line, col): (usize, usize),
    message: &str,
) -> Out {
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains(&format!("error: {file}:{line}:{col}: {message}"));
    assert_eq!(
        server.count(),
        0,
        "no request may be sent: {:?}",
        server.prompts()
    );
    assert!(
        dir.try_show("x").is_none(),
        "a refused run must not create the experiment"
    );
    // `validate` finds the same problem.
    let v = dir.cmd(["validate", "spec.yaml"]).output();
    v.assert_exit_code(2);
    v.assert_stderr_contains(&format!("error: {file}:{line}:{col}: {message}"));
    out
}

/// The spec line under the message, with a caret under column `col`.
#[track_caller]
fn assert_source_and_caret(out: &Out, spec: &str, (line, col): (usize, usize)) {
    let source = spec.lines().nth(line - 1).unwrap();
    let width = line.to_string().len();
    let shown = format!(
        "{line} | {source}\n{:width$} | {}^\n",
        "",
        " ".repeat(col - 1)
    );
    assert!(
        out.stderr.contains(&shown),
        "expected the source line and caret:\n{shown}\n--- stderr ---\n{}",
        out.stderr
    );
}

/// Writes `data` as data file `file` (with `extra` dataset keys in the spec),
/// and checks the refusal points at the first `at` in the data with `message`.
#[track_caller]
fn refuses_data(file: &str, data: &str, extra: &str, at: &str, message: &str) -> Out {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(file, data);
    dir.write("spec.yaml", &with_path(&server.url(), file, extra));
    assert_refused(&dir, &server, file, pos(data, at), message)
}

/// Breaks the base spec by replacing `from` with `to`, and checks the refusal
/// points at the first `at` with `message`, the source line and caret, and `hint`.
#[track_caller]
fn refuses_edit(from: &str, to: &str, at: &str, message: &str, hint: &str) {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = base(&server.url()).replace(from, to);
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, at);
    let out = assert_refused(&dir, &server, "spec.yaml", at, message);
    assert_source_and_caret(&out, &spec, at);
    out.assert_stderr_contains(hint);
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = base(&server.url()).replace("prompt:", "promt:");
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, "promt:");
    let out = assert_refused(&dir, &server, "spec.yaml", at, "unknown key `promt`");
    assert_source_and_caret(&out, &spec, at);
    out.assert_stderr_contains("= hint: did you mean `prompt`?");
    assert!(
        !out.stderr.contains('\x1b'),
        "NO_COLOR: no escape codes\n{}",
        out.stderr
    );
    // `--color always` colours the label, and only the label.
    let out = dir
        .cmd(["validate", "spec.yaml", "--color", "always"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("\x1b[1;31merror\x1b[0m: spec.yaml:");
}

#[test]
fn nested_unknown_key_names_its_parent() {
    refuses_edit(
        "max_attempts: 2",
        "max_atempts: 2",
        "max_atempts",
        "unknown key `max_atempts` in `model.retry`",
        "hint: did you mean `max_attempts`?",
    );
}

#[test]
fn unknown_evaluator_type() {
    refuses_edit(
        "type: exact_match",
        "type: exact_mach",
        "type: exact_mach",
        "unknown evaluator type `exact_mach`",
        "did you mean `exact_match`?",
    );
}

#[test]
fn prompt_variable_that_is_not_a_column() {
    refuses_edit(
        "{{ text }}",
        "{{ txt }}",
        "\"Classify",
        "template in `prompt` uses `txt`, which is not a dataset column",
        "did you mean `text`?",
    );
}

#[test]
fn evaluator_variable_that_is_not_a_column() {
    refuses_edit(
        "{{ expected }}",
        "{{ expectd }}",
        "\"{{ expectd",
        "template in `evaluators[0].expected` uses `expectd`",
        "did you mean `expected`?",
    );
}

#[test]
fn bad_regex() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = format!(
        "{}  - type: regex\n    pattern: \"(unclosed\"\n",
        base(&server.url())
    );
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, "pattern:");
    let out = assert_refused(&dir, &server, "spec.yaml", at, "invalid regex");
    out.assert_stderr_contains("unclosed group");
    assert_source_and_caret(&out, &spec, at);
}

#[test]
fn bad_json_schema() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = format!(
        "{}  - type: valid_json\n    schema: {{type: 12}}\n",
        base(&server.url())
    );
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, "schema:");
    let out = assert_refused(&dir, &server, "spec.yaml", at, "invalid JSON Schema");
    assert_source_and_caret(&out, &spec, at);
    out.assert_stderr_contains("= hint:");
}

#[test]
fn missing_dataset_file() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = with_path(&server.url(), "data/nope.jsonl", "");
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, "data/nope.jsonl");
    let out = assert_refused(
        &dir,
        &server,
        "spec.yaml",
        at,
        "dataset file `data/nope.jsonl` not found",
    );
    assert_source_and_caret(&out, &spec, at);
    out.assert_stderr_contains("hint: `path` is relative to the spec file's folder");
}

#[test]
fn jsonl_row_with_invalid_json_points_into_the_data_file() {
    let data = "{\"text\": \"a\", \"expected\": \"b\"}\n{\"text\": \"c\", \"expected\": oops}\n";
    refuses_data("rows.jsonl", data, "", "oops", "invalid JSON");
}

#[test]
fn json_array_with_invalid_json_points_into_the_data_file() {
    let data = "[\n  {\"text\": \"a\", \"expected\": \"b\"},\n  {\"text\": \"c\" \"expected\": \"d\"}\n]\n";
    refuses_data("rows.json", data, "", "\"expected\": \"d\"", "invalid JSON");
}

#[test]
fn csv_ragged_row() {
    let data = "text,expected\n\"a, b\",x\nc,d,e\nf,g\n";
    refuses_data(
        "rows.csv",
        data,
        "",
        "c,d,e",
        "row has 3 fields but the header has 2",
    )
    .assert_stderr_contains("hint: quote fields that contain the delimiter");
}

#[test]
fn row_missing_a_column_the_prompt_uses() {
    let data = "{\"text\": \"a\", \"expected\": \"b\"}\n{\"txt\": \"c\", \"expected\": \"d\"}\n";
    refuses_data(
        "rows.jsonl",
        data,
        "",
        "{\"txt\"",
        "row 2 has no column `text`",
    )
    .assert_stderr_contains("`txt`");
}

#[test]
fn a_bad_row_at_the_end_of_a_long_file_still_stops_everything() {
    // Every row is checked before the first request, not while running.
    let mut data = String::new();
    for i in 0..300 {
        data += &format!("{{\"text\": \"row {i}\", \"expected\": \"x\"}}\n");
    }
    data += "{\"text\": \"last\"}\n";
    refuses_data(
        "rows.jsonl",
        &data,
        "",
        "{\"text\": \"last\"}",
        "row 301 has no column `expected`",
    );
}

#[test]
fn duplicate_ids() {
    let data = "{\"qid\": 1, \"text\": \"a\", \"expected\": \"b\"}\n{\"qid\": 2, \"text\": \"a\", \"expected\": \"b\"}\n{\"qid\": 1, \"text\": \"c\", \"expected\": \"d\"}\n";
    refuses_data(
        "rows.jsonl",
        data,
        "  id: qid\n",
        "{\"qid\": 1, \"text\": \"c\"",
        "duplicate id `1` (first seen on line 1)",
    )
    .assert_stderr_contains("hint: sample ids must be unique");
}

/// Runs an empty dataset and expects the "no rows" error for `file`.
#[track_caller]
fn assert_empty_refused(dir: &TestDir, server: &TestServer, file: &str) {
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains(&format!("error: {file}"));
    out.assert_stderr_contains("the dataset has no rows");
    assert_eq!(server.count(), 0);
}

#[test]
fn empty_inline_rows() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = base(&server.url()).replace(
        "  rows:\n    - [\"good film\", positive]\n    - [\"bad film\", negative]\n",
        "  rows: []\n",
    );
    dir.write("spec.yaml", &spec);
    assert_empty_refused(&dir, &server, "spec.yaml");
}

#[test]
fn empty_jsonl_file() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("rows.jsonl", "\n\n");
    dir.write("spec.yaml", &with_path(&server.url(), "rows.jsonl", ""));
    assert_empty_refused(&dir, &server, "rows.jsonl");
}

#[test]
fn header_only_csv_file() {
    // The header names `text` and `expected`; the file is empty, not wrong about its columns.
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("rows.csv", "text,expected\n");
    dir.write("spec.yaml", &with_path(&server.url(), "rows.csv", ""));
    assert_empty_refused(&dir, &server, "rows.csv");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = base(&server.url()).replace("name: checks", "name: [unclosed");
    dir.write("spec.yaml", &spec);
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("error: spec.yaml:");
    let rest = out.stderr.split("error: spec.yaml:").nth(1).unwrap();
    let line: usize = rest
        .split(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no line number in {:?}", out.stderr));
    assert!(line >= 1, "{}", out.stderr);
    assert_eq!(server.count(), 0);
}

#[test]
fn named_api_key_variable_must_be_set() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = base(&server.url()).replace(
        "  name: test-model\n",
        "  name: test-model\n  api_key_env: DOTEVALS_TEST_UNSET_KEY\n",
    );
    dir.write("spec.yaml", &spec);
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("DOTEVALS_TEST_UNSET_KEY");
    assert_eq!(server.count(), 0);
}

#[test]
fn validate_checks_every_spec_and_reports_the_good_ones() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("good.yaml", &base(&server.url()));
    dir.write(
        "bad.yaml",
        &base(&server.url()).replace("prompt:", "promt:"),
    );
    let out = dir
        .cmd(["validate", "good.yaml", "bad.yaml", "--format", "json"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("error: bad.yaml:13:1: unknown key `promt`");
    let checked: Vec<Checked> = out.json();
    assert_eq!(checked.len(), 1, "{checked:?}");
    assert_eq!(checked[0].spec, "good.yaml");
    assert_eq!(checked[0].samples, 2);

    let out = dir.cmd(["validate", "good.yaml"]).output();
    out.assert_exit_code(0);
    out.assert_stdout_contains("good.yaml");
    assert_eq!(server.count(), 0, "validate never sends a request");
}

#[test]
fn spec_columns_count_characters() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let spec = format!(
        "dataset: {{rows: [{{text: \"café crème\"}}], lmit: 3}}\nmodel: {{provider: openai, base_url: \"{}\", name: m}}\nprompt: \"{{{{ text }}}}\"\n",
        server.url()
    );
    dir.write("spec.yaml", &spec);
    let at = pos(&spec, "lmit");
    let out = assert_refused(
        &dir,
        &server,
        "spec.yaml",
        at,
        "unknown key `lmit` in `dataset`",
    );
    assert_source_and_caret(&out, &spec, at);
}

#[test]
fn data_file_columns_count_characters() {
    // Same convention in data files as in specs: `oops` is the 30th character
    // of the line (the 31st byte, since `é` takes two).
    let data = "{\"text\": \"a\", \"expected\": \"b\"}\n{\"text\": \"café\", \"expected\": oops}\n";
    assert_eq!(pos(data, "oops"), (2, 30));
    refuses_data("rows.jsonl", data, "", "oops", "invalid JSON");
}

#[test]
fn bad_command_lines_send_nothing() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("a.yaml", &base(&server.url()));
    dir.write("sub/a.yaml", &base(&server.url()));
    let cases: [(&[&str], &str); 6] = [
        (
            &["run", "a.yaml", "sub/a.yaml"],
            "both define evaluation `checks`",
        ),
        (&["run", "missing.yaml"], "missing.yaml"),
        (&["run", "a.yaml", "--samples", "0"], "--samples"),
        (&["run", "a.yaml", "--concurrency", "0"], "--concurrency"),
        (&["run", "a.yaml", "--concurrency", "fast"], "--concurrency"),
        (
            &["run", "a.yaml", "--experiment", ""],
            "--experiment <NAME>': the name is empty",
        ),
    ];
    for (args, message) in cases {
        let out = dir.cmd(args).arg("--quiet").output();
        out.assert_exit_code(2);
        out.assert_stderr_contains(message);
    }
    assert_eq!(server.count(), 0);
}

#[test]
fn a_bare_number_for_concurrency_shows_the_mapping_to_write() {
    refuses_edit(
        "prompt:",
        "concurrency: 16\nprompt:",
        "16",
        "`concurrency`: invalid type: integer `16`, expected a mapping of keys",
        "= hint: write e.g. `concurrency: {strategy: sliding_window, max_concurrency: 16}`",
    );
}
