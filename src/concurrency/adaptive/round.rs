//! Rounds: what one cohort of requests measured, and how a probe's rounds
//! compare with the rounds of the window held.

use std::collections::VecDeque;

use super::{MIN_ROUND, STRAGGLERS};

/// The replies of one round: a cohort of the next requests dispatched, all
/// of them back, not the first to return (those are the fast ones, and a
/// round of them would make a window look faster than it is).
#[derive(Debug, Clone)]
pub(super) struct Round {
    /// The cohort is the requests dispatched after `start_seq`, up to `end_seq`.
    start_seq: u64,
    end_seq: u64,
    /// The window when it began.
    pub(super) window: usize,
    /// Rate samples of requests sent with the window full.
    rates: Vec<f64>,
    /// Their latencies (per token where known).
    latencies: Vec<f64>,
    /// Replies of the cohort sent with the window not full.
    idle: usize,
    /// Replies of later requests: after [`STRAGGLERS`] cohorts' worth, the
    /// round ends without those that never came back.
    later: usize,
}

impl Round {
    /// The round of the `size` requests dispatched after the next `skip`
    /// ones (`latest_seq` is the last dispatched so far), at `window`.
    pub(super) fn new(latest_seq: u64, skip: usize, size: usize, window: usize) -> Round {
        let size = size.max(MIN_ROUND);
        let start_seq = latest_seq + skip as u64;
        Round {
            start_seq,
            end_seq: start_seq + size as u64,
            window,
            rates: Vec::with_capacity(size),
            latencies: Vec::with_capacity(size),
            idle: 0,
            later: 0,
        }
    }

    fn size(&self) -> usize {
        (self.end_seq - self.start_seq) as usize
    }

    /// Counts the reply to request `seq`: its rate and latency, if it
    /// belongs to the cohort and the window was full.
    pub(super) fn add(&mut self, seq: u64, rate: Option<f64>, latency: f64, full: bool) {
        if seq <= self.start_seq {
            return;
        }
        if seq > self.end_seq {
            self.later += 1;
            return;
        }
        match (rate, full) {
            (Some(r), true) if latency.is_finite() => {
                self.rates.push(r);
                self.latencies.push(latency);
            }
            _ => self.idle += 1,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.rates.len() + self.idle >= self.size() || self.later >= STRAGGLERS * self.size()
    }

    /// The round's rate and latency (medians), or `None` when most of it
    /// was sent with the window not full (app-limited).
    pub(super) fn measure(&mut self) -> Option<Measured> {
        if self.rates.is_empty() || self.rates.len() < self.idle {
            return None;
        }
        // Rates vary by a factor, not a term: compare them as logarithms.
        let mut logs: Vec<f64> = self
            .rates
            .iter()
            .map(|r| r.max(f64::MIN_POSITIVE).ln())
            .collect();
        Some(Measured {
            log_rate: median(&mut logs),
            window: self.window.max(1),
            latency: median(&mut self.latencies),
        })
    }
}

/// What a round measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Measured {
    /// The median of its rate samples' logarithms.
    pub(super) log_rate: f64,
    /// The window it was measured at.
    pub(super) window: usize,
    /// The median latency (per token where known).
    pub(super) latency: f64,
}

impl Measured {
    pub(super) fn rate(&self) -> f64 {
        self.log_rate.exp()
    }
}

/// The last [`HELD_ROUNDS`] rounds measured at one window: the window
/// held, which a probe is judged against (only the latest: a server that
/// changed speed must not be judged by what it did before), or the probe's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Held {
    /// (log rate, median latency) of each round, oldest first.
    rounds: VecDeque<(f64, f64)>,
    window: usize,
}

/// Rounds a [`Held`] remembers.
pub(super) const HELD_ROUNDS: usize = 4;

impl Held {
    pub(super) fn add(&mut self, m: &Measured) {
        if self.rounds.len() == HELD_ROUNDS {
            self.rounds.pop_front();
        }
        self.rounds.push_back((m.log_rate, m.latency));
        self.window = m.window;
    }

    pub(super) fn of(m: &Measured) -> Held {
        let mut held = Held::default();
        held.add(m);
        held
    }

    fn mean(&self, of: impl Fn(&(f64, f64)) -> f64) -> Option<f64> {
        let n = self.rounds.len();
        (n > 0).then(|| self.rounds.iter().map(of).sum::<f64>() / n as f64)
    }

