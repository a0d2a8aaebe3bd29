//! Workspace switches: "all flows of this workspace are paused", with the reason and what
//! happens to new runs meanwhile (they wait in the queue, or are skipped).

use super::db::Store;
use super::error::StoreError;
use super::pause_mirror::{FlowsPause, PauseRecord};
use super::schema::{FLOW_PAUSES, encode, installed};

impl Store {
    /// The workspace's pause, if its flows are paused.
    pub fn flows_pause(&self, ws: &str) -> Option<FlowsPause> {
        self.pauses
            .pauses
            .lock()
            .expect("pauses lock")
            .get(ws)
            .cloned()
    }

    /// Changes whenever a pause starts, changes or ends.
    pub fn pause_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pauses.changed.subscribe()
    }

    /// Pauses (`Some`) or resumes (`None`) the workspace's flows; `false` when the workspace
    /// is not installed (nothing written).
    pub async fn set_flows_pause(
        &self,
        ws: &str,
        pause: Option<FlowsPause>,
    ) -> Result<bool, StoreError> {
        let (name, after) = (ws.to_string(), ws.to_string());
        let mirror = self.pauses.clone();
        self.write_then(
            move |wtx| {
                if !installed(wtx, &name)? {
                    return Ok(None);
                }
                let mut table = wtx.open_table(FLOW_PAUSES)?;
                match &pause {
                    Some(p) => {
                        table.insert(
                            name.as_bytes(),
                            encode(&PauseRecord::V1(p.clone())).as_slice(),
                        )?;
                    }
                    None => {
                        table.remove(name.as_bytes())?;
                    }
                }
                Ok(Some(pause))
            },
            move |written: &Option<Option<FlowsPause>>| {
                if let Some(pause) = written {
                    mirror.set(&after, pause.clone());
                }
            },
        )
        .await
        .map(|written| written.is_some())
    }
}
