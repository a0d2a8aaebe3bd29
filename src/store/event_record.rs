//! How an event is kept on disk: the versioned record, encoded on the caller's thread so the
//! writer only inserts it. Records of schema 7 (`V3`) keep the headers and body together,
//! compressed with zstd and a dictionary bundled in the binary (`dictionaries/`); the id,
//! receive time and workspace come from the key. `V1` (plain) and `V2` (stamp, LZ4 body) are
//! still read.

use std::cell::RefCell;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::error::StoreError;
use super::schema::{EventId, decode, encode, millis_of_id};

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
    /// The body exactly as received.
    pub body: Vec<u8>,
    /// Later deliveries recognised as this one.
    pub duplicates: u32,
}

pub(crate) const CLOCKIFY: &str = "clockify";

/// The event as `V1` and `V2` records held it (read, and rewritten by [`count_duplicate`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct LegacyEvent {
    pub(super) id: EventId,
    pub(super) workspace_id: String,
    pub(super) event_type: String,
    pub(super) source: String,
    pub(super) source_id: Option<String>,
    pub(super) received_at: i64,
    pub(super) headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub(super) body: Vec<u8>,
    pub(super) dedupe_key: [u8; 32],
    pub(super) duplicates: u32,
}

#[derive(Serialize, Deserialize)]
pub(super) enum EventRecord {
    V1(LegacyEvent),
    /// The id and receive time, the event with an empty body, the body (maybe LZ4).
    V2(Stamp, LegacyEvent, StoredBody),
    /// What the key does not say, and the headers and body packed together.
    V3(Meta, Packed),
}

/// `[id][received ms, little-endian]`.
pub(super) type Stamp = [u8; 24];

/// A `V3` record's plain fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) event_type: String,
    /// `None` for Clockify's own deliveries.
    pub(super) source: Option<String>,
    pub(super) source_id: Option<String>,
    /// `None` when it is the SHA-256 of the body (every Clockify delivery): 32 bytes saved.
    pub(super) dedupe_key: Option<[u8; 32]>,
    pub(super) duplicates: u32,
}

/// Request headers as stored (names and redacted values).
type Headers = Vec<(String, String)>;

/// The headers (postcard-encoded) followed by the body, as kept: `dictionary` 0 means as is,
/// `n` means zstd with the bundled dictionary `n` ([`DICTIONARIES`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Packed {
    pub(super) dictionary: u16,
    /// Length before compression.
    pub(super) len: u32,
    #[serde(with = "serde_bytes")]
    pub(super) bytes: Vec<u8>,
}

/// Bundled dictionaries by number: a record names the one it was compressed with, so one
/// published here is never removed. Trained on the samples by `examples/train_dictionary.rs`.
const DICTIONARIES: &[(u16, &[u8])] = &[(1, include_bytes!("dictionaries/events-1.zdict"))];
/// The dictionary new records use.
const CURRENT_DICTIONARY: u16 = 1;
/// zstd's default level: with the dictionary it compresses webhook bodies far better than LZ4
/// at a cost per body close to LZ4's (docs/performance.md).
const LEVEL: i32 = 3;
/// Larger unpacked sizes are corruption, not events (deliveries are limited to a few MB).
const MAX_UNPACKED: usize = 256 * 1024 * 1024;

static ENCODER: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(dictionary(CURRENT_DICTIONARY), LEVEL));
static DECODERS: LazyLock<Vec<(u16, zstd::dict::DecoderDictionary<'static>)>> =
    LazyLock::new(|| {
        DICTIONARIES
            .iter()
            .map(|(n, bytes)| (*n, zstd::dict::DecoderDictionary::copy(bytes)))
            .collect()
    });

fn dictionary(n: u16) -> &'static [u8] {
    DICTIONARIES
        .iter()
        .find(|(id, _)| *id == n)
        .map(|(_, bytes)| *bytes)
        .expect("the current dictionary is bundled")
}