    /// The mean of the rounds' median latencies.
    pub(super) fn latency(&self) -> Option<f64> {
        self.mean(|r| r.1)
    }

    /// The noise `m` shows against the last round held at its window, as
    /// a sample of the run's noise: two rounds at one window differ by
    /// noise alone.
    pub(super) fn noise_sample(&self, m: &Measured) -> Option<f64> {
        let last = self.rounds.back().filter(|_| self.window == m.window)?.0;
        let d = m.log_rate - last;
        Some(m.window as f64 * d * d / 2.0)
    }

    /// How the rounds of `other` compare: their mean rate over the mean
    /// held, and how many standard errors apart the two are, given the
    /// run's `noise`. `None` before both have a round. Both are taken to
    /// vary as rounds at the window held do: a larger window averages more
    /// replies only where the server serves them side by side.
    pub(super) fn compare(&self, other: &Held, noise: f64) -> Option<(f64, f64)> {
        let diff = other.mean(|r| r.0)? - self.mean(|r| r.0)?;
        let (k, j) = (self.rounds.len() as f64, other.rounds.len() as f64);
        let variance = noise / self.window.max(1) as f64 * (1.0 / k + 1.0 / j);
        Some((diff.exp(), diff / variance.sqrt().max(f64::MIN_POSITIVE)))
    }
}

/// The lower median (of two, the lower: estimates err on the careful side).
pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rate: f64, window: usize) -> Measured {
        Measured {
            log_rate: rate.ln(),
            window,
            latency: 0.1,
        }
    }

    #[test]
    fn a_round_counts_its_own_cohort_whole() {
        // Requests 11..=18 are the cohort; 5 is older, 30 is later.
        let mut r = Round::new(10, 0, 8, 8);
        r.add(5, Some(1.0), 0.1, true);
        for seq in 11..18 {
            r.add(seq, Some(10.0), 0.1, true);
        }
        assert!(!r.done(), "one of the cohort is still out");
        r.add(30, Some(1.0), 0.1, true);
        assert!(!r.done());
        r.add(18, Some(10.0), 0.1, true);
        assert!(r.done());
        assert!((r.measure().unwrap().rate() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_round_ends_without_stragglers_and_skips_a_transition() {
        let mut r = Round::new(0, 8, 8, 8);
        // The first 8 dispatched after the change are passed over.
        for seq in 1..=8 {
            r.add(seq, Some(1.0), 0.1, true);
        }
        assert!(!r.done());
        r.add(9, Some(5.0), 0.1, true);
        for seq in 17..17 + 3 * 8 {
            r.add(seq as u64, Some(1.0), 0.1, true);
        }
        assert!(r.done(), "three cohorts' worth of later replies end it");
        assert!((r.measure().unwrap().rate() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn an_app_limited_round_measures_nothing() {
        let mut r = Round::new(0, 0, 8, 8);
        for seq in 1..=8 {
            r.add(seq, Some(3.0), 0.1, seq > 5);
        }
        assert!(r.done());
        assert_eq!(r.measure(), None, "5 of 8 sent with the window not full");
    }

    #[test]
    fn probes_are_judged_in_standard_errors_of_the_runs_noise() {
        let mut held = Held::default();
        // An older round at another speed is forgotten.
        held.add(&measured(300.0, 16));
        for _ in 0..HELD_ROUNDS {
            held.add(&measured(100.0, 16));
        }
        let probe = Held::of(&measured(110.0, 20));
        let (ratio, z) = held.compare(&probe, 0.09).unwrap();
        assert!((ratio - 1.1).abs() < 1e-9);
        // sd of a round: sqrt(0.09 / 16), held over 4 rounds, probed over 1.
        let se = (0.09f64 / 16.0 * (1.0 / 4.0 + 1.0)).sqrt();
        assert!((z - 1.1f64.ln() / se).abs() < 1e-9, "{z}");
        assert_eq!(
            held.noise_sample(&measured(100.0, 20)),
            None,
            "another window"
        );
        let sample = held.noise_sample(&measured(110.0, 16)).unwrap();
        assert!((sample - 16.0 * 1.1f64.ln().powi(2) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_median_is_the_lower_one() {
        assert_eq!(median(&mut [3.0, 1.0]), 1.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
