//! Workspace context kept for the UI and flows: the entity cache filled by bootstrap, the
//! bootstrap's own progress, and the explorer's execution history.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::schema::{
    BOOTSTRAP, ENTITIES, EXECUTIONS, decode, encode, prefix_end, remove_ids_before,
    two_part_prefix, with_suffix, workspace_prefix, workspaces_of,
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
    /// Stopped at the page ceiling with more to fetch.
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapProgress {
    pub running: bool,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub steps: Vec<BootstrapStep>,
}

/// A step as schema 2 stored it (no `truncated`).
#[derive(Serialize, Deserialize)]
struct BootstrapStepV1 {
    operation_id: String,
    entity_type: String,
    status: StepStatus,
    parents_done: u32,
    next_page: u32,
    pages: u32,
    items: u64,
}

#[derive(Serialize, Deserialize)]
struct BootstrapProgressV1 {
    running: bool,
    started_at: i64,
    finished_at: Option<i64>,
    steps: Vec<BootstrapStepV1>,
}

#[derive(Serialize, Deserialize)]
enum BootstrapRecord {
    V1(BootstrapProgressV1),
    /// Steps know whether they were truncated.
    V2(BootstrapProgress),
}

fn decode_progress(bytes: &[u8]) -> Result<BootstrapProgress, StoreError> {
    Ok(match decode::<BootstrapRecord>(bytes)? {
        BootstrapRecord::V2(progress) => progress,
        BootstrapRecord::V1(old) => BootstrapProgress {
            running: old.running,
            started_at: old.started_at,
            finished_at: old.finished_at,
            steps: old
                .steps
                .into_iter()
                .map(|s| BootstrapStep {
                    operation_id: s.operation_id,
                    entity_type: s.entity_type,
                    status: s.status,
                    parents_done: s.parents_done,
                    next_page: s.next_page,
                    pages: s.pages,
                    items: s.items,
                    truncated: false,
                })
                .collect(),
        },
    })
}

fn encode_progress(progress: BootstrapProgress) -> Vec<u8> {
    encode(&BootstrapRecord::V2(progress))
}

/// A change to the entity cache from a webhook event.
#[derive(Clone, Debug, PartialEq)]
pub enum EntityChange {
    /// Created or updated: merged over the cached entity, if any.
    Upsert(Entity),
    Delete {
        entity_type: String,
        id: String,
    },
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
    /// Who made the call: the token's user id, and the name the entity cache knew then.
    /// `None` in records written before they were kept.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
}

/// An execution as records `V1` kept it (without the user).
#[derive(Serialize, Deserialize)]
struct ExecutionV1 {
    id: [u8; 16],
    operation_id: String,
    method: String,
    url: String,
    path_params: String,
    query: String,
    body: Option<String>,
    acting_as: String,
    status: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
    at: i64,
}

#[derive(Serialize, Deserialize)]
enum ExecutionRecord {
    V1(ExecutionV1),
    /// Adds the user who made the call.
    V2(Execution),
}

impl ExecutionRecord {
    fn into_execution(self) -> Execution {
        match self {
            ExecutionRecord::V2(execution) => execution,
            ExecutionRecord::V1(v1) => Execution {
                id: v1.id,
                operation_id: v1.operation_id,
                method: v1.method,
                url: v1.url,
                path_params: v1.path_params,
                query: v1.query,
                body: v1.body,
                acting_as: v1.acting_as,
                status: v1.status,
                error: v1.error,
                duration_ms: v1.duration_ms,
                at: v1.at,
                user_id: None,
                user_name: None,
            },
        }
    }
}

fn entity_key(ws: &str, entity_type: &str, id: &str) -> Vec<u8> {
    with_suffix(&two_part_prefix(ws, entity_type), id.as_bytes())
}

/// Whether a value of `entities`, `bootstrap` or `executions` decodes.
pub(super) fn check_cache_record(table: &str, bytes: &[u8]) -> Result<(), StoreError> {
    match table {
        "entities" => decode::<EntityRecord>(bytes).map(drop),
        "bootstrap" => decode::<BootstrapRecord>(bytes).map(drop),
        _ => decode::<ExecutionRecord>(bytes).map(drop),
    }
}

