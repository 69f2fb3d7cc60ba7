//! The test server's own shapes, checked directly over HTTP (no dotevals
//! binary): the benchmark stages and the adaptive tests rely on each server
//! behaving as its doc comment says. Timing asserts are by orders of
//! magnitude only, so a busy machine does not fail them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::server::{TestServer, RETRY_AFTER};
use crate::util::wait_until;

/// One answer as a plain HTTP client saw it.
struct Response {
    status: u16,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Posts a chat completion with `prompt` on its own connection and reads
/// the whole answer.
fn post(addr: SocketAddr, prompt: &str) -> Response {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]})
        .to_string();
    let mut stream = TcpStream::connect(addr).expect("connect to the test server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response { status, headers }
}

const LITELLM_HEADER: &str = "llm_provider-retry-after";

#[test]
fn retry_header_replaces_retry_after_on_every_server_429() {
    // Both HTTP servers, and each source of a server-made 429.
    for raw in [false, true] {
        let builders = [
            TestServer::builder().throttle_first(1, "7"),
            TestServer::builder().throttle_during(Duration::from_secs(60), "7"),
            TestServer::builder().requests_per_minute_with_burst(1, 1.0),
            TestServer::builder().requests_per_window(1, Duration::from_secs(60)),
        ];
        for (i, builder) in builders.into_iter().enumerate() {
            let builder = builder.retry_header(LITELLM_HEADER);
            let server = if raw { builder.raw_http() } else { builder }.start();
            let answers: Vec<_> = (0..2).map(|_| post(server.addr(), "p")).collect();
            let throttled = answers.iter().find(|r| r.status == 429);
            let r = throttled.unwrap_or_else(|| panic!("case {i} (raw {raw}): no 429"));
            let wait: u64 = r
                .header(LITELLM_HEADER)
                .unwrap_or_else(|| panic!("case {i} (raw {raw}): no {LITELLM_HEADER}"))
                .parse()
                .expect("whole seconds");
            assert!(wait >= 1, "case {i}: wait {wait}");
            assert_eq!(r.header(RETRY_AFTER), None, "case {i} (raw {raw})");
            // The raw server counts a reply just after writing it.
            let seen = answers.iter().filter(|r| r.status == 429).count();
            wait_until(Duration::from_secs(5), "the 429s counted", || {
                server.throttled() == seen
            });
        }
    }
}

#[test]
fn a_responders_own_429_keeps_retry_after() {
    let server = TestServer::builder()
        .retry_header(LITELLM_HEADER)
        .respond(|_| crate::server::Reply::retry_after(429, "3"))
        .start();
    let r = post(server.addr(), "p");
    assert_eq!(r.status, 429);
    assert_eq!(r.header(RETRY_AFTER), Some("3"));
    assert_eq!(r.header(LITELLM_HEADER), None);
}

