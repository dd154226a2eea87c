//! Warnings a client can cause, rate-limited: a client that sends garbage and reconnects in a
//! loop must not fill the log (it did: 8 MB in a minute of one such client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning of a kind in this long; the others are counted and reported with it.
const EVERY: Duration = Duration::from_secs(10);

/// One kind of warning and when it was last written.
struct Limiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Limiter {
    const fn new() -> Limiter {
        Limiter { last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// Whether to write this one, and how many were left out since the last one written.
    fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

static DROPPED: Limiter = Limiter::new();
static REFUSED: Limiter = Limiter::new();
static ACCEPT: Limiter = Limiter::new();

/// A listener had no room for another connection.
pub(crate) fn refused_a_client(listener: &str, limit: usize) {
    if let Some(more) = REFUSED.admit() {
        tracing::warn!(listener, limit, more, "closing a new connection: {limit} are open");
    }
}

/// accept(2) failed; the listener waits and tries again.
pub(crate) fn accept_failed(listener: &str, error: &std::io::Error, pause: Duration) {
    if let Some(more) = ACCEPT.admit() {
        tracing::warn!(listener, %error, ?pause, more, "accepting a connection failed; retrying");
    }
}

/// A client broke the protocol and was disconnected.
pub(crate) fn dropping_a_client(peer: &str, error: &dyn std::fmt::Display) {
    match DROPPED.admit() {
        Some(0) => tracing::warn!(%peer, %error, "dropping a client"),
        Some(more) => {
            tracing::warn!(%peer, %error, more, "dropping a client (and {more} more since the last warning)")
        }
        None => tracing::debug!(%peer, %error, "dropping a client"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_with_the_count_of_the_others() {
        let limiter = Limiter::new();
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);
        *limiter.last.lock().expect("lock") = Some(Instant::now() - EVERY);
        assert_eq!(limiter.admit(), Some(2));
    }
}
