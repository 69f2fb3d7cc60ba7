use super::*;
use crate::concurrency::sim::{simulate, Run, Shape};
use crate::concurrency::StrategySpec;

/// Drives the controller as the limiter would: each call completes one
/// request, numbered in dispatch order, that found `at_server` at the server.
struct Drive {
    a: Adaptive,
    limit: usize,
    seq: u64,
}

impl Drive {
    fn new(initial: usize, min: usize, max: usize) -> Drive {
        let a = Adaptive::new(AdaptiveConfig { initial, min, max });
        Drive {
            limit: a.initial_limit(),
            a,
            seq: 0,
        }
    }

    fn complete(&mut self, outcome: Outcome, at_server: usize) -> Decision {
        self.seq += 1;
        let o = Observation {
            outcome,
            seq: self.seq,
            at_server,
            limit_at_start: self.limit,
            at_server_now: at_server.saturating_sub(1),
            latest_seq: self.seq + self.limit as u64,
            limit: self.limit,
        };
        let d = self.a.observe(&o);
        if let Some(l) = d.limit {
            self.limit = l;
        }
        d
    }

    /// `n` successes of `ms` latency (and `tokens` output tokens), window full.
    fn ok(&mut self, n: usize, ms: u64, tokens: Option<u64>) {
        for _ in 0..n {
            let full = self.limit;
            self.complete(success(ms, tokens), full);
        }
    }
}

fn success(ms: u64, tokens: Option<u64>) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms),
        completion_tokens: tokens,
    }
}

#[test]
fn probes_at_one_then_ramps_while_latency_holds() {
    let mut d = Drive::new(1, 1, 256);
    assert_eq!(d.limit, 1);
    d.ok(1, 100, None);
    assert_eq!(d.limit, 1 + RAMP_STEP, "the probe's reply starts the ramp");
    d.ok(10, 100, None);
    assert_eq!(d.limit, 1 + 11 * RAMP_STEP);
}

#[test]
fn no_growth_while_requests_wait_on_the_client_not_the_server() {
    // The window holds slots but a rate limiter lets one request at a time
    // reach the server: the window is not really full.
    for initial in [1, 4] {
        let mut d = Drive::new(initial, 1, 256);
        let mut highest = d.limit;
        for _ in 0..500 {
            d.complete(success(100, None), 1);
            highest = highest.max(d.limit);
        }
        assert!(
            highest <= initial.max(1 + RAMP_STEP),
            "from {initial}: the limit reached {highest} with 1 at the server"
        );
    }
}

#[test]
fn long_answers_are_not_mistaken_for_queueing() {
    // A server with room for 16: per-token latency is flat below that.
    let mut d = Drive::new(1, 1, 16);
    d.ok(200, 100, Some(10));
    assert_eq!(d.limit, 16);
    // Ten times the latency, ten times the tokens: the same speed per token.
    d.ok(200, 1000, Some(100));
    assert_eq!(d.limit, 16, "per-token latency did not change");
}

#[test]
fn one_cut_per_throttling_episode() {
    let mut d = Drive::new(40, 1, 256);
    let latest = 40;
    let mut cuts = 0;
    // Forty requests sent before the first 429 all come back throttled.
    for seq in 1..=40 {
        let o = Observation {
            outcome: Outcome::Throttled,
            seq,
            at_server: 40,
            limit_at_start: 40,
            at_server_now: 39,
            latest_seq: latest,
            limit: d.limit,
        };
        let decision = d.a.observe(&o);
        if let Some(l) = decision.limit {
            d.limit = l;
            cuts += 1;
        }
    }
    assert_eq!((cuts, d.limit), (1, 28));
    // A request sent after the cut that is throttled again starts a new episode.
    let again = Observation {
        outcome: Outcome::Throttled,
        seq: latest + 1,
        at_server: 28,
        limit_at_start: 28,
        at_server_now: 27,
        latest_seq: latest + 30,
        limit: d.limit,
    };
    assert_eq!(d.a.observe(&again).limit, Some(20), "28 x 0.7, rounded");
}

