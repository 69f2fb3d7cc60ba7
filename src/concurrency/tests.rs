use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::{prop_assert_eq, proptest, ProptestConfig};

#[test]
fn parses_cli_values() {
    assert_eq!(
        StrategySpec::parse_cli("sequential"),
        Ok(StrategySpec::Sequential)
    );
    assert_eq!(
        StrategySpec::parse_cli("8"),
        Ok(StrategySpec::SlidingWindow(8))
    );
    assert_eq!(
        StrategySpec::parse_cli("adaptive"),
        Ok(StrategySpec::Adaptive(AdaptiveConfig::default()))
    );
    assert!(StrategySpec::parse_cli("0").is_err());
    assert!(StrategySpec::parse_cli("fast").is_err());
}

impl Limiter {
    /// (free slots, debt, in flight, limit), for invariant checks.
    fn snapshot(&self) -> (usize, usize, usize, usize) {
        let s = self.state();
        (
            self.semaphore.available_permits(),
            s.debt,
            s.in_flight,
            s.limit,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn window_never_exceeds_limit_and_slides() {
    let limiter = Limiter::new(StrategySpec::SlidingWindow(3).build());
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for i in 0..9u64 {
        let permit = limiter.acquire().await;
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        tasks.spawn(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Uneven durations: a true window refills as each one ends.
            tokio::time::sleep(Duration::from_millis(100 + 50 * (i % 3))).await;
            running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(limiter.snapshot(), (3, 0, 0, 3));
    // Batches of 3 would take 3 x 200 ms; a window finishes sooner.
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn permit_returns_when_task_is_aborted() {
    let limiter = Limiter::new(StrategySpec::Sequential.build());
    let permit = limiter.acquire().await;
    let task = tokio::spawn(async move {
        let _p = permit;
        std::future::pending::<()>().await;
    });
    task.abort();
    let _ = task.await;
    assert_eq!(limiter.in_flight(), 0);
    let _again = limiter.acquire().await;
}

/// A strategy that plays back a script of limits, one per report.
struct Script(Arc<Mutex<VecDeque<Decision>>>);

impl Strategy for Script {
    fn initial_limit(&self) -> usize {
        4
    }
    fn observe(&mut self, _: &Observation) -> Decision {
        self.0.lock().unwrap().pop_front().unwrap_or_default()
    }
}

fn scripted(decisions: Vec<Decision>) -> Arc<Limiter> {
    Limiter::new(Box::new(Script(Arc::new(Mutex::new(decisions.into())))))
}

#[tokio::test(start_paused = true)]
async fn a_cut_takes_free_slots_now_and_busy_ones_as_they_return() {
    let limiter = scripted(vec![Decision { limit: Some(1) }]);
    let a = limiter.acquire().await;
    let b = limiter.acquire().await;
    a.report(&Outcome::Failed); // cut 4 -> 1 with 2 in flight: 2 free slots forgotten, 1 owed
    assert_eq!(limiter.snapshot(), (0, 1, 2, 1));
    drop(a); // pays the debt
    assert_eq!(limiter.snapshot(), (0, 0, 1, 1));
    drop(b); // frees the one slot
    assert_eq!(limiter.snapshot(), (1, 0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn growth_wakes_waiters() {
    let limiter = scripted(vec![Decision { limit: Some(6) }]);
    let held: Vec<Permit> = futures_join(&limiter, 4).await;
    let waiter = {
        let l = Arc::clone(&limiter);
        tokio::spawn(async move { l.acquire().await })
    };
    tokio::task::yield_now().await;
    held[0].report(&Outcome::Failed); // grow to 6
    let p = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("waiter woke")
        .unwrap();
    assert_eq!(limiter.snapshot().2, 5);
    drop(p);
    drop(held);
    assert_eq!(limiter.snapshot(), (6, 0, 0, 6));
}

async fn futures_join(limiter: &Arc<Limiter>, n: usize) -> Vec<Permit> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(limiter.acquire().await);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Many tasks, random hold times, random limit changes from completions: in
    /// flight never exceeds the limit at admission (checked inside `acquire`),
    /// every task gets its turn, and at the end every permit is back.
    #[test]
    fn limit_changes_never_lose_or_leak_permits(
        limits in proptest::collection::vec(1usize..12, 1..40),
        holds in proptest::collection::vec(0u64..20, 10..80),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let decisions = limits.iter().map(|l| Decision { limit: Some(*l) }).collect();
            let limiter = scripted(decisions);
            let over = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for hold in holds.iter().copied() {
                let l = Arc::clone(&limiter);
                let over = Arc::clone(&over);
                tasks.spawn(async move {
                    let permit = l.acquire().await;
                    let (_, debt, in_flight, limit) = l.snapshot();
                    if debt == 0 && in_flight > limit {
                        over.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    permit.report(&Outcome::Success { latency: Duration::from_millis(hold), completion_tokens: None });
                });
            }
            let all = async { while let Some(r) = tasks.join_next().await { r.unwrap(); } };
            tokio::time::timeout(Duration::from_secs(3600), all).await.expect("no waiter is lost");
            prop_assert_eq!(over.load(Ordering::SeqCst), 0);
            let (free, debt, in_flight, limit) = limiter.snapshot();
            prop_assert_eq!((free, debt, in_flight), (limit, 0, 0));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn totals_count_slot_time_time_at_the_server_and_blocked_time() {
    // Real time: the limiter measures with std's clock.
    let step = Duration::from_millis(100);
    let limiter = Limiter::new(StrategySpec::SlidingWindow(3).build());
    let a = limiter.acquire().await;
    a.ready();
    std::thread::sleep(step); // waiting, nothing at the server: blocked
    {
        let _sent = a.sending();
        std::thread::sleep(step); // alone at the server
    }
    a.report(&Outcome::Success {
        latency: step,
        completion_tokens: None,
    });
    // Two at once: neither had the server alone.
    let b = limiter.acquire().await;
    let c = limiter.acquire().await;
    {
        let _b = b.sending();
        let _c = c.sending();
        std::thread::sleep(step);
    }
    for p in [&b, &c] {
        p.report(&Outcome::Success {
            latency: step,
            completion_tokens: None,
        });
    }
    drop((a, b, c));
    let t = limiter.totals();
    assert_eq!((t.samples, t.attempts, t.unloaded), (3, 3, 1), "{t:?}");
    assert!(t.blocked >= step && t.blocked < 2 * step, "{t:?}");
    assert!(t.at_server >= 3 * step, "{t:?}");
    assert!(t.held >= 4 * step && t.held >= t.at_server, "{t:?}");
    assert!(t.unloaded_sum == step, "{t:?}");
}

/// A strategy that keeps what it sees and answers with a script of windows.
struct Watcher {
    seen: Arc<Mutex<Vec<Observation>>>,
    script: VecDeque<Decision>,
}

impl Strategy for Watcher {
    fn initial_limit(&self) -> usize {
        1
    }
    fn observe(&mut self, o: &Observation) -> Decision {
        self.seen.lock().unwrap().push(o.clone());
        self.script.pop_front().unwrap_or_default()
    }
}

/// A limiter whose strategy keeps what it sees and answers with `script`.
fn watched(script: Vec<Decision>) -> (Arc<Limiter>, Arc<Mutex<Vec<Observation>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let limiter = Limiter::new(Box::new(Watcher {
        seen: Arc::clone(&seen),
        script: script.into(),
    }));
    (limiter, seen)
}

/// A sync that puts `limiter` at `place`, with nothing delivered by the others.
fn sync(limiter: &Limiter, place: share::Place) {
    limiter.share(
        place,
        share::Delivered::default(),
        AdaptiveConfig::default(),
    );
}

fn place(
    leader: bool,
    window: Option<usize>,
    rank: usize,
    wanting: usize,
    others: usize,
) -> share::Place {
    share::Place {
        leader,
        window,
        rank: Some(rank),
        wanting,
        others_in_flight: others,
    }
}

const SUCCESS: Outcome = Outcome::Success {
    latency: Duration::from_millis(100),
    completion_tokens: None,
};

#[tokio::test(start_paused = true)]
async fn a_fleets_leader_steers_the_whole_window_and_counts_the_others_requests() {
    let (limiter, seen) = watched(vec![Decision { limit: Some(4) }]);
    // Alone in the fleet: one request, alone at the server.
    sync(&limiter, place(true, None, 0, 1, 0));
    let p = limiter.acquire().await;
    drop(p.sending());
    p.report(&SUCCESS);
    drop(p);
    // The fleet's window is now 4; a second worker wants slots: 2 each.
    sync(&limiter, place(true, None, 0, 2, 2));
    assert_eq!(
        (limiter.limit(), limiter.fleet_report().window),
        (2, Some(4))
    );
    let p = limiter.acquire().await;
    drop(p.sending());
    p.report(&SUCCESS);
    let seen = seen.lock().unwrap();
    assert!(seen[0].alone && seen[0].at_server == 1);
    // The other worker's two requests were at the server too.
    let o = &seen[1];
    assert!(!o.alone);
    assert_eq!((o.at_server, o.limit, o.limit_at_start), (3, 4, 4));
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_its_slots_of_the_leaders_window_and_its_controller_rests() {
    let (limiter, seen) = watched(vec![Decision { limit: Some(9) }]);
    // A window of one, and this worker second in line: no slot at all.
    sync(&limiter, place(false, Some(1), 1, 2, 1));
    assert_eq!((limiter.limit(), limiter.free()), (0, 0));
    assert!(limiter.try_acquire().is_none());
    // The window grows to 5: three slots for the first, two for this one.
    sync(&limiter, place(false, Some(5), 1, 2, 3));
    assert_eq!(limiter.limit(), 2);
    let p = limiter.acquire().await;
    drop(p.sending());
    p.report(&SUCCESS);
    assert!(
        seen.lock().unwrap().is_empty(),
        "the follower's controller rests"
    );
    assert_eq!(limiter.limit(), 2);
    // The leader is gone: this worker leads, from the fleet's window.
    sync(&limiter, place(true, None, 0, 1, 0));
    assert_eq!(
        (limiter.limit(), limiter.fleet_report().window),
        (5, Some(5))
    );
}
