//! Every dataset format, read end to end: the server must receive exactly the
//! prompts the rows render to, in dataset order when run sequentially, and the
//! records must carry the rows' ids and values. Also what a request carries:
//! the model name, `params`, `messages` roles and the API key.

use serde_json::json;

use crate::server::TestServer;
use crate::util::{Spec, TestDir};

/// Writes `spec.yaml` with `dataset` (the YAML lines under `dataset:`), runs it
/// sequentially with `extra` arguments, and returns the prompts the server got, in order.
fn prompts_for(dir: &TestDir, dataset: &str, prompt: &str, extra: &[&str]) -> Vec<String> {
    let server = TestServer::echo();
    dir.write(
        "spec.yaml",
        &Spec::new("data", &server.url())
            .dataset(dataset)
            .quick()
            .prompt(prompt)
            .evaluator("{type: contains, expected: \"x\"}")
            .to_string(),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .args(["--concurrency", "sequential"])
        .args(extra)
        .output()
        .assert_exit_code(0);
    server.prompts()
}

#[test]
fn inline_rows_as_lists_with_columns_and_as_maps() {
    let dir = TestDir::new();
    let prompts = prompts_for(
        &dir,
        concat!(
            "  columns: [text, expected]\n",
            "  rows:\n",
            "    - [\"This movie is absolutely amazing!\", positive]\n",
            "    - {text: \"Terrible plot and awful acting\", expected: negative}\n",
            "    - [\"It was fine, I guess\", neutral]\n",
        ),
        "\"Classify: {{ text }} ({{ expected }})\"",
        &[],
    );
    assert_eq!(
        prompts,
        [
            "Classify: This movie is absolutely amazing! (positive)",
            "Classify: Terrible plot and awful acting (negative)",
            "Classify: It was fine, I guess (neutral)",
        ]
    );
    let eval = dir.show_full("x").only().clone();
    let ids: Vec<&str> = eval.records().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["0", "1", "2"],
        "without `id`, the row index is the id"
    );
    assert_eq!(
        eval.record("1").variables,
        json!({"text": "Terrible plot and awful acting", "expected": "negative"})
    );
    assert_eq!(
        eval.record("0").prompt,
        json!("Classify: This movie is absolutely amazing! (positive)")
    );
}

#[test]
fn jsonl_objects_and_lists_with_blank_lines() {
    let dir = TestDir::new();
    dir.write(
        "data/rows.jsonl",
        "{\"q\": \"first\", \"n\": 1}\n\n[\"second\", 2]\n   \n{\"n\": 3, \"q\": \"third, with \\\"quotes\\\"\"}\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: data/rows.jsonl\n  columns: [q, n]\n",
        "\"{{ n }}: {{ q }}\"",
        &[],
    );
    assert_eq!(
        prompts,
        ["1: first", "2: second", "3: third, with \"quotes\""]
    );
}

#[test]
fn ndjson_is_json_lines() {
    let dir = TestDir::new();
    dir.write(
        "rows.ndjson",
        "{\"q\": \"alpha\"}\n{\"q\": \"beta\"}\n{\"q\": \"gamma\"}",
    );
    let prompts = prompts_for(&dir, "  path: rows.ndjson\n", "\"Q {{ q }}\"", &[]);
    assert_eq!(prompts, ["Q alpha", "Q beta", "Q gamma"]);
}

#[test]
fn json_array_file() {
    let dir = TestDir::new();
    dir.write(
        "rows.json",
        "[\n  {\"q\": \"one\", \"meta\": {\"lang\": \"en\"}},\n  {\"q\": \"two\", \"meta\": {\"lang\": \"fr\"}}\n]\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: rows.json\n",
        "\"{{ q }} in {{ meta.lang }}\"",
        &[],
    );
    assert_eq!(prompts, ["one in en", "two in fr"]);
    let eval = dir.show_full("x").only().clone();
    assert_eq!(
        eval.record("1").variables,
        json!({"q": "two", "meta": {"lang": "fr"}})
    );
}

#[test]
fn csv_with_quoted_fields() {
    let dir = TestDir::new();
    dir.write(
        "rows.csv",
        "text,expected\n\"Great, really great\",positive\nplain,neutral\n\"He said \"\"awful\"\", twice\",negative\n\"two\nlines\",neutral\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: rows.csv\n",
        "\"{{ text }} => {{ expected }}\"",
        &[],
    );
    assert_eq!(
        prompts,
        [
            "Great, really great => positive",
            "plain => neutral",
            "He said \"awful\", twice => negative",
            "two\nlines => neutral",
        ]
    );
}

