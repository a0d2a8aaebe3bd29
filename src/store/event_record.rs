//! How an event is kept on disk: the versioned record (`V1` plain, `V2` with the id and time
//! stamped at a fixed offset and the body compressed), encoded on the caller's thread so the
//! writer only stamps it.

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::schema::{EventId, decode, encode};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: EventId,
    pub workspace_id: String,
    pub event_type: String,
    /// `clockify` or the custom source's name.
    pub source: String,
    pub source_id: Option<String>,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Request headers with secrets redacted.
    pub headers: Vec<(String, String)>,
    /// The body exactly as received (stored as one byte string, not a sequence of numbers).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub dedupe_key: [u8; 32],
    /// Later deliveries recognised as this one.
    pub duplicates: u32,
}

#[derive(Serialize, Deserialize)]
pub(super) enum EventRecord {
    V1(StoredEvent),
    /// The id and receive time, then the event with an empty `body` and its id and time
    /// zeroed, then the body as kept on disk. The stamp comes first, at a fixed offset, so a
    /// record can be encoded before the writer assigns them ([`UnstampedRecord`]).
    V2(Stamp, StoredEvent, StoredBody),
}

/// The same encoding as [`EventRecord`], from borrows (no copy of the body to write it).
#[derive(Serialize)]
pub(super) enum EventRecordRef<'a> {
    V1(&'a StoredEvent),
    V2(&'a Stamp, &'a StoredEvent, &'a StoredBody),
}

/// `[id][received ms, little-endian]`.
pub(super) type Stamp = [u8; 24];

pub(super) fn stamp(id: &EventId, received_ms: i64) -> Stamp {
    let mut stamp = [0u8; 24];
    stamp[..16].copy_from_slice(id);
    stamp[16..].copy_from_slice(&received_ms.to_le_bytes());
    stamp
}

/// A `V2` record encoded on the caller's thread, waiting for the id and time the writer
/// assigns: the writer thread bounds ingestion, so it only copies 24 bytes in.
pub(crate) struct UnstampedRecord(Vec<u8>);

impl UnstampedRecord {
    /// Where the stamp sits: after the one-byte variant index of `V2`.
    const STAMP_AT: usize = 1;

    /// `event` with an empty body and zero id and time; `body` as it will be stored.
    pub(super) fn encode(event: &StoredEvent, body: &StoredBody) -> UnstampedRecord {
        // Sized up front: growing the buffer field by field copied the body several times.
        let headers: usize = event
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        let capacity = body.stored_len() + headers + 256;
        let bytes = postcard::to_extend(
            &EventRecordRef::V2(&[0; 24], event, body),
            Vec::with_capacity(capacity),
        )
        .expect("records always serialize");
        debug_assert_eq!(bytes[0], 1, "V2 is variant 1, a one-byte varint");
        UnstampedRecord(bytes)
    }

    pub(super) fn stamp(mut self, id: &EventId, received_ms: i64) -> Vec<u8> {
        self.0[Self::STAMP_AT..Self::STAMP_AT + 24].copy_from_slice(&stamp(id, received_ms));
        self.0
    }
}

/// A body as kept on disk. LZ4 shrinks JSON deliveries well (the compact NEW_TIME_ENTRY
/// sample from 1,413 to 800 bytes), and a smaller record means fewer pages written and
/// synced per commit, which bounds ingestion.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum StoredBody {
    Raw(#[serde(with = "serde_bytes")] Vec<u8>),
    Lz4 {
        len: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

impl StoredBody {
    /// Compresses when that saves space (tiny or already-compressed bodies stay raw).
    pub(crate) fn new(body: &[u8]) -> StoredBody {
        thread_local! {
            /// Compression output, reused: a fresh zeroed buffer per body, then shrinking it,
            /// showed in the ingest profile.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        /// Larger bodies get a buffer of their own, so no thread keeps megabytes around.
        const SCRATCH_MAX: usize = 64 * 1024;
        let compress = |scratch: &mut Vec<u8>| {
            let max = lz4_flex::block::get_maximum_output_size(body.len());
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            let written = lz4_flex::block::compress_into(body, scratch).ok()?;
            // Worth keeping only when smaller.
            (written < body.len()).then(|| scratch[..written].to_vec())
        };
        if let Ok(len) = u32::try_from(body.len()) {
            let compressed = if body.len() <= SCRATCH_MAX {
                SCRATCH.with_borrow_mut(compress)
            } else {
                compress(&mut Vec::new())
            };
            if let Some(bytes) = compressed {
                return StoredBody::Lz4 { len, bytes };
            }
        }
        StoredBody::Raw(body.to_vec())
    }

    fn stored_len(&self) -> usize {
        match self {
            StoredBody::Raw(bytes) | StoredBody::Lz4 { bytes, .. } => bytes.len(),
        }
    }

    fn into_bytes(self) -> Result<Vec<u8>, StoreError> {
        match self {
            StoredBody::Raw(bytes) => Ok(bytes),
            StoredBody::Lz4 { len, bytes } => {
                let corrupt = || StoreError::Decode("corrupt compressed event body".into());
                let len = len as usize;
                // LZ4 expands at most ~255-fold: a larger length is corruption, not a body.
                if len > bytes.len().saturating_mul(255).saturating_add(16) {
                    return Err(corrupt());
                }
                let mut body = vec![0; len];
                match lz4_flex::block::decompress_into(&bytes, &mut body) {
                    Ok(written) if written == len => Ok(body),
                    _ => Err(corrupt()),
                }
            }
        }
    }
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<StoredEvent, StoreError> {
    match decode::<EventRecord>(bytes)? {
        EventRecord::V1(event) => Ok(event),
        EventRecord::V2(stamp, mut event, body) => {
            event.id = stamp[..16].try_into().expect("16 bytes");
            event.received_at = i64::from_le_bytes(stamp[16..].try_into().expect("8 bytes"));
            event.body = body.into_bytes()?;
            Ok(event)
        }
    }
}

/// Counts one more delivery of a stored event, keeping its record format (and body bytes).
pub(super) fn count_duplicate(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    Ok(match decode::<EventRecord>(bytes)? {
        EventRecord::V1(mut event) => {
            event.duplicates = event.duplicates.saturating_add(1);
            encode(&EventRecordRef::V1(&event))
        }
        EventRecord::V2(stamp, mut event, body) => {
            event.duplicates = event.duplicates.saturating_add(1);
            encode(&EventRecordRef::V2(&stamp, &event, &body))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[u8]) -> StoredEvent {
        StoredEvent {
            id: [7; 16],
            workspace_id: "ws".into(),
            event_type: "NEW_TIME_ENTRY".into(),
            source: "clockify".into(),
            source_id: None,
            received_at: 1_700_000_000_000,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
            dedupe_key: [9; 32],
            duplicates: 0,
        }
    }

    /// The record the writer stores for `event`.
    fn stored(event: &StoredEvent) -> Vec<u8> {
        let mut bare = event.clone();
        (bare.id, bare.received_at, bare.body) = ([0; 16], 0, Vec::new());
        UnstampedRecord::encode(&bare, &StoredBody::new(&event.body))
            .stamp(&event.id, event.received_at)
    }

    #[test]
    fn a_stamped_record_is_the_record_encoded_with_its_stamp() {
        let event = sample(br#"{"id":"e1"}"#);
        let mut bare = event.clone();
        (bare.id, bare.received_at, bare.body) = ([0; 16], 0, Vec::new());
        let body = StoredBody::new(&event.body);
        assert_eq!(
            stored(&event),
            encode(&EventRecordRef::V2(
                &stamp(&event.id, event.received_at),
                &bare,
                &body
            ))
        );
    }

    #[test]
    fn json_bodies_are_compressed_and_read_back_byte_identical() {
        let json = include_bytes!("../../assets/samples/NEW_TIME_ENTRY.json").to_vec();
        let event = sample(&json);
        assert!(matches!(StoredBody::new(&json), StoredBody::Lz4 { .. }));
        let bytes = stored(&event);
        assert!(bytes.len() < json.len() * 3 / 4, "{} bytes", bytes.len());
        assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    #[test]
    fn incompressible_and_empty_bodies_are_kept_raw() {
        for body in [b"".as_slice(), b"{}", &[0x9c, 0x01, 0xff, 0x42, 0x17]] {
            assert!(matches!(StoredBody::new(body), StoredBody::Raw(_)));
            let event = sample(body);
            assert_eq!(decode_event(&stored(&event)).unwrap(), event);
        }
    }

    #[test]
    fn records_written_before_compression_still_read() {
        let event = sample(br#"{"id":"old"}"#);
        let v1 = encode(&EventRecordRef::V1(&event));
        assert_eq!(decode_event(&v1).unwrap(), event);
        // A duplicate keeps the record's format.
        let counted = decode_event(&count_duplicate(&v1).unwrap()).unwrap();
        assert_eq!(counted.duplicates, 1);
        assert_eq!(counted.body, event.body);
    }

    #[test]
    fn duplicates_of_compressed_records_keep_the_body() {
        let event = sample(&br#"{"description":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#[..]);
        let counted = count_duplicate(&stored(&event)).unwrap();
        let read = decode_event(&count_duplicate(&counted).unwrap()).unwrap();
        assert_eq!(read.duplicates, 2);
        assert_eq!(read.body, event.body);
    }

    #[test]
    fn a_corrupt_compressed_body_is_an_error_not_a_panic() {
        let mut bare = sample(b"");
        bare.body = Vec::new();
        for body in [
            StoredBody::Lz4 {
                len: 10,
                bytes: vec![0xff; 4],
            },
            StoredBody::Lz4 {
                len: u32::MAX,
                bytes: vec![0x10, b'a'],
            },
            StoredBody::Lz4 {
                len: 3,
                bytes: vec![0x50, b'a', b'b', b'c', b'd', b'e'],
            },
        ] {
            let bytes = encode(&EventRecordRef::V2(&[0; 24], &bare, &body));
            assert!(matches!(decode_event(&bytes), Err(StoreError::Decode(_))));
        }
    }
}
