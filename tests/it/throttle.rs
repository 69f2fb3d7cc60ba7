//! Throttling as LiteLLM's proxy does it: 429s whose wait is only in
//! `llm_provider-retry-after`. With default retry settings a throttled run
//! waits the quota out (one pause for the whole endpoint) and loses nothing;
//! a hint longer than `retry.max_wait` gives up at once, and says why.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::server::TestServer;
use crate::support::{only, show_json, spec, uint};
use crate::util::{prompt, TestDir};

const LITELLM_HEADER: &str = "llm_provider-retry-after";

#[test]
fn a_litellm_throttle_is_waited_out_not_hammered() {
    const N: usize = 40;
    const WINDOW: usize = 8;
    const THROTTLED_FOR: Duration = Duration::from_secs(3);
    let dir = TestDir::new();
    let server = TestServer::builder()
        .throttle_during(THROTTLED_FOR, "1")
        .retry_header(LITELLM_HEADER)
        .reply(|p| p.to_owned())
        .start();
    // Default retry settings: no `retry:` at all.
    dir.write(
        "spec.yaml",
        &spec(
            "litellm",
            &server.url(),
            N,
            "",
            &format!("concurrency: {{strategy: sliding_window, max_concurrency: {WINDOW}}}\n"),
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(0);

    let report = show_json(&dir, "x", &["--full"]);
    let e = only(&report);
    assert_eq!(uint(e, "/samples/finished"), N as u64, "{e:#}");
    assert_eq!(uint(e, "/samples/errored"), 0, "{e:#}");

    // Every prompt answered exactly once.
    let sent = server.count();
    let refused = server.throttled();
    println!(
        "{sent} requests, {refused} drew a 429, run took {:?}",
        out.elapsed
    );
    assert_eq!(sent - refused, N, "{sent} requests, {refused} throttled");
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for span in server.spans().iter().filter(|s| s.status == 200) {
        *answered.entry(span.prompt.clone()).or_default() += 1;
    }
    assert_eq!(answered.len(), N, "prompts never answered");
    assert!(answered.values().all(|n| *n == 1), "{answered:?}");
    assert!((0..N).all(|i| answered.contains_key(&prompt(i))));
    for r in e["records"].as_array().expect("records") {
        let id: usize = r["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["output"], prompt(id).as_str(), "{r:#}");
    }

    // It waited the throttle out instead of hammering: about one 429 per
    // sample in flight per second of throttling, not five attempts in a few
    // seconds each.
    assert!(out.elapsed >= THROTTLED_FOR, "{:?}", out.elapsed);
    assert!(sent < 100, "{sent} requests for {N} samples");
    assert!(
        refused <= WINDOW * (THROTTLED_FOR.as_secs() as usize + 1),
        "{refused} 429s: the pause did not hold the window back"
    );
    assert_eq!(uint(e, "/timing/throttled"), refused as u64);
    // The window spent the throttle in the endpoint's pause, with nothing at
    // the server, and says so in wall-clock time (not summed over samples).
    let blocked = e["timing"]["blocked_seconds"]
        .as_f64()
        .expect("blocked_seconds");
    let wall = e["timing"]["wall_seconds"].as_f64().expect("wall_seconds");
    assert!(
        blocked >= 2.0 && blocked <= wall,
        "{blocked} s blocked in a {wall} s run: {:#}",
        e["timing"]
    );
}

#[test]
fn a_hint_beyond_max_wait_gives_up_at_once_and_says_so() {
    const N: usize = 10;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .throttle_first(usize::MAX, "30")
        .retry_header(LITELLM_HEADER)
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "quota",
            &server.url(),
            N,
            "  retry: {max_wait: 2s}\n",
            "concurrency: {strategy: sliding_window, max_concurrency: 4}\n",
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "the run took {:?}: it slept a 30 s hint it could not afford",
        out.elapsed
    );
    // Nobody slept or retried: one request per sample.
    assert_eq!(server.count(), N);

    let report = show_json(&dir, "x", &["--full"]);
    let e = only(&report);
    assert_eq!(uint(e, "/samples/errored"), N as u64, "{e:#}");
    for r in e["records"].as_array().expect("records") {
        assert_eq!(r["error_kind"], "http_429", "{r:#}");
        assert_eq!(r["attempts"], 1, "{r:#}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("the server asked to wait 30 s; retry.max_wait 2s left 2 s"),
            "{error}"
        );
    }
}
