//! `type: command`: the user's own scorer, a program speaking JSON lines,
//! run against an echo server (each output is its prompt, `sample I`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use crate::server::TestServer;
use crate::util::{EvaluationView, Out, Spec, TestDir, BIN};

/// The JSON-lines loop every test program shares; `answer(request)` returns the reply dict.
const LOOP: &str = r#"
import json, os, sys
with open("starts.log", "a") as f:
    f.write(f"{os.getpid()}\n")
def main(answer):
    for line in sys.stdin:
        request = json.loads(line)
        reply = answer(request)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
def index(request):
    return int(request["output"].split()[-1])
"#;

/// Writes `scorer.py` (the loop plus `body`, which calls `main`), runs `n`
/// samples with `evaluator` (a flow mapping) and returns the run and the report.
fn run(n: usize, body: &str, evaluator: &str) -> (TestDir, Out, EvaluationView) {
    let (server, dir) = setup(n, body, &format!("  - {evaluator}\n"), "");
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    assert_eq!(server.count(), n, "one model request per sample");
    let report = dir.show_full("x").only().clone();
    (dir, out, report)
}

/// Scores and errors by sample index.
fn by_index(
    report: &EvaluationView,
    evaluator: &str,
) -> BTreeMap<u64, (Option<f64>, Option<String>)> {
    report
        .records()
        .iter()
        .map(|r| {
            let score = r.scores.get(evaluator).copied().flatten();
            (r.index, (score, r.error.clone()))
        })
        .collect()
}

/// An echo server, and a folder holding `scorer.py` (the loop plus `body`)
/// and `spec.yaml`: `n` samples against the server, scored by `evaluators`
/// (lines under `evaluators:`), then `tail`.
fn setup(n: usize, body: &str, evaluators: &str, tail: &str) -> (TestServer, TestDir) {
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("scorer.py", &format!("{LOOP}\n{body}"));
    let spec = Spec::new("custom", &server.url())
        .samples(n)
        .quick()
        .evaluators(evaluators)
        .tail(tail)
        .to_string();
    dir.write("spec.yaml", &spec);
    (server, dir)
}

fn starts(dir: &TestDir) -> Vec<String> {
    dir.read("starts.log").lines().map(str::to_owned).collect()
}

