//! Per-task log shipping: a bounded buffer that the task's supervisor fills and
//! a shipper that drains it to the master in batches.
//!
//! The buffer never blocks the supervisor (so a task never blocks on its own
//! output while the master is away): past `log_buffer_bytes` it drops the oldest
//! bytes and the next batch starts with a marker line saying how many.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::time::unix_ms;
use cloudai_domain::{LogBatch, LogChunk, LogStream, TaskId, WorkerId};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::warn;

use crate::driver::OutputChunk;
use crate::link::{MasterLink, RetryPolicy, Undelivered, deliver_unless, output_refused};

pub(crate) struct LogBuffer {
    state: Mutex<BufferState>,
    wake: Notify,
    limit: usize,
}

#[derive(Default)]
struct BufferState {
    chunks: VecDeque<OutputChunk>,
    bytes: usize,
    /// Bytes dropped since the last marker, per stream (stdout, stderr).
    dropped: [u64; 2],
    closed: bool,
}

impl LogBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        Self { state: Mutex::default(), wake: Notify::new(), limit: limit.max(1) }
    }

    /// Appends output, dropping the oldest bytes past the limit. Output of the same stream
    /// as the last chunk joins it (up to [`MERGE_BYTES`]), so a task writing a byte at a time
    /// does not make a chunk, and a protobuf message field, of each byte.
    pub(crate) fn push(&self, chunk: OutputChunk) {
        if chunk.data.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        state.bytes += chunk.data.len();
        match state.chunks.back_mut() {
            Some(last)
                if last.stream == chunk.stream && last.data.len() + chunk.data.len() <= MERGE_BYTES =>
            {
                last.data.extend_from_slice(&chunk.data);
            }
            _ => state.chunks.push_back(chunk),
        }
        while state.bytes > self.limit {
            let excess = state.bytes - self.limit;
            let Some(front) = state.chunks.front_mut() else { break };
            let cut = excess.min(front.data.len());
            let stream = front.stream;
            if cut == front.data.len() {
                state.chunks.pop_front();
            } else {
                front.data.drain(..cut);
            }
            state.bytes -= cut;
            state.dropped[stream_index(stream)] += cut as u64;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// No more output will come; the shipper ends once the rest is shipped.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until `ready` holds, or `deadline` passes.
    async fn wait_for(&self, ready: impl Fn(&BufferState) -> bool, deadline: Option<Instant>) {
        loop {
            if ready(&self.state.lock()) {
                return;
            }
            match deadline {
                Some(deadline) => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                },
                None => self.wake.notified().await,
            }
        }
    }

    /// Takes up to `max_bytes` of output, preceded by markers for dropped bytes.
    /// Returns `None` when the buffer is closed and empty.
    fn take_batch(&self, max_bytes: usize) -> Option<Vec<OutputChunk>> {
        let mut state = self.state.lock();
        let mut batch = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let dropped = std::mem::take(&mut state.dropped[stream_index(stream)]);
            if dropped > 0 {
                let data = format!("[cloudai: {dropped} bytes of output dropped]\n").into_bytes();
                batch.push(OutputChunk { stream, data, timestamp_ms: unix_ms() });
            }
        }
        let mut taken = 0;
        while taken < max_bytes && batch.len() < MAX_BATCH_CHUNKS {
            let Some(front) = state.chunks.front_mut() else { break };
            let room = max_bytes - taken;
            let chunk = if front.data.len() <= room {
                state.chunks.pop_front()
            } else {
                let rest = front.data.split_off(room);
                let head = std::mem::replace(&mut front.data, rest);
                Some(OutputChunk { stream: front.stream, data: head, timestamp_ms: front.timestamp_ms })
            };
            let Some(chunk) = chunk else { break };
            taken += chunk.data.len();
            batch.push(chunk);
        }
        state.bytes -= taken;
        if batch.is_empty() && state.closed { None } else { Some(batch) }
    }
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

/// Largest batch shipped, whatever the configuration: a quarter of the message limit
/// leaves room for the encoding.
const MAX_BATCH_BYTES: usize = cloudai_proto::MAX_MESSAGE_BYTES / 4;

/// Chunks of one stream pushed one after the other are merged up to this size.
const MERGE_BYTES: usize = 64 * 1024;

/// Most chunks in one batch: with [`MAX_BATCH_BYTES`] of data and the master's task ids (a few
/// dozen bytes each), a batch stays under the master's message limit even when every chunk is tiny (output
/// alternating between stdout and stderr), so it is never refused for its size.
const MAX_BATCH_CHUNKS: usize = 4096;

/// Drains one task's buffer to the master.
pub(crate) struct Shipper {
    pub buffer: Arc<LogBuffer>,
    pub link: Arc<dyn MasterLink>,
    pub worker_id: WorkerId,
    pub task_id: TaskId,
    pub batch_interval: Duration,
    pub batch_bytes: usize,
    pub policy: RetryPolicy,
    /// Cancelled when the output is no longer wanted (stale task) or shutdown gave up.
    pub give_up: CancellationToken,
}

