//! The wall clock as the API reports it. The rest of the domain takes times as arguments;
//! this is for the callers that read the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds since the unix epoch.
pub fn unix_secs() -> i64 {
    unix_ms() / 1000
}
