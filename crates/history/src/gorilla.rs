//! Gorilla compression (Pelkonen et al., VLDB 2015): delta-of-delta timestamps and XOR floats.
//!
//! Departures from the paper, both so that any `i64` sequence round-trips: the first timestamp
//! is stored raw (64 bits) and the widest bucket is split into a 32-bit one and a 64-bit escape,
//! with wrapping arithmetic throughout, so backwards or wild timestamps cost bits, never data.

use crate::bits::{BitReader, BitWriter};

/// Delta-of-delta state; the same struct drives encoding and decoding.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TsCodec {
    started: bool,
    prev: i64,
    delta: i64,
}

/// (prefix, prefix length, payload bits) per bucket, narrowest first.
const TS_BUCKETS: [(u64, u32, u32); 4] = [(0b10, 2, 7), (0b110, 3, 9), (0b1110, 4, 12), (0b11110, 5, 32)];
const TS_ESCAPE: (u64, u32) = (0b11111, 5);

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

impl TsCodec {
    pub(crate) fn encode(&mut self, w: &mut BitWriter, ts: i64) {
        if !self.started {
            w.write(ts as u64, 64);
            *self = Self { started: true, prev: ts, delta: 0 };
            return;
        }
        let delta = ts.wrapping_sub(self.prev);
        let dod = delta.wrapping_sub(self.delta);
        self.prev = ts;
        self.delta = delta;
        if dod == 0 {
            w.write_bit(false);
            return;
        }
        for (prefix, prefix_len, bits) in TS_BUCKETS {
            if fits(dod, bits) {
                w.write(prefix, prefix_len);
                w.write(dod as u64, bits);
                return;
            }
        }
        w.write(TS_ESCAPE.0, TS_ESCAPE.1);
        w.write(dod as u64, 64);
    }

    pub(crate) fn decode(&mut self, r: &mut BitReader<'_>) -> Option<i64> {
        if !self.started {
            let ts = r.read(64)? as i64;
            *self = Self { started: true, prev: ts, delta: 0 };
            return Some(ts);
        }
        // Count leading ones (at most 5) to pick the bucket.
        let mut ones = 0;
        while ones < 5 && r.read_bit()? {
            ones += 1;
        }
        let dod = match ones {
            0 => 0,
            1..=4 => {
                let bits = TS_BUCKETS[ones - 1].2;
                sign_extend(r.read(bits)?, bits)
            }
            _ => r.read(64)? as i64,
        };
        self.delta = self.delta.wrapping_add(dod);
        self.prev = self.prev.wrapping_add(self.delta);
        Some(self.prev)
    }
}

/// XOR float state; `lead == NO_WINDOW` until the first meaningful-bit window is set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueCodec {
    started: bool,
    prev: u64,
    lead: u32,
    trail: u32,
}

const NO_WINDOW: u32 = u32::MAX;

impl Default for ValueCodec {
    fn default() -> Self {
        Self { started: false, prev: 0, lead: NO_WINDOW, trail: 0 }
    }
}

impl ValueCodec {
    pub(crate) fn encode(&mut self, w: &mut BitWriter, value: f64) {
        let bits = value.to_bits();
        if !self.started {
            w.write(bits, 64);
            self.started = true;
            self.prev = bits;
            return;
        }
        let xor = bits ^ self.prev;
        self.prev = bits;
        if xor == 0 {
            w.write_bit(false);
            return;
        }
        // Five bits hold the leading-zero count, so it is capped at 31 as in the paper.
        let lead = xor.leading_zeros().min(31);
        let trail = xor.trailing_zeros();
        if self.lead != NO_WINDOW && lead >= self.lead && trail >= self.trail {
            w.write(0b10, 2);
            w.write(xor >> self.trail, 64 - self.lead - self.trail);
            return;
        }
        let meaningful = 64 - lead - trail;
        w.write(0b11, 2);
        w.write(u64::from(lead), 5);
        // 64 meaningful bits do not fit in six; 0 stands for 64 (0 itself never occurs).
        w.write(u64::from(meaningful % 64), 6);
        w.write(xor >> trail, meaningful);
        self.lead = lead;
        self.trail = trail;
    }

    pub(crate) fn decode(&mut self, r: &mut BitReader<'_>) -> Option<f64> {
        if !self.started {
            self.prev = r.read(64)?;
            self.started = true;
            return Some(f64::from_bits(self.prev));
        }
        if !r.read_bit()? {
            return Some(f64::from_bits(self.prev));
        }
        if r.read_bit()? {
            let lead = r.read(5)? as u32;
            let meaningful = match r.read(6)? as u32 {
                0 => 64,
                m => m,
            };
            // Corrupt input could claim more bits than a word holds.
            self.trail = 64u32.checked_sub(lead + meaningful)?;
            self.lead = lead;
        } else if self.lead == NO_WINDOW {
            return None;
        }
        let xor = r.read(64 - self.lead - self.trail)? << self.trail;
        self.prev ^= xor;
        Some(f64::from_bits(self.prev))
    }
}

/// A compressed `(timestamp_ms, value)` series in one bit stream, as in the paper.
///
/// `push` is O(1) amortised; reading decodes from the start. Every input round-trips exactly:
/// float bit patterns (NaN payloads, -0.0, infinities) and timestamps in any order.
#[derive(Clone, Debug, Default)]
pub struct GorillaSeries {
    bits: BitWriter,
    len: usize,
    ts: TsCodec,
    value: ValueCodec,
}

impl GorillaSeries {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, timestamp_ms: i64, value: f64) {
        self.ts.encode(&mut self.bits, timestamp_ms);
        self.value.encode(&mut self.bits, value);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the compressed stream in bits.
    pub fn compressed_bits(&self) -> u64 {
        self.bits.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.bits.heap_bytes()
    }

    pub fn iter(&self) -> GorillaIter<'_> {
        GorillaIter {
            reader: self.bits.reader(),
            remaining: self.len,
            ts: TsCodec::default(),
            value: ValueCodec::default(),
        }
    }
}

impl<'a> IntoIterator for &'a GorillaSeries {
    type Item = (i64, f64);
    type IntoIter = GorillaIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Decodes a [`GorillaSeries`] in insertion order.
#[derive(Clone, Debug)]
pub struct GorillaIter<'a> {
    reader: BitReader<'a>,
    remaining: usize,
    ts: TsCodec,
    value: ValueCodec,
}

impl Iterator for GorillaIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let ts = self.ts.decode(&mut self.reader)?;
        let value = self.value.decode(&mut self.reader)?;
        Some((ts, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_series_costs_a_few_bits_per_point() {
        let mut s = GorillaSeries::new();
        for i in 0..720 {
            s.push(1_700_000_000_000 + i * 5_000, 42.0);
        }
        // 128 bits of header, one 37-bit first delta, then one bit each for ts and value.
        assert!(s.compressed_bits() < 128 + 40 + 2 * 720, "{}", s.compressed_bits());
        assert!(s.iter().all(|(_, v)| v == 42.0));
    }

    #[test]
    fn special_values_and_backwards_timestamps_round_trip() {
        let points = [
            (10, f64::NAN),
            (5, -0.0),
            (5, 0.0),
            (i64::MIN, f64::INFINITY),
            (i64::MAX, f64::NEG_INFINITY),
            (-3, f64::from_bits(0x7FF0_0000_0000_0001)),
            (0, f64::MIN_POSITIVE),
        ];
        let mut s = GorillaSeries::new();
        for (t, v) in points {
            s.push(t, v);
        }
        let back: Vec<(i64, u64)> = s.iter().map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = points.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(back, want);
    }
}