impl Shipper {
    /// Ships until the buffer is closed and empty, or `give_up` is cancelled.
    pub(crate) async fn run(self) {
        // Well under the master's message limit, so a batch is never refused for its size.
        let batch_bytes = self.batch_bytes.clamp(1, MAX_BATCH_BYTES);
        loop {
            let wait = async {
                self.buffer.wait_for(|s| !s.chunks.is_empty() || s.closed, None).await;
                // Linger for more output: a batch goes when full, at the interval, or at the end.
                let deadline = Instant::now() + self.batch_interval;
                self.buffer.wait_for(|s| s.bytes >= batch_bytes || s.closed, Some(deadline)).await;
            };
            tokio::select! {
                _ = self.give_up.cancelled() => return,
                _ = wait => {}
            }
            let Some(chunks) = self.buffer.take_batch(batch_bytes) else { return };
            if chunks.is_empty() {
                continue;
            }
            let batch = LogBatch {
                worker_id: self.worker_id.clone(),
                chunks: chunks.into_iter().map(|c| self.log_chunk(c)).collect(),
            };
            let bytes: usize = batch.chunks.iter().map(|c| c.data.len()).sum();
            let ship = || self.link.ship_logs(batch.clone());
            match deliver_unless(&self.policy, &self.give_up, output_refused, ship).await {
                Ok(()) => {}
                // The master does not take this task's output from here: nor will it take the
                // rest, so stop shipping (the buffer stays bounded; the task is stopped as stale).
                Err(Undelivered::Rejected(status))
                    if matches!(
                        status.code(),
                        Code::NotFound | Code::FailedPrecondition | Code::PermissionDenied
                    ) =>
                {
                    warn!(code = ?status.code(), message = status.message(), bytes, "master refuses this task's output; dropping it and the rest");
                    return;
                }
                Err(Undelivered::Rejected(status)) => {
                    warn!(code = ?status.code(), message = status.message(), bytes, "master rejected task output; dropping it");
                }
                Err(Undelivered::GaveUp) => return,
            }
        }
    }

    fn log_chunk(&self, chunk: OutputChunk) -> LogChunk {
        LogChunk {
            task_id: self.task_id.clone(),
            stream: chunk.stream,
            data: chunk.data,
            time_ms: chunk.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: LogStream, data: &[u8]) -> OutputChunk {
        OutputChunk { stream, data: data.to_vec(), timestamp_ms: 1 }
    }

    fn text(batch: &[OutputChunk]) -> String {
        batch.iter().map(|c| String::from_utf8_lossy(&c.data).into_owned()).collect()
    }

    #[test]
    fn batches_split_chunks_at_the_size_limit() {
        let buffer = LogBuffer::new(100);
        buffer.push(chunk(LogStream::Stdout, b"abcdef"));
        buffer.push(chunk(LogStream::Stderr, b"ghij"));
        let first = buffer.take_batch(4).expect("open buffer");
        assert_eq!(text(&first), "abcd");
        let second = buffer.take_batch(4).expect("open buffer");
        assert_eq!(text(&second), "efgh");
        assert_eq!(
            second.iter().map(|c| c.stream).collect::<Vec<_>>(),
            [LogStream::Stdout, LogStream::Stderr]
        );
        buffer.close();
        assert_eq!(text(&buffer.take_batch(4).expect("rest")), "ij");
        assert!(buffer.take_batch(4).is_none(), "closed and empty");
    }

    #[test]
    fn tiny_writes_make_few_chunks_and_a_batch_stays_under_the_message_limit() {
        let buffer = LogBuffer::new(1 << 20);
        for _ in 0..100_000 {
            buffer.push(chunk(LogStream::Stdout, b"x"));
        }
        let batch = buffer.take_batch(1 << 20).expect("open buffer");
        assert_eq!(batch.len(), 2, "100,000 one-byte writes of one stream: two merged chunks");
        assert_eq!(text(&batch), "x".repeat(100_000));

        for i in 0..100_000 {
            let stream = if i % 2 == 0 { LogStream::Stdout } else { LogStream::Stderr };
            buffer.push(chunk(stream, b"y"));
        }
        let first = buffer.take_batch(1 << 20).expect("open buffer");
        assert_eq!(first.len(), MAX_BATCH_CHUNKS, "alternating streams: capped in chunks");
        let mut rest = 0;
        while let Some(batch) = buffer.take_batch(1 << 20).filter(|b| !b.is_empty()) {
            assert!(batch.len() <= MAX_BATCH_CHUNKS);
            rest += batch.len();
        }
        assert_eq!(MAX_BATCH_CHUNKS + rest, 100_000, "nothing lost, only spread over batches");
    }

    #[test]
    fn overflow_drops_the_oldest_bytes_and_marks_each_stream() {
        let buffer = LogBuffer::new(5);
        buffer.push(chunk(LogStream::Stderr, b"12"));
        buffer.push(chunk(LogStream::Stdout, b"3456789"));
        let batch = buffer.take_batch(100).expect("open buffer");
        assert_eq!(
            text(&batch),
            "[cloudai: 2 bytes of output dropped]\n[cloudai: 2 bytes of output dropped]\n56789"
        );
        assert_eq!(batch[0].stream, LogStream::Stdout);
        assert_eq!(batch[1].stream, LogStream::Stderr);
        // Marked once: the next batch has no marker.
        buffer.push(chunk(LogStream::Stdout, b"x"));
        assert_eq!(text(&buffer.take_batch(100).expect("open buffer")), "x");
    }
}
