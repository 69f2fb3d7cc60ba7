//! `model.rate_limit` against a server that enforces requests per minute (a
//! token bucket answering 429 + Retry-After over the quota): with the client
//! limit set to the server's quota almost nothing is refused and the quota is
//! spread out rather than sent as one burst; without it, retries still finish
//! every sample and the 429s show up in `timing.throttled`.

use std::time::Duration;

use crate::server::TestServer;
use crate::support::{only, show_json, spec, uint, wait_bounded};
use crate::util::TestDir;

const PER_MINUTE: u32 = 600;
const N: usize = 60;
const WINDOW: usize = 16;

/// Most arrivals within `span` of any arrival.
fn densest(arrivals: &[Duration], span: Duration) -> usize {
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t < arrivals[i] + span)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn client_rate_limit_keeps_under_the_quota_and_retries_recover_without_it() {
    let retry = "  timeout: 5s\n  retry: {max_attempts: 20, backoff: 50ms, max_backoff: 2s}\n";
    let limited_model = format!("{retry}  rate_limit: {{requests_per_minute: {PER_MINUTE}}}\n");
    let tail = format!("concurrency: {{strategy: sliding_window, max_concurrency: {WINDOW}}}\n");
    // Side by side: with the client limit, and without it.
    let runs: Vec<_> = [limited_model.as_str(), retry]
        .iter()
        .map(|model_extra| {
            let dir = TestDir::new();
            let server = TestServer::builder()
                .requests_per_minute(PER_MINUTE)
                .latency(Duration::from_millis(20))
                .reply(|p| p.to_owned())
                .start();
            dir.write(
                "spec.yaml",
                &spec("rpm", &server.url(), N, model_extra, &tail),
            );
            let child = dir
                .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
                .spawn_logged(&dir, "run");
            (dir, server, child)
        })
        .collect();

    let mut results = Vec::new();
    for (dir, server, mut child) in runs {
        let status = wait_bounded(&mut child, Duration::from_secs(60), "a rate-limited run");
        assert_eq!(status.code(), Some(0), "{}", dir.read("run.err"));
        let report = show_json(&dir, "x", &[]);
        let e = only(&report).clone();
        assert_eq!(uint(&e, "/samples/finished"), N as u64, "{e:#}");
        let arrivals: Vec<Duration> = server.requests().iter().map(|r| r.at).collect();
        results.push((e, server.count(), server.throttled(), arrivals));
    }

    let (limited, sent, refused, arrivals) = &results[0];
    println!(
        "with rate_limit: {sent} requests, {refused} drew a 429, densest 100 ms {}, densest second {}",
        densest(arrivals, Duration::from_millis(100)),
        densest(arrivals, Duration::from_secs(1))
    );
    assert!(
        (*refused as f64) < 0.02 * *sent as f64,
        "{refused} of {sent} requests drew a 429 although the client limit equals the server's quota"
    );
    assert_eq!(uint(limited, "/timing/throttled"), *refused as u64);
    // 600/min is 10 a second: a burst of about a second's worth, then spread out.
    let per_second = (PER_MINUTE / 60) as usize;
    let burst = densest(arrivals, Duration::from_millis(100));
    assert!(
        burst <= per_second + 2,
        "{burst} requests within 100 ms: the quota went out as a burst"
    );
    let first_second = arrivals
        .iter()
        .take_while(|t| **t < arrivals[0] + Duration::from_secs(1))
        .count();
    assert!(
        first_second <= 2 * per_second + 1,
        "{first_second} requests in the first second at {PER_MINUTE}/min"
    );
    assert!(
        densest(arrivals, Duration::from_secs(1)) <= 2 * per_second + 1,
        "more than a burst plus a second's quota in one second"
    );

    let (unlimited, sent, refused, arrivals) = &results[1];
    println!(
        "without rate_limit: {sent} requests, {refused} drew a 429, densest 100 ms {}",
        densest(arrivals, Duration::from_millis(100))
    );
    assert!(
        *refused > 0,
        "a window of {WINDOW} should overrun {PER_MINUTE}/min"
    );
    let throttled = uint(unlimited, "/timing/throttled");
    assert!(throttled > 0, "{:#}", unlimited["timing"]);
    assert_eq!(
        throttled, *refused as u64,
        "timing.throttled counts the server's 429s"
    );
    assert_eq!(
        *sent,
        N + refused,
        "each 429 cost one extra request, no more"
    );
    // The check above can fail: without the limit, the window goes out at once.
    assert!(
        densest(arrivals, Duration::from_millis(100)) > per_second + 2,
        "without a client limit the first window should arrive as one burst"
    );
}
