use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::Notify;

/// Set once when the caller of an in-flight operation goes away; the transport's blocking pop
/// and sleep watch it so a waiting guest returns promptly and cleans up after itself, and its
/// time limits count from then (see `HostState::admit`).
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelFlag(Arc<(OnceLock<Instant>, Notify)>);

impl CancelFlag {
    pub(crate) fn cancel(&self) {
        self.0.0.get_or_init(Instant::now);
        self.0.1.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.0.get().is_some()
    }

    /// When it was first cancelled.
    pub(crate) fn cancelled_at(&self) -> Option<Instant> {
        self.0.0.get().copied()
    }

    /// A flag cancelled at `at` (tests of limits that count from a cancellation).
    #[cfg(test)]
    pub(crate) fn cancelled_since(at: Instant) -> Self {
        let flag = CancelFlag::default();
        flag.0.0.get_or_init(|| at);
        flag
    }

    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Resolves when `flag` is cancelled; never without one (a call nobody can abandon).
pub(crate) async fn cancelled(flag: Option<&CancelFlag>) {
    match flag {
        Some(flag) => flag.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Cancels its flag when dropped, unless disarmed: ties a spawned operation to its caller's future.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Option<CancelFlag>);

impl CancelOnDrop {
    pub(crate) fn new(flag: CancelFlag) -> Self {
        CancelOnDrop(Some(flag))
    }

    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.cancel();
        }
    }
}
