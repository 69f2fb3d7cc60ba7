//! The `adaptive` strategy against the two kinds of server it must read:
//! a saturating one (capacity K: requests beyond K queue and latency grows)
//! where it must find roughly K on its own, and a throttling one (429 with
//! Retry-After for a while) where it must back off without losing or
//! duplicating a sample. Judged by what the server saw and by
//! `timing.concurrency_limit` / `timing.throttled` in `show --format json`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::server::TestServer;
use crate::support::{only, show_json, spec, uint, wait_bounded};
use crate::util::{prompt, TestDir};

/// The server's capacity.
const K: usize = 8;
/// The spec's bound on the adaptive limit.
const MAX: usize = 32;

const FAST_RETRY: &str =
    "  timeout: 10s\n  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 50ms}\n";

fn capacity_server(seed: u64) -> TestServer {
    TestServer::builder()
        .capacity(K, Duration::from_millis(50), 0.2)
        .seed(seed)
        .reply(|p| p.to_owned())
        .start()
}

#[test]
fn adaptive_finds_the_capacity_of_a_queueing_server() {
    const N: usize = 300;
    let setups = [
        format!("concurrency: {{strategy: adaptive, max: {MAX}}}\n"),
        format!("concurrency: {{strategy: sliding_window, max_concurrency: {K}}}\n"),
    ];
    // Side by side, each against its own server: same machine load for both.
    let runs: Vec<_> = setups
        .iter()
        .enumerate()
        .map(|(i, tail)| {
            let dir = TestDir::new();
            let server = capacity_server(i as u64 + 1);
            dir.write(
                "spec.yaml",
                &spec("cap", &server.url(), N, FAST_RETRY, tail),
            );
            let child = dir
                .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
                .spawn_logged(&dir, "run");
            (dir, server, child)
        })
        .collect();
    let mut reports = Vec::new();
    for (dir, server, mut child) in runs {
        let status = wait_bounded(&mut child, Duration::from_secs(60), "a capacity run");
        assert_eq!(status.code(), Some(0), "{}", dir.read("run.err"));
        let report = show_json(&dir, "x", &[]);
        let e = only(&report).clone();
        assert_eq!(
            (uint(&e, "/samples/total"), uint(&e, "/samples/finished")),
            (N as u64, N as u64),
            "every sample finishes: {e:#}"
        );
        let mut sent = server.sorted_prompts();
        sent.dedup();
        assert_eq!(sent.len(), N, "every sample was sent");
        assert_eq!(server.count(), N, "and only once");
        reports.push((e, server.peak_in_flight()));
    }
    let (adaptive, adaptive_peak) = &reports[0];
    let (fixed, fixed_peak) = &reports[1];
    assert_eq!(adaptive["strategy"], "adaptive", "{adaptive:#}");
    assert_eq!(*fixed_peak, K, "the fixed window keeps K in flight");
    assert!(
        *adaptive_peak <= MAX,
        "the server saw {adaptive_peak} in flight; the spec's max is {MAX}"
    );

    let limit = &adaptive["timing"]["concurrency_limit"];
    assert!(
        limit.is_object(),
        "an adaptive run reports timing.concurrency_limit: {adaptive:#}"
    );
    let (min, median, max) = (
        uint(limit, "/min"),
        uint(limit, "/median"),
        uint(limit, "/max"),
    );
    assert!(
        1 <= min && min <= median && median <= max && max <= MAX as u64,
        "limit min {min} median {median} max {max} (spec max {MAX})"
    );
    assert!(
        median >= K as u64 / 2,
        "against a server that serves {K} at a time the median limit was {median}: {limit:#}"
    );
    assert!(
        fixed["timing"]["concurrency_limit"].is_null(),
        "a fixed window has no limit history: {fixed:#}"
    );

    let throughput = |e: &serde_json::Value| {
        e["timing"]["throughput_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("no throughput in {e:#}"))
    };
    let (a, f) = (throughput(adaptive), throughput(fixed));
    println!(
        "adaptive: limit min {min} median {median} max {max}, peak {adaptive_peak}, {a:.1}/s; window {K}: {f:.1}/s"
    );
    assert!(
        a >= 0.7 * f,
        "adaptive ran {a:.1} samples/s, a fixed window of {K} {f:.1}/s on the same server; limit {limit}"
    );
}

#[test]
fn adaptive_backs_off_from_429s_without_losing_or_repeating_samples() {
    const N: usize = 100;
    let dir = TestDir::new();
    // Serves 8 at a time, but answers 429 + Retry-After: 1 for the first 1.2 s.
    let server = TestServer::builder()
        .capacity(K, Duration::from_millis(20), 0.2)
        .throttle_during(Duration::from_millis(1200), "1")
        .reply(|p| p.to_owned())
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "throttled",
            &server.url(),
            N,
            "  timeout: 5s\n  retry: {max_attempts: 8, backoff: 50ms, max_backoff: 2s}\n",
            &format!("concurrency: {{strategy: adaptive, max: {MAX}}}\n"),
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(0);
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
    assert!(server.throttled() > 0, "the server throttled nothing");

    let report = show_json(&dir, "x", &["--full"]);
    let e = only(&report);
    assert_eq!(uint(e, "/samples/finished"), N as u64, "{e:#}");
    assert_eq!(uint(e, "/samples/errored"), 0);
    let throttled = uint(e, "/timing/throttled");
    assert!(throttled > 0, "timing.throttled is 0: {:#}", e["timing"]);
    assert_eq!(
        throttled as usize,
        server.throttled(),
        "timing.throttled counts every 429 the server sent"
    );
    assert!(
        server.peak_in_flight() <= MAX,
        "{} in flight",
        server.peak_in_flight()
    );

    // The server's log against the records: one 200 per sample, no more.
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for span in server.spans().iter().filter(|s| s.status == 200) {
        *answered.entry(span.prompt.clone()).or_default() += 1;
    }
    let twice: Vec<_> = answered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "samples answered twice: {twice:?}");
    assert_eq!(answered.len(), N, "samples never answered");
    println!(
        "adaptive under 429s: {throttled} throttled, limit {}",
        e["timing"]["concurrency_limit"]
    );
    let records = e["records"].as_array().expect("records");
    assert_eq!(records.len(), N);
    let mut seen = BTreeMap::new();
    for r in records {
        let id: usize = r["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["output"], prompt(id).as_str(), "{r:#}");
        assert!(seen.insert(id, ()).is_none(), "sample {id} recorded twice");
    }
}

#[test]
fn adaptive_stays_near_one_on_servers_that_serve_one_at_a_time() {
    // llama.cpp on a CPU: more in flight only queues, whether the server
    // takes requests first come, first served or shares its time between
    // them, and its first request is slow (cold). Issue 17 found the old
    // controller's reference taken from a race there, and limits of 14-32.
    // Here 1 or 2 is right: at 1 in flight the client's own turn-around
    // between a reply and the next request idles the server a little, which
    // 2 buys back, so which of the two it holds is within noise (more so in
    // a debug build). 100 ms keeps that turn-around small against the
    // service. (`scripts/bench serial` checks p50 <= 1.5x sequential's at
    // 200 ms over 5 runs of each shape.)
    // Enough samples that start-up (a few seconds on a loaded machine) is
    // not what the median limit measures.
    const N: usize = 150;
    let shapes = [
        (
            "first come, first served",
            TestServer::builder().serial(Duration::from_millis(100)),
        ),
        (
            "time shared",
            TestServer::builder().sharing(Duration::from_millis(100), 0.0),
        ),
    ];
    for (shape, builder) in shapes {
        let server = builder
            .cold(Duration::from_millis(300))
            .reply(|p| p.to_owned())
            .start();
        let dir = TestDir::new();
        let tail = format!("concurrency: {{strategy: adaptive, max: {MAX}}}\n");
        dir.write(
            "spec.yaml",
            &spec("serial", &server.url(), N, FAST_RETRY, &tail),
        );
        dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .output()
            .assert_exit_code(0);
        let report = show_json(&dir, "x", &[]);
        let e = only(&report);
        let limit = &e["timing"]["concurrency_limit"];
        let p50 = e["timing"]["latency_seconds"]["p50"].as_f64().expect("p50");
        println!("{shape}: limit {limit}, p50 {p50}");
        assert!(uint(limit, "/median") <= 2, "{shape}: {limit:#}");
        assert!(uint(limit, "/max") <= 8, "{shape}: {limit:#}");
        // The run's own summary agrees with the timeline.
        let run = &e["timing"]["runs"][0]["limit"];
        assert_eq!(run["median"], limit["median"], "{:#}", e["timing"]);
        // An order of magnitude, not a benchmark: 4 in flight would be 400 ms.
        assert!(
            p50 < 0.25,
            "{shape}: p50 {p50} s against a 100 ms server: {:#}",
            e["timing"]
        );
        assert_eq!(server.count(), N, "{shape}: every sample sent once");
    }
}

#[test]
fn adaptive_does_not_grow_while_requests_wait_on_the_rate_limit() {
    // The client's own rate limit lets 10 a second through to a 5 ms server:
    // about one request is ever at the server, however many slots wait.
    const N: usize = 40;
    let server = TestServer::builder()
        .latency(Duration::from_millis(5))
        .reply(|p| p.to_owned())
        .start();
    let dir = TestDir::new();
    let model = format!("{FAST_RETRY}  rate_limit: {{requests_per_minute: 600}}\n");
    let tail = format!("concurrency: {{strategy: adaptive, max: {MAX}}}\n");
    dir.write("spec.yaml", &spec("rate", &server.url(), N, &model, &tail));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    let report = show_json(&dir, "x", &[]);
    let limit = &only(&report)["timing"]["concurrency_limit"];
    let peak = server.peak_in_flight() as u64;
    // The controller grows at most one step over the requests it has out at
    // the server; that count includes a couple in transit that the server's
    // own peak does not (the rate limiter's first burst sends ten at once).
    // Unguarded, the limit would run to the spec's max of 32.
    let step = 3u64;
    const IN_TRANSIT: u64 = 2;
    assert!(
        uint(limit, "/max") <= peak + step + IN_TRANSIT,
        "limit {limit} with at most {peak} at the server"
    );
}
