//! Delivery-rate sampling, after BBR's (draft-cheng-iccrg-delivery-rate-
//! estimation): each request remembers how much had been delivered when it
//! was sent, and its reply yields one sample of the rate at which the server
//! delivered replies over the request's life.
//!
//! Unlike TCP's, the interval is the delivery span alone: TCP also takes the
//! span over which the flight was sent, against ACK compression, but LLM
//! replies are independent responses whose latencies vary several-fold, and
//! the longer of two such spans would make every sample slow.
//!
//! The [`Limiter`](super::Limiter) and the simulator keep one [`Delivery`]
//! each, so the controller sees the same samples from both. Times are
//! durations since the limiter started (simulated time in the simulator).

use std::time::Duration;

/// What the sender had delivered when a request went out (BBR's per-packet
/// state).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stamp {
    /// Replies delivered when it was sent.
    pub delivered: u64,
    /// Output tokens delivered when it was sent.
    pub tokens: u64,
    /// When the last of those replies arrived (or it was sent, if nothing
    /// else was out).
    delivered_time: Duration,
    /// What the other senders had delivered by then ([`Remote`]).
    remote: (f64, f64),
}

/// One reply's sample of the server's delivery rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    /// Replies delivered over the interval, this one included.
    pub replies: u64,
    /// Output tokens delivered over the interval (0 when the server reports none).
    pub tokens: u64,
    /// The interval, seconds: from the delivery before it was sent to its reply.
    pub interval: f64,
    /// Replies delivered before the request was sent: a round ends at the
    /// first reply of a request sent after it began.
    pub delivered_at_send: u64,
    /// Replies (and tokens) other senders to the server had over the
    /// interval, as far as known ([`Remote`]).
    pub remote: (f64, f64),
}

impl RateSample {
    /// Replies per second, at the server.
    pub fn reply_rate(&self) -> f64 {
        (self.replies as f64 + self.remote.0) / self.interval
    }

    /// Output tokens per second, at the server.
    pub fn token_rate(&self) -> f64 {
        (self.tokens as f64 + self.remote.1) / self.interval
    }
}

/// Reports the others' pace is taken over (the newest included).
const REMOTE_REPORTS: usize = 4;

/// The sender's delivery counters.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    delivered: u64,
    tokens: u64,
    delivered_time: Duration,
    /// Requests sent and not yet answered (or failed).
    out: usize,
    remote: Remote,
    /// What the other senders had delivered by `delivered_time`.
    remote_then: (f64, f64),
}

/// What other senders to the same server had delivered (the rest of a
/// fleet, reported in batches every sync): counted as if it came steadily
/// at the pace of the last few batches, so that a reply shorter than a
/// sync sees neither the others' replies in lumps nor none at all.
#[derive(Debug, Clone, Default)]
struct Remote {
    /// The last reports: (when, replies, tokens), both running totals.
    reports: std::collections::VecDeque<(Duration, f64, f64)>,
    /// (replies, tokens) counted by `at`, and their pace since.
    total: (f64, f64),
    pace: (f64, f64),
    at: Duration,
    /// How long past `at` the pace is assumed to hold.
    horizon: Duration,
}

impl Remote {
    /// (replies, tokens) delivered by `t`.
    fn at(&self, t: Duration) -> (f64, f64) {
        let dt = t.saturating_sub(self.at).min(self.horizon).as_secs_f64();
        (
            self.total.0 + self.pace.0 * dt,
            self.total.1 + self.pace.1 * dt,
        )
    }
}

impl Delivery {
    /// Replies delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A request goes out at `now`.
    pub fn on_send(&mut self, now: Duration) -> Stamp {
        if self.out == 0 {
            // Nothing out: the rate over the idle gap before this send says
            // nothing about the server.
            self.delivered_time = now;
            self.remote_then = self.remote.at(now);
        }
        self.out += 1;
        Stamp {
            delivered: self.delivered,
            tokens: self.tokens,
            delivered_time: self.delivered_time,
            remote: self.remote_then,
        }
    }

