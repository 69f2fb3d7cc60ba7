//! The state every connection shares, and the path each request takes
//! through it: logged, throttled or answered, delayed, served in its turn.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::apis::{throttled_body, Api, Tokens};
use super::limits::{whole_seconds, Bucket, FixedWindow, RETRY_AFTER};
use super::replies::{Faults, Reply};
use super::rng::XorShift;
use super::shapes::{Capacity, InService, Processor};
use super::{Builder, Received, Responder, Span, Stats};

/// What the server knows and counts, shared by every connection.
pub(super) struct Shared {
    pub(super) responder: Responder,
    pub(super) throttle_first: usize,
    pub(super) throttle_after: String,
    pub(super) throttle_during: Option<(Duration, String)>,
    pub(super) latency_us: AtomicU64,
    pub(super) latency_range: Option<(Duration, Duration)>,
    pub(super) capacity: Option<Capacity>,
    pub(super) bucket: Option<Mutex<Bucket>>,
    pub(super) window: Option<Mutex<FixedWindow>>,
    pub(super) retry_header: String,
    pub(super) faults: Option<Faults>,
    pub(super) rng: Mutex<XorShift>,
    pub(super) started: Instant,
    pub(super) first_arrival: Mutex<Option<Instant>>,
    pub(super) next_index: AtomicUsize,
    pub(super) in_flight: AtomicUsize,
    pub(super) peak: AtomicUsize,
    pub(super) throttled: AtomicUsize,
    pub(super) faults_sent: AtomicUsize,
    pub(super) received: Mutex<Vec<Received>>,
    pub(super) attempts: Mutex<HashMap<String, usize>>,
    pub(super) spans: Mutex<Vec<Span>>,
    /// 2xx answers sent, and their distinct prompts.
    pub(super) answered: AtomicUsize,
    pub(super) answered_prompts: Mutex<HashSet<String>>,
    pub(super) tokens: Tokens,
    pub(super) stream_timing: Option<(Duration, Duration)>,
}

/// Keeps the in-flight count right however a request ends (including when
/// the client gives up and the connection drops the handler).
pub(super) struct InFlight(pub(super) Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// The state of a server started from `b`, its clock starting now.
    pub(super) fn new(b: Builder) -> Shared {
        let now = Instant::now();
        Shared {
            responder: b.responder,
            throttle_first: b.throttle_first,
            throttle_after: b.throttle_after,
            throttle_during: b.throttle_during,
            latency_us: AtomicU64::new(b.latency.as_micros() as u64),
            latency_range: b.latency_range,
            capacity: b.capacity.map(|shape| Capacity {
                shape,
                slots: Arc::new(Semaphore::new(if shape.sharing {
                    Semaphore::MAX_PERMITS
                } else {
                    shape.slots
                })),
                in_service: AtomicUsize::new(0),
                peak_in_service: AtomicUsize::new(0),
                processor: Processor::default(),
                served: AtomicUsize::new(0),
            }),
            bucket: b.per_minute.map(|(n, burst)| {
                Mutex::new(Bucket {
                    rate: f64::from(n) / 60.0,
                    burst,
                    tokens: burst,
                    last: now,
                })
            }),
            window: b.per_window.map(|(limit, length)| {
                Mutex::new(FixedWindow {
                    limit,
                    length,
                    start: None,
                    count: 0,
                })
            }),
            retry_header: b.retry_header,
            faults: b.faults,
            rng: Mutex::new(XorShift::new(b.seed)),
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
            answered_prompts: Mutex::new(HashSet::new()),
            tokens: b.tokens,
            stream_timing: b.stream_timing,
        }
    }

    pub(super) fn stats(&self) -> Stats {
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

    pub(super) fn stats_json(&self) -> String {
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
    pub(super) fn answered(&self, prompt: String, start: Duration, status: u16) {
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

    /// A 429 if a throttle applies to this request, whatever it is, its body
    /// in the shape of the API asked.
    pub(super) fn throttle(&self, received: &Received, api: Api) -> Option<Reply> {
        let wait = self.wait(received)?;
        Some(Reply::Status {
            code: 429,
            body: throttled_body(api),
            retry_after: Some(wait),
        })
    }

    /// The wait of a 429 if a throttle applies to this request.
    fn wait(&self, received: &Received) -> Option<String> {
        if received.index < self.throttle_first {
            return Some(self.throttle_after.clone());
        }
        let now = Instant::now();
        if let Some((window, after)) = &self.throttle_during {
            let first = *self.first_arrival.lock().unwrap().get_or_insert(now);
            if now.duration_since(first) < *window {
                return Some(after.clone());
            }
        }
        if let Some(bucket) = &self.bucket {
            if let Err(wait) = bucket.lock().unwrap().take(now) {
                return Some(whole_seconds(wait));
            }
        }
        if let Some(window) = &self.window {
            if let Err(wait) = window.lock().unwrap().take(now) {
                return Some(whole_seconds(wait));
            }
        }
        None
    }

    /// The header that carries a reply's `retry_after`: the configured one
    /// for the server's own 429s (`gated`), `Retry-After` for a responder's.
    pub(super) fn retry_header_of(&self, gated: bool) -> &str {
        if gated {
            &self.retry_header
        } else {
            RETRY_AFTER
        }
    }
}

/// Everything a request turned into, once its latency has passed.
pub(super) struct Answer {
    pub(super) received: Received,
    pub(super) reply: Reply,
    pub(super) start: Duration,
    /// The server itself throttled it (rather than the responder's reply).
    pub(super) gated: bool,
    pub(super) _guard: InFlight,
}

impl Answer {
    /// The API the request was made to.
    pub(super) fn api(&self) -> Api {
        Api::of_path(&self.received.path).unwrap_or(Api::Chat)
    }
}

/// Logs a request, decides its reply, and waits out its latency (and its turn
/// at a capacity-limited server).
pub(super) async fn answer(
    shared: &Arc<Shared>,
    path: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Answer {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(Arc::clone(shared));
    let start = shared.started.elapsed();

    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The servers route only the APIs' paths here.
    let api = Api::of_path(path).unwrap_or(Api::Chat);
    let prompt = api.prompt(&body);
    let authorization = headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.clone());
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
            path: path.to_owned(),
            headers,
        };
        log.push(r.clone());
        r
    };

    let (mut reply, gated) = match shared.throttle(&received, api) {
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
                    let content = normal.content().unwrap_or("ok").to_owned();
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
    if !received.streamed() {
        reply = reply.unstreamed();
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
        let work = match shape.cold {
            Some(cold) if capacity.served.fetch_add(1, Ordering::SeqCst) == 0 => cold,
            _ => {
                let factor = shape.spread.factor(&mut shared.rng.lock().unwrap());
                shape.base.mul_f64(shape.load_factor(n) * factor)
            }
        };
        if shape.sharing {
            capacity.processor.serve(work).await;
        } else {
            tokio::time::sleep(work).await;
        }
    }
    Answer {
        received,
        reply,
        start,
        gated,
        _guard: guard,
    }
}
