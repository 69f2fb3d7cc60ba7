//! Stops a run whose credentials the server refuses.
//!
//! A wrong or missing API key makes every request fail the same way, so
//! sending the rest of the dataset only burns time (and, at some providers,
//! counts against the account). The watch judges the first window's worth of
//! samples that reach the server: if every one of them ends in 401 or 403, the
//! run stops. One sample that ends any other way (a reply, a timeout, a 500)
//! disarms it for the rest of the run: a key that worked once is not judged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::RunError;

/// Samples judged at least, so one stray 401 at `sequential` does not stop a run.
const MIN_JUDGED: u64 = 3;

/// Watches the first samples' outcomes for authentication failures.
pub struct AuthWatch {
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

impl AuthWatch {
    /// A watch over the first `window` samples (at least [`MIN_JUDGED`], at
    /// most `pending`); `key_var` names the variable of the key sent, if any.
    pub fn new(window: usize, pending: u64, key_var: Option<String>) -> AuthWatch {
        AuthWatch {
            need: (window as u64).max(MIN_JUDGED).min(pending).max(1),
            key_var,
            state: Mutex::new(State::default()),
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Sees how one sample that reached the server ended: `Some(status)` when
    /// it was refused with 401 or 403, `None` for any other ending.
    pub fn observe(&self, refused: Option<u16>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.disarmed || self.tripped.load(Ordering::SeqCst) {
            return;
        }
        match refused {
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
        RunError::Auth {
            status: s.status,
            refused: s.refused,
            key_var: self.key_var.clone(),
        }
    }
}

/// Whether `status` says the credentials are wrong.
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 401 | 403)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_when_every_judged_sample_was_refused() {
        let w = AuthWatch::new(4, 100, Some("KEY".into()));
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

        let w = AuthWatch::new(4, 100, None);
        w.observe(Some(401));
        w.observe(None);
        for _ in 0..10 {
            w.observe(Some(401));
        }
        assert!(!w.is_tripped(), "one other ending disarms it");
    }

    #[test]
    fn judges_at_least_three_and_at_most_what_is_pending() {
        let w = AuthWatch::new(1, 100, None);
        w.observe(Some(401));
        w.observe(Some(401));
        assert!(!w.is_tripped());
        w.observe(Some(401));
        assert!(w.is_tripped());

        let w = AuthWatch::new(64, 2, None);
        w.observe(Some(401));
        w.observe(Some(401));
        assert!(w.is_tripped());
    }
}
