//! Timing figures that stay honest: history kept across runs of one
//! evaluation, `null` where there is nothing to measure, and waits reported as
//! wall-clock time rather than summed over samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::{Reply, TestServer};
use crate::support::{only, show_json, spec, uint};
use crate::util::{prompt, TestDir};

const RETRY: &str = "  timeout: 5s\n  retry: {max_attempts: 2, backoff: 10ms, max_backoff: 20ms}\n";

/// Runs `n` samples into experiment `x` against a 5 ms echo server through
/// the client's rate limit of `per_minute`, with `concurrency` (a spec line).
fn run_under_quota(n: usize, per_minute: u32, concurrency: &str) -> (TestDir, TestServer) {
    let server = TestServer::builder()
        .reply(|p| p.to_owned())
        .latency(Duration::from_millis(5))
        .start();
    let dir = TestDir::new();
    let model = format!("{RETRY}  rate_limit: {{requests_per_minute: {per_minute}}}\n");
    dir.write(
        "spec.yaml",
        &spec("quota", &server.url(), n, &model, concurrency),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    (dir, server)
}

#[test]
fn a_resumed_run_keeps_the_earlier_runs_retries() {
    const N: usize = 6;
    // The first run: every request fails twice over (2 attempts each), so all
    // samples are recorded with errors. The second run: the server is fixed.
    let broken = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let server = TestServer::builder()
        .respond(move |r| {
            if flag.load(Ordering::SeqCst) {
                Reply::status(500, "down")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start();
    let dir = TestDir::new();
    let tail = "concurrency: {strategy: sequential}\n";
    dir.write("spec.yaml", &spec("hist", &server.url(), N, RETRY, tail));
    let run = || {
        dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .output()
    };
    run().assert_exit_code(1);
    let first = show_json(&dir, "x", &[]);
    let t = &only(&first)["timing"];
    assert_eq!(uint(t, "/retries"), N as u64, "{t:#}");
    // Nothing finished: no latency, so no speed-up; slots were still held.
    assert!(t["speedup_over_sequential"].is_null(), "{t:#}");
    assert!(t["latency_seconds"].is_null(), "{t:#}");
    assert!(
        t["mean_in_flight"].as_f64().is_some_and(|c| c > 0.0),
        "{t:#}"
    );

    broken.store(false, Ordering::SeqCst);
    run().assert_exit_code(0);
    let second = show_json(&dir, "x", &[]);
    let e = only(&second);
    let t = &e["timing"];
    assert_eq!(uint(e, "/samples/finished"), N as u64, "{e:#}");
    // The replaced samples' retries are not forgotten.
    assert_eq!(uint(t, "/retries"), N as u64, "{t:#}");
    let runs = t["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{t:#}");
    assert_eq!(
        (uint(&runs[0], "/retries"), uint(&runs[1], "/retries")),
        (N as u64, 0),
        "{t:#}"
    );
    assert_eq!(
        (uint(&runs[0], "/samples"), uint(&runs[1], "/samples")),
        (N as u64, N as u64)
    );
    // Sequential replies had the server alone: an unloaded latency. The
    // speed-up against it counts both runs' wall time, the first one's
    // backoff included: about 1 or less, and none at all when the backoff
    // took more than half the wall (how much depends on the machine's load).
    assert!(t["unloaded_latency_seconds"].is_f64(), "{t:#}");
    let blocked = t["blocked_seconds"].as_f64().expect("blocked");
    let wall = t["wall_seconds"].as_f64().expect("wall");
    match t["speedup_over_sequential"].as_f64() {
        Some(speedup) => assert!(
            blocked <= 0.5 * wall && speedup > 0.0 && speedup <= 1.05,
            "{t:#}"
        ),
        None => assert!(blocked > 0.5 * wall, "{t:#}"),
    }
    // `show` lists the runs for people too.
    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0).assert_stdout_contains("run 1");
    table.assert_stdout_contains("run 2");
}

#[test]
fn blocked_time_is_wall_clock_not_summed_over_samples() {
    const N: usize = 16;
    const WINDOW: usize = 8;
    // Every request waits in the client's rate limiter (2 a second) for most
    // of the run, with nothing at the server: eight samples waiting at once
    // would sum to about eight times the wall time.
    let tail = format!("concurrency: {{strategy: sliding_window, max_concurrency: {WINDOW}}}\n");
    let (dir, server) = run_under_quota(N, 120, &tail);
    let report = show_json(&dir, "x", &[]);
    let t = &only(&report)["timing"];
    let wall = t["wall_seconds"].as_f64().expect("wall");
    let blocked = t["blocked_seconds"].as_f64().expect("blocked");
    let summed = t["wait_seconds"].as_f64().expect("wait");
    assert!(
        blocked <= wall && blocked >= 0.5 * wall,
        "blocked {blocked} s of a {wall} s run: {t:#}"
    );
    assert!(summed > 2.0 * wall, "waits summed over samples: {t:#}");
    // Slots held on average (most of them waiting), against requests at the server.
    let in_flight = t["mean_in_flight"].as_f64().expect("in flight");
    let at_server = t["mean_at_server"].as_f64().expect("at server");
    assert!(in_flight > 2.0 && at_server < 0.5, "{t:#}");
    assert_eq!(server.count(), N);
    assert_eq!(server.prompts().len(), (0..N).map(prompt).count());
}

#[test]
fn a_run_that_mostly_waited_on_its_quota_claims_no_speed_up() {
    const N: usize = 12;
    // Adaptive measures an unloaded latency (its requests are alone at a
    // 5 ms server), but the run spends most of its time in the client's
    // rate limiter: a speed-up over sequential would measure the quota.
    let (dir, _server) = run_under_quota(N, 240, "concurrency: {strategy: adaptive}\n");
    let report = show_json(&dir, "x", &[]);
    let t = &only(&report)["timing"];
    let wall = t["wall_seconds"].as_f64().expect("wall");
    let blocked = t["blocked_seconds"].as_f64().expect("blocked");
    assert!(
        blocked > 0.5 * wall,
        "blocked {blocked} s of {wall} s: {t:#}"
    );
    assert!(t["unloaded_latency_seconds"].is_f64(), "{t:#}");
    assert!(t["speedup_over_sequential"].is_null(), "{t:#}");
    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0);
    assert!(
        !table.stdout.contains("faster than sequential"),
        "{}",
        table.stdout
    );
}