#[test]
fn a_crash_garbage_and_a_hang_leave_only_those_samples_unscored() {
    let body = r#"
import time
def answer(request):
    i = index(request)
    if i == 2:
        print("boom on sample 2", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(3)
    if i == 4:
        return "this is not a reply"
    if i == 6:
        print("thinking forever", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(60)
    return {"id": request["id"], "score": 1}
main(answer)
"#;
    // Sample 4's line is `"this is not a reply"`: JSON, but no reply object.
    let (dir, out, report) = run(
        10,
        body,
        "{type: command, name: mine, command: [python3, scorer.py], timeout: 1s}",
    );
    assert_eq!(
        out.code,
        Some(1),
        "evaluator errors make the run exit 1: {out:?}"
    );
    let scores = by_index(&report, "mine");
    for (i, (score, error)) in &scores {
        match i {
            2 => {
                assert_eq!(*score, None);
                let e = error.as_deref().unwrap_or_default();
                assert!(
                    e.contains("exited before replying") && e.contains("boom on sample 2"),
                    "{e}"
                );
            }
            4 => {
                assert_eq!(*score, None);
                let e = error.as_deref().unwrap_or_default();
                assert!(
                    e.contains("not a JSON reply: `\"this is not a reply\"`"),
                    "{e}"
                );
            }
            6 => {
                assert_eq!(*score, None);
                let e = error.as_deref().unwrap_or_default();
                assert!(
                    e.contains("gave no reply within 1s") && e.contains("thinking forever"),
                    "{e}"
                );
            }
            _ => assert_eq!((*score, error.as_deref()), (Some(1.0), None), "sample {i}"),
        }
    }
    for i in [2, 4, 6] {
        let r = report
            .records()
            .iter()
            .find(|r| r.index == i)
            .expect("record");
        assert_eq!(r.error_kind.as_deref(), Some("evaluator"), "{r:?}");
    }
    assert_eq!(scores.len(), 10);
    // Started once, then restarted at most once per fault: never once per sample.
    let n = starts(&dir).len();
    assert!((3..=4).contains(&n), "{n} starts");
}

#[test]
fn replies_out_of_order_are_matched_by_id() {
    // Reads whatever requests are waiting (up to 4, or 300 ms), then answers
    // them last first; the score says which sample it is for.
    let body = r#"
import select
def batches():
    buf = b""
    while True:
        batch, deadline = [], None
        while len(batch) < 4:
            timeout = None if not batch else 0.3
            ready, _, _ = select.select([0], [], [], timeout)
            if not ready:
                break
            chunk = os.read(0, 65536)
            if not chunk:
                if batch:
                    yield batch
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                batch.append(json.loads(line))
        yield batch
with open("batches.log", "a") as log:
    for batch in batches():
        log.write(f"{len(batch)}\n")
        log.flush()
        for request in reversed(batch):
            reply = {"id": request["id"], "score": index(request) / 10}
            sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
"#;
    let (dir, out, report) = run(
        8,
        body,
        "{type: command, command: [python3, scorer.py], timeout: 5s}",
    );
    out.assert_exit_code(0);
    for (i, (score, error)) in by_index(&report, "command") {
        assert_eq!((score, error), (Some(i as f64 / 10.0), None), "sample {i}");
    }
    let batches: Vec<usize> = dir
        .read("batches.log")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(
        batches.iter().any(|&b| b >= 2),
        "some replies went out of order: {batches:?}"
    );
    assert_eq!(starts(&dir).len(), 1, "one program for the run");
}

#[test]
fn workers_start_several_programs_that_share_the_samples() {
    let body = r#"
import time
def answer(request):
    time.sleep(0.2)
    with open("served.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    return {"id": request["id"], "score": 1, "reason": "fine"}
main(answer)
"#;
    let (dir, out, report) = run(
        8,
        body,
        "{type: command, command: [python3, scorer.py], workers: 2, config: {unused: true}}",
    );
    out.assert_exit_code(0);
    assert!(by_index(&report, "command")
        .values()
        .all(|s| s.0 == Some(1.0)));
    for r in report.records() {
        let reason = r.reasons.get("command").map(String::as_str);
        assert_eq!(reason, Some("fine"), "the program's reason is stored");
    }
    let started: BTreeSet<String> = starts(&dir).into_iter().collect();
    assert_eq!(started.len(), 2, "two programs: {started:?}");
    let served: BTreeSet<String> = dir.read("served.log").lines().map(str::to_owned).collect();
    assert_eq!(served, started, "both programs scored samples");
}

#[test]
fn the_program_gets_output_variables_and_config_and_its_errors_are_reported() {
    let body = r#"
def answer(request):
    assert request["variables"] == {"text": request["output"]}, request
    limit = request["config"]["limit"]
    i = index(request)
    if i == 0:
        return {"id": request["id"], "error": "cannot judge this one"}
    if i == 1:
        return {"id": request["id"], "score": 1.5}
    return {"id": request["id"], "score": min(1, i / limit)}
main(answer)
"#;
    let (_dir, out, report) = run(
        4,
        body,
        "{type: command, command: [python3, scorer.py], config: {limit: 4}}",
    );
    out.assert_exit_code(1);
    let scores = by_index(&report, "command");
    let e0 = scores[&0].1.as_deref().unwrap_or_default();
    assert!(e0.contains("says: cannot judge this one"), "{e0}");
    let e1 = scores[&1].1.as_deref().unwrap_or_default();
    assert!(e1.contains("score 1.5 is outside [0, 1]"), "{e1}");
    assert_eq!(scores[&2].0, Some(0.5));
    assert_eq!(scores[&3].0, Some(0.75));
}

#[test]
fn a_missing_program_or_bad_field_is_a_spec_error_before_any_request() {
    for (evaluator, message) in [
        (
            "{type: command, command: [no-such-scorer-program]}",
            "scorer program `no-such-scorer-program` not found in PATH",
        ),
        (
            "{type: command, command: [./missing.sh]}",
            "scorer program `./missing.sh` not found",
        ),
        ("{type: command, command: [scorer.py]}", "not found in PATH"),
        (
            "{type: command, command: [./scorer.py]}",
            "is not an executable file",
        ),
        ("{type: command, command: []}", "`command` is empty"),
        (
            "{type: command, command: [python3], workers: 0}",
            "`workers` must be between 1 and 64, not 0",
        ),
        (
            "{type: command, command: [python3], timeout: soon}",
            "invalid duration `soon`",
        ),
    ] {
        let server = TestServer::echo();
        let dir = TestDir::new();
        dir.write("scorer.py", "print('not executable')\n");
        let spec = Spec::new("custom", &server.url())
            .evaluator(evaluator)
            .to_string();
        dir.write("spec.yaml", &spec);
        let out = dir.cmd(["run", "spec.yaml", "--experiment", "x"]).output();
        out.assert_exit_code(2).assert_stderr_contains(message);
        // Located at the evaluator's line.
        let line = spec
            .lines()
            .position(|l| l.contains("type: command"))
            .unwrap_or(0)
            + 1;
        out.assert_stderr_contains(&format!("spec.yaml:{line}:"));
        assert_eq!(server.count(), 0, "{evaluator}: nothing sent");
    }
}

#[test]
fn the_shipped_example_runs_from_the_repository_root() {
    let dir = TestDir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(BIN)
        .current_dir(root)
        .args([
            "run",
            "evals/custom-scorer.yaml",
            "--experiment",
            "x",
            "--quiet",
        ])
        .env("DOTEVALS_STORAGE", dir.store())
        .env("NO_COLOR", "1")
        .output()
        .expect("run dotevals");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = dir.show_full("x").only().clone();
    let scores: Vec<Option<f64>> = report
        .records()
        .iter()
        .map(|r| r.scores.get("short").copied().flatten())
        .collect();
    assert_eq!(scores.len(), 4);
    assert!(scores.contains(&Some(1.0)), "{scores:?}");
    assert!(
        scores.iter().any(|s| matches!(s, Some(x) if *x < 1.0)),
        "{scores:?}"
    );
    let short = report.evaluator("short");
    assert_eq!(
        (short.scored, short.passed),
        (4, 2),
        "0.42 fails the graded threshold 0.5: {short:?}"
    );
    let reasons: Vec<&str> = report
        .records()
        .iter()
        .filter_map(|r| r.reasons.get("short").map(String::as_str))
        .collect();
    assert!(
        reasons.contains(&"12 words, over the limit of 5"),
        "{reasons:?}"
    );
}

/// A program that writes a line of several MiB (no newline) is cut off at the
/// cap (not read into memory to the end), so that sample is unscored and the
/// others are scored, by a restarted program when any were still waiting.
#[test]
fn an_endless_reply_line_is_cut_off_and_the_program_restarted() {
    let body = r#"
import time
def answer(request):
    if index(request) == 1:
        sys.stdout.write("x" * (3 << 20))
        sys.stdout.flush()
        time.sleep(60)
    return {"id": request["id"], "score": 1}
main(answer)
"#;
    let (_dir, out, report) = run(
        4,
        body,
        "{type: command, name: mine, command: [python3, scorer.py], timeout: 20s}",
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    for (i, (score, error)) in by_index(&report, "mine") {
        if i == 1 {
            assert_eq!(score, None);
            let e = error.unwrap_or_default();
            assert!(e.contains("wrote a line longer than 1 MiB"), "{e}");
        } else {
            assert_eq!((score, error.as_deref()), (Some(1.0), None), "sample {i}");
        }
    }
}

/// A command scorer runs without the keys the spec names (the model's
/// `api_key_env`) unless its entry lists them under `env`; other variables
/// pass through.
#[test]
fn a_scorer_sees_the_spec_keys_only_when_its_entry_lists_them() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write(
        "scorer.py",
        &format!(
            "{LOOP}\ndef answer(request):\n    has = 'MODEL_KEY' in os.environ\n    return {{\"id\": request[\"id\"], \"score\": 1.0 if has else 0.0, \"reason\": os.environ.get('OTHER_VAR', 'none')}}\nmain(answer)\n"
        ),
    );
    let spec = Spec::new("custom", &server.url())
        .samples(2)
        .quick()
        .model("  api_key_env: MODEL_KEY\n")
        .evaluators(
            "  - {type: command, name: plain, command: [python3, scorer.py]}\n  - {type: command, name: trusted, command: [python3, scorer.py], env: [MODEL_KEY]}\n",
        )
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("MODEL_KEY", "sk-not-for-scorers-123456")
        .env("OTHER_VAR", "passed")
        .output()
        .assert_exit_code(0);
    let validated = dir
        .cmd(["validate", "spec.yaml"])
        .env("MODEL_KEY", "sk-not-for-scorers-123456")
        .output();
    validated.assert_exit_code(0);
    assert!(
        validated.stdout.contains("plain runs ") && validated.stdout.contains(" scorer.py in "),
        "validate says what the spec runs:\n{}",
        validated.stdout
    );
    let report = dir.show_full("x").only().clone();
    for r in report.records() {
        assert_eq!(r.scores["plain"], Some(0.0), "no key without env: {r:?}");
        assert_eq!(r.scores["trusted"], Some(1.0), "env lets it through: {r:?}");
        assert_eq!(
            r.reasons["plain"], "passed",
            "other variables pass through: {r:?}"
        );
    }
}

/// Whether process `pid` still runs (a zombie waiting for its parent counts
/// as gone).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A scorer behind a `sh` wrapper (which does not `exec` it): the program
/// the wrapper started is killed with it on a timeout, on a bad line, and at
/// the end of the run; none outlives dotevals.
#[test]
fn no_scorer_process_or_child_outlives_the_run() {
    let body = r#"
import time
def answer(request):
    i = index(request)
    if i == 1:
        time.sleep(600)
    if i == 3:
        return "not a reply"
    return {"id": request["id"], "score": 1}
main(answer)
"#;
    let (_server, dir) = setup(
        6,
        body,
        "  - {type: command, name: mine, command: [sh, wrapper.sh], timeout: 1s}\n",
        "concurrency: {strategy: sequential}\n",
    );
    dir.write("wrapper.sh", "python3 scorer.py\necho wrapper done >&2\n");
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);
    let started = starts(&dir);
    assert_eq!(
        started.len(),
        3,
        "started, restarted after the hang and after the bad line"
    );
    let left: Vec<&String> = started.iter().filter(|pid| alive(pid)).collect();
    assert!(left.is_empty(), "scorer programs still running: {left:?}");
    let report = dir.show_full("x").only().clone();
    let scores = by_index(&report, "mine");
    assert_eq!(scores[&1].0, None);
    assert_eq!(scores[&3].0, None);
    assert_eq!(scores[&5].0, Some(1.0));
}

/// Ctrl-C while a scorer behind a wrapper hangs: dotevals exits and takes
/// the wrapper and the program with it.
#[test]
fn an_interrupt_stops_a_hung_scorer_and_its_children() {
    let body = r#"
import time
def answer(request):
    time.sleep(600)
main(answer)
"#;
    let (_server, dir) = setup(
        2,
        body,
        "  - {type: command, command: [sh, wrapper.sh], timeout: 10m}\n",
        "",
    );
    dir.write("wrapper.sh", "python3 scorer.py\n");
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "x"])
        .spawn_logged(&dir, "run");
    crate::util::wait_until(Duration::from_secs(20), "the scorer started", || {
        dir.path().join("starts.log").exists() && !starts(&dir).is_empty()
    });
    crate::support::signal(&child, "INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", dir.read("run.err"));
    let left: Vec<String> = starts(&dir).into_iter().filter(|pid| alive(pid)).collect();
    assert!(left.is_empty(), "scorer programs still running: {left:?}");
}

