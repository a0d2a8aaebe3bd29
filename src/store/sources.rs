//! Custom event sources: other systems posting events, each with its own secret.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::schema::{
    SOURCES, SOURCES_BY_WORKSPACE, decode, encode, prefix_end, with_suffix, workspace_prefix,
};
use super::secrets::Sealed;

/// A secret and, after a rotation, until when it stays valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSecret {
    pub secret: Sealed,
    /// Unix ms after which the secret no longer verifies; `None` for the current one.
    pub valid_until: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// Current secret first; a rotated-out one follows while its grace period lasts.
    pub secrets: Vec<SourceSecret>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum SourceRecord {
    V1(Source),
}

pub(super) fn decode_source(bytes: &[u8]) -> Result<Source, StoreError> {
    match decode::<SourceRecord>(bytes)? {
        SourceRecord::V1(source) => Ok(source),
    }
}

/// The workspace a stored source belongs to.
pub(super) fn source_workspace(bytes: &[u8]) -> Result<String, StoreError> {
    decode_source(bytes).map(|source| source.workspace_id)
}

fn index_key(ws: &str, id: &str) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id.as_bytes())
}

/// Inserts or replaces a source and its workspace index row inside `wtx`.
pub(super) fn write_source(
    wtx: &redb::WriteTransaction,
    source: &Source,
) -> Result<(), StoreError> {
    let mut sources = wtx.open_table(SOURCES)?;
    sources.insert(
        source.id.as_bytes(),
        encode(&SourceRecordRef::V1(source)).as_slice(),
    )?;
    let mut index = wtx.open_table(SOURCES_BY_WORKSPACE)?;
    index.insert(
        index_key(&source.workspace_id, &source.id).as_slice(),
        [].as_slice(),
    )?;
    Ok(())
}

/// The same encoding as [`SourceRecord`], from a borrow.
#[derive(Serialize)]
enum SourceRecordRef<'a> {
    V1(&'a Source),
}

/// Every source record (for key rotation), decoded, with its key.
pub(super) fn all_sources(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Vec<Source>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        out.push(decode_source(entry?.1.value())?);
    }
    Ok(out)
}

impl Store {
    pub async fn put_source(&self, source: Source) -> Result<(), StoreError> {
        self.write(move |wtx| write_source(wtx, &source)).await
    }

    pub async fn source(&self, id: &str) -> Result<Option<Source>, StoreError> {
        self.read_record(SOURCES, id.as_bytes().to_vec(), decode_source)
            .await
    }

    pub async fn sources(&self, ws: &str) -> Result<Vec<Source>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let index = rtx.open_table(SOURCES_BY_WORKSPACE)?;
            let sources = rtx.open_table(SOURCES)?;
            let prefix = workspace_prefix(&ws);
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in index.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                let (k, _) = entry?;
                let id = &k.value()[prefix.len()..];
                if let Some(v) = sources.get(id)? {
                    out.push(decode_source(v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Replaces a source's record only if it still belongs to `ws`; returns whether it did.
    pub async fn update_source(
        &self,
        ws: &str,
        id: &str,
        change: impl FnOnce(&mut Source) + Send + 'static,
    ) -> Result<Option<Source>, StoreError> {
        let (ws, id) = (ws.to_string(), id.to_string());
        self.write(move |wtx| {
            let mut sources = wtx.open_table(SOURCES)?;
            let current = sources.get(id.as_bytes())?.map(|v| v.value().to_vec());
            let Some(bytes) = current else {
                return Ok(None);
            };
            let mut source = decode_source(&bytes)?;
            if source.workspace_id != ws {
                return Ok(None);
            }
            change(&mut source);
            sources.insert(
                id.as_bytes(),
                encode(&SourceRecord::V1(source.clone())).as_slice(),
            )?;
            Ok(Some(source))
        })
        .await
    }

    /// Deletes a source of `ws`; returns whether it existed there.
    pub async fn delete_source(&self, ws: &str, id: &str) -> Result<bool, StoreError> {
        let (ws, id) = (ws.to_string(), id.to_string());
        self.write(move |wtx| {
            let mut sources = wtx.open_table(SOURCES)?;
            let current = sources.get(id.as_bytes())?.map(|v| v.value().to_vec());
            let Some(bytes) = current else {
                return Ok(false);
            };
            if decode_source(&bytes)?.workspace_id != ws {
                return Ok(false);
            }
            sources.remove(id.as_bytes())?;
            let mut index = wtx.open_table(SOURCES_BY_WORKSPACE)?;
            index.remove(index_key(&ws, &id).as_slice())?;
            Ok(true)
        })
        .await
    }
}
