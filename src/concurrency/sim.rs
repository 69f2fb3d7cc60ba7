//! A discrete-event simulation of a run against a model server, for testing
//! strategies across server shapes and noise seeds in milliseconds of CPU.
//!
//! The client side mirrors the [`Limiter`](super::Limiter): a request is sent
//! whenever fewer than the limit are in flight, its delivery is stamped by
//! the same [`Delivery`] counters, and its outcome is observed with the same
//! [`Observation`] fields. The real HTTP path is checked by the integration
//! tests and `scripts/bench`; this checks the controller's logic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::delivery::{Delivery, Stamp};
use super::{Observation, Outcome, Strategy};

/// How a server turns load into latency. Service times are `base` times a
/// lognormal factor of median 1 (`sigma` 0: exactly `base`).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Serves `k` at a time, first come first served (`k` 1: llama.cpp or
    /// Ollama with one slot on a CPU).
    Capacity { k: usize, base: f64, sigma: f64 },
    /// One processor whose time is shared equally by every request at the
    /// server: each of `n` progresses at `1/n` of its speed.
    Sharing { base: f64, sigma: f64 },
    /// Serves up to `batch` at a time; a request that enters service with `n`
    /// in service (itself included) takes `base * (1 + (max_factor - 1) *
    /// (n - 1) / (batch - 1))`, times the lognormal factor.
    Batching {
        batch: usize,
        base: f64,
        max_factor: f64,
        sigma: f64,
    },
}

impl Shape {
    fn base(&self) -> f64 {
        match *self {
            Shape::Capacity { base, .. }
            | Shape::Sharing { base, .. }
            | Shape::Batching { base, .. } => base,
        }
    }

    fn sigma(&self) -> f64 {
        match *self {
            Shape::Capacity { sigma, .. }
            | Shape::Sharing { sigma, .. }
            | Shape::Batching { sigma, .. } => sigma,
        }
    }

    /// Service time alone (the factor applied), for one entering with `n` in service.
    fn load_factor(&self, n: usize) -> f64 {
        match *self {
            Shape::Batching {
                batch, max_factor, ..
            } => 1.0 + (max_factor - 1.0) * (n - 1) as f64 / (batch.max(2) - 1) as f64,
            _ => 1.0,
        }
    }

    fn slots(&self) -> usize {
        match *self {
            Shape::Capacity { k, .. } => k,
            Shape::Batching { batch, .. } => batch,
            Shape::Sharing { .. } => usize::MAX,
        }
    }
}

/// A server and what surrounds it.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub shape: Shape,
    /// The first request's service time, if it is cold (model load, caches).
    pub cold: Option<f64>,
    /// Client and network time added to every request's latency (seconds):
    /// one at a time, the server idles this long between requests.
    pub overhead: f64,
    /// Output tokens per reply, uniform in the range, reported as `usage`;
    /// service time scales with them around their mean.
    pub tokens: Option<(u64, u64)>,
}

impl From<Shape> for Server {
    fn from(shape: Shape) -> Server {
        Server {
            shape,
            cold: None,
            overhead: 0.0,
            tokens: None,
        }
    }
}

/// What a simulated run measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub throughput: f64,
    pub p50: f64,
    /// Time-weighted median and the extremes of the limit.
    pub median_limit: usize,
    pub max_limit: usize,
    /// (seconds, limit) at every change.
    pub history: Vec<(f64, usize)>,
    /// When each reply came, in order.
    pub ends: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The request reaches the server.
    Arrive(usize),
    /// Its service ends (`generation` of the sharing schedule it was computed in).
    Done(usize, u64),
}

/// One request's client-side record.
struct Request {
    sent: f64,
    stamp: Stamp,
    at_server: usize,
    limit_at_start: usize,
    sends_at_start: u64,
    /// Service work left (sharing) or its service time.
    work: f64,
    tokens: Option<u64>,
}

