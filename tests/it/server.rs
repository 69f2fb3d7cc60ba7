//! A loopback OpenAI-compatible server for tests (oha's pattern: a real server
//! that reports what it received).
//!
//! Each [`TestServer`] listens on `127.0.0.1:0` with its own single-threaded
//! tokio runtime on a background thread, so tests run in parallel without
//! sharing ports or executors. It answers `POST /v1/chat/completions` with
//! whatever the test's responder returns for each request (a reply computed
//! from the prompt, an HTTP error with or without `Retry-After`, a malformed
//! body, or no answer at all), after a latency the test may change while a
//! run is going. It records every request body, the prompt (message contents
//! joined by newlines), the time each request was in flight, and the most
//! requests it ever had in flight at once. `GET /stats` reports its counters
//! as JSON (`requests`, `in_flight`, `peak_in_flight`, `throttled`, `faults`,
//! `peak_in_service`, `answered`, `answered_prompts`): see [`Stats`].
//!
//! Server behaviours on top of the responder, all set on the [`Builder`]:
//! - **capacity** ([`Builder::capacity`]): at most K requests are served at a
//!   time; the others queue first come, first served, so latency grows with
//!   load beyond K, like a vLLM or TGI server. Service time is a base latency
//!   times a random factor in `[1 - jitter, 1 + jitter]`, or with
//!   [`Builder::capacity_lognormal`] times `exp(sigma × N(0, 1))` (median
//!   `base`, a long right tail, as real generation times have).
//! - **serial** ([`Builder::serial`]): capacity 1 with a fixed service time,
//!   first come, first served: llama.cpp on a CPU, one request at a time.
//!   Latency is the service time alone and grows by one service time per
//!   request waiting ahead; throughput is flat whatever the load.
//! - **batching** ([`Builder::batching`]): a GPU server batching requests
//!   (vLLM, TGI). At most B are in service at once and the rest queue first
//!   come, first served; a request that enters service with `n` in service
//!   (itself included) takes `base × (1 + (max_factor − 1) × (n − 1) / (B − 1))`,
//!   from `base` alone to `max_factor × base` in a full batch. Throughput
//!   keeps rising until the batch is full while latency rises mildly.
//!   [`Builder::batching_lognormal`] adds `exp(sigma × N(0, 1))` noise.
//!   `GET /stats` reports `peak_in_service` (the fullest batch) next to
//!   `peak_in_flight` (which counts the queue too).
//! - **requests per minute** ([`Builder::requests_per_minute`]): a token bucket
//!   of `n / 60` tokens a second with a burst of about one second's worth;
//!   over the limit the answer is 429 with `Retry-After` (whole seconds, at
//!   least 1), like a hosted API.
//! - **requests per fixed window** ([`Builder::requests_per_window`]): `n`
//!   requests per window of fixed length, windows counted from the first
//!   request, like LiteLLM's proxy; over the quota the answer is 429 with the
//!   whole seconds until the window resets (at least 1). Refused requests do
//!   not count against the quota.
//! - **throttling for a while** ([`Builder::throttle_first`],
//!   [`Builder::throttle_during`]): 429s to the first requests, or for a time.
//! - **the header a 429 carries its wait in** ([`Builder::retry_header`]):
//!   `Retry-After` unless told otherwise; LiteLLM's proxy, for one, sends only
//!   `llm_provider-retry-after: 60`. It applies to every 429 the server makes
//!   itself (the throttles and limiters above), not to a responder's replies.
//! - **faults** ([`Builder::faults`]): per request, with given probabilities, a
//!   5xx, a hang, a connection reset mid-body, a body trickling one byte per
//!   100 ms, a 100 MB body, a body that is not JSON, one without `choices`, one
//!   with the wrong types. Which request gets which fault is a pure function of
//!   the seed, the prompt and the attempt number ([`Faults::decide`]), so a
//!   test can work out what each sample went through.
//!
//! Replies that break HTTP itself (a reset mid-body, a trickle, a huge body)
//! are written by a small hand-written HTTP/1.1 server on a raw
//! [`tokio::net::TcpListener`]; [`Builder::raw_http`] selects it (faults do so
//! by themselves). Otherwise axum serves.
//!
//! The file has no test-only dependencies: `examples/test_server.rs` includes
//! it with `#[path]` to serve the same servers to the benchmark script.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with an OpenAI chat-completion body whose content is this text.
    Text(String),
    /// An HTTP error status with a body and an optional `Retry-After` header.
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// A 200 whose body is exactly this text (for malformed replies).
    Raw(String),
    /// Never answer (until the client gives up and closes the connection).
    Hang,
    /// Wait this long (on top of the server's latency), then do the inner reply.
    Delayed(Duration, Box<Reply>),
    /// Headers announcing a whole reply with this content, half of its body,
    /// then the connection is dropped (reset). Needs [`Builder::raw_http`].
    ResetMidBody(String),
    /// A 200 reply with this content whose body is written one byte per
    /// `interval`. Needs [`Builder::raw_http`].
    Trickle { content: String, interval: Duration },
    /// A 200 whose body is `bytes` long: the start of a JSON reply padded out.
    /// Declared with Content-Length, or sent chunked (so only reading it tells
    /// how big it is). Needs [`Builder::raw_http`].
    Huge { bytes: usize, chunked: bool },
}

