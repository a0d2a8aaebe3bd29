//! Key encoding. Composite keys are length-prefixed parts so one workspace's rows form a
//! contiguous, ordered range, and event ids (UUIDv7, 16 bytes) sort by time within it.

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
}
