//! A discrete-event simulation of a run against a model server, for testing
//! strategies across server shapes and noise seeds in milliseconds of CPU.
//!
//! The client side mirrors the [`Limiter`](super::Limiter): a request is sent
//! whenever fewer than the limit are in flight, and its outcome is observed
//! with the same [`Observation`] fields. The real HTTP path is checked by the
//! integration tests and `scripts/bench`; this checks the controller's logic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::{Observation, Outcome, Strategy};

/// How a server turns load into latency.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Serves `k` at a time, first come first served; service time is
    /// `base` times a lognormal factor of median 1.
    Capacity { k: usize, base: f64, sigma: f64 },
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
    fn slots(&self) -> usize {
        match *self {
            Shape::Capacity { k, .. } => k,
            Shape::Batching { batch, .. } => batch,
        }
    }

    fn service(&self, in_service: usize, normal: f64) -> f64 {
        match *self {
            Shape::Capacity { base, sigma, .. } => base * (sigma * normal).exp(),
            Shape::Batching {
                batch,
                base,
                max_factor,
                sigma,
            } => {
                let fill = (in_service - 1) as f64 / (batch.max(2) - 1) as f64;
                base * (1.0 + (max_factor - 1.0) * fill) * (sigma * normal).exp()
            }
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

/// Runs `n` requests through `strategy` against `shape`.
pub fn simulate(shape: Shape, mut strategy: Box<dyn Strategy>, n: usize, seed: u64) -> Run {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut normal = move || {
        // Box-Muller.
        let (u, v) = (rng.f64().max(1e-12), rng.f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let mut limit = strategy.initial_limit().max(1);
    let mut history = vec![(0.0, limit)];
    // (completion time in ns, request id)
    let mut events: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut queue = VecDeque::new();
    let mut sent_at = Vec::with_capacity(n);
    let mut at_server = Vec::with_capacity(n);
    let mut limit_at_start = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    let (mut in_flight, mut in_service, mut now) = (0usize, 0usize, 0.0f64);
    let ns = |t: f64| (t * 1e9) as u64;
    loop {
        while in_flight < limit && sent_at.len() < n {
            let id = sent_at.len();
            in_flight += 1;
            sent_at.push(now);
            at_server.push(in_flight);
            limit_at_start.push(limit);
            if in_service < shape.slots() {
                in_service += 1;
                let done = now + shape.service(in_service, normal());
                events.push(Reverse((ns(done), id)));
            } else {
                queue.push_back(id);
            }
        }
        let Some(Reverse((t, id))) = events.pop() else {
            break;
        };
        now = t as f64 / 1e9;
        in_service -= 1;
        if let Some(next) = queue.pop_front() {
            in_service += 1;
            let done = now + shape.service(in_service, normal());
            events.push(Reverse((ns(done), next)));
        }
        in_flight -= 1;
        let latency = now - sent_at[id];
        latencies.push(latency);
        ends.push(now);
        let decision = strategy.observe(&Observation {
            outcome: Outcome::Success {
                latency: Duration::from_secs_f64(latency),
                completion_tokens: None,
            },
            seq: id as u64 + 1,
            at_server: at_server[id],
            limit_at_start: limit_at_start[id],
            at_server_now: in_flight,
            latest_seq: sent_at.len() as u64,
            limit,
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