    /// The request stamped `stamp` was answered at `now` with `tokens`
    /// output tokens.
    pub fn on_reply(&mut self, stamp: &Stamp, now: Duration, tokens: Option<u64>) -> RateSample {
        self.out = self.out.saturating_sub(1);
        self.delivered += 1;
        self.tokens += tokens.unwrap_or(0);
        let (from, to) = (stamp.remote, self.remote.at(now));
        let remote = ((to.0 - from.0).max(0.0), (to.1 - from.1).max(0.0));
        self.delivered_time = now;
        self.remote_then = to;
        RateSample {
            remote,
            replies: self.delivered - stamp.delivered,
            tokens: self.tokens - stamp.tokens,
            interval: now
                .saturating_sub(stamp.delivered_time)
                .as_secs_f64()
                .max(1e-6),
            delivered_at_send: stamp.delivered,
        }
    }

    /// Output tokens delivered so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The other senders to the server had `replies` (with `tokens`)
    /// delivered between the last report and this one, at `now`; the next
    /// report is due within `every`.
    pub fn on_remote(&mut self, replies: u64, tokens: u64, now: Duration, every: Duration) {
        let r = &mut self.remote;
        let (_, before_replies, before_tokens) = r.reports.back().copied().unwrap_or_default();
        r.reports.push_back((
            now,
            before_replies + replies as f64,
            before_tokens + tokens as f64,
        ));
        if r.reports.len() > REMOTE_REPORTS {
            r.reports.pop_front();
        }
        r.total = r.at(now);
        r.pace = match (r.reports.front(), r.reports.back()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                let span = (last.0 - first.0).as_secs_f64();
                ((last.1 - first.1) / span, (last.2 - first.2) / span)
            }
            _ => (0.0, 0.0),
        };
        r.at = now;
        r.horizon = every * 2;
    }

    /// The request stamped `stamp` failed: nothing was delivered.
    pub fn on_failure(&mut self) {
        self.out = self.out.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_at_a_time_samples_the_service_rate() {
        let mut d = Delivery::default();
        let mut t = 0;
        let mut rates = Vec::new();
        for _ in 0..5 {
            let s = d.on_send(ms(t));
            t += 200;
            rates.push(d.on_reply(&s, ms(t), None).reply_rate());
        }
        for r in rates {
            assert!((r - 5.0).abs() < 1e-9, "{r}");
        }
    }

    #[test]
    fn a_queue_does_not_raise_the_rate() {
        // Four sent at once to a server that answers one every 200 ms: each
        // reply samples 5/s, though the last one waited 800 ms.
        let mut d = Delivery::default();
        let stamps: Vec<Stamp> = (0..4).map(|_| d.on_send(ms(0))).collect();
        let mut samples = Vec::new();
        for (i, s) in stamps.iter().enumerate() {
            let sample = d.on_reply(s, ms(200 * (i as u64 + 1)), Some(10));
            samples.push(sample);
        }
        // The first reply is one in 200 ms; the later ones count the replies
        // delivered since they were sent over the time since.
        for s in &samples {
            assert!((s.reply_rate() - 5.0).abs() < 1e-9, "{s:?}");
            assert!((s.token_rate() - 50.0).abs() < 1e-9, "{s:?}");
        }
        // Sent again once the queue is steady: still 5/s.
        let s = d.on_send(ms(800));
        let r = d.on_reply(&s, ms(1000), None);
        assert!((r.reply_rate() - 5.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.delivered_at_send, 4);
    }

    #[test]
    fn an_idle_gap_is_not_counted_as_slowness() {
        let mut d = Delivery::default();
        let s = d.on_send(ms(0));
        d.on_reply(&s, ms(100), None);
        // Nothing out for 5 s (the dataset was slow), then one more.
        let s = d.on_send(ms(5100));
        let r = d.on_reply(&s, ms(5200), None);
        assert!((r.reply_rate() - 10.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn the_others_replies_reported_in_batches_count_evenly() {
        // Three other workers have one reply every 50 ms each, reported
        // every 100 ms (six a batch); this sender's requests take 50 ms, so
        // each spans at most one report, often none.
        let mut d = Delivery::default();
        let every = ms(100);
        let mut rates = Vec::new();
        let mut t = 0;
        for _ in 0..40 {
            if t % 100 == 0 {
                d.on_remote(6, 60, ms(t), every);
            }
            let s = d.on_send(ms(t));
            t += 25;
            if t % 100 == 0 {
                d.on_remote(6, 60, ms(t), every);
            }
            t += 25;
            rates.push(d.on_reply(&s, ms(t), Some(10)).reply_rate());
        }
        // Once the pace is known: 20/s of its own, 60/s of the others'.
        for r in &rates[8..] {
            assert!((r - 80.0).abs() < 1.0, "{rates:?}");
        }
    }
}
