//! Hardening of the runner (issue 8): interrupts once every sample has been
//! dispatched, an absurd or file-descriptor-starved window, a store writer that
//! falls behind, a rejected API key, and a rerun that has nothing to do.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::server::{Reply, TestServer};
use crate::support::{signal, spec, wait_bounded};
use crate::util::{wait_until, TestDir, BIN};

/// The runner's grace period for requests in flight after a first interrupt.
const GRACE: Duration = Duration::from_secs(5);

/// A server whose replies never come (sample 1) or come late (sample 0, after
/// `late`), and a 2-row spec with a 600 s timeout and a single attempt: every
/// sample is dispatched at once, so the run sits in its tail from the start.
fn hanging_run(dir: &TestDir, late: Duration) -> (TestServer, Child) {
    let server = TestServer::builder()
        .respond(move |r| {
            if r.prompt == "sample 0" {
                Reply::text("sample 0 answered").after(late)
            } else {
                Reply::Hang
            }
        })
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "tail",
            &server.url(),
            2,
            "  timeout: 600s\n  retry: {max_attempts: 1}\n",
            "",
        ),
    );
    let child = dir
        .cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "x",
            "--concurrency",
            "4",
        ])
        .spawn_logged(dir, "run");
    wait_until(Duration::from_secs(20), "both requests in flight", || {
        server.in_flight() == 2
    });
    // The reproduction: the signal comes ~1.5 s into the run.
    std::thread::sleep(Duration::from_millis(1500));
    (server, child)
}

/// One interrupt after the last sample was dispatched: the request that answers
/// within the grace period is kept, the one that never answers is cancelled when
/// the grace period ends, and the run exits 130 as `interrupted`.
fn first_signal_in_the_tail(name: &str) {
    let dir = TestDir::new();
    let (_server, mut child) = hanging_run(&dir, Duration::from_secs(3));
    let sent = Instant::now();
    signal(&child, name);
    let status = wait_bounded(&mut child, GRACE + Duration::from_secs(5), "the run");
    let took = sent.elapsed();
    let stderr = dir.read("run.err");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert!(
        took >= GRACE - Duration::from_millis(500),
        "in-flight requests get the grace period, exited after {took:?}"
    );
    let report = dir.show_full("x");
    let eval = report.only();
    assert_eq!(eval.status, "interrupted");
    assert_eq!(
        (eval.samples.recorded, eval.samples.finished),
        (1, 1),
        "the reply that came within the grace period is kept"
    );
    assert!(stderr.contains("Resume with"), "{stderr}");
}

#[test]
fn sigint_after_every_sample_is_dispatched_exits_130_after_the_grace_period() {
    first_signal_in_the_tail("INT");
}

#[test]
fn sigterm_after_every_sample_is_dispatched_exits_130_after_the_grace_period() {
    first_signal_in_the_tail("TERM");
}

#[test]
fn two_sigints_after_every_sample_is_dispatched_cancel_at_once() {
    let dir = TestDir::new();
    let (_server, mut child) = hanging_run(&dir, Duration::from_secs(600));
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    signal(&child, "INT");
    let status = wait_bounded(&mut child, GRACE + Duration::from_secs(5), "the run");
    assert_eq!(status.code(), Some(130), "stderr:\n{}", dir.read("run.err"));
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "the second signal cancels at once, took {:?}",
        second.elapsed()
    );
    let report = dir.show_full("x");
    assert_eq!(report.only().status, "interrupted");
    assert_eq!(report.only().samples.recorded, 0);
}