impl Store {
    /// Stores a new bootstrap plan, replacing any other (unless the workspace has no
    /// installation any more); returns whether it did.
    pub async fn start_bootstrap(
        &self,
        ws: &str,
        progress: BootstrapProgress,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            if !super::schema::installed(wtx, &ws)? {
                return Ok(false);
            }
            wtx.open_table(BOOTSTRAP)?
                .insert(ws.as_bytes(), encode_progress(progress).as_slice())?;
            Ok(true)
        })
        .await
    }

    /// Stores a page of entities and the progress made, in one transaction (a restart resumes
    /// exactly after the last stored page). Only while `progress` is still the stored plan
    /// (same start, stored as running; `progress` itself may say it finished): returns false,
    /// writing nothing, when a new plan replaced it or the workspace was erased.
    pub async fn put_entities(
        &self,
        ws: &str,
        entities: Vec<Entity>,
        progress: BootstrapProgress,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            let current = wtx
                .open_table(BOOTSTRAP)?
                .get(ws.as_bytes())?
                .map(|v| decode_progress(v.value()))
                .transpose()?;
            let same_plan =
                current.is_some_and(|p| p.started_at == progress.started_at && p.running);
            if !same_plan {
                return Ok(false);
            }
            let mut table = wtx.open_table(ENTITIES)?;
            for entity in entities {
                let key = entity_key(&ws, &entity.entity_type, &entity.id);
                table.insert(key.as_slice(), encode(&EntityRecord::V1(entity)).as_slice())?;
            }
            let mut state = wtx.open_table(BOOTSTRAP)?;
            state.insert(ws.as_bytes(), encode_progress(progress).as_slice())?;
            Ok(true)
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
            found.map(|v| decode_progress(v.value())).transpose()
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
                if decode_progress(v.value())?.running {
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

    /// Keeps an explorer call in the history, unless the workspace has no installation (any
    /// more).
    /// Applies webhook-borne changes to the cached entities of `ws` in one write (unless the
    /// workspace has no installation any more); `merge` combines a cached entity with its
    /// update. Returns how many entities changed.
    pub async fn apply_entity_changes(
        &self,
        ws: &str,
        changes: Vec<EntityChange>,
        merge: fn(&Entity, Entity) -> Entity,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            if !super::schema::installed(wtx, &ws)? {
                return Ok(0);
            }
            let mut table = wtx.open_table(ENTITIES)?;
            let mut changed = 0;
            for change in changes {
                match change {
                    EntityChange::Upsert(entity) => {
                        let key = entity_key(&ws, &entity.entity_type, &entity.id);
                        let cached = table
                            .get(key.as_slice())?
                            .map(|v| decode::<EntityRecord>(v.value()))
                            .transpose()?;
                        let entity = match cached {
                            Some(EntityRecord::V1(cached)) => merge(&cached, entity),
                            None => entity,
                        };
                        table
                            .insert(key.as_slice(), encode(&EntityRecord::V1(entity)).as_slice())?;
                        changed += 1;
                    }
                    EntityChange::Delete { entity_type, id } => {
                        let key = entity_key(&ws, &entity_type, &id);
                        changed += usize::from(table.remove(key.as_slice())?.is_some());
                    }
                }
            }
            Ok(changed)
        })
        .await
    }

    /// Deletes up to `max` cached entities of one type last fetched before `before_ms` (not
    /// seen again by a refresh); returns how many.
    pub async fn expire_entities(
        &self,
        ws: &str,
        entity_type: &str,
        before_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let prefix = two_part_prefix(ws, entity_type);
        self.write(move |wtx| {
            let mut table = wtx.open_table(ENTITIES)?;
            let end = prefix_end(&prefix);
            let mut stale = Vec::new();
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                let (k, v) = entry?;
                let EntityRecord::V1(entity) = decode::<EntityRecord>(v.value())?;
                if entity.fetched_at < before_ms {
                    stale.push(k.value().to_vec());
                    if stale.len() >= max {
                        break;
                    }
                }
            }
            for key in &stale {
                table.remove(key.as_slice())?;
            }
            Ok(stale.len())
        })
        .await
    }

    pub async fn put_execution(&self, ws: &str, execution: Execution) -> Result<(), StoreError> {
        let key = with_suffix(&workspace_prefix(ws), &execution.id);
        let ws = ws.to_string();
        self.write(move |wtx| {
            if !super::schema::installed(wtx, &ws)? {
                return Ok(());
            }
            let mut table = wtx.open_table(EXECUTIONS)?;
            table.insert(
                key.as_slice(),
                encode(&ExecutionRecord::V2(execution)).as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    /// Newest first, the ones `keep` accepts, up to `limit`.
    pub async fn executions(
        &self,
        ws: &str,
        keep: impl Fn(&Execution) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let prefix = workspace_prefix(ws);
        self.read(move |rtx| {
            let table = rtx.open_table(EXECUTIONS)?;
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .rev()
            {
                let (_, v) = entry?;
                let execution = decode::<ExecutionRecord>(v.value())?.into_execution();
                if keep(&execution) {
                    out.push(execution);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Workspaces with explorer executions (for retention).
    pub async fn execution_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| {
            workspaces_of(&rtx.open_table(EXECUTIONS)?, || {
                StoreError::Decode("malformed execution key".into())
            })
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
            remove_ids_before(wtx, EXECUTIONS, &prefix, cutoff_ms, max, || {
                StoreError::Decode("malformed execution key".into())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_kept_before_users_were_still_read() {
        let v1 = ExecutionV1 {
            id: [7; 16],
            operation_id: "getClients".into(),
            method: "GET".into(),
            url: "https://api.clockify.me/api/v1/workspaces/w/clients".into(),
            path_params: "{}".into(),
            query: "{}".into(),
            body: None,
            acting_as: "addon".into(),
            status: Some(200),
            error: None,
            duration_ms: 12,
            at: 1_700_000_000_000,
        };
        let bytes = encode(&ExecutionRecord::V1(v1));
        check_cache_record("executions", &bytes).unwrap();
        let read = decode::<ExecutionRecord>(&bytes).unwrap().into_execution();
        assert_eq!(read.operation_id, "getClients");
        assert_eq!(read.status, Some(200));
        assert_eq!((read.user_id, read.user_name), (None, None));
    }
}
