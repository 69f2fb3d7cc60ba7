//! `dotevals rescore NAME --spec FILE [--into NEW]`: an experiment's stored
//! outputs graded again with edited evaluators into a new experiment, with no
//! request to the model under test and the original left byte-for-byte as it was.

use crate::server::{Reply, TestServer};
use crate::util::{ExperimentView, Spec, TestDir};

/// `a` answers exactly, `b` says more than the answer, `c` is wrong, and the
/// server refuses `d` (400, not retried): a model error with no output.
const ROWS: &str = r#"  id: id
  rows:
    - {id: a, expected: "1", reply: "1"}
    - {id: b, expected: "2", reply: "answer: 2"}
    - {id: c, expected: "3", reply: "4"}
    - {id: d, expected: "5", reply: "REFUSE"}
"#;

const EXACT: &str = "{type: exact_match, expected: \"{{ expected }}\"}";
const CONTAINS: &str = "{type: contains, expected: \"{{ expected }}\"}";

/// A server that answers each prompt with itself, and refuses `REFUSE`.
fn server() -> TestServer {
    TestServer::builder()
        .respond(|r| {
            if r.prompt == "REFUSE" {
                Reply::status(400, "{\"error\": {\"message\": \"refused this one\"}}")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start()
}

/// The spec `graded` with `evaluator`, against `server`.
fn spec(server: &TestServer, evaluator: &str) -> Spec {
    Spec::new("graded", &server.url())
        .dataset(ROWS)
        .quick()
        .prompt("\"{{ reply }}\"")
        .evaluator(evaluator)
}

/// Runs `spec.yaml` (exact_match) into `A`; the server has had 4 requests.
fn run_a(server: &TestServer) -> TestDir {
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(server, EXACT).to_string());
    dir.cmd(["run", "spec.yaml", "--experiment", "A", "--quiet"])
        .output()
        .assert_exit_code(1);
    assert_eq!(server.count(), 4, "one request per sample");
    dir
}

/// `show NAME` as a table, as JSON, and as JSON with every record.
fn shows(dir: &TestDir, name: &str) -> [String; 3] {
    let args: [&[&str]; 3] = [&[], &["--format", "json"], &["--full", "--format", "json"]];
    args.map(|extra| {
        let out = dir.cmd(["show", name]).args(extra).output();
        out.assert_exit_code(0);
        out.stdout
    })
}

#[test]
fn rescore_grades_stored_outputs_again_without_a_model_request() {
    let server = server();
    let dir = run_a(&server);
    let before = shows(&dir, "A");
    dir.write("edited.yaml", &spec(&server, CONTAINS).to_string());

    let out = dir
        .cmd(["rescore", "A", "--spec", "edited.yaml", "--format", "json"])
        .output();
    // The copied model error leaves an errored sample: exit 1, as `run` says it.
    out.assert_exit_code(1);
    assert_eq!(server.count(), 4, "rescore sent a request to the model");
    let printed: ExperimentView = out.json();
    assert_eq!(printed.experiment, "A-rescored");

    assert_eq!(shows(&dir, "A"), before, "rescore changed the original");
    let old = dir.show_full("A");
    let new = dir.show_full("A-rescored");
    let (old, new) = (old.only(), new.only());
    assert_eq!(new.spec, "edited.yaml");
    assert_eq!(new.evaluators.len(), 1);
    assert_eq!(new.evaluator("contains").scored, 3);
    assert_eq!(new.evaluator("contains").passed, 2);
    assert_eq!(old.evaluator("exact_match").passed, 1);
    for (id, score) in [("a", 1.0), ("b", 1.0), ("c", 0.0)] {
        assert_eq!(new.score(id, "contains"), Some(score), "sample {id}");
    }
    // The model's call is kept as it was: output, prompt, attempts, latency, tokens.
    for id in ["a", "b", "c", "d"] {
        let (o, n) = (old.record(id), new.record(id));
        assert_eq!(n.output, o.output, "{id}");
        assert_eq!(n.prompt, o.prompt, "{id}");
        assert_eq!(n.variables, o.variables, "{id}");
        assert_eq!(n.attempts, o.attempts, "{id}");
        assert_eq!(n.latency_seconds, o.latency_seconds, "{id}");
        assert_eq!(n.prompt_tokens, o.prompt_tokens, "{id}");
        assert_eq!(n.completion_tokens, o.completion_tokens, "{id}");
    }
    // The model error is copied, kind and message, with no score.
    let d = new.record("d");
    assert_eq!(d.error_kind.as_deref(), Some("http_400"));
    assert_eq!(d.error, old.record("d").error);
    assert!(d.output.is_none());
    assert_eq!(new.samples, old.samples);
    assert_eq!(new.tokens, old.tokens);
}

#[test]
fn a_rescored_experiment_resumes_with_run_and_sends_only_rows_the_original_lacked() {
    let server = server();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server, EXACT).to_string());
    dir.cmd([
        "run",
        "spec.yaml",
        "--experiment",
        "A",
        "--samples",
        "2",
        "--quiet",
    ])
    .output()
    .assert_exit_code(0);
    assert_eq!(server.count(), 2);
    dir.write("edited.yaml", &spec(&server, CONTAINS).to_string());

    dir.cmd(["rescore", "A", "--spec", "edited.yaml", "--into", "B"])
        .output()
        .assert_exit_code(1)
        .assert_stderr_contains("2 of 4 rows have no record in `A` and are left out (not sent)")
        .assert_stderr_contains("dotevals run edited.yaml --experiment B");
    assert_eq!(server.count(), 2, "rows missing from A were sent");
    let b = dir.show_full("B");
    assert_eq!(b.only().samples.total, 4);
    assert_eq!(b.only().samples.recorded, 2);
    assert_eq!(b.only().status, "completed_with_errors");

    // B records the edited spec: a run of it resumes B, sending only c and d.
    dir.cmd(["run", "edited.yaml", "--experiment", "B", "--quiet"])
        .output()
        .assert_exit_code(1);
    assert_eq!(
        server.count(),
        4,
        "resuming B sent more than the two missing rows"
    );
    let b = dir.show_full("B");
    let b = b.only();
    assert_eq!(b.samples.recorded, 4);
    assert_eq!(b.evaluator("contains").passed, 2);
    assert_eq!(b.record("d").error_kind.as_deref(), Some("http_400"));
}