impl Reply {
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Text(s.into())
    }

    pub fn status(code: u16, body: impl Into<String>) -> Reply {
        Reply::Status {
            code,
            body: body.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(code: u16, after: &str) -> Reply {
        Reply::Status {
            code,
            body: json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string(),
            retry_after: Some(after.to_owned()),
        }
    }

    pub fn raw(body: impl Into<String>) -> Reply {
        Reply::Raw(body.into())
    }

    /// This reply after an extra delay.
    pub fn after(self, delay: Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }

    /// True for replies only the raw HTTP server can write.
    fn needs_raw(&self) -> bool {
        match self {
            Reply::ResetMidBody(_) | Reply::Trickle { .. } | Reply::Huge { .. } => true,
            Reply::Delayed(_, inner) => inner.needs_raw(),
            _ => false,
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// 0-based arrival order over the server's life.
    pub index: usize,
    /// Message contents joined by newlines.
    pub prompt: String,
    /// The whole JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    pub authorization: Option<String>,
    /// 1 for the first request with this prompt, 2 for the second, ...
    pub attempt: usize,
    /// When it arrived, from the server's start.
    pub at: Duration,
}

/// When a request started and ended (only requests that were answered in
/// full: a text, a status or a raw body).
#[derive(Debug, Clone)]
pub struct Span {
    pub prompt: String,
    pub start: Duration,
    pub end: Duration,
    /// The HTTP status sent.
    pub status: u16,
}

/// The server's counters, as `GET /stats` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub requests: usize,
    pub in_flight: usize,
    pub peak_in_flight: usize,
    /// 429 answers sent.
    pub throttled: usize,
    /// Faults injected by [`Builder::faults`].
    pub faults: usize,
    /// The most requests ever in service at once at a capacity, serial or
    /// batching server (0 for the others): `peak_in_flight` less the queue.
    pub peak_in_service: usize,
    /// 2xx answers sent.
    pub answered: usize,
    /// Distinct prompts among the 2xx answers: `answered` less this is how
    /// many prompts were answered more than once.
    pub answered_prompts: usize,
}

/// A tiny seeded random generator (xorshift64), so tests and servers are
/// reproducible without another dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(splitmix(seed) | 1)
    }

    /// A generator seeded from the clock and the process id, for values that
    /// must differ between runs (planted secrets).
    pub fn from_time() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]: ln is finite
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `exp(sigma × N(0, 1))`: lognormal with median 1.
    pub fn lognormal(&mut self, sigma: f64) -> f64 {
        (sigma * self.normal()).exp()
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[lo, hi]`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo).mul_f64(self.f64())
    }

    /// `len` lowercase letters and digits.
    pub fn token(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fault the server can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500.
    ServerError,
    /// No answer at all.
    Hang,
    /// Half a body, then the connection is dropped.
    Reset,
    /// A body written one byte per 100 ms.
    Trickle,
    /// A 100 MB body.
    Huge,
    /// A 200 whose body is HTML.
    NotJson,
    /// A 200 JSON body without `choices`.
    NoChoices,
    /// A 200 JSON body whose content is a number.
    WrongTypes,
}

/// Size of the [`Fault::Huge`] body.
pub const HUGE_BYTES: usize = 100 * 1024 * 1024;
/// Pace of the [`Fault::Trickle`] body.
pub const TRICKLE_INTERVAL: Duration = Duration::from_millis(100);

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ServerError,
        Fault::Hang,
        Fault::Reset,
        Fault::Trickle,
        Fault::Huge,
        Fault::NotJson,
        Fault::NoChoices,
        Fault::WrongTypes,
    ];

    /// The reply that injects this fault in place of a reply with `content`.
    /// `roll` picks between variants (a huge body declared or chunked).
    pub fn reply(self, content: String, roll: u64) -> Reply {
        match self {
            Fault::ServerError => Reply::status(
                500,
                json!({"error": {"message": "injected fault: internal error"}}).to_string(),
            ),
            Fault::Hang => Reply::Hang,
            Fault::Reset => Reply::ResetMidBody(content),
            Fault::Trickle => Reply::Trickle {
                content,
                interval: TRICKLE_INTERVAL,
            },
            Fault::Huge => Reply::Huge {
                bytes: HUGE_BYTES,
                chunked: roll & 1 == 1,
            },
            Fault::NotJson => Reply::raw("<html><body>502 Bad Gateway</body></html>"),
            Fault::NoChoices => Reply::raw(
                json!({"id": "chatcmpl-x", "object": "chat.completion", "model": "m"}).to_string(),
            ),
            Fault::WrongTypes => Reply::raw(
                json!({"choices": [{"message": {"role": "assistant", "content": 42}}], "usage": {"completion_tokens": "many"}})
                    .to_string(),
            ),
        }
    }
}

/// Probabilities of each fault per request; the rest are answered normally.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub seed: u64,
    pub server_error: f64,
    pub hang: f64,
    pub reset: f64,
    pub trickle: f64,
    pub huge: f64,
    pub not_json: f64,
    pub no_choices: f64,
    pub wrong_types: f64,
}

impl Faults {
    /// No faults, with this seed; set the rates with struct update syntax.
    pub fn seeded(seed: u64) -> Faults {
        Faults {
            seed,
            ..Faults::default()
        }
    }

    fn rates(&self) -> [(f64, Fault); 8] {
        [
            (self.server_error, Fault::ServerError),
            (self.hang, Fault::Hang),
            (self.reset, Fault::Reset),
            (self.trickle, Fault::Trickle),
            (self.huge, Fault::Huge),
            (self.not_json, Fault::NotJson),
            (self.no_choices, Fault::NoChoices),
            (self.wrong_types, Fault::WrongTypes),
        ]
    }

    /// The roll for attempt `attempt` (1, 2, ...) of `prompt`: a pure function
    /// of the seed, the prompt and the attempt.
    pub fn roll(&self, prompt: &str, attempt: usize) -> u64 {
        // FNV-1a over the prompt, mixed with the seed and the attempt.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in prompt.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        splitmix(h ^ splitmix(self.seed) ^ splitmix(attempt as u64).rotate_left(17))
    }

    /// The fault attempt `attempt` of `prompt` gets, if any.
    pub fn decide(&self, prompt: &str, attempt: usize) -> Option<Fault> {
        let unit = (self.roll(prompt, attempt) >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (p, fault) in self.rates() {
            acc += p;
            if unit < acc {
                return Some(fault);
            }
        }
        None
    }
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A token bucket: `rate` tokens a second, at most `burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A fixed-window quota: `limit` requests per `length`, windows counted
/// from the first request.
struct FixedWindow {
    limit: u32,
    length: Duration,
    /// Start of the current window (none before the first request).
    start: Option<Instant>,
    /// Requests accepted in the current window.
    count: u32,
}

impl FixedWindow {
    /// Counts a request, or says how long until the window resets.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.length {
            // Whole windows since the first request, so windows stay aligned
            // to it however long the server sat idle.
            let windows = (elapsed.as_nanos() / self.length.as_nanos().max(1)) as u32;
            self.start = Some(start + self.length * windows);
            self.count = 0;
        }
        if self.count < self.limit {
            self.count += 1;
            Ok(())
        } else {
            let end = self.start.unwrap_or(start) + self.length;
            Err(end.saturating_duration_since(now))
        }
    }
}

