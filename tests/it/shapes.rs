//! The test server's own shapes, checked directly over HTTP (no dotevals
//! binary): the benchmark stages and the adaptive tests rely on each server
//! behaving as its doc comment says. Timing asserts are by orders of
//! magnitude only, so a busy machine does not fail them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