#[test]
fn a_window_beyond_the_maximum_is_a_usage_error_not_a_panic() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("big", &server.url(), 2, "", ""));
    let out = dir
        .cmd(["run", "spec.yaml", "-c", "18446744073709551615", "--quiet"])
        .output();
    out.assert_exit_code(2).assert_stderr_contains("10000");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let tail =
        "concurrency:\n  strategy: sliding_window\n  max_concurrency: 18446744073709551615\n";
    dir.write("big.yaml", &spec("big", &server.url(), 2, "", tail));
    let line = spec("big", &server.url(), 2, "", tail)
        .lines()
        .position(|l| l.contains("18446744073709551615"))
        .unwrap()
        + 1;
    for cmd in ["run", "validate"] {
        let out = dir.cmd([cmd, "big.yaml"]).output();
        out.assert_exit_code(2)
            .assert_stderr_contains(&format!("big.yaml:{line}:"))
            .assert_stderr_contains("10000");
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let tail = "concurrency:\n  strategy: adaptive\n  max: 18446744073709551615\n";
    dir.write("adaptive.yaml", &spec("big", &server.url(), 2, "", tail));
    dir.cmd(["run", "adaptive.yaml"])
        .output()
        .assert_exit_code(2)
        .assert_stderr_contains("10000");
    assert_eq!(server.count(), 0, "nothing is sent");
    assert!(!dir.store().exists(), "nothing is stored");
}

#[test]
fn a_window_above_the_open_file_limit_is_lowered_and_every_sample_finishes() {
    const N: usize = 800;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(300))
        .reply(|p| p.to_owned())
        .start();
    dir.write(
        "spec.yaml",
        &spec("fds", &server.url(), N, "  timeout: 30s\n", ""),
    );
    // Soft and hard limit both at 256: raising the soft limit cannot help.
    let out = Command::new("bash")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\"", BIN])
        .args(["run", "spec.yaml", "--experiment", "x", "-c", "2000"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("DOTEVALS_STORAGE", dir.store())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("open-file limit"),
        "the lowered window is announced:\n{stderr}"
    );
    let report = dir.show_full("x");
    let eval = report.only();
    assert_eq!((eval.samples.finished, eval.samples.errored), (N as u64, 0));
    assert!(
        server.peak_in_flight() < 256,
        "peak {} in flight",
        server.peak_in_flight()
    );
}

#[test]
fn a_store_writer_that_falls_behind_holds_back_new_requests() {
    const N: usize = 12_000;
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("behind", &server.url(), N, "", ""));
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "-c", "8"])
        .spawn_logged(&dir, "run");
    wait_until(Duration::from_secs(30), "the first requests", || {
        server.count() >= 100
    });
    // Another process holds the store's write lock: the writer waits (up to
    // its busy timeout of 10 s), so records pile up unless the runner stops.
    let lock = Connection::open(dir.store()).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked_at = server.count();
    std::thread::sleep(Duration::from_secs(3));
    let held_back = server.count();
    std::thread::sleep(Duration::from_secs(1));
    let still = server.count();
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let status = wait_bounded(&mut child, Duration::from_secs(120), "the run");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", dir.read("run.err"));
    assert_eq!(
        held_back, still,
        "no new requests while the writer cannot commit"
    );
    assert!(
        held_back - locked_at < 6000,
        "sent {} requests while the store was locked",
        held_back - locked_at
    );
    assert_eq!(dir.show_full("x").only().samples.finished, N as u64);
}

#[test]
fn a_rejected_api_key_stops_the_run_early_and_names_the_variable() {
    const N: usize = 200;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| {
            Reply::status(
                401,
                "{\"error\": {\"message\": \"Incorrect API key provided\"}}",
            )
        })
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "auth",
            &server.url(),
            N,
            "  api_key_env: HARDENING_TEST_KEY\n",
            "",
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "-c", "4"])
        .env("HARDENING_TEST_KEY", "sk-wrong-but-long-enough")
        .output();
    out.assert_exit_code(1)
        .assert_stderr_contains("HARDENING_TEST_KEY")
        .assert_stderr_contains("401");
    assert!(
        server.count() <= 8,
        "{} requests sent for {N} samples",
        server.count()
    );
    assert!(!out.stderr.contains("sk-wrong"), "{}", out.stderr);
    // What was sent is recorded as errors, so a rerun with a good key resumes.
    let report = dir.show_full("x");
    let eval = report.only();
    assert_eq!(eval.samples.recorded, eval.samples.errored);
    assert!(eval.samples.recorded <= 8);
}