/// How service times vary around their base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spread {
    /// `base ×` a factor uniform in `[1 - jitter, 1 + jitter]`.
    Uniform(f64),
    /// `base × exp(sigma × N(0, 1))`: median `base`.
    Lognormal(f64),
}

impl Spread {
    /// One random factor.
    fn factor(self, rng: &mut XorShift) -> f64 {
        match self {
            Spread::Uniform(jitter) => (1.0 + jitter * (2.0 * rng.f64() - 1.0)).max(0.0),
            Spread::Lognormal(sigma) => rng.lognormal(sigma),
        }
    }
}

/// A server's service stage: at most `slots` requests in service, the rest
/// queued first come, first served.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ServiceShape {
    slots: usize,
    base: Duration,
    spread: Spread,
    /// Service slows as the batch fills: `max_factor × base` when all
    /// `slots` are busy (1.0: a plain capacity server).
    max_factor: f64,
}

impl ServiceShape {
    /// The load factor for a request entering service with `n` in service.
    fn load_factor(&self, n: usize) -> f64 {
        if self.slots <= 1 {
            return 1.0;
        }
        let fill = (n.clamp(1, self.slots) - 1) as f64 / (self.slots - 1) as f64;
        1.0 + (self.max_factor - 1.0) * fill
    }
}