#[test]
fn fixed_window_takes_n_then_refuses_until_the_window_resets() {
    let server = TestServer::builder()
        .requests_per_window(3, Duration::from_secs(60))
        .start();
    let statuses: Vec<u16> = (0..5).map(|_| post(server.addr(), "p").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The wait is the rest of the minute, not a token's worth of it.
    let r = post(server.addr(), "p");
    let wait: u64 = r.header(RETRY_AFTER).unwrap().parse().unwrap();
    assert!((30..=60).contains(&wait), "wait {wait} s");
    assert_eq!(server.stats().requests, 6);
    wait_until(Duration::from_secs(5), "3 429s counted", || {
        server.throttled() == 3
    });
    let stats = server.stats();
    // Three answers, all to the one prompt.
    assert_eq!(
        (stats.answered, stats.answered_prompts),
        (3, 1),
        "{stats:?}"
    );
}

#[test]
fn fixed_window_opens_again_after_its_length() {
    let window = Duration::from_secs(2);
    let server = TestServer::builder().requests_per_window(2, window).start();
    let t0 = Instant::now();
    let first: Vec<u16> = (0..3).map(|_| post(server.addr(), "p").status).collect();
    assert_eq!(first, [200, 200, 429]);
    // Into the next window (which starts `window` after the first request,
    // itself a little after t0), with most of it left for three requests.
    std::thread::sleep(
        (t0 + window + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    );
    // Refused requests did not use up the new window's quota.
    let second: Vec<u16> = (0..3).map(|_| post(server.addr(), "p").status).collect();
    assert_eq!(second, [200, 200, 429]);
}

/// Sends `prompts` at once, one thread and connection each (released
/// together once all are started); returns the statuses.
fn post_all(addr: SocketAddr, prompts: &[String]) -> Vec<u16> {
    let start = Arc::new(Barrier::new(prompts.len()));
    let threads: Vec<_> = prompts
        .iter()
        .cloned()
        .map(|p| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                post(addr, &p).status
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// How long the server took over each request (arrival to reply), by prompt.
fn service_times(server: &TestServer) -> Vec<(String, Duration)> {
    server
        .spans()
        .into_iter()
        .map(|s| (s.prompt, s.end - s.start))
        .collect()
}

#[test]
fn batching_slows_each_request_as_the_batch_fills() {
    // 100 ms alone, 10x that in a full batch of 4: a spread no scheduler
    // hiccup can blur.
    let server = TestServer::builder()
        .batching(4, Duration::from_millis(100), 10.0)
        .start();
    assert_eq!(post(server.addr(), "alone").status, 200);
    let alone = service_times(&server)[0].1;
    assert!(alone < Duration::from_millis(500), "alone: {alone:?}");

    let prompts: Vec<String> = (0..4).map(|i| format!("batch {i}")).collect();
    assert!(post_all(server.addr(), &prompts).iter().all(|&s| s == 200));
    let slowest = service_times(&server)[1..]
        .iter()
        .map(|(_, d)| *d)
        .max()
        .unwrap();
    // The four enter with 1, 2, 3 and 4 in service: 100, 400, 700 and
    // 1000 ms.
    assert!(slowest > Duration::from_millis(600), "slowest: {slowest:?}");
    let stats = server.stats();
    assert_eq!(stats.peak_in_service, 4, "{stats:?}");
}

#[test]
fn batching_queues_beyond_the_batch() {
    let server = TestServer::builder()
        .batching(2, Duration::from_millis(100), 1.0)
        .start();
    let prompts: Vec<String> = (0..6).map(|i| format!("q {i}")).collect();
    assert!(post_all(server.addr(), &prompts).iter().all(|&s| s == 200));
    let stats = server.stats();
    // All six waited at the server, two at a time in service.
    assert_eq!(stats.peak_in_service, 2, "{stats:?}");
    assert!(stats.peak_in_flight > 2, "{stats:?}");
    assert_eq!(stats.requests, 6);
}

#[test]
fn serial_serves_one_at_a_time_in_arrival_order() {
    let server = TestServer::builder()
        .serial(Duration::from_millis(50))
        .start();
    let prompts: Vec<String> = (0..6).map(|i| format!("s {i}")).collect();
    assert!(post_all(server.addr(), &prompts).iter().all(|&s| s == 200));
    // Whatever order the threads' requests arrived in, they were answered
    // in that order (spans are kept in the order the answers went out).
    let done: Vec<String> = server.spans().into_iter().map(|s| s.prompt).collect();
    assert_eq!(done, server.prompts());
    let spans = server.spans();
    let busy = spans.last().unwrap().end - spans[0].start;
    assert!(busy >= Duration::from_millis(250), "6 x 50 ms in {busy:?}");
    let stats = server.stats();
    assert_eq!(stats.peak_in_service, 1, "{stats:?}");
}

#[test]
fn box_muller_normals_and_lognormal_factors_have_the_right_shape() {
    let mut rng = crate::server::XorShift::new(42);
    let n = 20_000;
    let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((var - 1.0).abs() < 0.05, "variance {var}");
    assert!(z.iter().all(|x| x.is_finite()));

    let mut f: Vec<f64> = (0..n).map(|_| rng.lognormal(0.3)).collect();
    f.sort_by(f64::total_cmp);
    let median = f[n / 2];
    assert!((median - 1.0).abs() < 0.03, "median {median}");
    // A right tail: the 99th percentile near exp(0.3 x 2.33) = 2.0.
    let p99 = f[n * 99 / 100];
    assert!((1.8..2.2).contains(&p99), "p99 {p99}");
    assert!(f[0] > 0.0);
}

#[test]
fn lognormal_capacity_serves_around_its_base() {
    let server = TestServer::builder()
        .capacity_lognormal(4, Duration::from_millis(20), 0.3)
        .start();
    let prompts: Vec<String> = (0..4).map(|i| format!("l {i}")).collect();
    assert!(post_all(server.addr(), &prompts).iter().all(|&s| s == 200));
    for (prompt, d) in service_times(&server) {
        // Median 20 ms; exp(0.3 x 8.6), the largest factor Box-Muller can
        // draw from 53 bits, is 13, so never near a second but for the machine.
        assert!(d < Duration::from_secs(2), "{prompt}: {d:?}");
    }
    let stats = server.stats();
    assert!((1..=4).contains(&stats.peak_in_service), "{stats:?}");
}
