//! Failed token attempts per client address: past the limit in a window, the address is
//! refused (429) until the window ends, so a token cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses tracked at most; past it, windows that ended are dropped first.
const MAX_TRACKED: usize = 65_536;

#[derive(Clone)]
pub struct FailedAttempts {
    max: u32,
    window: Duration,
    seen: Arc<Mutex<HashMap<IpAddr, Window>>>,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl FailedAttempts {
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max: max.max(1), window, seen: Arc::default() }
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock();
        let w = seen.get(&ip)?;
        let left = self.window.checked_sub(now.saturating_duration_since(w.start))?;
        (w.failures >= self.max && !left.is_zero()).then_some(left)
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            let window = self.window;
            seen.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if seen.len() >= MAX_TRACKED {
                // Every tracked address is in a live window: forget one rather than grow.
                if let Some(any) = seen.keys().next().copied() {
                    seen.remove(&any);
                }
            }
        }
        let w = seen.entry(ip).or_insert(Window { start: now, failures: 0 });
        if now.saturating_duration_since(w.start) >= self.window {
            *w = Window { start: now, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_the_limit_until_its_window_ends() {
        let limiter = FailedAttempts::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.blocked(a, t0), None);
            limiter.failed(a, t0);
        }
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(limiter.blocked(b, t0), None, "another address is not affected");
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(60)), None, "the window ended");
        limiter.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(limiter.blocked(a, t0 + Duration::from_secs(61)), None, "a new window starts at one");
    }
}
