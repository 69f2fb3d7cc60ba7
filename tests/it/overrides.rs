//! `--set KEY=VALUE` on `run`, `validate` and `rescore`: every kind of field
//! (top-level scalar, nested key, new key, list item, whole list or mapping as
//! YAML, dataset limit, concurrency), the refusals and where they point, the
//! stored snapshot, `show`, and resume with the same or other overrides. All on
//! the built-in mock.

use std::time::Duration;

use crate::util::{wait_until, ExperimentView, TestDir, BIN};

/// Four rows the mock answers `positive`; `similarity` scores them 1, 0.875,
/// 0.625 and 0, so 3 pass at threshold 0.5 and 2 at 0.7.
const SPEC: &str = "\
name: sets
dataset:
  rows:
    - {text: a, expected: positive}
    - {text: b, expected: positiv}
    - {text: c, expected: posit}
    - {text: d, expected: zzz}
# the model under test
model:
  provider: mock
  name: mock-a
  params:
    temperature: 0
  replies:
    - {reply: positive}
prompt: \"{{ text }}\"
evaluators:
  - {type: similarity, expected: \"{{ expected }}\", threshold: 0.5}
";

fn dir() -> TestDir {
    let dir = TestDir::new();
    dir.write("spec.yaml", SPEC);
    dir
}

/// `dotevals run spec.yaml -e NAME --set ...`, its JSON report.
fn run(dir: &TestDir, experiment: &str, sets: &[&str]) -> ExperimentView {
    let mut args = vec![
        "run",
        "spec.yaml",
        "-e",
        experiment,
        "-q",
        "--format",
        "json",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    dir.cmd(args).output().assert_exit_code(0).json()
}

/// `dotevals COMMAND spec.yaml --set ...` expected to be refused with exit 2.
fn refused(dir: &TestDir, command: &str, sets: &[&str]) -> String {
    let mut args = vec![command, "spec.yaml"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = dir.cmd(args).output();
    out.assert_exit_code(2);
    assert!(
        !dir.store().exists(),
        "a refused --set writes nothing:\n{}",
        out.stderr
    );
    out.stderr
}

#[test]
fn scalar_nested_new_key_and_list_item_change_what_runs() {
    let dir = dir();
    let plain = run(&dir, "plain", &[]);
    assert_eq!(plain.only().evaluators[0].passed, 3);
    assert!(plain.only().overrides.is_empty());

    let sets = [
        "name=renamed",
        "model.name=gpt-4o-mini",
        "model.params.temperature=0.7",
        "model.params.seed=1",
        "evaluators.0.threshold=0.7",
    ];
    let report = run(&dir, "set", &sets);
    let e = report.only();
    assert_eq!(e.name, "renamed");
    assert_eq!(e.model, "gpt-4o-mini");
    assert_eq!(
        (e.evaluators[0].scored, e.evaluators[0].passed),
        (4, 2),
        "threshold 0.7 passes 1 and 0.875 only"
    );
    assert_eq!(e.overrides, sets);
}

#[test]
fn a_whole_list_or_mapping_is_written_as_yaml() {
    let dir = dir();
    let report = run(
        &dir,
        "x",
        &[
            "dataset={rows: [{text: a, expected: positive}, {text: b, expected: no}]}",
            "evaluators=[{type: contains, expected: posit}, {type: exact_match, expected: \"{{ expected }}\"}]",
            "prompt=say {{ text }}",
        ],
    );
    let e = report.only();
    assert_eq!(e.samples.total, 2);
    let names: Vec<&str> = e.evaluators.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["contains", "exact_match"]);
    assert_eq!((e.evaluators[0].passed, e.evaluators[1].passed), (2, 1));
    let full = dir.show_full("x");
    let prompts: Vec<String> = full
        .only()
        .records()
        .iter()
        .map(|r| r.prompt.to_string())
        .collect();
    assert!(prompts.iter().any(|p| p.contains("say a")), "{prompts:?}");
}

#[test]
fn dataset_limit_and_concurrency_are_fields_like_any() {
    let dir = dir();
    let e = run(
        &dir,
        "x",
        &["dataset.limit=2", "concurrency.max_concurrency=8"],
    );
    let e = e.only();
    assert_eq!((e.samples.total, e.samples.recorded), (2, 2));
    assert_eq!(
        (e.strategy.as_str(), e.max_concurrency),
        ("sliding_window", 8)
    );
    let e = run(&dir, "y", &["concurrency.strategy=sequential"]);
    assert_eq!(
        (e.only().strategy.as_str(), e.only().max_concurrency),
        ("sequential", 1)
    );
    let e = run(
        &dir,
        "z",
        &["concurrency={strategy: adaptive, initial: 2, max: 16}"],
    );
    assert_eq!(e.only().strategy, "adaptive");
}

#[test]
fn quoting_keeps_a_string_and_a_list_value_is_a_list() {
    let dir = dir();
    let e = run(
        &dir,
        "x",
        &["model.name=\"001\"", "model.params.stop=[a, b]"],
    );
    assert_eq!(e.only().model, "001");
    // A list where the spec wants a string is refused at that --set.
    let err = refused(&self::dir(), "run", &["model.name=[a, b]"]);
    assert!(err.contains("`--set model.name=[a, b]`"), "{err}");
}

#[test]
fn an_unknown_key_is_refused_as_the_spec_check_words_it() {
    let dir = dir();
    let err = refused(&dir, "run", &["nme=x"]);
    assert!(
        err.contains("spec.yaml: `--set nme=x`: unknown key `nme`"),
        "{err}"
    );
    assert!(err.contains("did you mean `name`?"), "{err}");
    let err = refused(&dir, "run", &["model.latancy=1s"]);
    assert!(
        err.contains("`--set model.latancy=1s`: unknown key `latancy` in `model`"),
        "{err}"
    );
}

#[test]
fn an_index_past_the_end_is_refused_with_the_indexes_there_are() {
    let dir = dir();
    let err = refused(&dir, "run", &["evaluators.3.threshold=0.7"]);
    assert!(
        err.contains("`--set evaluators.3.threshold=0.7`: `evaluators` has 1 item, so there is no `evaluators.3`"),
        "{err}"
    );
    assert!(err.contains("its only item is 0"), "{err}");
    assert!(err.contains("--set 'evaluators=[...]'"), "{err}");
    let err = refused(&dir, "run", &["evaluators.first.threshold=0.7"]);
    assert!(err.contains("`evaluators` is a list"), "{err}");
}

#[test]
fn a_path_through_a_scalar_is_refused() {
    let dir = dir();
    let err = refused(&dir, "run", &["model.name.size=1"]);
    assert!(
        err.contains("`--set model.name.size=1`: `model.name` is a single value (`mock-a`), not a mapping or a list, so it has no `size`"),
        "{err}"
    );
    assert!(err.contains("--set 'model.name=VALUE'"), "{err}");
}

#[test]
fn a_set_without_equals_is_a_usage_error() {
    let dir = dir();
    let err = refused(&dir, "run", &["model.name"]);
    assert!(err.contains("`model.name` has no `=`"), "{err}");
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = refused(&dir, "validate", &["=x"]);
    assert!(err.contains("names no field"), "{err}");
    let err = refused(&dir, "run", &["model.params.stop=[a"]);
    assert!(err.contains("not valid YAML"), "{err}");
}

#[test]
fn a_bad_value_names_the_set_and_other_errors_the_line_of_the_file() {
    let dir = dir();
    let err = refused(&dir, "run", &["evaluators.0.threshold=2"]);
    assert!(
        err.contains("spec.yaml: `--set evaluators.0.threshold=2`: threshold 2 is outside [0, 1]"),
        "{err}"
    );
    // The mistake is in the file, not the override: its line is shown.
    dir.write("spec.yaml", &SPEC.replace("prompt:", "promt:"));
    let err = refused(&dir, "run", &["model.name=other"]);
    assert!(err.contains("spec.yaml:16:1: unknown key `promt`"), "{err}");
    assert!(err.contains("16 | promt:"), "{err}");
}

#[test]
fn validate_checks_the_spec_with_its_overrides() {
    let dir = dir();
    let out = dir
        .cmd([
            "validate",
            "spec.yaml",
            "--set",
            "model.name=gpt-4o-mini",
            "--set",
            "dataset.limit=2",
            "--format",
            "json",
        ])
        .output();
    out.assert_exit_code(0);
    let checked: serde_json::Value = out.json();
    assert_eq!(checked[0]["model"], "gpt-4o-mini");
    let err = refused(&dir, "validate", &["evaluators.0.threshold=-1"]);
    assert!(err.contains("`--set evaluators.0.threshold=-1`"), "{err}");
    // A template that fails on a row, written by --set, names that --set.
    let err = refused(&dir, "validate", &["prompt=\"{{ text | int }}\""]);
    assert!(err.contains("`--set prompt=\"{{ text | int }}\"`"), "{err}");
}

#[test]
fn the_snapshot_keeps_the_file_and_lists_the_overrides_and_show_prints_them() {
    let dir = dir();
    run(
        &dir,
        "x",
        &["model.name=gpt-4o-mini", "prompt=two\nlines {{ text }}"],
    );
    let conn = rusqlite::Connection::open(dir.store()).unwrap();
    let text: String = conn
        .query_row("SELECT spec_text FROM evaluations", [], |r| r.get(0))
        .unwrap();
    assert!(
        text.starts_with(SPEC),
        "the file as written comes first:\n{text}"
    );
    assert_eq!(
        &text[SPEC.len()..],
        "# dotevals: applied over the spec above, one `--set KEY=VALUE` a line:\n\
         # --set \"model.name=gpt-4o-mini\"\n\
         # --set \"prompt=two\\nlines {{ text }}\"\n"
    );
    let out = dir.cmd(["show", "x"]).output();
    out.assert_exit_code(0);
    out.assert_stdout_contains(
        "  overrides    model.name=gpt-4o-mini · prompt=two\\nlines {{ text }}\n",
    );
    let json: serde_json::Value = dir
        .cmd(["show", "x", "--format", "json"])
        .output()
        .assert_exit_code(0)
        .json();
    assert_eq!(
        json["evaluations"][0]["overrides"],
        serde_json::json!(["model.name=gpt-4o-mini", "prompt=two\nlines {{ text }}"])
    );
    // Without --set: no line, an empty list.
    run(&dir, "plain", &[]);
    let out = dir.cmd(["show", "plain"]).output();
    assert!(!out.stdout.contains("overrides"), "{}", out.stdout);
}

#[test]
fn resume_needs_the_same_overrides() {
    let dir = dir();
    let sets = ["model.name=gpt-4o-mini", "dataset.limit=2"];
    let first = run(&dir, "x", &sets);
    assert_eq!(first.only().samples.recorded, 2);
    // Same overrides, without the limit: the rest is run into the experiment.
    let resumed = run(&dir, "x", &sets[..1]);
    assert_eq!(resumed.only().samples.recorded, 4);
    assert_eq!(resumed.only().runs, 2);
    // Another model name (or none) is another spec.
    for other in [&["model.name=gpt-4o"][..], &[]] {
        let mut args = vec!["run", "spec.yaml", "-e", "x"];
        for s in other {
            args.extend(["--set", s]);
        }
        dir.cmd(args)
            .output()
            .assert_exit_code(2)
            .assert_stderr_contains("from a different spec (changed: model)");
    }
    // A setting that never decides a result may differ, as in a file.
    let again = run(
        &dir,
        "x",
        &["model.name=gpt-4o-mini", "concurrency.max_concurrency=2"],
    );
    assert_eq!(again.only().samples.recorded, 4);
}

#[test]
fn ctrl_c_prints_a_resume_command_with_the_overrides() {
    let dir = dir();
    dir.write(
        "spec.yaml",
        &SPEC.replace("  params:", "  latency: 500ms\n  params:"),
    );
    let child = dir
        .cmd([
            "run",
            "spec.yaml",
            "-e",
            "x",
            "--set",
            "model.name=gpt-4o-mini",
            "--set",
            "prompt=say {{ text }}",
            "--set",
            "concurrency.strategy=sequential",
        ])
        .spawn_logged(&dir, "first");
    wait_until(Duration::from_secs(20), "a recorded sample", || {
        dir.try_show("x").is_some_and(|r| {
            r.evaluations
                .first()
                .is_some_and(|e| e.samples.recorded >= 1)
        })
    });
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let mut child = child;
    let status = child.wait().unwrap();
    let stderr = dir.read("first.err");
    assert_eq!(status.code(), Some(130), "{stderr}");
    let command = stderr
        .lines()
        .skip_while(|l| !l.contains("Resume with:"))
        .nth(1)
        .expect("a resume command")
        .trim()
        .to_owned();
    // The test's store comes from DOTEVALS_STORAGE, so `--storage` ends it.
    assert!(
        command.starts_with("dotevals run spec.yaml --experiment x --set model.name=gpt-4o-mini --set 'prompt=say {{ text }}' --set concurrency.strategy=sequential --storage "),
        "{command}"
    );
    // The printed command resumes the experiment as printed.
    let rest = command.strip_prefix("dotevals ").unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"{BIN}\" {rest} -q"))
        .current_dir(dir.path())
        .env("DOTEVALS_STORAGE", dir.store())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = dir.show_full("x");
    assert_eq!((e.only().samples.recorded, e.only().runs), (4, 2));
}

