//! `schema/spec.schema.json`, the JSON Schema editors use to complete and
//! check spec files: it accepts every spec in `evals/`, refuses an unknown
//! evaluator type and an unknown key, and names exactly the keys and
//! choices the parser takes (asked of serde itself, so the two cannot
//! drift).

use std::path::PathBuf;

use serde_json::Value;

const SCHEMA: &str = include_str!("../../schema/spec.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the spec schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the spec schema compiles")
}

/// A YAML spec as the JSON the schema checks.
fn spec_json(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("the spec is YAML")
}

fn problems(yaml: &str) -> Vec<String> {
    validator()
        .iter_errors(&spec_json(yaml))
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn every_spec_in_evals_passes_and_names_the_schema() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("evals");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("read evals/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a spec");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/spec.schema.json\n"),
            "{} does not start with the schema line",
            path.display()
        );
        let found = problems(&text);
        assert!(found.is_empty(), "{}: {found:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} specs in evals/");
}

const GOOD: &str = r#"
dataset: {rows: [{q: a}]}
model: {provider: mock, replies: [{reply: a}]}
prompt: "{{ q }}"
evaluators:
  - {type: exact_match, expected: a, threshold: 1}
  - {type: llm_judge, rubric: ok, model: {provider: openai, name: m, base_url: "http://127.0.0.1:1/v1"}}
concurrency: {strategy: adaptive, initial: 2}
"#;

#[test]
fn unknown_evaluator_types_and_keys_are_refused() {
    assert_eq!(problems(GOOD), Vec::<String>::new());
    let unknown_type = GOOD.replace("type: exact_match", "type: exact_mach");
    assert!(
        !problems(&unknown_type).is_empty(),
        "an unknown type passed"
    );
    let unknown_key = format!("{GOOD}temperature: 0\n");
    assert!(
        !problems(&unknown_key).is_empty(),
        "an unknown top-level key passed"
    );
    let wrong_arg = GOOD.replace("expected: a, threshold", "pattern: a, threshold");
    assert!(
        !problems(&wrong_arg).is_empty(),
        "regex's key on exact_match passed"
    );
    // The parser refuses all three too.
    let dir = crate::util::TestDir::new();
    for (i, spec) in [unknown_type, unknown_key, wrong_arg].iter().enumerate() {
        dir.write(&format!("bad{i}.yaml"), spec);
        dir.cmd(["validate", &format!("bad{i}.yaml")])
            .output()
            .assert_exit_code(2);
    }
}

/// The names the schema gives at `place` (a key of `spec_shape`).
fn schema_names(schema: &Value, place: &str) -> Vec<String> {
    let defs = &schema["$defs"];
    let names = |v: &Value| -> Vec<String> {
        match v {
            Value::Object(m) => m.keys().cloned().collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    match place.split_once('.') {
        None if place == "spec" => names(&schema["properties"]),
        None => names(&defs[place]["properties"]),
        Some(("evaluator", ty)) => {
            let common = ["type", "name", "threshold", "fail_under"];
            names(&defs[format!("evaluator_{ty}")]["properties"])
                .into_iter()
                .filter(|k| !common.contains(&k.as_str()))
                .collect()
        }
        Some((def, key)) => names(&defs[def]["properties"][key]["enum"]),
    }
}

#[test]
fn the_schema_names_exactly_what_the_parser_takes() {
    let schema = schema();
    let shape = dotevals::spec::shape::spec_shape();
    assert!(shape.len() > 15, "{shape:?}");
    for (place, parsed) in &shape {
        assert!(!parsed.is_empty(), "serde listed nothing at {place}");
        let mut parsed: Vec<String> = parsed.iter().map(|s| s.to_string()).collect();
        let mut described = schema_names(&schema, place);
        parsed.sort();
        described.sort();
        assert_eq!(
            described, parsed,
            "the schema and the parser differ at {place}"
        );
    }
    // Every evaluator type has its definition, and the list of types is whole.
    let types: Vec<&str> = shape
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("evaluator."))
        .collect();
    let listed = schema_names(&schema["$defs"]["evaluator"], "spec");
    let mut listed_types: Vec<String> = schema["$defs"]["evaluator"]["properties"]["type"]["enum"]
        .as_array()
        .expect("evaluator types")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    listed_types.sort();
    let mut types: Vec<String> = types.into_iter().map(str::to_owned).collect();
    types.sort();
    assert_eq!(listed_types, types);
    assert_eq!(listed, vec!["type".to_owned()]);
}

/// `matrix:` as editors see it: paths to lists, or `{values, labels}`;
/// `name` is no axis, and an axis is never a single value.
#[test]
fn the_schema_checks_a_matrix() {
    let with = |matrix: &str| problems(&format!("{GOOD}matrix:\n{matrix}"));
    assert_eq!(with("  model.name: [a, b]\n"), Vec::<String>::new());
    assert_eq!(
        with("  prompt: {values: [x, y], labels: [s, l]}\n"),
        Vec::<String>::new()
    );
    for bad in [
        "  model.name: a\n",
        "  name: [a, b]\n",
        "  prompt: {values: [x], extra: 1}\n",
        "  model.name: []\n",
    ] {
        assert!(!with(bad).is_empty(), "the schema took {bad:?}");
    }
}
