//! Resume: running an experiment again sends only what has no finished record.
//! Covered: a run killed with SIGKILL mid-flight, a run stopped with SIGINT,
//! SIGTERM's grace period and a second signal cancelling requests in flight,
//! errored samples retried once the server is healthy, `--samples N` followed by
//! a full run, and the refusals (changed spec, edited dataset row) that keep one
//! experiment from mixing results of different inputs.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::{Reply, TestServer};
use crate::support::{interrupt_once_recorded, signal};
use crate::util::{wait_until, Spec, TestDir};

/// A spec of `n` inline rows whose prompts are `sample 0`, `sample 1`, ...
fn spec(url: &str, n: usize) -> String {
    Spec::new("resumable", url)
        .samples(n)
        .quick()
        .evaluator("{type: contains, expected: sample}")
        .to_string()
}

fn all_prompts(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("sample {i}")).collect()
}

/// Asserts every sample has exactly one record, finished.
#[track_caller]
fn assert_complete(dir: &TestDir, n: usize) {
    let report = dir.show_full("x");
    let eval = report.only();
    let records = eval.records();
    assert_eq!(records.len(), n, "one record per sample");
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), n, "no sample recorded twice");
    assert!(
        records
            .iter()
            .all(|r| r.error_kind.is_none() && r.output.is_some()),
        "every record finished: {records:#?}"
    );
    assert_eq!(
        (
            eval.samples.total,
            eval.samples.recorded,
            eval.samples.finished,
            eval.samples.errored
        ),
        (n as u64, n as u64, n as u64, 0)
    );
}

#[test]
fn sigkill_mid_run_then_resume_sends_only_unfinished_samples() {
    const N: usize = 30;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(200))
        .reply(|p| p.to_owned())
        .start();
    dir.write("spec.yaml", &spec(&server.url(), N));

    let mut child = dir
        .cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "x",
            "--concurrency",
            "2",
        ])
        .spawn_logged(&dir, "first");
    wait_until(Duration::from_secs(20), "4 recorded samples", || {
        dir.try_show("x").is_some_and(|r| {
            r.evaluations
                .first()
                .is_some_and(|e| e.samples.recorded >= 4)
        })
    });
    child.kill().expect("SIGKILL the run");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was killed, not finished");

    let before = dir.show_full("x");
    let finished_before: BTreeSet<String> = before
        .only()
        .records()
        .iter()
        .filter(|r| r.error_kind.is_none())
        .map(|r| r.prompt.as_str().expect("a text prompt").to_owned())
        .collect();
    assert!(finished_before.len() >= 4, "{finished_before:?}");
    assert!(
        finished_before.len() < N,
        "the run was killed before it could finish"
    );
    let sent_before = server.count();

    server.set_latency(Duration::from_millis(5));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);

    let resent: Vec<String> = server.prompts()[sent_before..].to_vec();
    let resent_set: BTreeSet<String> = resent.iter().cloned().collect();
    assert_eq!(
        resent.len(),
        resent_set.len(),
        "each prompt sent once on resume: {resent:?}"
    );
    let again: Vec<&String> = resent_set.intersection(&finished_before).collect();
    assert!(
        again.is_empty(),
        "finished samples were sent again: {again:?}"
    );
    let expected: BTreeSet<String> = all_prompts(N)
        .difference(&finished_before)
        .cloned()
        .collect();
    assert_eq!(
        resent_set, expected,
        "the resume sends exactly the unfinished samples"
    );
    assert_complete(&dir, N);
    assert_eq!(dir.show_full("x").only().runs, 2);
}

#[test]
fn sigint_lets_requests_in_flight_finish_and_exits_130() {
    const N: usize = 20;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(150))
        .reply(|p| p.to_owned())
        .start();
    dir.write("spec.yaml", &spec(&server.url(), N));
    let mut child = dir
        .cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "x",
            "--concurrency",
            "2",
        ])
        .spawn_logged(&dir, "first");
    interrupt_once_recorded(&dir, &child, "x", 2);
    let status = child.wait().unwrap();
    let stderr = dir.read("first.err");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert!(
        stderr.contains("dotevals run spec.yaml --experiment x"),
        "prints how to resume:\n{stderr}"
    );

    let report = dir.show_full("x");
    let eval = report.only();
    assert_eq!(eval.status, "interrupted");
    assert!(eval.samples.recorded < N as u64, "{:?}", eval.samples);
    // Requests in flight were allowed to finish and were saved: every request
    // the server answered has a record.
    assert_eq!(
        server.count() as u64,
        eval.samples.recorded,
        "sent {:?}, recorded {:?}",
        server.prompts(),
        eval.records().iter().map(|r| &r.prompt).collect::<Vec<_>>()
    );
    assert_eq!(eval.samples.errored, 0);
    // Throughput counts recorded samples, not the dataset's size.
    let t = &eval.timing;
    let expected = eval.samples.recorded as f64 / t.wall_seconds;
    let throughput = t.throughput_per_second.unwrap();
    assert!((throughput - expected).abs() < 1e-6 * expected, "{t:?}");

    server.set_latency(Duration::ZERO);
    let sent_before = server.count();
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count() - sent_before, N - sent_before);
    assert_complete(&dir, N);
}