#[test]
fn rescore_takes_set_for_its_spec() {
    let dir = dir();
    run(&dir, "x", &["model.name=gpt-4o-mini"]);
    let out = dir
        .cmd([
            "rescore",
            "x",
            "--spec",
            "spec.yaml",
            "--set",
            "model.name=gpt-4o-mini",
            "--set",
            "evaluators.0.threshold=0.7",
            "-q",
            "--format",
            "json",
        ])
        .output();
    out.assert_exit_code(0);
    let report: ExperimentView = out.json();
    assert_eq!(report.only().evaluators[0].passed, 2);
    assert_eq!(
        report.only().overrides,
        ["model.name=gpt-4o-mini", "evaluators.0.threshold=0.7"]
    );
}

#[test]
fn a_credential_given_with_set_is_not_stored() {
    let dir = dir();
    let e = run(&dir, "x", &["model.params.api_key=sk-very-secret-1234"]);
    assert_eq!(e.only().overrides, ["model.params.api_key=[REDACTED]"]);
    let conn = rusqlite::Connection::open(dir.store()).unwrap();
    let text: String = conn
        .query_row("SELECT spec_text FROM evaluations", [], |r| r.get(0))
        .unwrap();
    assert!(!text.contains("sk-very-secret-1234"), "{text}");
}