thread_local! {
    /// One compression context per thread (ingestion prepares records on many threads).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    /// Unpacking contexts per thread, by dictionary.
    static DECOMPRESSORS: RefCell<Vec<(u16, zstd::bulk::Decompressor<'static>)>> = const { RefCell::new(Vec::new()) };
}

fn compressor() -> zstd::bulk::Compressor<'static> {
    use zstd::zstd_safe::CParameter;
    let mut compressor =
        zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER).expect("zstd context");
    // The record knows the length and the dictionary; a checksum would repeat redb's.
    for parameter in [
        CParameter::ChecksumFlag(false),
        CParameter::ContentSizeFlag(false),
        CParameter::DictIdFlag(false),
    ] {
        compressor.set_parameter(parameter).expect("zstd parameter");
    }
    compressor
}

impl Packed {
    /// Packs `headers` and `body`, compressed unless that does not save space.
    pub(super) fn new(headers: &[(String, String)], body: &[u8]) -> Packed {
        let mut plain = postcard::to_allocvec(headers).expect("headers serialize");
        plain.extend_from_slice(body);
        let len = u32::try_from(plain.len()).unwrap_or(u32::MAX);
        let compressed = COMPRESSOR.with_borrow_mut(|slot| {
            let compressor = slot.get_or_insert_with(compressor);
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(plain.len()));
            compressor.compress_to_buffer(&plain, &mut out).ok()?;
            (out.len() < plain.len()).then_some(out)
        });
        match compressed {
            Some(bytes) if plain.len() <= MAX_UNPACKED => Packed {
                dictionary: CURRENT_DICTIONARY,
                len,
                bytes,
            },
            _ => Packed {
                dictionary: 0,
                len,
                bytes: plain,
            },
        }
    }

    /// The headers and the body.
    fn unpack(self) -> Result<(Headers, Vec<u8>), StoreError> {
        let corrupt = |what: &str| StoreError::Decode(format!("corrupt event record: {what}"));
        let plain = match self.dictionary {
            0 => self.bytes,
            n => {
                let len = self.len as usize;
                if len > MAX_UNPACKED {
                    return Err(corrupt("length"));
                }
                let mut out = Vec::with_capacity(len);
                DECOMPRESSORS.with_borrow_mut(|contexts| {
                    if !contexts.iter().any(|(id, _)| *id == n) {
                        let prepared = DECODERS
                            .iter()
                            .find(|(id, _)| *id == n)
                            .ok_or_else(|| corrupt("unknown dictionary"))?;
                        let context =
                            zstd::bulk::Decompressor::with_prepared_dictionary(&prepared.1)
                                .map_err(|_| corrupt("zstd context"))?;
                        contexts.push((n, context));
                    }
                    let (_, context) = contexts
                        .iter_mut()
                        .find(|(id, _)| *id == n)
                        .expect("just added");
                    context
                        .decompress_to_buffer(&self.bytes, &mut out)
                        .map_err(|_| corrupt("compressed bytes"))
                })?;
                if out.len() != len {
                    return Err(corrupt("length"));
                }
                out
            }
        };
        let (headers, body) = postcard::take_from_bytes::<Vec<(String, String)>>(&plain)
            .map_err(|_| corrupt("headers"))?;
        Ok((headers, body.to_vec()))
    }
}

/// A new event's record, encoded on the caller's thread: the writer thread bounds
/// ingestion, so it only inserts the bytes under the key it makes.
pub(crate) fn encode_new(
    event_type: &str,
    source: &str,
    source_id: Option<&str>,
    dedupe_key: Option<[u8; 32]>,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let meta = Meta {
        event_type: event_type.to_string(),
        source: (source_id.is_some() || source != CLOCKIFY).then(|| source.to_string()),
        source_id: source_id.map(str::to_string),
        dedupe_key,
        duplicates: 0,
    };
    encode(&EventRecord::V3(meta, Packed::new(headers, body)))
}

