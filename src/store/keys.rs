//! Key encoding. Composite keys are length-prefixed parts so one workspace's rows form a
//! contiguous, ordered range, and event ids (UUIDv7, 16 bytes) sort by time within it.
//! The scans that rely on that layout (workspaces of a table, ids before a time) live here too.

use redb::ReadableTable;

use super::StoreError;

/// Appends a length-prefixed part (parts longer than 255 bytes are refused upstream).
pub(crate) fn push_part(key: &mut Vec<u8>, part: &str) {
    let bytes = part.as_bytes();
    debug_assert!(bytes.len() <= u8::MAX as usize);
    key.push(bytes.len().min(255) as u8);
    key.extend_from_slice(&bytes[..bytes.len().min(255)]);
}

/// `[len][workspace]`: the prefix of every per-workspace key.
pub(crate) fn workspace_prefix(workspace_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + workspace_id.len() + 40);
    push_part(&mut key, workspace_id);
    key
}

/// `[len][workspace][len][second]`.
pub(crate) fn two_part_prefix(workspace_id: &str, second: &str) -> Vec<u8> {
    let mut key = workspace_prefix(workspace_id);
    push_part(&mut key, second);
    key
}

pub(crate) fn with_suffix(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + suffix.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(suffix);
    key
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// The smallest UUIDv7 of a millisecond: used as a range bound for time filters.
pub(crate) fn id_floor_for_millis(ms: i64) -> [u8; 16] {
    let ms = ms.clamp(0, (1i64 << 48) - 1) as u64;
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id
}

/// The workspaces with rows in `table` (keys `[len][workspace]…`), in key order. Skips from
/// one workspace prefix to the next instead of visiting every row; `bad_key` is the error
/// for a key that does not start with a workspace.
pub(crate) fn workspaces_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bad_key: fn() -> StoreError,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut cursor: Vec<u8> = Vec::new();
    loop {
        let next = table.range::<&[u8]>(cursor.as_slice()..)?.next();
        let Some(entry) = next else { break };
        let (k, _) = entry?;
        let key = k.value();
        let len = *key.first().ok_or_else(bad_key)? as usize;
        let ws =
            std::str::from_utf8(key.get(1..1 + len).ok_or_else(bad_key)?).map_err(|_| bad_key())?;
        out.push(ws.to_string());
        cursor = prefix_end(&key[..1 + len]);
    }
    Ok(out)
}

/// The oldest ids (at most `max`) of the rows `[prefix][UUIDv7]` in `table` made before
/// `cutoff_ms`, or of all the prefix's rows with `i64::MAX`. Retention collects a batch with
/// this, then removes it; `bad_key` is the error for a suffix that is not an id.
pub(crate) fn ids_before(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    cutoff_ms: i64,
    max: usize,
    bad_key: fn() -> StoreError,
) -> Result<Vec<[u8; 16]>, StoreError> {
    let end = if cutoff_ms == i64::MAX {
        prefix_end(prefix)
    } else {
        with_suffix(prefix, &id_floor_for_millis(cutoff_ms))
    };
    let mut ids = Vec::new();
    for entry in table.range::<&[u8]>(prefix..end.as_slice())?.take(max) {
        let (k, _) = entry?;
        ids.push(
            k.value()[prefix.len()..]
                .try_into()
                .map_err(|_| bad_key())?,
        );
    }
    Ok(ids)
}

/// Milliseconds since the epoch encoded in a UUIDv7.
#[cfg(test)]
pub(crate) fn millis_of_id(id: &[u8; 16]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&id[..6]);
    u64::from_be_bytes(bytes) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_prefixes_order_as_expected() {
        let id = *uuid::Uuid::now_v7().as_bytes();
        let ms = millis_of_id(&id);
        assert!(id_floor_for_millis(ms) <= id);
        assert!(id_floor_for_millis(ms + 1) > id);
        let p = workspace_prefix("ws");
        assert!(with_suffix(&p, &[0xff; 16]) < prefix_end(&p));
        assert!(workspace_prefix("ws") != workspace_prefix("ws2")[..3]);
    }

    #[test]
    fn scans_find_workspaces_and_the_oldest_ids() {
        const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        let mut table = wtx.open_table(TABLE).unwrap();
        for (ws, ms) in [("a", 3), ("a", 1), ("a", 2), ("bb", 1), ("c", 5)] {
            let mut id = id_floor_for_millis(ms);
            id[15] = 1;
            let key = with_suffix(&workspace_prefix(ws), &id);
            table.insert(key.as_slice(), [].as_slice()).unwrap();
        }
        let bad = || StoreError::Decode("malformed key".into());
        // Key order: the length prefix sorts shorter ids first.
        assert_eq!(workspaces_of(&table, bad).unwrap(), ["a", "c", "bb"]);
        let a = workspace_prefix("a");
        let millis = |cutoff_ms, max| -> Vec<i64> {
            let ids = ids_before(&table, &a, cutoff_ms, max, bad).unwrap();
            ids.iter().map(millis_of_id).collect()
        };
        assert_eq!(millis(3, 10), [1, 2]);
        assert_eq!(millis(3, 1), [1]);
        assert_eq!(millis(i64::MAX, 10), [1, 2, 3]);
        assert!(millis(1, 10).is_empty());
    }
}
