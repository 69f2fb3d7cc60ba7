//! Every command's `--format json` output against the committed JSON Schema,
//! `schema/dotevals.schema.json` (oha's `test_json_schema`): one definition
//! per command under `$defs`, checked on real output with every optional part
//! present (errors, records, adaptive limits, several runs, null figures).

use serde_json::Value;

use crate::util::TestDir;

const SCHEMA: &str = include_str!("../../schema/dotevals.schema.json");

/// Four rows on the mock; row 1's `expected` is not a number, so
/// `numeric_match` errors on it (an `evaluator` error with a null score). A
/// judge on a mock of its own scores the "great" rows and cannot read its
/// reply on the others (its calls appear in the records).
const ALPHA: &str = r#"name: alpha
dataset:
  rows:
    - {text: "great film", expected: "1"}
    - {text: "bad film", expected: "n/a"}
    - {text: "meh", expected: "2"}
    - {text: "great again", expected: "1"}
model:
  provider: mock
  latency: 5ms
  replies:
    - {when_contains: [great], reply: "1"}
    - {reply: "2"}
prompt: "{{ text }}"
evaluators:
  - {type: numeric_match, expected: "{{ expected }}"}
  - {type: contains, expected: "2"}
  - type: llm_judge
    rubric: "The answer is a number."
    model:
      provider: mock
      replies:
        - {when_contains: ["\n1\n"], reply: '{"score": 1, "reason": "a number"}'}
        - {reply: "no idea"}
"#;

/// Messages, the adaptive strategy and no evaluators.
const BETA: &str = r#"name: beta
dataset:
  rows: [{t: a}, {t: b}, {t: c}, {t: d}]
model: {provider: mock, latency: 5ms, replies: [{reply: ok}]}
messages:
  - {role: system, content: "be brief"}
  - {role: user, content: "{{ t }}"}
concurrency: {strategy: adaptive}
evaluators: []
"#;