/// The service stage of a running server.
struct Capacity {
    shape: ServiceShape,
    slots: Arc<Semaphore>,
    in_service: AtomicUsize,
    peak_in_service: AtomicUsize,
}

/// Keeps the in-service count right however a request ends.
struct InService<'a>(&'a AtomicUsize);

impl Drop for InService<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Shared {
    responder: Responder,
    throttle_first: usize,
    throttle_after: String,
    throttle_during: Option<(Duration, String)>,
    latency_us: AtomicU64,
    latency_range: Option<(Duration, Duration)>,
    capacity: Option<Capacity>,
    bucket: Option<Mutex<Bucket>>,
    window: Option<Mutex<FixedWindow>>,
    retry_header: String,
    faults: Option<Faults>,
    rng: Mutex<XorShift>,
    started: Instant,
    first_arrival: Mutex<Option<Instant>>,
    next_index: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    throttled: AtomicUsize,
    faults_sent: AtomicUsize,
    received: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<String, usize>>,
    spans: Mutex<Vec<Span>>,
    /// 2xx answers sent, and their distinct prompts.
    answered: AtomicUsize,
    answered_prompts: Mutex<std::collections::HashSet<String>>,
}

/// Builds a [`TestServer`].
pub struct Builder {
    responder: Responder,
    latency: Duration,
    latency_range: Option<(Duration, Duration)>,
    throttle_first: usize,
    throttle_after: String,
    throttle_during: Option<(Duration, String)>,
    capacity: Option<ServiceShape>,
    per_minute: Option<(u32, f64)>,
    per_window: Option<(u32, Duration)>,
    retry_header: String,
    faults: Option<Faults>,
    seed: u64,
    raw: bool,
    port: u16,
}

impl Builder {
    /// Fixed latency for every answer (changeable later with [`TestServer::set_latency`]).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// A random extra latency, uniform in `[lo, hi]`, for every answer.
    pub fn latency_between(mut self, lo: Duration, hi: Duration) -> Self {
        self.latency_range = Some((lo, hi));
        self
    }

    /// Answer with a text computed from the prompt.
    pub fn reply(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.responder = Arc::new(move |r: &Received| Reply::Text(f(&r.prompt)));
        self
    }

    /// Answer with whatever `f` returns for each request.
    pub fn respond(mut self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        self.responder = Arc::new(f);
        self
    }

    /// Answer 429 with `Retry-After: after` (or the [`Builder::retry_header`])
    /// to the first `n` requests, whatever they are.
    pub fn throttle_first(mut self, n: usize, after: &str) -> Self {
        self.throttle_first = n;
        self.throttle_after = after.to_owned();
        self
    }

    /// Answer 429 with `Retry-After: after` (or the [`Builder::retry_header`])
    /// to every request that arrives within `window` of the first one.
    pub fn throttle_during(mut self, window: Duration, after: &str) -> Self {
        self.throttle_during = Some((window, after.to_owned()));
        self
    }

    /// Serve at most `k` requests at a time, each for `base` times a random
    /// factor in `[1 - jitter, 1 + jitter]`; the others wait in line.
    pub fn capacity(self, k: usize, base: Duration, jitter: f64) -> Self {
        self.service(k, base, Spread::Uniform(jitter.clamp(0.0, 1.0)), 1.0)
    }

    /// Serve at most `k` requests at a time, each for `base × exp(sigma × N(0, 1))`
    /// (median `base`); the others wait in line.
    pub fn capacity_lognormal(self, k: usize, base: Duration, sigma: f64) -> Self {
        self.service(k, base, Spread::Lognormal(sigma.max(0.0)), 1.0)
    }

    /// One request at a time, each for exactly `service`, the others in line
    /// first come, first served (llama.cpp on a CPU): `capacity(1, service, 0.0)`.
    pub fn serial(self, service: Duration) -> Self {
        self.capacity(1, service, 0.0)
    }

    /// A batching server: at most `batch` requests in service, the others in
    /// line; one entering service with `n` in service (itself included) takes
    /// `base × (1 + (max_factor − 1) × (n − 1) / (batch − 1))`.
    pub fn batching(self, batch: usize, base: Duration, max_factor: f64) -> Self {
        self.batching_lognormal(batch, base, max_factor, 0.0)
    }

    /// [`Builder::batching`] with each service time also multiplied by
    /// `exp(sigma × N(0, 1))`.
    pub fn batching_lognormal(
        self,
        batch: usize,
        base: Duration,
        max_factor: f64,
        sigma: f64,
    ) -> Self {
        self.service(
            batch,
            base,
            Spread::Lognormal(sigma.max(0.0)),
            max_factor.max(0.0),
        )
    }

