//! Progress on stderr: a live bar on a terminal; otherwise (CI logs, pipes) a
//! line when an evaluation starts and a status line every few seconds.
//!
//! Counters are updated once per committed batch (O(1) per sample); the bar
//! and the lines show done/total, rate, ETA, requests in flight, errors and
//! running accuracy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::Planned;
use crate::concurrency::pause::Pause;
use crate::concurrency::pool::Pool;
use crate::concurrency::rate::RateLimit;
use crate::store::writer::SampleRecord;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar (stderr is a terminal).
    Bar,
    /// A line when each evaluation starts, then one every [`LINE_EVERY`].
    Lines,
    /// Nothing (`--quiet`).
    Off,
}

/// How often a status line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Progress for the evaluations of one `run`.
pub struct Progress {
    mode: ProgressMode,
    color: bool,
    live: Mutex<Option<Arc<Live>>>,
}

/// What one bar (or status line) shows: an evaluation, or the cells of a
/// matrix running together.
struct Live {
    name: String,
    total: u64,
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    sources: Arc<Mutex<Sources>>,
    /// When the last status line was printed (lines mode only).
    last_line: Mutex<Instant>,
    /// The cells of a matrix: each joins it, and it ends with the last.
    group: bool,
}

/// The windows, rate limits and pauses a line reports on, each once.
#[derive(Default)]
struct Sources {
    limiters: Vec<Arc<Pool>>,
    rates: Vec<Arc<RateLimit>>,
    pauses: Vec<Arc<Pause>>,
    /// The judges' pauses and rate limits that are not the model's.
    judges: Vec<(Arc<Pause>, Option<Arc<RateLimit>>)>,
}

/// `, 12 already recorded` for a resumed run; nothing for a fresh one.
fn already(done: u64) -> String {
    match done {
        0 => String::new(),
        n => format!(", {n} already recorded"),
    }
}

/// Adds `item` to `items` unless it is there already.
fn add_once<T: ?Sized>(items: &mut Vec<Arc<T>>, item: &Arc<T>) {
    if !items.iter().any(|i| Arc::ptr_eq(i, item)) {
        items.push(Arc::clone(item));
    }
}

impl Sources {
    /// The longest pause any endpoint was told to take.
    fn paused(&self) -> Duration {
        self.pauses
            .iter()
            .map(|p| p.remaining())
            .max()
            .unwrap_or_default()
    }
}

impl Live {
    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites the bar's message from the counters, the limiter and the rate limit,
    /// so a run that waits on a server never looks stuck.
    fn refresh(&self) {
        let Some(bar) = &self.bar else { return };
        bar.set_message(self.status());
    }

    /// In lines mode, prints a status line when [`LINE_EVERY`] has passed since the last.
    fn maybe_line(&self) {
        let Ok(mut last) = self.last_line.lock() else {
            return;
        };
        if last.elapsed() < LINE_EVERY {
            return;
        }
        *last = Instant::now();
        let c = &self.counts;
        let done = c.done.load(Ordering::Relaxed);
        let rate = c.per_second();
        let eta = eta(
            self.total.saturating_sub(done),
            rate,
            self.sources().paused(),
        );
        eprintln!(
            "{}: {done}/{} · {rate:.1}/s · eta {eta} {}",
            self.name,
            self.total,
            self.status()
        );
    }

