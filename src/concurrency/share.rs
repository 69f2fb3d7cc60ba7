//! One adaptive window for a fleet: workers (processes on one machine or
//! many) that send to the same server share a single controller's window
//! instead of each probing the server with its own.
//!
//! N controllers side by side each keep at least one request out, and each
//! mistakes the others' requests for its own queue; against a server that
//! serves fewer at a time than there are workers, they only add up. So the
//! fleet has one controller: the **leader** (the worker alive the longest)
//! runs it, and its window is the fleet's. Every worker's slots are its part
//! of that window, split evenly among the workers that have samples to send
//! (the oldest get the remainder): a window of 1 is one request at the
//! server whatever the number of workers, and a worker may hold none.
//!
//! The leader sees the fleet as one process would see its own requests:
//! the others' requests at the server count towards its own (a reply is
//! alone only when nobody in the fleet had one out), and their replies
//! towards its delivery rate (spread evenly over each sync's interval,
//! see [`super::delivery`]). Each worker publishes what it has out and has
//! had answered, and reads the others', every sync (`runner::fleet`); the
//! leader also publishes its window.

/// What one worker publishes for an endpoint at a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Requests it has out (holding a slot).
    pub in_flight: u64,
    /// Replies it has had, and their output tokens, since it started.
    pub delivered: u64,
    pub tokens: u64,
    /// It has samples to send (or may claim more).
    pub wants: bool,
    /// It takes part in the shared window (runs `adaptive`); a worker with
    /// a fixed window only counts towards what is at the server.
    pub steers: bool,
    /// The fleet's window, from the leader.
    pub window: Option<u64>,
}

/// Another worker's report, as the store returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its run: workers are ranked by it (the oldest first).
    pub run: i64,
    pub report: Report,
}

/// This worker's place in the fleet after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// It runs the fleet's controller.
    pub leader: bool,
    /// The leader's window, as published (`None` before it published one).
    pub window: Option<usize>,
    /// Its position among the workers that want slots (`None`: it wants none).
    pub rank: Option<usize>,
    /// Workers that want slots, this one included when it does.
    pub wanting: usize,
    /// Requests the other workers have out.
    pub others_in_flight: usize,
}

impl Place {
    /// Where worker `me` (reporting `mine`) stands among `others`.
    pub fn of(me: i64, mine: &Report, others: &[Peer]) -> Place {
        let steering = || others.iter().filter(|p| p.report.steers);
        let leader = steering().all(|p| p.run > me);
        let window = steering()
            .filter(|p| p.run < me)
            .min_by_key(|p| p.run)
            .and_then(|p| p.report.window)
            .map(|w| usize::try_from(w).unwrap_or(usize::MAX));
        let wanting_before = steering().filter(|p| p.report.wants && p.run < me).count();
        let wanting = steering().filter(|p| p.report.wants).count() + usize::from(mine.wants);
        Place {
            leader,
            window,
            rank: mine.wants.then_some(wanting_before),
            wanting,
            others_in_flight: others
                .iter()
                .map(|p| usize::try_from(p.report.in_flight).unwrap_or(usize::MAX))
                .sum(),
        }
    }

    /// This worker's slots of a fleet window `window`.
    pub fn slots(&self, window: usize) -> usize {
        match self.rank {
            Some(rank) if self.wanting > 0 => {
                window / self.wanting + usize::from(rank < window % self.wanting)
            }
            _ => 0,
        }
    }
}

/// Replies the other workers had between two syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    pub replies: u64,
    pub tokens: u64,
    /// How often syncs come.
    pub every: std::time::Duration,
}

/// The other workers' running counts as last seen, to tell what each
/// delivered since (a worker seen for the first time counts from then on;
/// one that left counts no more).
#[derive(Debug, Default)]
pub struct Deliveries {
    last: Vec<(i64, u64, u64)>,
}