    fn service(mut self, slots: usize, base: Duration, spread: Spread, max_factor: f64) -> Self {
        self.capacity = Some(ServiceShape {
            slots: slots.max(1),
            base,
            spread,
            max_factor,
        });
        self
    }

    /// Accept `n` requests a minute (a burst of one second's worth, plus one
    /// for clock jitter); answer the rest 429 with `Retry-After`.
    pub fn requests_per_minute(self, n: u32) -> Self {
        let burst = (f64::from(n) / 60.0).ceil() + 1.0;
        self.requests_per_minute_with_burst(n, burst)
    }

    /// [`Builder::requests_per_minute`] with an explicit burst.
    pub fn requests_per_minute_with_burst(mut self, n: u32, burst: f64) -> Self {
        self.per_minute = Some((n.max(1), burst.max(1.0)));
        self
    }

    /// Accept `n` requests per fixed window of `window`, windows counted from
    /// the first request (LiteLLM's proxy limits this way); answer the rest
    /// 429 with the whole seconds until the window resets, at least 1.
    /// Refused requests do not count. Combines with the other limits: a
    /// request must pass every one.
    pub fn requests_per_window(mut self, n: u32, window: Duration) -> Self {
        self.per_window = Some((n, window.max(Duration::from_millis(1))));
        self
    }

    /// Put the wait of every 429 the server makes itself (throttle_first,
    /// throttle_during, the per-minute and per-window limits) in header
    /// `name` instead of `Retry-After`, as LiteLLM's proxy does with
    /// `llm_provider-retry-after`. A responder's own replies keep `Retry-After`.
    pub fn retry_header(mut self, name: &str) -> Self {
        self.retry_header = name.to_ascii_lowercase();
        self
    }