    /// In flight, errors, accuracy, pauses and rate-limit waits, as one line.
    fn status(&self) -> String {
        let c = &self.counts;
        let (errors, scored, passed) = (
            c.errors.load(Ordering::Relaxed),
            c.scored.load(Ordering::Relaxed),
            c.passed.load(Ordering::Relaxed),
        );
        let sources = self.sources();
        let limiters = &sources.limiters;
        let mut msg = format!(
            "· {} · errors {errors}",
            in_flight(
                limiters.iter().map(|l| l.in_flight()).sum(),
                limiters.iter().map(|l| l.limit()).sum()
            )
        );
        if scored > 0 {
            msg += &format!(" · acc {:.1}%", 100.0 * passed as f64 / scored as f64);
        }
        match limiters.iter().map(|l| l.resting()).sum::<usize>() {
            0 => {}
            n => {
                let replicas: usize = limiters.iter().map(|l| l.replicas()).sum();
                msg += &format!(" · {n} of {replicas} replicas resting");
            }
        }
        let pause = sources.paused();
        if !pause.is_zero() {
            msg += &format!(
                " · paused {:.0}s: the server asked to wait",
                pause.as_secs_f64().ceil()
            );
        }
        let waiting: usize = sources.rates.iter().map(|r| r.waiting()).sum();
        if waiting > 0 {
            msg += &format!(" · {waiting} waiting for the rate limit");
        }
        let judge_pause = sources.judges.iter().map(|j| j.0.remaining()).max();
        if let Some(pause) = judge_pause.filter(|p| !p.is_zero()) {
            msg += &format!(
                " · judge paused {:.0}s: its server asked to wait",
                pause.as_secs_f64().ceil()
            );
        }
        let judge_waiting: usize = sources
            .judges
            .iter()
            .filter_map(|j| j.1.as_ref())
            .map(|r| r.waiting())
            .sum();
        if judge_waiting > 0 {
            msg += &format!(" · {judge_waiting} waiting for the judge's rate limit");
        }
        msg
    }
}

struct Counts {
    /// When this run began, and how many samples were recorded before it.
    started: Instant,
    done_before: u64,
    done: AtomicU64,
    errors: AtomicU64,
    /// Samples scored by the first evaluator, and how many passed.
    scored: AtomicU64,
    passed: AtomicU64,
}

impl Counts {
    fn new(done_before: u64) -> Counts {
        Counts {
            started: Instant::now(),
            done_before,
            done: AtomicU64::new(done_before),
            errors: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            passed: AtomicU64::new(0),
        }
    }

    /// Samples per second recorded by this run (0 before the first).
    fn per_second(&self) -> f64 {
        let new = self.done.load(Ordering::Relaxed) - self.done_before;
        let secs = self.started.elapsed().as_secs_f64();
        if new == 0 || secs <= 0.0 {
            0.0
        } else {
            new as f64 / secs
        }
    }
}

/// `in flight N/LIMIT`. After the limit falls, requests already out finish
/// above it: they are counted apart, so in flight never reads above the limit.
fn in_flight(in_flight: usize, limit: usize) -> String {
    let mut text = format!("in flight {}/{limit}", in_flight.min(limit));
    if in_flight > limit {
        text += &format!(" (+{} finishing)", in_flight - limit);
    }
    text
}