#[test]
fn csv_with_byte_order_mark() {
    // Spreadsheets often save UTF-8 with a BOM; it is not part of the first column's name.
    let dir = TestDir::new();
    dir.write("rows.csv", "\u{feff}text,expected\nhello,x\n");
    let prompts = prompts_for(&dir, "  path: rows.csv\n", "\"{{ text }}\"", &[]);
    assert_eq!(prompts, ["hello"]);
}

#[test]
fn tsv_file() {
    let dir = TestDir::new();
    dir.write(
        "rows.tsv",
        "text\texpected\nhello, world\tgreeting\ngood bye\tfarewell\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: rows.tsv\n",
        "\"{{ text }} / {{ expected }}\"",
        &[],
    );
    assert_eq!(prompts, ["hello, world / greeting", "good bye / farewell"]);
}

#[test]
fn id_column_and_limit() {
    let dir = TestDir::new();
    dir.write(
        "rows.jsonl",
        "{\"qid\": \"q-17\", \"q\": \"a\"}\n{\"qid\": 42, \"q\": \"b\"}\n{\"qid\": \"q-3\", \"q\": \"c\"}\n{\"qid\": \"q-9\", \"q\": \"d\"}\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: rows.jsonl\n  id: qid\n  limit: 3\n",
        "\"{{ q }}\"",
        &[],
    );
    assert_eq!(
        prompts,
        ["a", "b", "c"],
        "limit: 3 reads the first three rows"
    );
    let eval = dir.show_full("x").only().clone();
    assert_eq!(eval.samples.total, 3);
    let ids: Vec<(&str, u64)> = eval
        .records()
        .iter()
        .map(|r| (r.id.as_str(), r.index))
        .collect();
    assert_eq!(ids, [("q-17", 0), ("42", 1), ("q-3", 2)]);
}

#[test]
fn samples_flag_wins_over_limit() {
    let dir = TestDir::new();
    dir.write(
        "rows.jsonl",
        "{\"q\": \"a\"}\n{\"q\": \"b\"}\n{\"q\": \"c\"}\n",
    );
    let prompts = prompts_for(
        &dir,
        "  path: rows.jsonl\n  limit: 2\n",
        "\"{{ q }}\"",
        &["--samples", "1"],
    );
    assert_eq!(prompts, ["a"]);
}

#[test]
fn request_carries_model_params_messages_and_key() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(
        "spec.yaml",
        &format!(
            concat!(
                "dataset:\n  rows: [{{text: \"hello\"}}]\n",
                "model:\n  provider: openai\n  base_url: {}\n  name: my-model-7b\n",
                "  api_key_env: DOTEVALS_TEST_KEY\n",
                "  params: {{temperature: 0, max_tokens: 16, stop: [\"\\n\"]}}\n",
                "messages:\n",
                "  - {{role: system, content: \"You are terse.\"}}\n",
                "  - {{role: user, content: \"Say {{{{ text }}}}\"}}\n",
            ),
            server.url()
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("DOTEVALS_TEST_KEY", "sk-test-123")
        .output();
    out.assert_exit_code(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(body["model"], "my-model-7b");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["stop"], json!(["\n"]));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"},
        ])
    );
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer sk-test-123")
    );
    // The key is never printed nor stored.
    assert!(!out.stdout.contains("sk-test-123") && !out.stderr.contains("sk-test-123"));
    let needle = b"sk-test-123";
    for file in std::fs::read_dir(dir.store().parent().unwrap()).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the API key must not be stored, but {} holds it",
            path.display()
        );
    }
    // The stored prompt of a `messages` spec is the list of messages.
    let eval = dir.show_full("x").only().clone();
    assert_eq!(
        eval.record("0").prompt,
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"},
        ])
    );
}

#[test]
fn base_url_and_key_default_to_the_openai_variables() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(
        "spec.yaml",
        "dataset:\n  rows: [{text: hi}]\nmodel: {provider: openai, name: m}\nprompt: \"{{ text }}\"\n",
    );
    // A trailing slash on the base URL is fine.
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("OPENAI_BASE_URL", format!("{}/", server.url()))
        .env("OPENAI_API_KEY", "sk-default")
        .output()
        .assert_exit_code(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].prompt, "hi");
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer sk-default")
    );
}
