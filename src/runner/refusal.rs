//! Stops a run whose requests the server refuses as written.
//!
//! A wrong or missing API key, a model name the server does not serve or a
//! bad path in `base_url` makes every request fail the same way, so sending
//! the rest of the dataset only burns time (and, at some providers, counts
//! against the account). The watch judges the first window's worth of samples
//! that reach the server: if every one of them is refused with the same status
//! (401, 403, or a 4xx such as 400, 404 or 422 that is not about load), the
//! run stops. One sample that ends any other way (a reply, a timeout, a 500,
//! another status) disarms it for the rest of the run: a request that worked
//! once, or refusals that differ, are about samples, not the setup.
//! Samples retried after an error in an earlier run are not judged (a refusal
//! may be their own, such as a prompt too long), or every rerun would stop at
//! them again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::RunError;

/// Samples judged at least, so one stray 401 at `sequential` does not stop a run.
const MIN_JUDGED: u64 = 3;

/// Watches the first samples' outcomes for authentication failures.
pub struct RefusalWatch {
    /// Samples to judge: the first window's worth (fewer if fewer are pending).
    need: u64,
    /// The variable the key came from, when a key was sent.
    key_var: Option<String>,
    state: Mutex<State>,
    tripped: AtomicBool,
    notify: Notify,
}

#[derive(Default)]
struct State {
    /// Samples judged so far, all refused.
    refused: u64,
    /// The last refusal's status.
    status: u16,
    /// A sample ended another way: the watch is off.
    disarmed: bool,
}

impl RefusalWatch {
    /// A watch over the first `window` samples (at least [`MIN_JUDGED`], at
    /// most `pending`); `key_var` names the variable of the key sent, if any.
    pub fn new(window: usize, pending: u64, key_var: Option<String>) -> RefusalWatch {
        RefusalWatch {
            need: (window as u64).max(MIN_JUDGED).min(pending).max(1),
            key_var,
            state: Mutex::new(State::default()),
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Sees how one sample that reached the server ended: `Some(status)` when
    /// it was refused ([`is_refusal`]), `None` for any other ending.
    pub fn observe(&self, refused: Option<u16>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.disarmed || self.tripped.load(Ordering::SeqCst) {
            return;
        }
        match refused {
            Some(status) if s.refused > 0 && kind(status) != kind(s.status) => s.disarmed = true,
            Some(status) => {
                s.refused += 1;
                s.status = status;
                if s.refused >= self.need {
                    self.tripped.store(true, Ordering::SeqCst);
                    self.notify.notify_waiters();
                }
            }
            None => s.disarmed = true,
        }
    }

    /// Whether the run must stop.
    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Resolves once the run must stop (never, if it need not).
    pub async fn tripped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_tripped() {
                return;
            }
            notified.await;
        }
    }

    /// The error that stops the run.
    pub fn error(&self) -> RunError {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        RunError::Refused {
            status: s.status,
            refused: s.refused,
            key_var: self.key_var.clone(),
        }
    }
}

/// Refusals of one kind: 401 and 403 both mean the credentials; others by status.
fn kind(status: u16) -> u16 {
    if matches!(status, 401 | 403) {
        401
    } else {
        status
    }
}

/// Whether `status` refuses the request as written: credentials (401, 403) or
/// the request itself. 408, 409, 425 and 429 are about timing or load, and a
/// 413 about one sample's size, so they are not.
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 400..=499) && !matches!(status, 408 | 409 | 413 | 425 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_when_every_judged_sample_was_refused() {
        let w = RefusalWatch::new(4, 100, Some("KEY".into()));
        for _ in 0..3 {
            w.observe(Some(401));
        }
        assert!(!w.is_tripped());
        w.observe(Some(403));
        assert!(w.is_tripped());
        let message = w.error().to_string();
        assert!(
            message.contains("KEY") && message.contains("403"),
            "{message}"
        );

        let w = RefusalWatch::new(3, 100, None);
        for status in [404, 404, 404] {
            w.observe(Some(status));
        }
        assert!(w.is_tripped(), "the same 404 three times");
        assert!(w.error().to_string().contains("HTTP 404"));

        let w = RefusalWatch::new(3, 100, None);
        for status in [400, 422, 400, 400, 400] {
            w.observe(Some(status));
        }
        assert!(!w.is_tripped(), "refusals that differ are about samples");
        assert!(!is_refusal(429) && !is_refusal(408) && !is_refusal(500));

        let w = RefusalWatch::new(4, 100, None);
        w.observe(Some(401));
        w.observe(None);
        for _ in 0..10 {
            w.observe(Some(401));
        }
        assert!(!w.is_tripped(), "one other ending disarms it");
    }

    #[test]
    fn judges_at_least_three_and_at_most_what_is_pending() {
        let w = RefusalWatch::new(1, 100, None);
        w.observe(Some(401));
        w.observe(Some(401));
        assert!(!w.is_tripped());
        w.observe(Some(401));
        assert!(w.is_tripped());

        let w = RefusalWatch::new(64, 2, None);
        w.observe(Some(401));
        w.observe(Some(401));
        assert!(w.is_tripped());
    }
}
