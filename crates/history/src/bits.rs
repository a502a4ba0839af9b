//! Bit-level writer and reader over `u64` words, most significant bit first.

/// Appends bit fields to a growing `Vec<u64>`; amortised O(1) per write.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    words: Vec<u64>,
    len: u64,
}

impl BitWriter {
    /// Writes the low `n` bits of `value` (`n <= 64`).
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let value = if n == 64 { value } else { value & ((1u64 << n) - 1) };
        let used = (self.len % 64) as u32;
        if used == 0 {
            self.words.push(0);
        }
        let free = 64 - used;
        let last = self.words.len() - 1;
        if n <= free {
            self.words[last] |= value << (free - n);
        } else {
            let spill = n - free;
            self.words[last] |= value >> spill;
            self.words.push(value << (64 - spill));
        }
        self.len += u64::from(n);
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn reader(&self) -> BitReader<'_> {
        self.reader_range(0, self.len)
    }

    /// A reader over bits `[start, end)` (clamped to what was written).
    pub(crate) fn reader_range(&self, start: u64, end: u64) -> BitReader<'_> {
        let end = end.min(self.len);
        BitReader { words: &self.words, pos: start.min(end), len: end }
    }

    /// Appends everything `reader` has left.
    pub(crate) fn copy_from(&mut self, mut reader: BitReader<'_>) {
        while reader.remaining() > 0 {
            let n = reader.remaining().min(64) as u32;
            let Some(bits) = reader.read(n) else { return };
            self.write(bits, n);
        }
    }

    pub(crate) fn with_capacity(bits: u64) -> Self {
        BitWriter { words: Vec::with_capacity(bits.div_ceil(64) as usize), len: 0 }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.words.capacity() * size_of::<u64>()
    }

    /// Drops spare capacity once no more writes are expected (a sealed block).
    pub(crate) fn shrink(&mut self) {
        self.words.shrink_to_fit();
    }
}

/// Reads bit fields back; every read is bounds-checked and returns `None` past the end.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    words: &'a [u64],
    pos: u64,
    len: u64,
}

impl BitReader<'_> {
    pub(crate) fn read(&mut self, n: u32) -> Option<u64> {
        debug_assert!(n <= 64);
        if n == 0 {
            return Some(0);
        }
        if self.pos + u64::from(n) > self.len {
            return None;
        }
        let idx = (self.pos / 64) as usize;
        let off = (self.pos % 64) as u32;
        let mut window = self.words.get(idx).copied()? << off;
        if off > 0 && n > 64 - off {
            window |= self.words.get(idx + 1).copied()? >> (64 - off);
        }
        self.pos += u64::from(n);
        Some(window >> (64 - n))
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        self.read(1).map(|b| b == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_every_width_round_trip_across_word_edges() {
        let mut w = BitWriter::default();
        let fields: Vec<(u64, u32)> =
            (1..=64).map(|n| (0xDEAD_BEEF_CAFE_F00D_u64.rotate_left(n), n)).collect();
        for &(v, n) in &fields {
            w.write(v, n);
        }
        let mut r = w.reader();
        for &(v, n) in &fields {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            assert_eq!(r.read(n), Some(v & mask), "width {n}");
        }
        assert_eq!(r.read(1), None);

        let mut copy = BitWriter::default();
        copy.write(1, 3);
        copy.copy_from(w.reader_range(5, w.len()));
        let mut a = copy.reader();
        let mut b = w.reader_range(5, w.len());
        assert_eq!(a.read(3), Some(1));
        assert_eq!(a.remaining(), b.remaining());
        while let Some(bit) = b.read_bit() {
            assert_eq!(a.read_bit(), Some(bit));
        }
    }
}
