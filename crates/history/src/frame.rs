//! A columnar block: one timestamp stream shared by several Gorilla value streams.
//!
//! Sharing the timestamps is what keeps a worker's hour small: the fields of one heartbeat
//! always carry the same timestamp, so it is encoded once per row rather than once per field.
//! A sealed frame keeps all its columns in one buffer with a small index, since per-column
//! buffers and encoder state would otherwise cost more than the data of a short column.

use crate::bits::{BitReader, BitWriter};
use crate::gorilla::{TsCodec, ValueCodec};

/// A column still being written.
#[derive(Clone, Debug)]
struct Column<K> {
    key: K,
    /// Rows before this one predate the column (a GPU that appeared later) and read as NaN.
    first_row: u32,
    /// Rows written so far including the implicit NaN prefix; guards against a key twice per row.
    rows: u32,
    bits: BitWriter,
    codec: ValueCodec,
}

/// A sealed column: its stream ends at `end_bit` of the shared buffer, starting where the
/// previous column's ends. It holds a value for every row from `first_row` on.
#[derive(Clone, Debug)]
struct SealedColumn<K> {
    key: K,
    first_row: u32,
    end_bit: u64,
}

#[derive(Clone, Debug)]
enum Columns<K> {
    Open(Vec<Column<K>>),
    Sealed { index: Vec<SealedColumn<K>>, bits: BitWriter },
}

/// Rows of `(timestamp, values by key)`; a key absent from a row reads back as NaN.
#[derive(Clone, Debug)]
pub(crate) struct Frame<K> {
    ts_bits: BitWriter,
    ts_codec: TsCodec,
    rows: u32,
    min_ts: i64,
    max_ts: i64,
    columns: Columns<K>,
}

impl<K: Ord + Copy> Frame<K> {
    pub(crate) fn new() -> Self {
        Self {
            ts_bits: BitWriter::default(),
            ts_codec: TsCodec::default(),
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            columns: Columns::Open(Vec::new()),
        }
    }

    /// Appends a row. On a sealed frame this first unpacks it (a late sample: rare, O(frame)).
    pub(crate) fn push_row(&mut self, ts: i64, values: impl IntoIterator<Item = (K, f64)>) {
        let row = self.rows;
        let columns = self.open_columns();
        for (key, value) in values {
            let idx = match columns.binary_search_by(|c| c.key.cmp(&key)) {
                Ok(idx) => idx,
                Err(idx) => {
                    let column = Column {
                        key,
                        first_row: row,
                        rows: row,
                        bits: BitWriter::default(),
                        codec: ValueCodec::default(),
                    };
                    columns.insert(idx, column);
                    idx
                }
            };
            let column = &mut columns[idx];
            if column.rows == row {
                column.codec.encode(&mut column.bits, value);
                column.rows += 1;
            }
        }
        for column in columns.iter_mut() {
            if column.rows == row {
                column.codec.encode(&mut column.bits, f64::NAN);
                column.rows += 1;
            }
        }
        self.ts_codec.encode(&mut self.ts_bits, ts);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.rows += 1;
    }

    fn open_columns(&mut self) -> &mut Vec<Column<K>> {
        if let Columns::Sealed { index, bits } = &self.columns {
            let mut open = Vec::with_capacity(index.len());
            let mut start = 0;
            for sealed in index {
                let mut column = Column {
                    key: sealed.key,
                    first_row: sealed.first_row,
                    rows: self.rows,
                    bits: BitWriter::default(),
                    codec: ValueCodec::default(),
                };
                // Decoding to the end leaves the codec in the state the encoder had.
                let mut reader = bits.reader_range(start, sealed.end_bit);
                for _ in sealed.first_row..self.rows {
                    column.codec.decode(&mut reader);
                }
                column.bits.copy_from(bits.reader_range(start, sealed.end_bit));
                start = sealed.end_bit;
                open.push(column);
            }
            self.columns = Columns::Open(open);
        }
        match &mut self.columns {
            Columns::Open(columns) => columns,
            Columns::Sealed { .. } => unreachable!("unpacked just above"),
        }
    }

    /// Packs the columns into one buffer; the frame stays appendable (late samples may land).
    pub(crate) fn seal(&mut self) {
        self.ts_bits.shrink();
        let Columns::Open(columns) = &self.columns else { return };
        let mut bits = BitWriter::with_capacity(columns.iter().map(|c| c.bits.len()).sum());
        let index = columns
            .iter()
            .map(|c| {
                bits.copy_from(c.bits.reader());
                SealedColumn { key: c.key, first_row: c.first_row, end_bit: bits.len() }
            })
            .collect();
        self.columns = Columns::Sealed { index, bits };
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows as usize
    }

