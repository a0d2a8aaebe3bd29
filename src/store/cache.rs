//! Workspace context kept for the UI and flows: the entity cache filled by bootstrap, the
//! bootstrap's own progress, and the explorer's execution history.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::schema::{
    BOOTSTRAP, ENTITIES, EXECUTIONS, decode, encode, ids_before, prefix_end, two_part_prefix,
    with_suffix, workspace_prefix,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub entity_type: String,
    pub id: String,
    pub name: Option<String>,
    pub fetched_at: i64,
    /// The item as Clockify returned it (JSON text).
    pub data: String,
}

#[derive(Serialize, Deserialize)]
enum EntityRecord {
    V1(Entity),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed(String),
}

/// One operation of a bootstrap and how far it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapStep {
    pub operation_id: String,
    pub entity_type: String,
    pub status: StepStatus,
    /// For child operations (tasks per project): how many parents are finished.
    pub parents_done: u32,
    /// Next page to fetch of the current parent (or of the operation).
    pub next_page: u32,
    pub pages: u32,
    pub items: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapProgress {
    pub running: bool,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub steps: Vec<BootstrapStep>,
}

#[derive(Serialize, Deserialize)]
enum BootstrapRecord {
    V1(BootstrapProgress),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: [u8; 16],
    pub operation_id: String,
    pub method: String,
    pub url: String,
    /// JSON texts of what the admin entered, so a call can become a flow action.
    pub path_params: String,
    pub query: String,
    pub body: Option<String>,
    pub acting_as: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub at: i64,
}

#[derive(Serialize, Deserialize)]
enum ExecutionRecord {
    V1(Execution),
}

impl Store {
    /// Stores a page of entities and the progress made, in one transaction (a restart resumes
    /// exactly after the last stored page).
    pub async fn put_entities(
        &self,
        ws: &str,
        entities: Vec<Entity>,
        progress: BootstrapProgress,
    ) -> Result<(), StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            let mut table = wtx.open_table(ENTITIES)?;
            for entity in entities {
                let key = with_suffix(
                    &two_part_prefix(&ws, &entity.entity_type),
                    entity.id.as_bytes(),
                );
                table.insert(key.as_slice(), encode(&EntityRecord::V1(entity)).as_slice())?;
            }
            let mut state = wtx.open_table(BOOTSTRAP)?;
            state.insert(
                ws.as_bytes(),
                encode(&BootstrapRecord::V1(progress)).as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    pub async fn bootstrap_progress(
        &self,
        ws: &str,
    ) -> Result<Option<BootstrapProgress>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let table = rtx.open_table(BOOTSTRAP)?;
            let found = table.get(ws.as_bytes())?;
            match found {
                None => Ok(None),
                Some(v) => match decode::<BootstrapRecord>(v.value())? {
                    BootstrapRecord::V1(p) => Ok(Some(p)),
                },
            }
        })
        .await
    }

    /// Workspaces whose bootstrap was running when the server stopped.
    pub async fn unfinished_bootstraps(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| {
            let table = rtx.open_table(BOOTSTRAP)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let BootstrapRecord::V1(p) = decode::<BootstrapRecord>(v.value())?;
                if p.running {
                    out.push(String::from_utf8_lossy(k.value()).into_owned());
                }
            }
            Ok(out)
        })
        .await
    }

    /// Cached entities of one type (or all), optionally filtered, up to `limit`.
    pub async fn entities(
        &self,
        ws: &str,
        entity_type: Option<&str>,
        keep: impl Fn(&Entity) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        let prefix = match entity_type {
            Some(t) => two_part_prefix(ws, t),
            None => workspace_prefix(ws),
        };
        self.read(move |rtx| {
            let table = rtx.open_table(ENTITIES)?;
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                let (_, v) = entry?;
                let EntityRecord::V1(entity) = decode::<EntityRecord>(v.value())?;
                if keep(&entity) {
                    out.push(entity);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Ids of the cached entities of a type (parents of child operations).
    pub async fn entity_ids(&self, ws: &str, entity_type: &str) -> Result<Vec<String>, StoreError> {
        let prefix = two_part_prefix(ws, entity_type);
        self.read(move |rtx| {
            let table = rtx.open_table(ENTITIES)?;
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                let (k, _) = entry?;
                out.push(String::from_utf8_lossy(&k.value()[prefix.len()..]).into_owned());
            }
            Ok(out)
        })
        .await
    }

    pub async fn put_execution(&self, ws: &str, execution: Execution) -> Result<(), StoreError> {
        let key = with_suffix(&workspace_prefix(ws), &execution.id);
        self.write(move |wtx| {
            let mut table = wtx.open_table(EXECUTIONS)?;
            table.insert(
                key.as_slice(),
                encode(&ExecutionRecord::V1(execution)).as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    /// Newest first.
    pub async fn executions(&self, ws: &str, limit: usize) -> Result<Vec<Execution>, StoreError> {
        let prefix = workspace_prefix(ws);
        self.read(move |rtx| {
            let table = rtx.open_table(EXECUTIONS)?;
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .rev()
                .take(limit)
            {
                let (_, v) = entry?;
                let ExecutionRecord::V1(execution) = decode::<ExecutionRecord>(v.value())?;
                out.push(execution);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes up to `max` executions older than `cutoff_ms` (ids are UUIDv7, so key order
    /// is time order); returns how many.
    pub async fn delete_executions_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let prefix = workspace_prefix(ws);
        self.write(move |wtx| {
            let mut table = wtx.open_table(EXECUTIONS)?;
            let ids = ids_before(&table, &prefix, cutoff_ms, max, || {
                StoreError::Decode("malformed execution key".into())
            })?;
            for id in &ids {
                table.remove(with_suffix(&prefix, id).as_slice())?;
            }
            Ok(ids.len())
        })
        .await
    }
}