#[test]
fn sigterm_waits_for_requests_in_flight_and_a_second_signal_cancels_them() {
    let dir = TestDir::new();
    // Replies take far longer than the 5 s grace period.
    let server = TestServer::builder()
        .latency(Duration::from_secs(60))
        .reply(|p| p.to_owned())
        .start();
    dir.write("spec.yaml", &spec(&server.url(), 6));
    let mut child = dir
        .cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "x",
            "--concurrency",
            "2",
        ])
        .spawn_logged(&dir, "first");
    wait_until(Duration::from_secs(20), "2 requests in flight", || {
        server.in_flight() == 2
    });
    signal(&child, "TERM");
    // The first signal only stops new requests: the run waits on those in flight.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the grace period: {}",
        dir.read("first.err")
    );
    assert_eq!(server.count(), 2, "nothing new is sent after the signal");
    let cancelled = std::time::Instant::now();
    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert!(
        cancelled.elapsed() < Duration::from_secs(3),
        "the second signal cancels at once, took {:?}",
        cancelled.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(130),
        "stderr:\n{}",
        dir.read("first.err")
    );
    let report = dir.show_full("x");
    let eval = report.only();
    assert_eq!(eval.status, "interrupted");
    assert_eq!(
        eval.samples.recorded, 0,
        "cancelled requests are not recorded"
    );
}

#[test]
fn errored_samples_are_retried_on_the_next_run() {
    const N: usize = 8;
    let dir = TestDir::new();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    let server = TestServer::builder()
        .respond(move |r| {
            let n: usize = r.prompt.trim_start_matches("sample ").parse().unwrap_or(0);
            if matches!(n % 3, 0) && !flag.load(Ordering::SeqCst) {
                Reply::status(500, "{\"error\": {\"message\": \"internal\"}}")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start();
    let text = spec(&server.url(), N).replace("max_attempts: 3", "max_attempts: 1");
    dir.write("spec.yaml", &text);

    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    let failing: BTreeSet<String> = (0..N)
        .filter(|n| matches!(n % 3, 0))
        .map(|n| format!("sample {n}"))
        .collect();
    assert_eq!(
        server.count(),
        N,
        "max_attempts 1: no retries within the run"
    );
    let errors = dir
        .cmd(["show", "x", "--errors", "--format", "json"])
        .output()
        .assert_exit_code(0)
        .json::<crate::util::ExperimentView>();
    let errors = errors.only().errors.clone().expect("--errors lists errors");
    let ids: Vec<&str> = errors.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0", "3", "6"]);
    assert!(
        errors
            .iter()
            .all(|e| e.kind == "http_500" && e.attempts == 1),
        "{errors:?}"
    );

    healthy.store(true, Ordering::SeqCst);
    let sent_before = server.count();
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    let resent: BTreeSet<String> = server.prompts()[sent_before..].iter().cloned().collect();
    assert_eq!(server.count() - sent_before, failing.len());
    assert_eq!(resent, failing, "only the errored samples are sent again");
    assert_complete(&dir, N);
}

#[test]
fn samples_flag_then_full_run_completes_the_rest() {
    const N: usize = 10;
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec(&server.url(), N));
    dir.cmd([
        "run",
        "spec.yaml",
        "--experiment",
        "x",
        "--quiet",
        "--samples",
        "3",
    ])
    .output()
    .assert_exit_code(0);
    assert_eq!(
        server.sorted_prompts(),
        ["sample 0", "sample 1", "sample 2"],
        "--samples 3 runs the first three"
    );
    let partial = dir.show_full("x");
    assert_eq!(partial.only().samples.total, 3);
    assert_eq!(partial.only().samples.recorded, 3);

    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    let later: BTreeSet<String> = server.prompts()[3..].iter().cloned().collect();
    assert_eq!(server.count(), N, "{:?}", server.prompts());
    let expected: BTreeSet<String> = (3..N).map(|i| format!("sample {i}")).collect();
    assert_eq!(later, expected);
    assert_complete(&dir, N);
}

#[test]
fn changed_spec_is_refused_but_runtime_settings_may_change() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let original = spec(&server.url(), 4);
    dir.write("spec.yaml", &original);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 4);

    let changes: [(&str, String, &str); 3] = [
        (
            "prompt",
            original.replace("prompt: \"{{ text }}\"", "prompt: \"Q: {{ text }}\""),
            "changed: prompt",
        ),
        (
            "evaluators",
            original.replace("expected: sample", "expected: other"),
            "changed: evaluators",
        ),
        (
            "model",
            original.replace("name: test-model", "name: other-model"),
            "changed: model",
        ),
    ];
    for (what, text, message) in changes {
        dir.write("spec.yaml", &text);
        let out = dir
            .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .output();
        out.assert_exit_code(2);
        out.assert_stderr_contains("already holds evaluation `resumable` from a different spec");
        out.assert_stderr_contains(message);
        assert_eq!(server.count(), 4, "a changed {what} sends nothing");
    }

    // Timeouts, retries and concurrency decide no result: they may change.
    let tuned = original
        .replace("timeout: 5s", "timeout: 7s")
        .replace("max_attempts: 3", "max_attempts: 4")
        + "concurrency: {strategy: sequential}\n";
    dir.write("spec.yaml", &tuned);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 4, "nothing left to send");
    assert_complete(&dir, 4);
}