impl Deliveries {
    /// What `others` delivered since the last call.
    pub fn since_last(&mut self, others: &[Peer], every: std::time::Duration) -> Delivered {
        let mut d = Delivered {
            every,
            ..Delivered::default()
        };
        let mut now = Vec::with_capacity(others.len());
        for p in others {
            let (replies, tokens) = (p.report.delivered, p.report.tokens);
            if let Some(&(_, r, t)) = self.last.iter().find(|(run, ..)| *run == p.run) {
                d.replies += replies.saturating_sub(r);
                d.tokens += tokens.saturating_sub(t);
            }
            now.push((p.run, replies, tokens));
        }
        self.last = now;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(run: i64, wants: bool, in_flight: u64, window: Option<u64>) -> Peer {
        Peer {
            run,
            report: Report {
                in_flight,
                wants,
                steers: true,
                window,
                ..Report::default()
            },
        }
    }

    fn wanting() -> Report {
        Report {
            wants: true,
            steers: true,
            ..Report::default()
        }
    }

    #[test]
    fn the_oldest_worker_leads_and_the_window_is_split_among_those_that_want_it() {
        let others = [peer(1, true, 3, Some(5)), peer(7, true, 2, None)];
        let me = Place::of(4, &wanting(), &others);
        assert!(!me.leader);
        assert_eq!(me.window, Some(5));
        assert_eq!((me.rank, me.wanting, me.others_in_flight), (Some(1), 3, 5));
        // 5 over three: 2, 2, 1.
        assert_eq!(me.slots(5), 2);
        let leader = Place::of(
            1,
            &wanting(),
            &[peer(4, true, 0, None), peer(7, true, 0, None)],
        );
        assert!(leader.leader);
        assert_eq!((leader.slots(5), leader.slots(1)), (2, 1));
        let last = Place::of(
            7,
            &wanting(),
            &[peer(1, true, 0, Some(5)), peer(4, true, 0, None)],
        );
        assert_eq!(last.slots(5), 1);
    }

    #[test]
    fn a_worker_with_a_fixed_window_counts_only_as_load() {
        let fixed = Peer {
            run: 1,
            report: Report {
                in_flight: 4,
                wants: true,
                ..Report::default()
            },
        };
        let me = Place::of(2, &wanting(), &[fixed, peer(3, true, 1, None)]);
        assert!(me.leader, "the oldest worker that steers leads");
        assert_eq!((me.rank, me.wanting, me.others_in_flight), (Some(0), 2, 5));
    }

    #[test]
    fn a_window_smaller_than_the_fleet_leaves_the_youngest_idle() {
        // A server that serves one at a time: one request out, fleet-wide.
        let others = [peer(1, true, 1, Some(1)), peer(2, true, 0, None)];
        let me = Place::of(3, &wanting(), &others);
        assert_eq!(me.slots(1), 0);
        assert_eq!(Place::of(1, &wanting(), &others[1..]).slots(1), 1);
    }

    #[test]
    fn a_worker_with_nothing_to_send_gives_its_share_up() {
        // The leader ran dry: the next worker takes the whole window.
        let others = [peer(1, false, 0, Some(1))];
        let me = Place::of(2, &wanting(), &others);
        assert_eq!((me.rank, me.wanting, me.slots(1)), (Some(0), 1, 1));
        let dry = Place::of(1, &Report::default(), &[peer(2, true, 1, None)]);
        assert!(dry.leader);
        assert_eq!((dry.rank, dry.slots(4)), (None, 0));
    }

    #[test]
    fn deliveries_count_what_came_since_the_last_sync() {
        let mut d = Deliveries::default();
        let at = |run, delivered| Peer {
            run,
            report: Report {
                delivered,
                tokens: delivered * 10,
                ..Report::default()
            },
        };
        let every = std::time::Duration::from_millis(100);
        let got = |d: Delivered| (d.replies, d.tokens);
        assert_eq!(got(d.since_last(&[at(2, 40)], every)), (0, 0), "first seen");
        assert_eq!(got(d.since_last(&[at(2, 45), at(3, 9)], every)), (5, 50));
        assert_eq!(
            got(d.since_last(&[at(3, 12)], every)),
            (3, 30),
            "worker 2 left"
        );
    }
}
