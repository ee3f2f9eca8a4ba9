//! Ctrl-C and SIGTERM for commands that run until stopped: the first one is
//! caught and noted, so a consumer can finish the event in hand, leave its
//! group or give back its leases, and exit as an interrupted command does
//! (status 128 + the signal); a second one ends the process at once.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// The stop signals a command has caught.
#[derive(Clone)]
pub(crate) struct Signals {
    caught: Arc<AtomicI32>,
    notify: Arc<Notify>,
}

/// A command stopped by a signal: it has cleaned up, and exits with
/// 128 + the signal's number, saying nothing more.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}")]
pub(crate) struct Interrupted(pub(crate) i32);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

impl Signals {
    /// Starts listening for SIGINT and SIGTERM.
    pub(crate) fn install() -> std::io::Result<Signals> {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let signals = Signals {
            caught: Arc::new(AtomicI32::new(0)),
            notify: Arc::new(Notify::new()),
        };
        let s = signals.clone();
        tokio::spawn(async move {
            loop {
                let number = tokio::select! {
                    _ = int.recv() => SIGINT,
                    _ = term.recv() => SIGTERM,
                };
                if s.caught.swap(number, Ordering::SeqCst) != 0 {
                    // The second: the user means it.
                    std::process::exit(128 + number);
                }
                s.notify.notify_waiters();
            }
        });
        Ok(signals)
    }

    /// The signal caught, if any.
    pub(crate) fn caught(&self) -> Option<Interrupted> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => Some(Interrupted(n)),
        }
    }

    /// Resolves once a signal is caught.
    pub(crate) async fn wait(&self) -> Interrupted {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a signal between the two wakes it.
            notified.as_mut().enable();
            if let Some(i) = self.caught() {
                return i;
            }
            notified.await;
        }
    }
}