/// Time left for `remaining` samples at `rate` per second, after a pause
/// the server ordered (`paused` of it left); `?` until there is a rate.
fn eta(remaining: u64, rate: f64, paused: Duration) -> String {
    if remaining == 0 {
        return "0s".into();
    }
    if rate <= 0.0 {
        return "?".into();
    }
    let secs = (remaining as f64 / rate + paused.as_secs_f64()).ceil() as u64;
    match secs {
        0..=99 => format!("{secs}s"),
        100..=5999 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

impl Progress {
    /// `color: false` (`--color never`, `NO_COLOR`) draws the bar without styles.
    pub fn new(mode: ProgressMode, color: bool) -> Progress {
        Progress {
            mode,
            color,
            live: Mutex::new(None),
        }
    }

    /// Begins showing `plan`'s evaluation; samples recorded by earlier runs
    /// count as done. A cell of a matrix group joins the group's line.
    pub fn start(
        &self,
        plan: &Planned,
        limiter: &Arc<Pool>,
        rate: Option<Arc<RateLimit>>,
        pause: Arc<Pause>,
        judges: &[(Arc<Pause>, Option<Arc<RateLimit>>)],
    ) {
        // A judge on the model's own endpoint shares its pause and rate limit,
        // which the line already shows.
        let judges: Vec<_> = judges
            .iter()
            .filter(|(p, r)| {
                let same_rate = match (r, &rate) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, _) => true,
                    _ => false,
                };
                !(Arc::ptr_eq(p, &pause) && same_rate)
            })
            .map(|(p, r)| (Arc::clone(p), r.clone()))
            .collect();
        let group = self.current().filter(|l| l.group);
        let live = match group {
            Some(live) => live,
            None => {
                let (total, pending) = (plan.total, plan.pending);
                let done = total - pending;
                let line = format!(
                    "{}: running {pending} of {total} samples ({}{})",
                    plan.eval.name,
                    plan.strategy,
                    already(done)
                );
                self.begin(&plan.eval.name, total, done, &line, false)
            }
        };
        let mut sources = live.sources();
        add_once(&mut sources.limiters, limiter);
        if let Some(rate) = &rate {
            add_once(&mut sources.rates, rate);
        }
        add_once(&mut sources.pauses, &pause);
        for (p, r) in judges {
            if !sources.judges.iter().any(|(q, _)| Arc::ptr_eq(q, &p)) {
                sources.judges.push((p, r));
            }
        }
    }

    /// Begins one line for `plans` (the cells of a matrix, run together),
    /// named `name`; each cell's [`start`](Self::start) joins it, and
    /// [`finish_group`](Self::finish_group) ends it.
    pub fn start_group(&self, name: &str, plans: &[Planned]) {
        let total: u64 = plans.iter().map(|p| p.total).sum();
        let pending: u64 = plans.iter().map(|p| p.pending).sum();
        let done = total - pending;
        let line = format!(
            "{name}: running {pending} of {total} samples in {} cells at once{}",
            plans.len(),
            already(done)
        );
        self.begin(name, total, done, &line, true);
    }

    /// Shows a new line: a bar, or in lines mode `line`.
    fn begin(&self, name: &str, total: u64, done: u64, line: &str, group: bool) -> Arc<Live> {
        let counts = Arc::new(Counts::new(done));
        let sources = Arc::new(Mutex::new(Sources::default()));
        let bar = match self.mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::stderr_with_hz(10),
                );
                let template = if self.color {
                    "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {rate:.dim} eta {eta} {msg}"
                } else {
                    "{prefix} [{bar:30}] {pos}/{len} {rate} eta {eta} {msg}"
                };
                let (for_rate, for_eta) = (Arc::clone(&counts), Arc::clone(&counts));
                let for_pause = Arc::clone(&sources);
                let style = ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key(
                        "rate",
                        move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.1}/s", for_rate.per_second());
                        },
                    )
                    .with_key(
                        "eta",
                        move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let left = s.len().unwrap_or(0).saturating_sub(s.pos());
                            let paused = for_pause.lock().map(|s| s.paused()).unwrap_or_default();
                            let _ = write!(w, "{}", eta(left, for_eta.per_second(), paused));
                        },
                    )
                    .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(name.to_owned());
                bar.set_position(done);
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            ProgressMode::Lines => {
                eprintln!("{line}");
                None
            }
            ProgressMode::Off => None,
        };
        let live = Arc::new(Live {
            name: name.to_owned(),
            total,
            bar,
            counts,
            sources,
            last_line: Mutex::new(Instant::now()),
            group,
        });
        if let Ok(mut slot) = self.live.lock() {
            *slot = Some(Arc::clone(&live));
        }
        live
    }

    fn current(&self) -> Option<Arc<Live>> {
        self.live.lock().ok().and_then(|l| l.clone())
    }

    /// The callback the store writer calls after each committed batch.
    pub fn on_commit(&self) -> impl FnMut(&[SampleRecord]) + Send + 'static {
        let live = self.current();
        move |batch: &[SampleRecord]| {
            let Some(live) = &live else { return };
            let c = &live.counts;
            let (mut finished, mut errors) = (0, 0);
            let (mut scored, mut passed) = (0, 0);
            // A reply stored before grading is not done: its graded record follows.
            let graded = batch.iter().filter(|r| !r.is_ungraded());
            for r in graded {
                finished += 1;
                errors += u64::from(r.error_kind.is_some());
                if let Some(Some(s)) = r.scores.first() {
                    scored += 1;
                    passed += u64::from(s.passed);
                }
            }
            let done = c.done.fetch_add(finished, Ordering::Relaxed) + finished;
            c.errors.fetch_add(errors, Ordering::Relaxed);
            c.scored.fetch_add(scored, Ordering::Relaxed);
            c.passed.fetch_add(passed, Ordering::Relaxed);
            if let Some(bar) = &live.bar {
                bar.set_position(done);
            }
            live.refresh();
        }
    }

    /// Refreshes the bar's message, or prints a due status line; called on a timer.
    pub fn tick(&self) {
        if let Some(live) = self.current() {
            match self.mode {
                ProgressMode::Bar => live.refresh(),
                ProgressMode::Lines => live.maybe_line(),
                ProgressMode::Off => {}
            }
        }
    }

    /// True when progress is shown (and so worth ticking).
    pub fn is_live(&self) -> bool {
        self.mode != ProgressMode::Off
    }

    /// Prints a line without tearing the bar.
    pub fn note(&self, text: &str) {
        if self.mode == ProgressMode::Off {
            return;
        }
        let bar = self
            .live
            .lock()
            .ok()
            .and_then(|l| l.as_ref().and_then(|l| l.bar.clone()));
        match bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Ends the current evaluation's bar (a group's ends with the group).
    pub fn finish(&self) {
        if self.current().is_some_and(|l| !l.group) {
            self.end();
        }
    }

    /// Ends a group's line.
    pub fn finish_group(&self) {
        self.end();
    }

    fn end(&self) {
        if let Ok(mut slot) = self.live.lock() {
            if let Some(bar) = slot.take().and_then(|l| l.bar.clone()) {
                bar.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{eta, in_flight};
    use std::time::Duration;

    #[test]
    fn eta_is_unknown_until_there_is_a_rate() {
        let none = Duration::ZERO;
        assert_eq!(eta(100, 0.0, none), "?");
        assert_eq!(eta(0, 0.0, none), "0s");
        assert_eq!(eta(100, 10.0, none), "10s");
        assert_eq!(eta(100, 0.5, none), "3m20s");
        assert_eq!(eta(100_000, 1.0, none), "27h46m");
    }

    #[test]
    fn in_flight_never_reads_above_the_limit() {
        assert_eq!(in_flight(3, 4), "in flight 3/4");
        assert_eq!(in_flight(20, 1), "in flight 1/1 (+19 finishing)");
    }

    /// A judge on an endpoint of its own that was told to wait says so on
    /// the status line, apart from the model's pause.
    #[test]
    fn a_judges_pause_is_shown() {
        use super::{Counts, Live, Pause};
        use crate::concurrency::pool::Pool;
        use crate::concurrency::StrategySpec;
        use std::sync::{Arc, Mutex};
        let judge = Arc::new(Pause::new());
        judge.extend(Duration::from_secs(12));
        let sources = super::Sources {
            limiters: vec![Pool::new(
                &StrategySpec::SlidingWindow(4),
                vec![Arc::new(Pause::new())],
            )],
            rates: Vec::new(),
            pauses: vec![Arc::new(Pause::new())],
            judges: vec![(judge, None)],
        };
        let live = Live {
            name: "e".into(),
            total: 10,
            bar: None,
            counts: Arc::new(Counts::new(0)),
            sources: Arc::new(Mutex::new(sources)),
            last_line: Mutex::new(std::time::Instant::now()),
            group: false,
        };
        let status = live.status();
        assert!(
            status.contains("judge paused 12s: its server asked to wait"),
            "{status}"
        );
        assert!(
            !status.contains(" · paused"),
            "the model is not paused: {status}"
        );
    }

    #[test]
    fn a_pause_the_server_ordered_counts_in_the_eta() {
        assert_eq!(eta(100, 10.0, Duration::from_secs(30)), "40s");
        assert_eq!(eta(0, 10.0, Duration::from_secs(30)), "0s");
    }
}