    /// Inject faults (selects the raw HTTP server).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self.raw = true;
        self
    }

    /// Seed of the server's random latencies.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Serve with the hand-written HTTP/1.1 server instead of axum (needed for
    /// replies that break HTTP: resets, trickles, huge bodies).
    pub fn raw_http(mut self) -> Self {
        self.raw = true;
        self
    }

    /// Listen on this port (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn start(self) -> TestServer {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            responder: self.responder,
            throttle_first: self.throttle_first,
            throttle_after: self.throttle_after,
            throttle_during: self.throttle_during,
            latency_us: AtomicU64::new(self.latency.as_micros() as u64),
            latency_range: self.latency_range,
            capacity: self.capacity.map(|shape| Capacity {
                shape,
                slots: Arc::new(Semaphore::new(shape.slots)),
                in_service: AtomicUsize::new(0),
                peak_in_service: AtomicUsize::new(0),
            }),
            bucket: self.per_minute.map(|(n, burst)| {
                Mutex::new(Bucket {
                    rate: f64::from(n) / 60.0,
                    burst,
                    tokens: burst,
                    last: now,
                })
            }),
            window: self.per_window.map(|(limit, length)| {
                Mutex::new(FixedWindow {
                    limit,
                    length,
                    start: None,
                    count: 0,
                })
            }),
            retry_header: self.retry_header,
            faults: self.faults,
            rng: Mutex::new(XorShift::new(self.seed)),
            started: now,
            first_arrival: Mutex::new(None),
            next_index: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            faults_sent: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            spans: Mutex::new(Vec::new()),
            answered: AtomicUsize::new(0),
            answered_prompts: Mutex::new(std::collections::HashSet::new()),
        });
        let raw = self.raw;
        let port = self.port;
        let serving = Arc::clone(&shared);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::bind(("127.0.0.1", port))
                        .await
                        .expect("bind the test server");
                    addr_tx
                        .send(listener.local_addr().expect("local address"))
                        .expect("report the address");
                    if raw {
                        tokio::select! {
                            _ = serve_raw(listener, serving) => {}
                            _ = stop_rx => {}
                        }
                    } else {
                        let app = Router::new()
                            .route("/v1/chat/completions", post(chat))
                            .route("/stats", get(stats))
                            .with_state(serving);
                        tokio::select! {
                            _ = axum::serve(listener, app) => {}
                            _ = stop_rx => {}
                        }
                    }
                });
                // Dropping the runtime cancels requests still hanging.
            })
            .expect("spawn the test server thread");
        let addr = addr_rx.recv().expect("test server address");
        TestServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// A running test server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A server that answers "ok" at once; configure it with the builder's methods.
    pub fn builder() -> Builder {
        Builder {
            responder: Arc::new(|_: &Received| Reply::text("ok")),
            latency: Duration::ZERO,
            latency_range: None,
            throttle_first: 0,
            throttle_after: String::new(),
            throttle_during: None,
            capacity: None,
            per_minute: None,
            per_window: None,
            retry_header: RETRY_AFTER.to_owned(),
            faults: None,
            seed: 0x5EED,
            raw: false,
            port: 0,
        }
    }

    /// A server answering every prompt with the prompt itself.
    pub fn echo() -> TestServer {
        TestServer::builder().reply(|p| p.to_owned()).start()
    }

    /// The `base_url` for specs: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the latency of answers from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The prompts received so far, in arrival order.
    pub fn prompts(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.prompt).collect()
    }

    /// The prompts received so far, sorted.
    pub fn sorted_prompts(&self) -> Vec<String> {
        let mut p = self.prompts();
        p.sort();
        p
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever handled at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// 429 answers sent so far.
    pub fn throttled(&self) -> usize {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Start and end of every answered request.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// The counters `GET /stats` reports.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The faults this server injects, if any.
    pub fn faults(&self) -> Option<Faults> {
        self.shared.faults
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps the in-flight count right however a request ends (including when
/// the client gives up and the connection drops the handler).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            requests: self.received.lock().unwrap().len(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak.load(Ordering::SeqCst),
            throttled: self.throttled.load(Ordering::SeqCst),
            faults: self.faults_sent.load(Ordering::SeqCst),
            peak_in_service: self
                .capacity
                .as_ref()
                .map_or(0, |c| c.peak_in_service.load(Ordering::SeqCst)),
            answered: self.answered.load(Ordering::SeqCst),
            answered_prompts: self.answered_prompts.lock().unwrap().len(),
        }
    }

    fn stats_json(&self) -> String {
        let s = self.stats();
        json!({
            "requests": s.requests,
            "in_flight": s.in_flight,
            "peak_in_flight": s.peak_in_flight,
            "throttled": s.throttled,
            "faults": s.faults,
            "peak_in_service": s.peak_in_service,
            "answered": s.answered,
            "answered_prompts": s.answered_prompts,
        })
        .to_string()
    }

    /// Records a request that was answered in full.
    fn answered(&self, prompt: String, start: Duration, status: u16) {
        if status == 429 {
            self.throttled.fetch_add(1, Ordering::SeqCst);
        }
        if (200..300).contains(&status) {
            self.answered.fetch_add(1, Ordering::SeqCst);
            self.answered_prompts.lock().unwrap().insert(prompt.clone());
        }
        self.spans.lock().unwrap().push(Span {
            prompt,
            start,
            end: self.started.elapsed(),
            status,
        });
    }

    /// A 429 if a throttle applies to this request, whatever it is.
    fn throttle(&self, received: &Received) -> Option<Reply> {
        if received.index < self.throttle_first {
            return Some(Reply::retry_after(429, &self.throttle_after));
        }
        let now = Instant::now();
        if let Some((window, after)) = &self.throttle_during {
            let first = *self.first_arrival.lock().unwrap().get_or_insert(now);
            if now.duration_since(first) < *window {
                return Some(Reply::retry_after(429, after));
            }
        }
        if let Some(bucket) = &self.bucket {
            if let Err(wait) = bucket.lock().unwrap().take(now) {
                return Some(Reply::retry_after(429, &whole_seconds(wait)));
            }
        }
        if let Some(window) = &self.window {
            if let Err(wait) = window.lock().unwrap().take(now) {
                return Some(Reply::retry_after(429, &whole_seconds(wait)));
            }
        }
        None
    }

    /// The header that carries a reply's `retry_after`: the configured one
    /// for the server's own 429s (`gated`), `Retry-After` for a responder's.
    fn retry_header_of(&self, gated: bool) -> &str {
        if gated {
            &self.retry_header
        } else {
            RETRY_AFTER
        }
    }
}

/// The standard header for the wait of a 429 or 503.
pub const RETRY_AFTER: &str = "retry-after";

/// A wait as `Retry-After` seconds: rounded up, at least 1.
fn whole_seconds(wait: Duration) -> String {
    (wait.as_secs_f64().ceil().max(1.0) as u64).to_string()
}

/// Everything a request turned into, once its latency has passed.
struct Answer {
    received: Received,
    reply: Reply,
    start: Duration,
    /// The server itself throttled it (rather than the responder's reply).
    gated: bool,
    _guard: InFlight,
}

/// Logs a request, decides its reply, and waits out its latency (and its turn
/// at a capacity-limited server).
async fn answer(shared: &Arc<Shared>, authorization: Option<String>, body: &[u8]) -> Answer {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(Arc::clone(shared));
    let start = shared.started.elapsed();

    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let prompt = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let attempt = {
        let mut attempts = shared.attempts.lock().unwrap();
        let n = attempts.entry(prompt.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let received = {
        let mut log = shared.received.lock().unwrap();
        let r = Received {
            index: shared.next_index.fetch_add(1, Ordering::SeqCst),
            prompt,
            body,
            authorization,
            attempt,
            at: start,
        };
        log.push(r.clone());
        r
    };

    let (mut reply, gated) = match shared.throttle(&received) {
        Some(reply) => (reply, true),
        None => {
            let normal = (shared.responder)(&received);
            let fault = shared
                .faults
                .as_ref()
                .and_then(|f| f.decide(&received.prompt, received.attempt).map(|x| (f, x)));
            match fault {
                Some((faults, fault)) => {
                    shared.faults_sent.fetch_add(1, Ordering::SeqCst);
                    let content = match normal {
                        Reply::Text(t) => t,
                        _ => "ok".to_owned(),
                    };
                    let roll = faults.roll(&received.prompt, received.attempt);
                    (fault.reply(content, roll >> 3), false)
                }
                None => (normal, false),
            }
        }
    };
    let mut delay = Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
    if let Some((lo, hi)) = shared.latency_range {
        delay += shared.rng.lock().unwrap().duration(lo, hi);
    }
    while let Reply::Delayed(extra, inner) = reply {
        delay += extra;
        reply = *inner;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let (Some(capacity), false) = (&shared.capacity, gated) {
        // Fair semaphore: first come, first served.
        let _slot = capacity
            .slots
            .acquire()
            .await
            .expect("the capacity semaphore is never closed");
        let n = capacity.in_service.fetch_add(1, Ordering::SeqCst) + 1;
        let _serving = InService(&capacity.in_service);
        capacity.peak_in_service.fetch_max(n, Ordering::SeqCst);
        let shape = &capacity.shape;
        let factor = shape.load_factor(n) * shape.spread.factor(&mut shared.rng.lock().unwrap());
        tokio::time::sleep(shape.base.mul_f64(factor)).await;
    }
    Answer {
        received,
        reply,
        start,
        gated,
        _guard: guard,
    }
}

/// The OpenAI chat-completion body for a reply with `content`.
fn completion_body(received: &Received, content: &str) -> String {
    let prompt_tokens = received.prompt.split_whitespace().count();
    let completion_tokens = content.split_whitespace().count();
    json!({
        "id": format!("chatcmpl-{}", received.index),
        "object": "chat.completion",
        "model": received.body.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
    .to_string()
}

/// Block `n` (of `len` bytes) of a huge body: the opening of a reply,
/// `{"choices":[{"message":{"role":"assistant","content":"`, padded with `a`.
fn huge_block(n: usize, len: usize) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":""#;
    let mut block = vec![b'a'; len];
    if n == 0 {
        let k = HEAD.len().min(len);
        block[..k].copy_from_slice(&HEAD[..k]);
    }
    block
}

// ---------------------------------------------------------------------------
// axum

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, shared.stats_json(), None)
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = answer(&shared, authorization, &body).await;
    let header = shared.retry_header_of(answer.gated).to_owned();
    let (status, response) = match answer.reply {
        Reply::Hang => std::future::pending::<(u16, Response)>().await,
        Reply::Text(content) => (
            200,
            json_response(
                StatusCode::OK,
                completion_body(&answer.received, &content),
                None,
            ),
        ),
        Reply::Status {
            code,
            body,
            retry_after,
        } => (
            code,
            json_response(
                StatusCode::from_u16(code).expect("valid status"),
                body,
                retry_after.map(|after| (header, after)),
            ),
        ),
        Reply::Raw(body) => (200, json_response(StatusCode::OK, body, None)),
        Reply::Delayed(..) => unreachable!("delays are unwrapped in `answer`"),
        other => {
            assert!(other.needs_raw());
            let body = format!("{other:?} can only be served by TestServer::builder().raw_http()");
            eprintln!("test server: {body}");
            (
                500,
                json_response(StatusCode::INTERNAL_SERVER_ERROR, body, None),
            )
        }
    };
    shared.answered(answer.received.prompt.clone(), answer.start, status);
    response
}

/// A JSON response, with `retry` = (header name, wait) when given.
fn json_response(status: StatusCode, body: String, retry: Option<(String, String)>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some((name, after)) = retry {
        builder = builder.header(name, after);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------
// The raw HTTP/1.1 server: just enough HTTP for a client like reqwest
// (Content-Length request bodies, keep-alive), and full control of the bytes
// and the socket on the way back.

async fn serve_raw(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = raw_connection(stream, shared).await;
        });
    }
}

/// One parsed request.
struct RawRequest {
    method: String,
    path: String,
    authorization: Option<String>,
    close: bool,
    body: Vec<u8>,
}

/// Reads one request from `stream`; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<RawRequest>> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "header too large",
            ));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let (mut length, mut authorization, mut close) = (0usize, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "authorization" => authorization = Some(value.to_owned()),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok(Some(RawRequest {
        method,
        path,
        authorization,
        close,
        body,
    }))
}

fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    format!("HTTP/1.1 {code} {reason}\r\n")
}

/// A response head, with `retry` = (header name, wait) when given.
fn head(code: u16, length: Option<usize>, retry: Option<(&str, &str)>) -> String {
    let mut h = status_line(code);
    h.push_str("content-type: application/json\r\n");
    match length {
        Some(n) => h.push_str(&format!("content-length: {n}\r\n")),
        None => h.push_str("transfer-encoding: chunked\r\n"),
    }
    if let Some((name, after)) = retry {
        h.push_str(&format!("{name}: {after}\r\n"));
    }
    h.push_str("\r\n");
    h
}

async fn write_whole(
    stream: &mut TcpStream,
    code: u16,
    body: &[u8],
    retry: Option<(&str, &str)>,
) -> io::Result<()> {
    let mut out = head(code, Some(body.len()), retry).into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn raw_connection(mut stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await? {
        let keep_open = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/stats") => {
                write_whole(&mut stream, 200, shared.stats_json().as_bytes(), None).await?;
                true
            }
            ("POST", "/v1/chat/completions") => {
                let answer = answer(&shared, request.authorization, &request.body).await;
                raw_reply(&mut stream, &shared, answer).await?
            }
            _ => {
                write_whole(&mut stream, 404, b"{\"error\": \"not found\"}", None).await?;
                true
            }
        };
        if !keep_open || request.close {
            break;
        }
    }
    Ok(())
}

