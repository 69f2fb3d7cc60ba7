//! Ctrl-C and SIGTERM, heard once by the whole run.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Ctrl-C / SIGTERM state shared by every part of a run.
#[derive(Default)]
pub struct Interrupt {
    /// Signals received so far.
    count: AtomicU8,
    notify: Notify,
    /// Whether a run already said it is winding down (the cells of a
    /// matrix wind down together).
    said: AtomicBool,
}

impl Interrupt {
    /// Listens for Ctrl-C and SIGTERM in the background.
    pub fn install() -> Arc<Interrupt> {
        let state = Arc::new(Interrupt::default());
        let listener = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                wait_for_signal().await;
                listener.count.fetch_add(1, Ordering::SeqCst);
                listener.notify.notify_waiters();
            }
        });
        state
    }

    /// Signals received so far.
    pub fn count(&self) -> u8 {
        self.count.load(Ordering::SeqCst)
    }

    /// True for the first caller only: the one to say the run winds down.
    pub fn first_to_say(&self) -> bool {
        !self.said.swap(true, Ordering::SeqCst)
    }

    /// Resolves once at least `n` signals have arrived.
    pub async fn reached(&self, n: u8) {
        loop {
            let notified = self.notify.notified();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