#[test]
fn a_server_that_refuses_past_its_capacity_is_probed_again_soon() {
    // Four slots; a fifth request is refused (503), like an admission-
    // controlled proxy. The limit keeps coming back to four rather than
    // staying at the cut.
    let mut d = Drive::new(4, 1, 256);
    let mut at_four = 0;
    for _ in 0..2000 {
        let l = d.limit;
        let outcome = if l > 4 {
            Outcome::Throttled
        } else {
            success(1000, None)
        };
        d.complete(outcome, l);
        at_four += usize::from(d.limit >= 4);
    }
    assert!(
        at_four >= 800,
        "{at_four} of 2000 replies at a limit of 4 or more"
    );
}

#[test]
fn server_errors_do_not_move_the_limit() {
    let mut d = Drive::new(10, 1, 256);
    for _ in 0..50 {
        assert_eq!(d.complete(Outcome::Failed, 10), Decision::default());
    }
    assert_eq!(d.limit, 10);
}

#[test]
fn stays_within_min_and_max() {
    let mut d = Drive::new(4, 2, 6);
    d.ok(200, 10, None);
    assert_eq!(d.limit, 6);
    for _ in 0..60 {
        let l = d.limit;
        d.complete(Outcome::Timeout, l);
        d.seq += 100; // each timeout from a new episode
    }
    assert_eq!(d.limit, 2);
}

#[test]
fn a_server_that_frees_up_is_found_by_probing() {
    // Capacity 8, then 32: the limit follows within a few hundred requests.
    let mut d = Drive::new(1, 1, 256);
    for capacity in [8usize, 32] {
        for _ in 0..3000 {
            let l = d.limit;
            let ms = 100 * (l.max(capacity) as u64) / capacity as u64;
            d.complete(success(ms, None), l);
        }
        assert!(
            d.limit >= capacity * 3 / 4 && d.limit <= capacity * 3 / 2,
            "capacity {capacity}: limit {}",
            d.limit
        );
    }
    // And back down when it slows again (latency grows at flat throughput).
    for _ in 0..3000 {
        let l = d.limit;
        d.complete(success(100 * (l.max(8) as u64) / 8, None), l);
    }
    assert!(d.limit <= 12, "capacity 8 again: limit {}", d.limit);
}

// ---- Simulated server shapes, many seeds: the targets of README's table. ----

fn adaptive() -> Box<dyn Strategy> {
    StrategySpec::Adaptive(AdaptiveConfig::default()).build()
}

/// The best fixed window's run among `windows`.
fn best_window(shape: Shape, n: usize, windows: &[usize], seed: u64) -> Run {
    windows
        .iter()
        .map(|w| simulate(shape, StrategySpec::SlidingWindow(*w).build(), n, seed))
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
        .expect("windows")
}

/// Adaptive's share of the best window's throughput over `seeds`, sorted,
/// with its runs.
fn shares(shape: Shape, n: usize, windows: &[usize], seeds: u64) -> (Vec<f64>, Vec<Run>) {
    let mut shares = Vec::new();
    let mut runs = Vec::new();
    for seed in 1..=seeds {
        let best = best_window(shape, n, windows, seed);
        let run = simulate(shape, adaptive(), n, seed);
        shares.push(run.throughput / best.throughput);
        runs.push(run);
    }
    shares.sort_by(f64::total_cmp);
    (shares, runs)
}