/// A reply to an id nobody asked about fails no sample (it is mentioned with
/// the next failure), and a failing sample's error quotes only the stderr
/// written while it was the one being scored.
#[test]
fn a_stray_reply_blames_no_sample_and_errors_quote_only_their_own_stderr() {
    // It takes a moment per sample, as real scorers do: which of two pipes a
    // program far ahead of dotevals wrote first cannot be known.
    let body = r#"
import time
def answer(request):
    time.sleep(0.05)
    i = index(request)
    if i == 1:
        print("noise while scoring sample 1", file=sys.stderr)
        sys.stderr.flush()
    if i == 2:
        sys.stdout.write(json.dumps({"id": 9999, "score": 0}) + "\n")
    if i == 4:
        print("sample 4 breaks", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(3)
    return {"id": request["id"], "score": 1}
main(answer)
"#;
    let (_server, dir) = setup(
        6,
        body,
        "  - {type: command, name: mine, command: [python3, scorer.py]}\n",
        "concurrency: {strategy: sequential}\n",
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);
    let report = dir.show_full("x").only().clone();
    let scores = by_index(&report, "mine");
    for i in [0, 1, 2, 3, 5] {
        assert_eq!(scores[&i], (Some(1.0), None), "sample {i} is innocent");
    }
    let e4 = scores[&4].1.clone().unwrap_or_default();
    assert!(e4.contains("sample 4 breaks"), "{e4}");
    assert!(!e4.contains("sample 1"), "another sample's stderr: {e4}");
    assert!(
        e4.contains("replied to id 9999"),
        "the stray reply is told: {e4}"
    );
}

/// A command scorer's pace is not part of the spec's identity: a resume may
/// raise its `timeout` and `workers` (as a judge's may), and rescoring the
/// samples the short timeout failed finishes them.
#[test]
fn a_resume_may_change_the_scorers_timeout_and_workers() {
    let body = r#"
import time
def answer(request):
    if index(request) == 1:
        time.sleep(1.5)
    return {"id": request["id"], "score": 1}
main(answer)
"#;
    let entry = "  - {type: command, name: mine, command: [python3, scorer.py], timeout: 1s}\n";
    let (server, dir) = setup(3, body, entry, "");
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(1);
    assert_eq!(dir.show_full("x").only().samples.errored, 1);
    let spec = dir.read("spec.yaml");
    dir.write(
        "spec.yaml",
        &spec.replace("timeout: 1s", "timeout: 10s, workers: 2"),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    let report = dir.show_full("x").only().clone();
    assert_eq!(report.samples.errored, 0);
    assert_eq!(server.count(), 3, "the resume scored the stored reply");
}
