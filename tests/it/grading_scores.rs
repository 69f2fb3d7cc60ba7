//! Scores are numbers: each evaluator passes a sample when its score reaches the
//! evaluator's `threshold`, and `show` reports the mean score and the pass rate
//! beside `accuracy`. The string rules score 0 or 1, so a threshold of 0 passes
//! every scored sample and 0.5 behaves as the default 1; a sample an evaluator
//! could not score passes nothing, whatever the threshold.

use serde_json::{json, Value};

use crate::server::TestServer;
use crate::support::{only, show_json};
use crate::util::{Spec, TestDir};

/// Four rows: `a` and `b` answered right, `c` wrong, and `d` right but with an
/// `expected` that is no number, so `numeric_match` cannot score it.
const ROWS: &str = r#"  id: id
  rows:
    - {id: a, expected: "1", reply: "1"}
    - {id: b, expected: "2", reply: "2"}
    - {id: c, expected: "3", reply: "4"}
    - {id: d, expected: "n/a", reply: "n/a"}
"#;

const EVALUATORS: &str = r#"  - {type: exact_match, expected: "{{ expected }}"}
  - {type: exact_match, name: any, expected: "{{ expected }}", threshold: 0}
  - {type: exact_match, name: half, expected: "{{ expected }}", threshold: 0.5}
  - {type: numeric_match, name: number, expected: "{{ expected }}", threshold: 0}
"#;

/// Runs the four rows with `evaluators` into experiment `x`; the server answers
/// each row's `reply` column (the prompt).
fn run(evaluators: &str) -> TestDir {
    let server = TestServer::builder()
        .reply(|prompt| prompt.to_owned())
        .start();
    let dir = TestDir::new();
    let spec = Spec::new("graded", &server.url())
        .dataset(ROWS)
        .quick()
        .prompt("\"{{ reply }}\"")
        .evaluators(evaluators)
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    assert_eq!(server.count(), 4, "one request per sample");
    dir
}

/// The figures of evaluator `name`: (scored, passed, mean, pass_rate, accuracy).
fn figures(eval: &Value, name: &str) -> (Value, Value, Value, Value, Value) {
    let e = eval["evaluators"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no evaluator {name}: {eval:#}"));
    (
        e["scored"].clone(),
        e["passed"].clone(),
        e["mean"].clone(),
        e["pass_rate"].clone(),
        e["accuracy"].clone(),
    )
}

/// Per record id, whether it passed evaluator `name` (null: not scored).
fn passed(eval: &Value, name: &str) -> Vec<(String, Value)> {
    eval["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_owned(),
                r["passed"][name].clone(),
            )
        })
        .collect()
}

#[test]
fn the_threshold_decides_pass_or_fail_and_show_reports_mean_and_pass_rate() {
    let dir = run(EVALUATORS);
    let report = show_json(&dir, "x", &["--full"]);
    let eval = only(&report);

    // Default threshold 1: the right answers pass.
    assert_eq!(
        figures(eval, "exact_match"),
        (json!(4), json!(3), json!(0.75), json!(0.75), json!(0.75))
    );
    // Threshold 0: every scored sample passes, the mean is still the mean score.
    assert_eq!(
        figures(eval, "any"),
        (json!(4), json!(4), json!(0.75), json!(1.0), json!(1.0))
    );
    // Threshold 0.5 on a 0-or-1 rule behaves as 1.
    assert_eq!(figures(eval, "half"), figures(eval, "exact_match"));
    // `d` could not be scored: it is neither counted nor passed, threshold 0 or not.
    assert_eq!(
        figures(eval, "number"),
        (json!(3), json!(3), json!(2.0 / 3.0), json!(1.0), json!(1.0))
    );

    let ids = |v: [Value; 4]| -> Vec<(String, Value)> {
        ["a", "b", "c", "d"]
            .iter()
            .map(|s| s.to_string())
            .zip(v)
            .collect()
    };
    assert_eq!(
        passed(eval, "exact_match"),
        ids([json!(true), json!(true), json!(false), json!(true)])
    );
    assert_eq!(
        passed(eval, "any"),
        ids(std::array::from_fn(|_| json!(true)))
    );
    assert_eq!(passed(eval, "half"), passed(eval, "exact_match"));
    assert_eq!(
        passed(eval, "number"),
        ids([json!(true), json!(true), json!(true), Value::Null])
    );
    for r in eval["records"].as_array().unwrap() {
        assert_eq!(r["scores"]["any"], r["scores"]["exact_match"], "{r:#}");
        // The string rules give no reasons, so records carry none.
        assert!(r.get("reasons").is_none(), "{r:#}");
    }

    // `list` pools passes, not scores.
    let list: Value = serde_json::from_str(
        &dir.cmd(["list", "--format", "json"])
            .output()
            .assert_exit_code(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(list["experiments"][0]["accuracy"], json!(13.0 / 15.0));

    // The table gives the pass rate, and the mean score where it says more.
    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0);
    let line = |name: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", table.stdout))
            .to_owned()
    };
    assert!(
        line("exact_match").contains("75.0% (3/4)"),
        "{}",
        table.stdout
    );
    assert!(!line("exact_match").contains("mean"), "{}", table.stdout);
    assert!(
        line("any").contains("100.0% (4/4) · mean score 0.75"),
        "{}",
        table.stdout
    );
    // `--full`: sample `c` fails exact_match but passes `any`.
    let full = dir.cmd(["show", "x", "--full"]).output();
    full.assert_exit_code(0);
    let c = full
        .stdout
        .lines()
        .find(|l| l.starts_with("│ c "))
        .unwrap_or_else(|| panic!("no row for c:\n{}", full.stdout));
    let cells: Vec<&str> = c.split('│').map(str::trim).collect();
    assert_eq!(&cells[3..7], ["fail", "pass", "fail", "pass"], "{c}");
    assert!(!full.stdout.contains("reason"), "{}", full.stdout);
}

#[test]
fn a_threshold_outside_0_1_is_refused_at_its_line_before_any_request() {
    for (bad, message) in [
        ("1.5", "threshold 1.5 is outside [0, 1]"),
        ("-0.5", "threshold -0.5 is outside [0, 1]"),
        ("high", "threshold"),
    ] {
        let server = TestServer::echo();
        let dir = TestDir::new();
        let spec = Spec::new("bad", &server.url())
            .evaluators(&format!(
                "  - type: contains\n    expected: sample\n    threshold: {bad}\n"
            ))
            .to_string();
        dir.write("spec.yaml", &spec);
        let line = spec
            .lines()
            .position(|l| l.trim_start().starts_with("threshold:"))
            .expect("threshold line")
            + 1;
        for args in [
            vec!["run", "spec.yaml", "--experiment", "x", "--quiet"],
            vec!["validate", "spec.yaml"],
        ] {
            let out = dir.cmd(args).output();
            out.assert_exit_code(2);
            out.assert_stderr_contains(&format!("spec.yaml:{line}:"));
            out.assert_stderr_contains(message);
        }
        assert_eq!(server.count(), 0, "nothing sent for threshold {bad}");
        assert!(dir.try_show("x").is_none());
    }
}
