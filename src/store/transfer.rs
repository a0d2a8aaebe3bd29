//! Writing an imported configuration: every source and flow of one import in one write
//! transaction, so an import is applied entirely or not at all.

use super::db::Store;
use super::error::StoreError;
use super::flow_model::{Flow, encode_flow};
use super::schema::{FLOWS, flow_key, installed};
use super::sources::{Source, write_source};

impl Store {
    /// Inserts or replaces `sources` and `flows` of `ws` in one transaction; returns `false`
    /// (writing nothing) when `ws` is not installed.
    pub async fn import_config(
        &self,
        ws: &str,
        sources: Vec<Source>,
        flows: Vec<Flow>,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        let index = self.flow_index.clone();
        self.write_then(
            move |wtx| {
                if !installed(wtx, &ws)? {
                    return Ok(None);
                }
                for source in &sources {
                    write_source(wtx, source)?;
                }
                let mut table = wtx.open_table(FLOWS)?;
                for flow in &flows {
                    table.insert(
                        flow_key(&ws, &flow.id).as_slice(),
                        encode_flow(flow).as_slice(),
                    )?;
                }
                Ok(Some(flows))
            },
            move |written: &Option<Vec<Flow>>| {
                for flow in written.iter().flatten() {
                    index.put(flow.clone());
                }
            },
        )
        .await
        .map(|written| written.is_some())
    }
}
