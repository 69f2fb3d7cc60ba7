//! Progress on stderr: a live bar on a terminal, one line per evaluation otherwise.
//!
//! Counters are updated once per committed batch (O(1) per sample); the bar
//! shows done/total, rate, ETA, requests in flight, errors and running accuracy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::Planned;
use crate::concurrency::pause::Pause;
use crate::concurrency::rate::RateLimit;
use crate::concurrency::Limiter;
use crate::store::writer::SampleRecord;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar (stderr is a terminal).
    Bar,
    /// A line when each evaluation starts.
    Lines,
    /// Nothing (`--quiet`).
    Off,
}

/// Progress for the evaluations of one `run`.
pub struct Progress {
    mode: ProgressMode,
    live: Mutex<Option<Live>>,
}

#[derive(Clone)]
struct Live {
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    limiter: Arc<Limiter>,
    rate: Option<Arc<RateLimit>>,
    pause: Arc<Pause>,
}

impl Live {
    /// Rewrites the bar's message from the counters, the limiter and the rate limit,
    /// so a run that waits on a server never looks stuck.
    fn refresh(&self) {
        let Some(bar) = &self.bar else { return };
        let c = &self.counts;
        let (errors, scored, passed) = (
            c.errors.load(Ordering::Relaxed),
            c.scored.load(Ordering::Relaxed),
            c.passed.load(Ordering::Relaxed),
        );
        let mut msg = format!(
            "· in flight {}/{} · errors {errors}",
            self.limiter.in_flight(),
            self.limiter.limit()
        );
        if scored > 0 {
            msg += &format!(" · acc {:.1}%", 100.0 * passed as f64 / scored as f64);
        }
        let pause = self.pause.remaining();
        if !pause.is_zero() {
            msg += &format!(
                " · paused {:.0}s: the server asked to wait",
                pause.as_secs_f64().ceil()
            );
        }
        if let Some(waiting) = self.rate.as_ref().map(|r| r.waiting()).filter(|n| *n > 0) {
            msg += &format!(" · {waiting} waiting for the rate limit");
        }
        bar.set_message(msg);
    }
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    errors: AtomicU64,
    /// Samples scored by the first evaluator, and how many passed.
    scored: AtomicU64,
    passed: AtomicU64,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            live: Mutex::new(None),
        }
    }

    /// Begins showing `plan`'s evaluation; samples recorded by earlier runs count as done.
    pub fn start(
        &self,
        plan: &Planned,
        limiter: &Arc<Limiter>,
        rate: Option<Arc<RateLimit>>,
        pause: Arc<Pause>,
    ) {
        let (name, total, pending, strategy) =
            (&plan.eval.name, plan.total, plan.pending, &plan.strategy);
        let done = total - pending;
        let counts = Arc::new(Counts::default());
        counts.done.store(done, Ordering::Relaxed);
        let bar = match self.mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::stderr_with_hz(10),
                );
                let style = ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {rate:.dim} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", s.per_sec());
                })
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(name.to_owned());
                bar.set_position(done);
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            ProgressMode::Lines => {
                let resumed = if done > 0 {
                    format!(", {done} already recorded")
                } else {
                    String::new()
                };
                eprintln!("{name}: running {pending} of {total} samples ({strategy}{resumed})");
                None
            }
            ProgressMode::Off => None,
        };
        let live = Live {
            bar,
            counts,
            limiter: Arc::clone(limiter),
            rate,
            pause,
        };
        if let Ok(mut slot) = self.live.lock() {
            *slot = Some(live);
        }
    }

    /// The callback the store writer calls after each committed batch.
    pub fn on_commit(&self) -> impl FnMut(&[SampleRecord]) + Send + 'static {
        let live = self.live.lock().ok().and_then(|l| l.clone());
        move |batch: &[SampleRecord]| {
            let Some(live) = &live else { return };
            let c = &live.counts;
            let mut errors = 0;
            let (mut scored, mut passed) = (0, 0);
            for r in batch {
                errors += u64::from(r.error_kind.is_some());
                if let Some(Some(v)) = r.scores.first() {
                    scored += 1;
                    passed += u64::from(*v >= 1.0);
                }
            }
            let done = c.done.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
            c.errors.fetch_add(errors, Ordering::Relaxed);
            c.scored.fetch_add(scored, Ordering::Relaxed);
            c.passed.fetch_add(passed, Ordering::Relaxed);
            if let Some(bar) = &live.bar {
                bar.set_position(done);
            }
            live.refresh();
        }
    }

    /// Refreshes the bar's message; called on a timer while a run waits.
    pub fn tick(&self) {
        if let Some(live) = self.live.lock().ok().and_then(|l| l.clone()) {
            live.refresh();
        }
    }

    /// True when a live bar is shown (and so worth ticking).
    pub fn is_live(&self) -> bool {
        self.mode == ProgressMode::Bar
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

    /// Ends the current evaluation's bar.
    pub fn finish(&self) {
        if let Ok(mut slot) = self.live.lock() {
            if let Some(bar) = slot.take().and_then(|l| l.bar) {
                bar.finish_and_clear();
            }
        }
    }
}
