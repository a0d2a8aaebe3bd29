//! The hand-over of committed runs to the flow engine (right after the commit that queued
//! them, in commit order) and the announcement of finished ones.

use std::sync::Arc;
use std::time::Instant;

use super::event_record::StoredEvent;
use super::flow_model::QueuedRun;
use super::schema::RunId;

/// Hands committed runs to the engine and announces finished ones.
pub(crate) struct RunDispatch {
    sender: tokio::sync::mpsc::UnboundedSender<QueuedRun>,
    /// Taken once, by the flow engine.
    pub(super) receiver: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<QueuedRun>>>,
    pub(super) finished: tokio::sync::broadcast::Sender<RunId>,
}

impl RunDispatch {
    pub(crate) fn new() -> RunDispatch {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        RunDispatch {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            finished: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Called after the commit that queued `runs`.
    pub(crate) fn committed(&self, runs: &[QueuedRun], event: Option<&Arc<StoredEvent>>) {
        let now = Instant::now();
        for queued in runs {
            // A closed receiver means no engine runs (e.g. shutting down): the queue table
            // still holds the run for the next start.
            let _ = self.sender.send(QueuedRun {
                run: queued.run.clone(),
                event: event.cloned().or_else(|| queued.event.clone()),
                committed: Some(now),
            });
        }
        if !runs.is_empty() {
            metrics::gauge!("flow_queue_depth").increment(runs.len() as f64);
        }
    }
}