/// Writes `answer`; false when the connection must not be reused.
async fn raw_reply(stream: &mut TcpStream, shared: &Shared, answer: Answer) -> io::Result<bool> {
    let prompt = answer.received.prompt.clone();
    match answer.reply {
        Reply::Text(content) => {
            let body = completion_body(&answer.received, &content);
            write_whole(stream, 200, body.as_bytes(), None).await?;
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Status {
            code,
            body,
            retry_after,
        } => {
            let header = shared.retry_header_of(answer.gated);
            write_whole(
                stream,
                code,
                body.as_bytes(),
                retry_after.as_deref().map(|a| (header, a)),
            )
            .await?;
            shared.answered(prompt, answer.start, code);
            Ok(true)
        }
        Reply::Raw(body) => {
            write_whole(stream, 200, body.as_bytes(), None).await?;
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Hang => {
            // Until the client gives up: a read of 0 bytes (or an error) is its close.
            let mut sink = [0u8; 1024];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            Ok(false)
        }
        Reply::ResetMidBody(content) => {
            let body = completion_body(&answer.received, &content);
            let mut out = head(200, Some(body.len()), None).into_bytes();
            out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
            stream.write_all(&out).await?;
            stream.flush().await?;
            // Give the client time to read the headers, then reset the connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.set_zero_linger()?;
            Ok(false)
        }
        Reply::Trickle { content, interval } => {
            let body = completion_body(&answer.received, &content);
            stream
                .write_all(head(200, Some(body.len()), None).as_bytes())
                .await?;
            for byte in body.as_bytes() {
                stream.write_all(&[*byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(interval).await;
            }
            shared.answered(prompt, answer.start, 200);
            Ok(true)
        }
        Reply::Huge { bytes, chunked } => {
            const BLOCK: usize = 64 * 1024;
            let length = (!chunked).then_some(bytes);
            stream.write_all(head(200, length, None).as_bytes()).await?;
            let filler = huge_block(1, BLOCK);
            let mut sent = 0;
            while sent < bytes {
                let n = BLOCK.min(bytes - sent);
                let first;
                let data: &[u8] = if sent == 0 {
                    first = huge_block(0, n);
                    &first
                } else {
                    &filler[..n]
                };
                if chunked {
                    let mut framed = format!("{n:x}\r\n").into_bytes();
                    framed.extend_from_slice(data);
                    framed.extend_from_slice(b"\r\n");
                    stream.write_all(&framed).await?;
                } else {
                    stream.write_all(data).await?;
                }
                sent += n;
            }
            if chunked {
                stream.write_all(b"0\r\n\r\n").await?;
            }
            stream.flush().await?;
            Ok(false)
        }
        Reply::Delayed(..) => unreachable!("delays are unwrapped in `answer`"),
    }
}