/// Every refusal of a `--set` names the argument (never a line of the file
/// it did not write), says what to write in YAML's words (never a Rust type
/// name), and a bare template value is told to be quoted.
#[test]
fn a_refused_override_names_its_argument_in_plain_words() {
    let dir = dir();
    let err = refused(&dir, "validate", &["modle.name=x"]);
    assert!(
        err.contains("`--set modle.name=x`: unknown key `modle`"),
        "{err}"
    );
    assert!(
        err.contains("spec.yaml: `--set"),
        "points at no line of the file: {err}"
    );
    assert!(err.contains("did you mean `model`?"), "{err}");
    let err = refused(&dir, "validate", &["prompt={{ text }}"]);
    assert!(
        err.contains(r#"quote it: --set 'prompt="{{ text }}"'"#),
        "{err}"
    );
    for (set, plain) in [
        ("dataset=3", "expected a mapping of keys"),
        ("repeats=-1", "expected a whole number (0 or more)"),
    ] {
        let err = refused(&dir, "validate", &[set]);
        assert!(err.contains(&format!("`--set {set}`")), "{err}");
        assert!(err.contains(plain), "{err}");
        for internal in ["Raw", "u32", "usize", "struct"] {
            assert!(
                !err.contains(internal),
                "`{internal}` reached the user: {err}"
            );
        }
    }
}

/// A number is read as a spec file reads it: as typed where the field is
/// text (`1e3` stays `1e3`, never `1000.0`), as a number where it is one.
#[test]
fn a_number_is_read_where_it_lands() {
    let once = run(&dir(), "x", &["model.name=1e3"]);
    assert_eq!(once.only().model, "1e3");
    let twice = run(&dir(), "y", &["model.name=0x1F", "repeats=2"]);
    assert_eq!(twice.only().model, "0x1F");
    assert_eq!(
        twice.only().samples.total,
        2 * once.only().samples.total,
        "repeats=2 is the number 2"
    );
    // The twelfth number among a dozen lands as itself, not as the first's text.
    let sets: Vec<String> = (0..11)
        .map(|i| format!("model.params.p{i}={i}"))
        .chain(["model.name=1e3".to_owned()])
        .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    assert_eq!(run(&dir(), "z", &sets).only().model, "1e3");
}