#[test]
fn into_names_the_new_experiment_and_an_existing_target_is_refused() {
    let server = server();
    let dir = run_a(&server);
    dir.write("edited.yaml", &spec(&server, CONTAINS).to_string());
    for args in [&["--into", "mine"][..], &[]] {
        dir.cmd(["rescore", "A", "--spec", "edited.yaml", "--quiet"])
            .args(args)
            .output()
            .assert_exit_code(1);
    }
    assert_eq!(dir.show_full("mine").only().evaluator("contains").passed, 2);
    assert_eq!(
        dir.show_full("A-rescored")
            .only()
            .evaluator("contains")
            .passed,
        2
    );
    let before = shows(&dir, "A-rescored");

    dir.cmd(["rescore", "A", "--spec", "edited.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("experiment `A-rescored` already exists")
        .assert_stderr_contains("--into NEW")
        .assert_stderr_contains("dotevals delete A-rescored");
    dir.cmd(["rescore", "A", "--spec", "edited.yaml", "--into", "A"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("experiment `A` already exists");
    assert_eq!(shows(&dir, "A-rescored"), before);
    assert_eq!(server.count(), 4);
}

#[test]
fn rescore_refuses_what_the_stored_outputs_do_not_answer() {
    let server = server();
    let dir = run_a(&server);
    let before = shows(&dir, "A");
    dir.write("edited.yaml", &spec(&server, CONTAINS).to_string());

    dir.cmd(["rescore", "nope", "--spec", "edited.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("no experiment named `nope`");

    // Another evaluation name: what A holds is listed.
    let other = spec(&server, CONTAINS)
        .to_string()
        .replace("name: graded", "name: other");
    dir.write("other.yaml", &other);
    dir.cmd(["rescore", "A", "--spec", "other.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("experiment `A` holds no evaluation `other`")
        .assert_stderr_contains("it holds `graded`");

    // A changed prompt or model: the stored outputs answer another request.
    let prompt = spec(&server, CONTAINS)
        .prompt("\"Q: {{ reply }}\"")
        .to_string();
    dir.write("prompt.yaml", &prompt);
    dir.cmd(["rescore", "A", "--spec", "prompt.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("(changed: prompt)")
        .assert_stderr_contains("dotevals run prompt.yaml --experiment A-2");
    let model = spec(&server, CONTAINS)
        .model_name("other-model")
        .to_string();
    dir.write("model.yaml", &model);
    dir.cmd(["rescore", "A", "--spec", "model.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("(changed: model)");

    assert_eq!(server.count(), 4);
    assert_eq!(shows(&dir, "A"), before);
    assert!(
        dir.try_show("A-rescored").is_none(),
        "a refused rescore wrote an experiment"
    );
}

#[test]
fn several_specs_rescore_several_evaluations_of_one_experiment() {
    let server = server();
    let dir = TestDir::new();
    let one = spec(&server, EXACT).to_string();
    let two = one.replace("name: graded", "name: second");
    dir.write("one.yaml", &one);
    dir.write("two.yaml", &two);
    dir.cmd([
        "run",
        "one.yaml",
        "two.yaml",
        "--experiment",
        "A",
        "--quiet",
    ])
    .output()
    .assert_exit_code(1);
    assert_eq!(server.count(), 8);
    dir.write("one-edited.yaml", &one.replace("exact_match", "contains"));
    dir.write("two-edited.yaml", &two.replace("exact_match", "contains"));

    dir.cmd([
        "rescore",
        "A",
        "--spec",
        "one-edited.yaml",
        "--spec",
        "two-edited.yaml",
        "--quiet",
    ])
    .output()
    .assert_exit_code(1);
    // Only the evaluation a spec names is rescored.
    dir.cmd([
        "rescore",
        "A",
        "--spec",
        "two-edited.yaml",
        "--into",
        "B",
        "--quiet",
    ])
    .output()
    .assert_exit_code(1);
    assert_eq!(server.count(), 8);
    let both = dir.show_full("A-rescored");
    for name in ["graded", "second"] {
        assert_eq!(both.eval(name).evaluator("contains").passed, 2, "{name}");
    }
    let b = dir.show_full("B");
    assert_eq!(b.only().name, "second");
}

#[test]
fn rescore_help_teaches_with_an_example() {
    let out = TestDir::new().cmd(["rescore", "--help"]).output();
    out.assert_exit_code(0)
        .assert_stdout_contains("dotevals rescore baseline --spec edited.yaml")
        .assert_stdout_contains("--into <NEW>")
        .assert_stdout_contains("Nothing is sent to the model under test");
}

/// Inline rows are part of the spec (a changed row changes the `dataset`); a
/// dataset file may change under the same spec: samples are matched by id and
/// row hash, so an edited or removed row is refused.
#[test]
fn an_edited_or_shortened_dataset_file_is_refused() {
    let server = server();
    let dir = TestDir::new();
    let rows = "{\"id\": \"a\", \"expected\": \"1\", \"reply\": \"1\"}\n{\"id\": \"b\", \"expected\": \"2\", \"reply\": \"4\"}\n";
    dir.write("data.jsonl", rows);
    let file = |evaluator| {
        spec(&server, evaluator)
            .dataset("  path: data.jsonl\n  id: id\n")
            .to_string()
    };
    dir.write("spec.yaml", &file(EXACT));
    dir.cmd(["run", "spec.yaml", "--experiment", "A", "--quiet"])
        .output()
        .assert_exit_code(0);
    dir.write("edited.yaml", &file(CONTAINS));

    dir.write("data.jsonl", &rows.replace("\"4\"", "\"2\""));
    dir.cmd(["rescore", "A", "--spec", "edited.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("sample `b` differs from the one experiment `A` recorded");
    dir.write("data.jsonl", rows.lines().next().unwrap_or_default());
    dir.cmd(["rescore", "A", "--spec", "edited.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains(
            "1 of the samples experiment `A` recorded are no longer in the dataset",
        );
    assert!(dir.try_show("A-rescored").is_none());

    dir.write("data.jsonl", rows);
    dir.cmd(["rescore", "A", "--spec", "edited.yaml", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(
        dir.show_full("A-rescored")
            .only()
            .evaluator("contains")
            .passed,
        1
    );
    assert_eq!(server.count(), 2);
}

/// A scorer of one's own (`type: command`) is run by rescore as by `run`;
/// Ctrl-C stops it as it stops a run: what was rescored is saved, the new
/// experiment says `interrupted`, the original is untouched, and exit is 130.
#[test]
fn a_command_scorer_rescores_and_ctrl_c_stops_it_cleanly() {
    const N: usize = 20;
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write(
        "slow.py",
        r#"
import json, sys, time
for line in sys.stdin:
    request = json.loads(line)
    time.sleep(0.2)
    sys.stdout.write(json.dumps({"id": request["id"], "score": 1, "reason": "slow"}) + "\n")
    sys.stdout.flush()
"#,
    );
    let base = Spec::new("custom", &server.url()).samples(N).quick();
    dir.write(
        "spec.yaml",
        &base
            .clone()
            .evaluator("{type: contains, expected: nope}")
            .to_string(),
    );
    dir.write(
        "edited.yaml",
        &base
            .evaluator("{type: command, name: mine, command: [python3, slow.py], timeout: 5s}")
            .to_string(),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "A", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), N);
    let before = shows(&dir, "A");

    let mut child = dir
        .cmd(["rescore", "A", "--spec", "edited.yaml"])
        .spawn_logged(&dir, "rescore");
    crate::support::interrupt_once_recorded(&dir, &child, "A-rescored", 2);
    // Every sample is being scored at once (a stored reply takes no model
    // slot): a second Ctrl-C cancels those still waiting on the scorer.
    crate::util::wait_until(
        std::time::Duration::from_secs(20),
        "the interrupt noted",
        || dir.read("rescore.err").contains("Ctrl-C again"),
    );
    let again = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(again.success());
    let status = child.wait().expect("wait for rescore");
    assert_eq!(status.code(), Some(130), "{}", dir.read("rescore.err"));
    let stderr = dir.read("rescore.err");
    for part in [
        "dotevals delete A-rescored",
        "dotevals rescore A --spec edited.yaml --into A-rescored",
    ] {
        assert!(stderr.contains(part), "{stderr}");
    }
    let new = dir.show_full("A-rescored");
    let new = new.only();
    assert_eq!(new.status, "interrupted");
    assert!(new.samples.recorded < N as u64, "{:?}", new.samples);
    for r in new.records() {
        assert_eq!(r.scores.get("mine"), Some(&Some(1.0)), "{r:?}");
        assert_eq!(r.reasons.get("mine").map(String::as_str), Some("slow"));
    }
    assert_eq!(server.count(), N);
    assert_eq!(shows(&dir, "A"), before);
}

/// A judge added in the edited spec is called once per stored output (never for
/// a copied model error), on its own endpoint; the model under test is not.
#[test]
fn a_judge_added_by_the_edit_is_called_and_the_model_is_not() {
    let server = server();
    let judge = TestServer::builder()
        .reply(|_| "{\"score\": 1, \"reason\": \"fine\"}".to_owned())
        .start();
    let dir = run_a(&server);
    let judged = spec(&server, CONTAINS).evaluators(&format!(
        "  - type: llm_judge\n    rubric: \"The answer is right.\"\n    model: {{provider: openai, base_url: {}, name: judge}}\n",
        judge.url()
    ));
    dir.write("judged.yaml", &judged.to_string());
    dir.cmd(["rescore", "A", "--spec", "judged.yaml", "--quiet"])
        .output()
        .assert_exit_code(1);
    assert_eq!(server.count(), 4, "the model under test was called");
    assert_eq!(judge.count(), 3, "one judge call per stored output");
    let new = dir.show_full("A-rescored");
    let new = new.only();
    assert_eq!(new.evaluator("llm_judge").passed, 3);
    assert_eq!(new.record("d").error_kind.as_deref(), Some("http_400"));
}