/// A body as `V2` records keep it: LZ4 when that saved space.
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
    #[cfg(test)]
    pub(crate) fn new(body: &[u8]) -> StoredBody {
        let compressed = lz4_flex::block::compress(body);
        match u32::try_from(body.len()) {
            Ok(len) if compressed.len() < body.len() => StoredBody::Lz4 {
                len,
                bytes: compressed,
            },
            _ => StoredBody::Raw(body.to_vec()),
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

impl LegacyEvent {
    fn into_event(self) -> (StoredEvent, [u8; 32]) {
        let event = StoredEvent {
            id: self.id,
            workspace_id: self.workspace_id,
            event_type: self.event_type,
            source: self.source,
            source_id: self.source_id,
            received_at: self.received_at,
            headers: self.headers,
            body: self.body,
            duplicates: self.duplicates,
        };
        (event, self.dedupe_key)
    }
}

/// The event stored under `[ws][id]`.
pub(crate) fn decode_event(
    ws: &str,
    id: &EventId,
    bytes: &[u8],
) -> Result<StoredEvent, StoreError> {
    // A listing or a search decodes every row it passes: the dedupe key, a hash of the body
    // when the record does not hold it, is not worked out for them.
    decode_record(ws, id, bytes, false).map(|(event, _)| event)
}

/// The event stored under `[ws][id]` and its dedupe key.
pub(crate) fn decode_with_dedupe_key(
    ws: &str,
    id: &EventId,
    bytes: &[u8],
) -> Result<(StoredEvent, [u8; 32]), StoreError> {
    decode_record(ws, id, bytes, true)
}

/// The event and, when `with_key`, its dedupe key (zeros otherwise, where the record does not
/// hold it).
fn decode_record(
    ws: &str,
    id: &EventId,
    bytes: &[u8],
    with_key: bool,
) -> Result<(StoredEvent, [u8; 32]), StoreError> {
    match decode::<EventRecord>(bytes)? {
        EventRecord::V1(event) => Ok(event.into_event()),
        EventRecord::V2(stamp, mut event, body) => {
            event.id = stamp[..16].try_into().expect("16 bytes");
            event.received_at = i64::from_le_bytes(stamp[16..].try_into().expect("8 bytes"));
            event.body = body.into_bytes()?;
            Ok(event.into_event())
        }
        EventRecord::V3(meta, packed) => {
            let (headers, body) = packed.unpack()?;
            let dedupe_key = match meta.dedupe_key {
                Some(key) => key,
                None if with_key => sha2::Sha256::digest(&body).into(),
                None => [0; 32],
            };
            let event = StoredEvent {
                id: *id,
                workspace_id: ws.to_string(),
                event_type: meta.event_type,
                source: meta.source.unwrap_or_else(|| CLOCKIFY.to_string()),
                source_id: meta.source_id,
                received_at: millis_of_id(id),
                headers,
                body,
                duplicates: meta.duplicates,
            };
            Ok((event, dedupe_key))
        }
    }
}

/// Counts one more delivery of a stored event, keeping its record format (and body bytes).
pub(super) fn count_duplicate(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut record = decode::<EventRecord>(bytes)?;
    match &mut record {
        EventRecord::V1(event) | EventRecord::V2(_, event, _) => {
            event.duplicates = event.duplicates.saturating_add(1);
        }
        EventRecord::V3(meta, _) => meta.duplicates = meta.duplicates.saturating_add(1),
    }
    Ok(encode(&record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        vec![("content-type".into(), "application/json".into())]
    }

    fn legacy(body: &[u8]) -> LegacyEvent {
        LegacyEvent {
            id: [7; 16],
            workspace_id: "ws".into(),
            event_type: "NEW_TIME_ENTRY".into(),
            source: "clockify".into(),
            source_id: None,
            received_at: 1_700_000_000_000,
            headers: headers(),
            body: body.to_vec(),
            dedupe_key: [9; 32],
            duplicates: 0,
        }
    }

    fn id() -> EventId {
        *uuid::Uuid::now_v7().as_bytes()
    }

    #[test]
    fn samples_are_compressed_with_the_dictionary_and_read_back_byte_identical() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            let bytes = encode_new("NEW_TIME_ENTRY", "clockify", None, None, &headers(), &body);
            // Small bodies gain less: the record's fields and the headers cost the same.
            assert!(
                bytes.len() < (body.len() / 2).max(120),
                "{} bytes for {}",
                bytes.len(),
                body.len()
            );
            let id = id();
            let (event, dedupe_key) = decode_with_dedupe_key("ws", &id, &bytes).unwrap();
            assert_eq!(event.body, body);
            assert_eq!(event.headers, headers());
            assert_eq!((event.id, event.workspace_id.as_str()), (id, "ws"));
            assert_eq!(event.received_at, millis_of_id(&id));
            assert_eq!(event.source, "clockify");
            assert_eq!(dedupe_key, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
        }
    }

    #[test]
    fn custom_sources_keep_their_name_and_dedupe_key() {
        let bytes = encode_new(
            "order.paid",
            "clockify",
            Some("src-1"),
            Some([4; 32]),
            &[],
            b"{}",
        );
        let (event, key) = decode_with_dedupe_key("ws", &id(), &bytes).unwrap();
        assert_eq!(
            (event.source.as_str(), event.source_id.as_deref()),
            ("clockify", Some("src-1"))
        );
        assert_eq!(key, [4; 32]);
    }

    #[test]
    fn incompressible_and_empty_bodies_are_kept_as_is() {
        for body in [b"".as_slice(), b"{}", &[0x9c, 0x01, 0xff, 0x42, 0x17]] {
            let bytes = encode_new("T", "clockify", None, None, &[], body);
            let EventRecord::V3(_, packed) = decode::<EventRecord>(&bytes).unwrap() else {
                panic!("a V3 record")
            };
            assert_eq!(packed.dictionary, 0);
            assert_eq!(decode_event("ws", &id(), &bytes).unwrap().body, body);
        }
    }

    #[test]
    fn records_of_older_schemas_still_read_and_count_duplicates() {
        let event = legacy(br#"{"id":"old"}"#);
        let v1 = encode(&EventRecord::V1(event.clone()));
        let (read, key) = decode_with_dedupe_key("ignored", &[0; 16], &v1).unwrap();
        assert_eq!(
            (read.id, read.body.as_slice(), key),
            (event.id, event.body.as_slice(), [9; 32])
        );
        let counted = decode_event("ws", &event.id, &count_duplicate(&v1).unwrap()).unwrap();
        assert_eq!((counted.duplicates, counted.body), (1, event.body.clone()));

        let json = include_bytes!("../../assets/samples/NEW_TIME_ENTRY.json");
        let mut bare = legacy(b"");
        bare.body = Vec::new();
        let v2 = encode(&EventRecord::V2([7; 24], bare, StoredBody::new(json)));
        let read = decode_event("ws", &[7; 16], &count_duplicate(&v2).unwrap()).unwrap();
        assert_eq!(
            (read.duplicates, read.body.as_slice()),
            (1, json.as_slice())
        );
    }

    #[test]
    fn duplicates_of_packed_records_keep_the_body() {
        let body = br#"{"description":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let bytes = encode_new("T", "clockify", None, None, &headers(), body);
        let twice = count_duplicate(&count_duplicate(&bytes).unwrap()).unwrap();
        let read = decode_event("ws", &id(), &twice).unwrap();
        assert_eq!(
            (read.duplicates, read.body.as_slice()),
            (2, body.as_slice())
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let meta = Meta {
            event_type: "T".into(),
            source: None,
            source_id: None,
            dedupe_key: None,
            duplicates: 0,
        };
        let good = Packed::new(
            &headers(),
            include_bytes!("../../assets/samples/NEW_TIME_ENTRY.json"),
        );
        let mut truncated = good.clone();
        truncated.bytes.truncate(truncated.bytes.len() / 2);
        for packed in [
            Packed {
                len: u32::MAX,
                ..good.clone()
            },
            Packed {
                len: good.len - 1,
                ..good.clone()
            },
            Packed {
                dictionary: 99,
                ..good.clone()
            },
            truncated,
            Packed {
                dictionary: 0,
                len: 3,
                bytes: vec![0xff, 0xff, 0xff],
            },
        ] {
            let bytes = encode(&EventRecord::V3(meta.clone(), packed));
            assert!(matches!(
                decode_event("ws", &id(), &bytes),
                Err(StoreError::Decode(_))
            ));
        }
        for body in [
            StoredBody::Lz4 {
                len: 10,
                bytes: vec![0xff; 4],
            },
            StoredBody::Lz4 {
                len: u32::MAX,
                bytes: vec![0x10, b'a'],
            },
        ] {
            let bytes = encode(&EventRecord::V2([0; 24], legacy(b""), body));
            assert!(matches!(
                decode_event("ws", &id(), &bytes),
                Err(StoreError::Decode(_))
            ));
        }
    }
}
