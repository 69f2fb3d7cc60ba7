//! Hostile specs and datasets: whatever the bytes, loading and scanning end in
//! a located error or success, never a panic. Each property runs
//! `FUZZ_CASES` generated inputs per `cargo test`.

use std::path::Path;

use proptest::prelude::{any, prop, prop_assert, proptest, ProptestConfig, Strategy};

use super::*;
use crate::dataset::scan;

const FUZZ_CASES: u32 = 256;

const VALID: &str = r#"name: fuzz
dataset:
  columns: [text, expected]
  rows:
    - ["great film", positive]
    - {text: "awful", expected: negative}
model:
  provider: mock
  latency: 0s
  replies: [{when_contains: [great], reply: positive}, {reply: negative}]
prompt: "Classify: {{ text }}"
evaluators:
  - {type: exact_match, expected: "{{ expected }}"}
  - {type: regex, pattern: "^(positive|negative)$"}
  - {type: numeric_match, expected: "1", tolerance: 0.5}
  - {type: valid_json, schema: {type: object}}
concurrency: {strategy: sliding_window, max_concurrency: 2}
"#;

/// Checks the spec, then reads its whole dataset, like `validate` does.
fn check_all(path: &Path, text: String) -> Result<u64, Diagnostic> {
    let eval = from_text(path, text)?;
    Ok(scan(&eval.dataset, &eval.required_columns, |_, _| Ok(()))?.rows)
}

/// An edit of the valid spec: delete, insert or replace a run of characters.
fn mutated() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "", ":", "- ", "{", "}", "[", "]", "\"", "'", "\n", "  ", "{{", "}}", "{%", "&a", "*a",
        "!!int", "\t", "#", "~", "null", "-1", "1e999", "type", "path", "rows", "columns", "id",
        "\u{0}", "\u{FEFF}", "é",
    ]);
    (0..VALID.len(), 0usize..12, pieces).prop_map(|(at, cut, insert)| {
        let mut at = at;
        while !VALID.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(VALID.len());
        while !VALID.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &VALID[..at], insert, &VALID[end..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: FUZZ_CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_a_spec_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(d) = load(&path).and_then(|e| Ok(scan(&e.dataset, &e.required_columns, |_, _| Ok(()))?.rows)) {
            prop_assert!(d.file == path, "{d}");
            prop_assert!(!d.message.is_empty());
        }
    }

    #[test]
    fn edited_specs_give_located_errors(text in mutated()) {
        let path = Path::new("evals/fuzz.yaml");
        if let Err(d) = check_all(path, text.clone()) {
            prop_assert!(d.file == path, "{d}");
            // Only a spec with nothing in it has no position to point at.
            prop_assert!(d.line > 0 || text.trim().is_empty() || d.message.contains("needs"), "no position: {d}\n---\n{text}");
        }
    }

    #[test]
    fn any_dataset_file_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ext in prop::sample::select(vec!["jsonl", "ndjson", "json", "csv", "tsv"]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join(format!("data.{ext}"));
        std::fs::write(&data, &bytes).unwrap();
        let spec = dir.path().join("spec.yaml");
        let text = format!(
            "dataset: {{path: data.{ext}, id: text}}\nmodel: {{provider: mock, replies: [{{reply: x}}]}}\nprompt: \"{{{{ text }}}}\"\n"
        );
        if let Err(d) = check_all(&spec, text) {
            prop_assert!(d.file == data || d.file == spec, "{d}");
            prop_assert!(!d.message.is_empty());
        }
    }

    #[test]
    fn jsonl_rows_of_any_shape_are_checked(rows in proptest::collection::vec(json_value(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.jsonl");
        let lines: Vec<String> = rows.iter().map(|v| v.to_string()).collect();
        std::fs::write(&data, lines.join("\n")).unwrap();
        let spec = dir.path().join("spec.yaml");
        let text = "dataset: {path: data.jsonl, columns: [text], id: text}\nmodel: {provider: mock, replies: [{reply: x}]}\nprompt: \"{{ text }}\"\n";
        if let Err(d) = check_all(&spec, text.into()) {
            prop_assert!(d.line > 0, "{d}");
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop::sample::select(vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1.5),
        json!(""),
        json!("a"),
        json!("dup"),
        json!("\u{0}\u{FFFF}"),
    ]);
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec(inner.clone(), 0..4)
            .prop_map(Value::Array)
            .boxed()
            .prop_union(
                prop::collection::btree_map(
                    prop::sample::select(vec!["text", "expected", "x", ""]),
                    inner,
                    0..4,
                )
                .prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                })
                .boxed(),
            )
    })
}

#[test]
fn invalid_utf8_in_a_spec_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    std::fs::write(&path, b"name: ok\nprompt: \"caf\xe9\"\n").unwrap();
    let d = load(&path).unwrap_err();
    assert_eq!((d.line, d.column), (2, 13), "{d}");
}

#[test]
fn a_ten_megabyte_line_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    let mut text = String::from("{\"text\": \"a\"}\n{\"text\": \"");
    text.push_str(&"x".repeat(10 * 1024 * 1024));
    text.push_str("\"}\n");
    std::fs::write(&data, text).unwrap();
    let spec = dir.path().join("spec.yaml");
    let d = check_all(&spec, "dataset: {path: data.jsonl}\nmodel: {provider: mock, replies: [{reply: x}]}\nprompt: \"{{ text }}\"\n".into())
        .unwrap_err();
    assert_eq!((d.file.as_path(), d.line), (data.as_path(), 2), "{d}");
    assert!(d.message.contains("longer than"), "{d}");
}

#[test]
fn errors_inside_flow_mappings_are_located() {
    let text = VALID.replace("^(positive", "positive");
    let d = from_text(Path::new("f.yaml"), text).unwrap_err();
    assert_eq!((d.line, d.column), (14, 19), "{d}");
}
