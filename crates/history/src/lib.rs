//! Compressed in-memory telemetry history per worker, pure and synchronous.
//!
//! - [`GorillaSeries`]: a `(timestamp_ms, f64)` series compressed as in Facebook's Gorilla
//!   paper, round-tripping every input exactly.
//! - [`History`]: one worker's raw samples for the last `window`, in fixed-duration blocks of
//!   Gorilla columns sharing one timestamp stream, plus a minute tier (min/avg/max/count)
//!   for `long_window` that `append` hands out as minutes close, so the master can persist
//!   them and [`History::restore`] them after a restart.
//!
//! In a `History`, NaN and infinite figures count as missing data (queries and buckets skip
//! them), and figures are kept to f32 precision, which halves the size of derived ones.
#![forbid(unsafe_code)]

mod bits;
mod frame;
mod gorilla;
mod history;
mod minute;
mod query;
mod sample;

pub use gorilla::{GorillaIter, GorillaSeries};
pub use history::{History, HistoryConfig, HistoryStats};
pub use minute::{FieldStats, MINUTE_MS, MinuteBucket, decode_buckets, encode_buckets};
pub use query::{Point, Series};
pub use sample::{Field, Sample};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invalid history config: {0}")]
    InvalidConfig(&'static str),
    #[error("unknown telemetry field {0:?}")]
    UnknownField(String),
    #[error("malformed minute buckets: {0}")]
    Decode(String),
}