/// The same 4xx for every request of the first window (here LiteLLM's answer
/// to a model name it does not serve) stops the run too; refusals that differ
/// from sample to sample do not.
#[test]
fn the_same_refusal_for_the_whole_first_window_stops_the_run() {
    const N: usize = 200;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| {
            Reply::status(
                400,
                "{\"error\": {\"message\": \"Invalid model name passed in model=gtp-4o\"}}",
            )
        })
        .start();
    dir.write("spec.yaml", &spec("model", &server.url(), N, "", ""));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "-c", "4"])
        .output();
    out.assert_exit_code(1)
        .assert_stderr_contains("answered HTTP 400, so the rest would be too")
        .assert_stderr_contains("`model.name`");
    assert!(server.count() <= 8, "{} requests sent", server.count());

    // 400 for one prompt in three, 200 for the rest: every sample is sent.
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            let n: usize = r.prompt.trim_start_matches("sample ").parse().unwrap_or(0);
            if n.is_multiple_of(3) {
                Reply::status(400, "{\"error\": {\"message\": \"too long\"}}")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start();
    dir.write("spec.yaml", &spec("mixed", &server.url(), 30, "", ""));
    dir.cmd([
        "run",
        "spec.yaml",
        "--experiment",
        "x",
        "-c",
        "4",
        "--quiet",
    ])
    .output()
    .assert_exit_code(1);
    assert_eq!(server.count(), 30);
}

/// Per-sample refusals at the head of the dataset (400 "context too long" for
/// its first rows) stop the first run, as the watch cannot tell them from a bad
/// setup; but the rerun must not judge those same retried samples again, or the
/// experiment could never get past them.
#[test]
fn retried_refusals_do_not_stop_a_rerun_again() {
    const N: usize = 20;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            let n: usize = r.prompt.trim_start_matches("sample ").parse().unwrap_or(0);
            if n < 4 {
                Reply::status(400, "{\"error\": {\"message\": \"context too long\"}}")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start();
    dir.write("spec.yaml", &spec("long", &server.url(), N, "", ""));
    let run = || {
        dir.cmd([
            "run",
            "spec.yaml",
            "--experiment",
            "x",
            "-c",
            "1",
            "--quiet",
        ])
        .output()
    };
    run().assert_exit_code(1);
    let first = server.count();
    assert!(first < N, "the first run stopped early ({first} sent)");
    let out = run();
    out.assert_exit_code(1);
    assert!(
        !out.stderr.contains("stopped early"),
        "the rerun stopped again: {}",
        out.stderr
    );
    let eval = dir.show_full("x");
    let eval = eval.only();
    assert_eq!(eval.samples.finished, (N - 4) as u64);
    assert_eq!(eval.samples.errored, 4);
}

#[test]
fn a_forbidden_reply_without_a_key_says_none_was_sent() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| Reply::status(403, "{\"error\": {\"message\": \"forbidden\"}}"))
        .start();
    dir.write("spec.yaml", &spec("auth", &server.url(), 50, "", ""));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "-c", "2"])
        .output();
    out.assert_exit_code(1)
        .assert_stderr_contains("403")
        .assert_stderr_contains("api_key_env");
    assert!(server.count() <= 6, "{} requests sent", server.count());
}

#[test]
fn auth_errors_after_a_success_do_not_stop_the_run() {
    const N: usize = 20;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            if r.prompt == "sample 0" {
                Reply::text("fine")
            } else {
                Reply::status(401, "{\"error\": {\"message\": \"no\"}}")
            }
        })
        .start();
    dir.write("spec.yaml", &spec("auth", &server.url(), N, "", ""));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "-c", "1"])
        .output()
        .assert_exit_code(1);
    assert_eq!(server.count(), N, "a key that worked once is not judged");
}

fn runs_recorded(dir: &TestDir) -> (i64, i64) {
    let conn = Connection::open(dir.store()).unwrap();
    conn.query_row(
        "SELECT (SELECT count(*) FROM runs), (SELECT runs FROM evaluations)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn a_rerun_of_a_completed_experiment_records_no_empty_run() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("done", &server.url(), 3, "", ""));
    for _ in 0..2 {
        dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .output()
            .assert_exit_code(0);
    }
    assert_eq!(server.count(), 3);
    assert_eq!(runs_recorded(&dir), (1, 1), "the rerun added no run");
    let report = dir.show_full("x");
    assert_eq!(report.only().status, "completed");
    assert_eq!(report.only().samples.finished, 3);
}
