//! Per-task status reports: delivered in order, each retried until the master accepts it.

use std::sync::Arc;

use cloudai_domain::TaskReport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::link::{MasterLink, RetryPolicy, Undelivered, deliver_unless, report_refused};

/// Delivers one task's reports, in the order they were queued.
pub(crate) struct Reporter {
    pub reports: mpsc::UnboundedReceiver<TaskReport>,
    pub link: Arc<dyn MasterLink>,
    pub policy: RetryPolicy,
    /// Cancelled when the reports are no longer wanted (stale task) or shutdown gave up.
    pub give_up: CancellationToken,
    /// Called when the master answers `keep_running = false` to a report of a live task.
    pub on_stale: Box<dyn FnOnce() + Send>,
}

impl Reporter {
    /// Runs until the queue is closed and drained, the task turns out stale, or `give_up`.
    pub(crate) async fn run(mut self) {
        while let Some(report) = self.reports.recv().await {
            let link = &self.link;
            let ack = deliver_unless(&self.policy, &self.give_up, report_refused, || {
                link.report_status(report.clone())
            })
            .await;
            match ack {
                Ok(ack) if ack.keep_running || report.update.is_final() => {}
                Ok(_) => {
                    info!(status = %report.update, "master no longer wants this task; stopping it");
                    (self.on_stale)();
                    return;
                }
                Err(Undelivered::Rejected(status)) if status.code() == tonic::Code::PermissionDenied => {
                    info!(
                        message = status.message(),
                        "the task is placed on another worker; stopping this copy"
                    );
                    (self.on_stale)();
                    return;
                }
                Err(Undelivered::Rejected(status)) => {
                    warn!(report = %report.update, code = ?status.code(), message = status.message(), "master rejected a task status report; skipping it");
                }
                Err(Undelivered::GaveUp) => {
                    // Stale task or shutdown past its deadline: whoever gave up logs why.
                    debug!(report = %report.update, lost = 1 + self.reports.len(), "status reports abandoned");
                    return;
                }
            }
        }
    }
}
