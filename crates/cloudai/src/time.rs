//! Wall-clock helpers (unix time as the API reports it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Seconds since the unix epoch.
pub fn unix_secs() -> i64 {
    unix_ms() / 1000
}