/// Runs `n` requests through `strategy` against `server`.
pub fn simulate(
    server: impl Into<Server>,
    mut strategy: Box<dyn Strategy>,
    n: usize,
    seed: u64,
) -> Run {
    let server = server.into();
    let shape = server.shape;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut normal = {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        move || {
            // Box-Muller.
            let (u, v) = (rng.f64().max(1e-12), rng.f64());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    };
    let mean_tokens = server.tokens.map(|(lo, hi)| (lo + hi) as f64 / 2.0);
    let mut limit = strategy.initial_limit().max(1);
    let mut history = vec![(0.0, limit)];
    let mut events: BinaryHeap<Reverse<(u64, Event)>> = BinaryHeap::new();
    let mut requests: Vec<Request> = Vec::with_capacity(n);
    let mut queue = VecDeque::new();
    // Sharing: the requests in service; when the shares were last settled.
    let mut sharing: Vec<usize> = Vec::new();
    let (mut settled, mut generation) = (0.0f64, 0u64);
    let mut delivery = Delivery::default();
    let mut latencies = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    let (mut in_flight, mut in_service, mut sends, mut now) = (0usize, 0usize, 0u64, 0.0f64);
    let ns = |t: f64| (t * 1e9).round() as u64;
    let at = |t: f64| Duration::from_secs_f64(t);
    loop {
        while in_flight < limit && requests.len() < n {
            let id = requests.len();
            in_flight += 1;
            sends += 1;
            let tokens = server.tokens.map(|(lo, hi)| rng.u64(lo..=hi));
            let length = match (tokens, mean_tokens) {
                (Some(t), Some(mean)) => t as f64 / mean,
                _ => 1.0,
            };
            let work = match (id, server.cold) {
                (0, Some(cold)) => cold,
                _ => shape.base() * length * (shape.sigma() * normal()).exp(),
            };
            requests.push(Request {
                sent: now,
                stamp: delivery.on_send(at(now)),
                at_server: in_flight,
                limit_at_start: limit,
                sends_at_start: sends,
                work,
                tokens,
            });
            events.push(Reverse((ns(now + server.overhead), Event::Arrive(id))));
        }
        let Some(Reverse((t, event))) = events.pop() else {
            break;
        };
        let t = t as f64 / 1e9;
        if matches!((shape, event), (Shape::Sharing { .. }, Event::Done(_, g)) if g != generation) {
            // Rescheduled since: the share changed.
            continue;
        }
        if let Shape::Sharing { .. } = shape {
            // Everyone in service progressed at 1/n since the last event.
            let share = (t - settled) / sharing.len().max(1) as f64;
            for id in &sharing {
                requests[*id].work -= share;
            }
            settled = t;
        }
        now = t;
        let finished = match event {
            Event::Arrive(id) => {
                match shape {
                    Shape::Sharing { .. } => sharing.push(id),
                    _ if in_service < shape.slots() => {
                        in_service += 1;
                        let done = now + requests[id].work * shape.load_factor(in_service);
                        events.push(Reverse((ns(done), Event::Done(id, 0))));
                    }
                    _ => queue.push_back(id),
                }
                None
            }
            Event::Done(id, _) => match shape {
                Shape::Sharing { .. } => {
                    sharing.retain(|s| *s != id);
                    Some(id)
                }
                _ => {
                    in_service -= 1;
                    if let Some(next) = queue.pop_front() {
                        in_service += 1;
                        let done = now + requests[next].work * shape.load_factor(in_service);
                        events.push(Reverse((ns(done), Event::Done(next, 0))));
                    }
                    Some(id)
                }
            },
        };
        if let Shape::Sharing { .. } = shape {
            // Reschedule the next completion under the new share.
            generation += 1;
            if let Some(first) = sharing
                .iter()
                .copied()
                .min_by(|a, b| requests[*a].work.total_cmp(&requests[*b].work))
            {
                let done = now + requests[first].work.max(0.0) * sharing.len() as f64;
                events.push(Reverse((ns(done), Event::Done(first, generation))));
            }
        }
        let Some(id) = finished else { continue };
        in_flight -= 1;
        let r = &requests[id];
        let latency = now - r.sent;
        latencies.push(latency);
        ends.push(now);
        let sample = delivery.on_reply(&r.stamp, at(now), r.tokens);
        let decision = strategy.observe(&Observation {
            outcome: Outcome::Success {
                latency: Duration::from_secs_f64(latency),
                completion_tokens: r.tokens,
            },
            seq: id as u64 + 1,
            at_server: r.at_server,
            limit_at_start: r.limit_at_start,
            at_server_now: in_flight,
            held_back_now: 0,
            latest_seq: requests.len() as u64,
            limit,
            now: at(now),
            alone: r.at_server == 1 && sends == r.sends_at_start,
            sample: Some(sample),
        });
        if let Some(new) = decision.limit.filter(|l| *l != limit) {
            limit = new.max(1);
            history.push((now, limit));
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut weighted: Vec<(usize, f64)> = history
        .iter()
        .enumerate()
        .map(|(i, (t, l))| (*l, history.get(i + 1).map_or(now, |h| h.0) - t))
        .collect();
    weighted.sort_by_key(|w| w.0);
    let total: f64 = weighted.iter().map(|w| w.1).sum();
    let mut acc = 0.0;
    let median_limit = weighted
        .iter()
        .find(|w| {
            acc += w.1;
            acc * 2.0 >= total
        })
        .map_or(limit, |w| w.0);
    Run {
        throughput: n as f64 / now,
        p50: latencies[latencies.len() / 2],
        median_limit,
        max_limit: history.iter().map(|h| h.1).max().unwrap_or(limit),
        history,
        ends,
    }
}