/// A validator for the command output `definition` (a key of `$defs`).
fn validator(definition: &str) -> jsonschema::Validator {
    let mut schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
    assert!(
        schema["$defs"].get(definition).is_some(),
        "no definition `{definition}`"
    );
    let root = schema.as_object_mut().expect("the schema is an object");
    root.remove("anyOf");
    root.insert("$ref".into(), format!("#/$defs/{definition}").into());
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// Problems of `instance` against `definition`, one line each.
pub fn problems(definition: &str, instance: &Value) -> Vec<String> {
    validator(definition)
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// Runs `dotevals ARGS --format json`, expects exit `code`, and checks stdout against `definition`.
#[track_caller]
fn check(dir: &TestDir, args: &[&str], code: i32, definition: &str) -> Value {
    let out = dir.cmd(args).args(["--format", "json"]).output();
    out.assert_exit_code(code);
    let value: Value = out.json();
    let found = problems(definition, &value);
    assert!(
        found.is_empty(),
        "`dotevals {}` does not match `{definition}`:\n{}\n--- stdout ---\n{}",
        args.join(" "),
        found.join("\n"),
        out.stdout
    );
    value
}

#[test]
fn every_command_output_matches_the_schema() {
    let dir = TestDir::new();
    dir.write("alpha.yaml", ALPHA);
    dir.write("beta.yaml", BETA);

    check(&dir, &["list"], 0, "list");
    check(
        &dir,
        &["validate", "alpha.yaml", "beta.yaml"],
        0,
        "validate",
    );

    // Two runs each (the second resumes), with an evaluator error: exit 1.
    let args = ["run", "alpha.yaml", "beta.yaml", "-e", "x", "-q"];
    check(&dir, &[&args[..], &["--samples", "2"]].concat(), 1, "show");
    check(&dir, &args, 1, "show");

    let full = check(&dir, &["show", "x", "--full"], 0, "show");
    let alpha = &full["evaluations"][0];
    assert_eq!(alpha["errors"][0]["kind"], "evaluator");
    assert!(alpha["records"][1]["scores"]["numeric_match"].is_null());
    assert_eq!(alpha["records"][0]["judges"]["llm_judge"]["score"], 1.0);
    assert_eq!(
        alpha["records"][2]["judges"]["llm_judge"]["reply"],
        "no idea"
    );
    assert_eq!(alpha["evaluators"][2]["judge"]["calls"], 4);
    assert!(full["evaluations"][1]["timing"]["concurrency_limit"].is_object());
    check(&dir, &["show", "x", "--errors"], 0, "show");
    check(&dir, &["show", "x"], 0, "show");
    check(&dir, &["list"], 0, "list");
    // `rescore` prints the report `run` prints, of the experiment it wrote.
    let rescore = [
        "rescore",
        "x",
        "--spec",
        "alpha.yaml",
        "--spec",
        "beta.yaml",
    ];
    check(&dir, &[&rescore[..], &["-q"]].concat(), 1, "show");

    // The experiment and its rescore, paired (flips included).
    let compare = check(
        &dir,
        &["compare", "x", "x-rescored", "--flips"],
        0,
        "compare",
    );
    assert_eq!(compare["evaluations"].as_array().map(Vec::len), Some(2));

    check(&dir, &["rename", "x", "y"], 0, "rename");
    check(&dir, &["delete", "y"], 0, "delete");

    // The response cache: a run that keeps replies, one served from them.
    let cached = ["run", "alpha.yaml", "-q", "--cache", "-e"];
    check(&dir, &[&cached[..], &["c1"]].concat(), 1, "show");
    check(&dir, &[&cached[..], &["c2"]].concat(), 1, "show");
    let stats = check(&dir, &["cache", "stats"], 0, "cacheStats");
    assert!(stats["hits"].as_u64() > Some(0), "{stats}");
    let explained = check(&dir, &["cache", "explain", "c2", "0"], 0, "cacheExplain");
    assert_eq!(explained[0]["status"], "hit", "{explained}");
    check(&dir, &["cache", "explain", "c1", "0"], 0, "cacheExplain");
    check(&dir, &["cache", "clear"], 0, "cacheClear");
}

#[test]
fn the_schema_catches_a_renamed_or_retyped_field() {
    let dir = TestDir::new();
    dir.write("alpha.yaml", ALPHA);
    let out = dir
        .cmd(["run", "alpha.yaml", "-e", "x", "-q", "--format", "json"])
        .output();
    out.assert_exit_code(1);
    let report: Value = out.json();
    assert!(problems("show", &report).is_empty());

    let mut renamed = report.clone();
    let evaluation = renamed["evaluations"][0].as_object_mut().unwrap();
    let ended = evaluation.remove("ended_at").unwrap();
    evaluation.insert("finished_at".into(), ended);
    assert!(
        !problems("show", &renamed).is_empty(),
        "a renamed field passed"
    );

    let mut retyped = report.clone();
    retyped["evaluations"][0]["strategy"] = "fixed".into();
    assert!(
        !problems("show", &retyped).is_empty(),
        "an unknown strategy passed"
    );

    let mut misdated = report.clone();
    misdated["created_at"] = "yesterday".into();
    assert!(
        !problems("show", &misdated).is_empty(),
        "a bad timestamp passed"
    );

    // Added fields are allowed: scripts must ignore what they do not know.
    let mut added = report;
    added["evaluations"][0]["new_field"] = 1.into();
    assert!(problems("show", &added).is_empty());
}

#[test]
fn the_readme_examples_match_the_schema() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## JSON output")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a JSON output section");
    let blocks: Vec<Value> = section
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default())
        .map(|b| serde_json::from_str(b).expect("README JSON example parses"))
        .collect();
    assert_eq!(blocks.len(), 2, "the show and list examples");
    assert_eq!(problems("show", &blocks[0]), Vec::<String>::new());
    assert_eq!(problems("list", &blocks[1]), Vec::<String>::new());
}
