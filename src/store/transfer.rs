//! Writing an imported configuration: every source, flow and destination of one import in
//! one write transaction, so an import is applied entirely or not at all.

use super::db::Store;
use super::destination_model::{Destination, encode_destination, ws_key};
use super::error::StoreError;
use super::flow_model::{Flow, encode_flow};
use super::schema::{DESTINATIONS, FLOWS, flow_key, installed};
use super::sources::{Source, write_source};

impl Store {
    /// Inserts or replaces `sources`, `flows` and `destinations` of `ws` in one transaction;
    /// returns `false` (writing nothing) when `ws` is not installed.
    pub async fn import_config(
        &self,
        ws: &str,
        sources: Vec<Source>,
        flows: Vec<Flow>,
        destinations: Vec<Destination>,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        let index = self.flow_index.clone();
        let destination_index = self.destination_index.clone();
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
                let mut table = wtx.open_table(DESTINATIONS)?;
                for destination in &destinations {
                    table.insert(
                        ws_key(&ws, &destination.id).as_slice(),
                        encode_destination(destination).as_slice(),
                    )?;
                }
                Ok(Some((flows, destinations)))
            },
            move |written: &Option<(Vec<Flow>, Vec<Destination>)>| {
                if let Some((flows, destinations)) = written {
                    for flow in flows {
                        index.put(flow.clone());
                    }
                    for destination in destinations {
                        destination_index.put(destination.clone());
                    }
                }
            },
        )
        .await
        .map(|written| written.is_some())
    }
}
