//! Workspace pauses as stored (one row per paused workspace) and their in-memory mirror:
//! the flow engine asks it before every run, and listens to its change signal so runs held
//! back start when a pause ends. `pauses` adds the methods to `Store`.

use std::collections::HashMap;
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::schema::{FLOW_PAUSES, decode};

/// What happens to runs while a workspace's flows are paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseMode {
    /// Runs stay queued (durably) and start when the pause ends.
    Queue,
    /// Runs are recorded as skipped, with the pause's reason.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowsPause {
    pub reason: String,
    pub mode: PauseMode,
    /// Unix ms.
    pub since: i64,
    /// The user id of the admin who paused (None: an operator command).
    pub by: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) enum PauseRecord {
    V1(FlowsPause),
}

/// The pauses in memory, and a counter bumped on every change.
pub(crate) struct PauseMirror {
    pub(super) pauses: Mutex<HashMap<String, FlowsPause>>,
    pub(super) changed: tokio::sync::watch::Sender<u64>,
}

impl PauseMirror {
    pub(crate) fn load(db: &redb::Database) -> Result<PauseMirror, StoreError> {
        let rtx = db.begin_read()?;
        let mut pauses = HashMap::new();
        let table = rtx.open_table(FLOW_PAUSES)?;
        for entry in table.iter()? {
            let (k, v) = entry?;
            let ws = String::from_utf8_lossy(k.value()).into_owned();
            let PauseRecord::V1(pause) = decode(v.value())?;
            pauses.insert(ws, pause);
        }
        Ok(PauseMirror {
            pauses: Mutex::new(pauses),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    pub(super) fn set(&self, ws: &str, pause: Option<FlowsPause>) {
        let mut pauses = self.pauses.lock().expect("pauses lock");
        match pause {
            Some(pause) => pauses.insert(ws.to_string(), pause),
            None => pauses.remove(ws),
        };
        drop(pauses);
        self.changed.send_modify(|n| *n += 1);
    }

    /// After the writer reopened the file: the pauses as stored.
    pub(crate) fn replace_with(&self, fresh: PauseMirror) {
        *self.pauses.lock().expect("pauses lock") = fresh.pauses.into_inner().expect("pauses lock");
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn forget(&self, ws: &str) {
        self.set(ws, None);
    }
}
