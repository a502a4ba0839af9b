//! The command streams to workers: the task actor queues start and cancel commands here,
//! and the gRPC service streams them, converted to the wire, to the worker that opened its stream.

use std::collections::HashMap;
use std::sync::Arc;

use cloudai_domain::{WorkerCommand, WorkerId};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Commands buffered per worker stream before the sender must wait.
const COMMAND_BUFFER: usize = 256;

type CommandSender = mpsc::Sender<WorkerCommand>;

/// Open command streams, one per connected worker.
#[derive(Clone, Default)]
pub struct CommandHub {
    streams: Arc<Mutex<HashMap<WorkerId, CommandSender>>>,
}

impl CommandHub {
    /// A worker opened its stream: a newer one from the same worker replaces the old one.
    pub(crate) fn attach(&self, worker_id: WorkerId) -> mpsc::Receiver<WorkerCommand> {
        let (tx, rx) = mpsc::channel(COMMAND_BUFFER);
        self.streams.lock().insert(worker_id, tx);
        rx
    }

    /// Queues a command for a worker; `false` if it has no open stream or its buffer is full.
    pub fn send(&self, worker_id: &WorkerId, command: WorkerCommand) -> bool {
        let tx = self.streams.lock().get(worker_id).cloned();
        tx.is_some_and(|tx| tx.try_send(command).is_ok())
    }
}