#[test]
fn changed_dataset_source_is_refused() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let rows = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
    dir.write("one.jsonl", rows);
    dir.write("two.jsonl", rows);
    let text = Spec::new("resumable", &server.url())
        .dataset("  path: one.jsonl\n")
        .quick()
        .to_string();
    dir.write("spec.yaml", &text);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    dir.write("spec.yaml", &text.replace("one.jsonl", "two.jsonl"));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("changed: dataset");
    assert_eq!(server.count(), 2);
}

#[test]
fn edited_dataset_row_is_refused_and_appended_rows_are_run() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let rows = "{\"text\": \"alpha\"}\n{\"text\": \"beta\"}\n{\"text\": \"gamma\"}\n";
    dir.write("rows.jsonl", rows);
    dir.write(
        "spec.yaml",
        &Spec::new("resumable", &server.url())
            .dataset("  path: rows.jsonl\n")
            .quick()
            .to_string(),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 3);

    dir.write("rows.jsonl", &rows.replace("beta", "BETA"));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("error: rows.jsonl:2:1: sample `1` differs");
    assert_eq!(server.count(), 3, "an edited dataset sends nothing");

    // New rows at the end are new samples: only they are sent.
    dir.write("rows.jsonl", &format!("{rows}{{\"text\": \"delta\"}}\n"));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.prompts()[3..], ["delta"]);
    let report = dir.show_full("x");
    let by_id: HashMap<&str, Option<&str>> = report
        .only()
        .records()
        .iter()
        .map(|r| (r.id.as_str(), r.output.as_deref()))
        .collect();
    assert_eq!(by_id.len(), 4);
    assert_eq!(by_id["3"], Some("delta"));
    assert_eq!(report.only().samples.total, 4);
}

#[test]
fn one_refused_spec_stops_every_spec_of_the_run() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("a.jsonl", "{\"text\": \"a0\"}\n{\"text\": \"a1\"}\n");
    let a = Spec::new("first", &server.url())
        .dataset("  path: a.jsonl\n")
        .quick()
        .to_string();
    let b = spec(&server.url(), 2);
    dir.write("a.yaml", &a);
    dir.write("b.yaml", &b);
    dir.cmd(["run", "a.yaml", "b.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 4);
    // `a` has new work (an appended row), but `b` changed: nothing at all is sent.
    dir.write(
        "a.jsonl",
        "{\"text\": \"a0\"}\n{\"text\": \"a1\"}\n{\"text\": \"a2\"}\n",
    );
    dir.write(
        "b.yaml",
        &b.replace("prompt: \"{{ text }}\"", "prompt: \"B {{ text }}\""),
    );
    let out = dir
        .cmd(["run", "a.yaml", "b.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("evaluation `resumable` from a different spec (changed: prompt)");
    assert_eq!(server.count(), 4, "{:?}", server.prompts());
    // Without the changed spec, the new row runs.
    dir.cmd(["run", "a.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.prompts()[4..], ["a2"]);
}