fn spread(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "min {:.3} median {:.3} max {:.3}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

const WINDOWS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

#[test]
fn sim_one_at_a_time_server_stays_at_one() {
    let shape = Shape::Capacity {
        k: 1,
        base: 0.2,
        sigma: 0.0,
    };
    let one = simulate(shape, StrategySpec::Sequential.build(), 200, 1);
    let run = simulate(shape, adaptive(), 200, 1);
    println!(
        "serial: {:.2}/s (window 1 {:.2}/s), p50 {:.3} s, median limit {}, max {}",
        run.throughput, one.throughput, run.p50, run.median_limit, run.max_limit
    );
    assert!(run.median_limit <= 2, "{run:?}");
    assert!(run.p50 <= 1.5 * 0.2, "{run:?}");
    assert!(run.throughput >= 0.95 * one.throughput, "{run:?}");
}

#[test]
fn sim_noisy_capacity_server_reaches_the_knee() {
    let shape = Shape::Capacity {
        k: 32,
        base: 0.1,
        sigma: 0.3,
    };
    let seeds = std::env::var("SEEDS").map_or(20, |s| s.parse().unwrap_or(20));
    let (shares, runs) = shares(shape, 2000, &WINDOWS, seeds);
    let p50: Vec<f64> = runs.iter().map(|r| r.p50 / 0.1).collect();
    let limits: Vec<f64> = runs.iter().map(|r| r.median_limit as f64).collect();
    println!(
        "capacity 32, sigma 0.3: share {}; p50/unloaded {}; median limit {}",
        spread(&shares),
        spread(&p50),
        spread(&limits)
    );
    // The targets of issue 7: 0.90 in every run, 0.95 at the median.
    assert!(shares[0] >= 0.90, "{shares:?}");
    assert!(shares[shares.len() / 2] >= 0.95, "{shares:?}");
    let mut p50 = p50;
    p50.sort_by(f64::total_cmp);
    assert!(p50[p50.len() / 2] < 1.3, "{p50:?}");
}

#[test]
fn sim_batching_server_fills_its_batch() {
    let shape = Shape::Batching {
        batch: 64,
        base: 0.1,
        max_factor: 2.0,
        sigma: 0.0,
    };
    let (shares, runs) = shares(shape, 2000, &WINDOWS, 5);
    let limits: Vec<f64> = runs.iter().map(|r| r.median_limit as f64).collect();
    println!(
        "batching 64: share {}; median limit {}",
        spread(&shares),
        spread(&limits)
    );
    assert!(shares[0] >= 0.90, "{shares:?}");
}

/// Not a target of its own: the spread over shapes the targets do not name,
/// so a change that only helps the named ones shows up here.
#[test]
fn sim_other_shapes_keep_most_of_the_throughput() {
    let shapes = [
        Shape::Capacity {
            k: 4,
            base: 0.5,
            sigma: 0.3,
        },
        Shape::Capacity {
            k: 100,
            base: 0.05,
            sigma: 0.5,
        },
        Shape::Capacity {
            k: 12,
            base: 1.0,
            sigma: 0.1,
        },
        Shape::Batching {
            batch: 16,
            base: 0.2,
            max_factor: 1.5,
            sigma: 0.3,
        },
        Shape::Batching {
            batch: 128,
            base: 0.05,
            max_factor: 3.0,
            sigma: 0.2,
        },
    ];
    for shape in shapes {
        let (shares, runs) = shares(shape, 3000, &WINDOWS, 5);
        let limits: Vec<f64> = runs.iter().map(|r| r.median_limit as f64).collect();
        println!(
            "{shape:?}: share {}; median limit {}",
            spread(&shares),
            spread(&limits)
        );
        assert!(shares[0] >= 0.78, "{shape:?}: {shares:?}");
    }
}

#[test]
#[ignore]
fn sim_trace() {
    let shape = if std::env::var("SHAPE").is_ok_and(|s| s == "batching") {
        Shape::Batching {
            batch: 64,
            base: 0.1,
            max_factor: 2.0,
            sigma: 0.0,
        }
    } else {
        Shape::Capacity {
            k: 32,
            base: 0.1,
            sigma: 0.3,
        }
    };
    let seed = std::env::var("SEED").map_or(1, |s| s.parse().unwrap_or(1));
    let run = simulate(shape, adaptive(), 2000, seed);
    let best = best_window(shape, 2000, &WINDOWS, seed);
    let mut t = 0.0;
    while t < *run.ends.last().unwrap_or(&0.0) {
        let done = run
            .ends
            .iter()
            .filter(|e| **e >= t && **e < t + 0.25)
            .count();
        let limits: Vec<usize> = run
            .history
            .iter()
            .filter(|h| h.0 >= t && h.0 < t + 0.25)
            .map(|h| h.1)
            .collect();
        println!("{t:5.2} {:6.0}/s {limits:?}", done as f64 / 0.25);
        t += 0.25;
    }
    if std::env::var("HISTORY").is_ok() {
        println!("{:?}", run.history);
    }
    println!(
        "share {:.3} best {:.1}/s p50 {:.3}",
        run.throughput / best.throughput,
        best.throughput,
        run.p50
    );
}