    /// Smallest and largest timestamp, `None` when empty.
    pub(crate) fn ts_range(&self) -> Option<(i64, i64)> {
        (self.rows > 0).then_some((self.min_ts, self.max_ts))
    }

    pub(crate) fn timestamps(&self) -> Vec<i64> {
        let mut reader = self.ts_bits.reader();
        let mut codec = TsCodec::default();
        (0..self.rows).map_while(|_| codec.decode(&mut reader)).collect()
    }

    pub(crate) fn keys(&self) -> Vec<K> {
        match &self.columns {
            Columns::Open(columns) => columns.iter().map(|c| c.key).collect(),
            Columns::Sealed { index, .. } => index.iter().map(|c| c.key).collect(),
        }
    }

    /// All `rows()` values of one column, NaN where the row lacked the key.
    pub(crate) fn column(&self, key: K) -> Option<Vec<f64>> {
        let (first_row, reader) = match &self.columns {
            Columns::Open(columns) => {
                let column = &columns[columns.binary_search_by(|c| c.key.cmp(&key)).ok()?];
                (column.first_row, column.bits.reader())
            }
            Columns::Sealed { index, bits } => {
                let i = index.binary_search_by(|c| c.key.cmp(&key)).ok()?;
                let start = i.checked_sub(1).map_or(0, |prev| index[prev].end_bit);
                (index[i].first_row, bits.reader_range(start, index[i].end_bit))
            }
        };
        Some(self.decode_column(first_row, reader))
    }

    fn decode_column(&self, first_row: u32, mut reader: BitReader<'_>) -> Vec<f64> {
        let mut values = vec![f64::NAN; first_row as usize];
        let mut codec = ValueCodec::default();
        values.extend((first_row..self.rows).map_while(|_| codec.decode(&mut reader)));
        values
    }

    /// Compressed size of every stream, in bits.
    pub(crate) fn compressed_bits(&self) -> u64 {
        self.ts_bits.len()
            + match &self.columns {
                Columns::Open(columns) => columns.iter().map(|c| c.bits.len()).sum(),
                Columns::Sealed { bits, .. } => bits.len(),
            }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.ts_bits.heap_bytes()
            + match &self.columns {
                Columns::Open(columns) => {
                    columns.capacity() * size_of::<Column<K>>()
                        + columns.iter().map(|c| c.bits.heap_bytes()).sum::<usize>()
                }
                Columns::Sealed { index, bits } => {
                    index.capacity() * size_of::<SealedColumn<K>>() + bits.heap_bytes()
                }
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: &Frame<u8>) {
        assert_eq!(f.timestamps(), vec![0, 5, 3]);
        assert_eq!(f.ts_range(), Some((0, 5)));
        let one = f.column(1).unwrap();
        assert_eq!(&one[..2], &[1.0, 2.0]);
        assert!(one[2].is_nan());
        let two = f.column(2).unwrap();
        assert!(two[0].is_nan());
        assert_eq!(&two[1..], &[20.0, 30.0]);
        assert_eq!(f.keys(), vec![1, 2]);
        assert_eq!(f.column(3), None);
    }

    #[test]
    fn late_and_missing_keys_read_as_nan_open_or_sealed() {
        let mut f = Frame::new();
        f.push_row(0, [(1u8, 1.0)]);
        f.push_row(5, [(1, 2.0), (2, 20.0), (2, 99.0)]);
        f.push_row(3, [(2, 30.0)]);
        check(&f);
        let bits = f.compressed_bits();
        f.seal();
        check(&f);
        assert_eq!(f.compressed_bits(), bits);
    }

    #[test]
    fn a_sealed_frame_takes_more_rows_and_encodes_them_as_before() {
        let mut continuous = Frame::new();
        let mut resealed = Frame::new();
        for i in 0..50u32 {
            let row = [(0u8, f64::from(i) * 0.1), (i as u8 % 3, -f64::from(i))];
            continuous.push_row(i64::from(i) * 5_000, row);
            resealed.push_row(i64::from(i) * 5_000, row);
            if i % 7 == 0 {
                resealed.seal();
            }
        }
        resealed.seal();
        continuous.seal();
        assert_eq!(resealed.compressed_bits(), continuous.compressed_bits());
        for key in continuous.keys() {
            let (a, b) = (continuous.column(key).unwrap(), resealed.column(key).unwrap());
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
