//! The only module that touches redb: tables, key encoding, versioned records, migrations,
//! the batched writer, backups and integrity checks. Callers see domain methods only.

mod cache;
mod dedupe;
mod events;
mod flows;
mod installations;
mod keys;
mod secrets;
mod sources;
mod subscriptions;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle,
};

pub use cache::{BootstrapProgress, BootstrapStep, Entity, Execution, StepStatus};
pub use events::{
    DEDUPE_WINDOW_MS, EventId, EventPage, EventQuery, Ingested, NewEvent, StoredEvent,
    format_event_id, parse_event_id,
};
pub use flows::{
    ActionRun, ActionStatus, CLOCKIFY_SOURCE, Conditions, Finished, Flow, FlowAction, FlowId,
    FlowRetry, FlowStats, Json, Op, QueuedRun, Rule, Run, RunId, RunOrigin, RunPage, RunStatus,
    Trigger, format_id, new_id, parse_id,
};
pub use installations::{
    Installation, InstallationStatus, SettingValue, WebhookToken, WorkspaceSettings,
};
pub use secrets::{Sealed, SecretBox, load_or_create_key};
pub use sources::{Source, SourceSecret};
pub use subscriptions::{SubscriptionReport, SubscriptionState};
use writer::Writer;

/// Schema of the data file written by this release. Bump it with a migration in
/// [`MIGRATIONS`] whenever a table or record layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 2;

/// Migration `i` moves a file from schema `i + 1` to `i + 2`; run in order inside one transaction.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;
const MIGRATIONS: &[Migration] = &[
    // 1 → 2: event records gained `V2` (compressed body). `V1` records stay readable, so
    // nothing is rewritten; the bump makes older binaries refuse the file instead of
    // failing on every `V2` record.
    |_| Ok(()),
];

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
pub(crate) const INSTALLATIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("installations");

/// SHA-256 of a webhook token → workspace id.
pub(crate) const WEBHOOK_TOKENS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("webhook_tokens");

/// Every table of the file (all keyed by bytes); backups copy exactly these, `check` counts them.
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TABLES: &[Table] = &[
    META,
    INSTALLATIONS,
    WEBHOOK_TOKENS,
    events::EVENTS,
    events::EVENTS_BY_TYPE,
    events::EVENT_DEDUPE,
    sources::SOURCES,
    sources::SOURCES_BY_WORKSPACE,
    subscriptions::SUBSCRIPTIONS,
    cache::ENTITIES,
    cache::BOOTSTRAP,
    cache::EXECUTIONS,
    flows::FLOWS,
    flows::FLOW_STATS,
    flows::FLOW_RUNS,
    flows::FLOW_RUNS_BY_FLOW,
    flows::FLOW_RUNS_BY_EVENT,
    flows::FLOW_RUN_QUEUE,
];

pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

const META_SCHEMA_VERSION: &[u8] = b"schema_version";
const META_KEY_CHECK: &[u8] = b"key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"clockify-studio encryption key check";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error(
        "the data file has schema version {found}, written by a newer release; this binary reads versions up to {supported}. Upgrade clockify-studio or restore an older backup"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("the encryption key does not match the data file (wrong --encryption-key-file?)")]
    WrongKey,
    #[error("a stored record cannot be decoded: {0}")]
    Decode(String),
    #[error("the data file is already in use by another process (is the server running?)")]
    InUse,
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Errors are delivered to every caller of a failed batch, so they are copied by value.
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Storage(m) => StoreError::Storage(m.clone()),
            StoreError::TooNew { found, supported } => StoreError::TooNew {
                found: *found,
                supported: *supported,
            },
            StoreError::WrongKey => StoreError::WrongKey,
            StoreError::Decode(m) => StoreError::Decode(m.clone()),
            StoreError::InUse => StoreError::InUse,
            StoreError::Closed => StoreError::Closed,
        }
    }
}

macro_rules! storage_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self { StoreError::Storage(err.to_string()) }
        }
    )*};
}
storage_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    std::io::Error
);

impl From<redb::DatabaseError> for StoreError {
    fn from(err: redb::DatabaseError) -> Self {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Storage(other.to_string()),
        }
    }
}

/// Records are postcard-encoded enums whose variant is the record version.
pub(crate) fn encode<T: serde::Serialize>(record: &T) -> Vec<u8> {
    postcard::to_allocvec(record).expect("records always serialize")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    // One writer process; `backup` and `check` may read the file while the server runs.
    builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    // Page cache; with jemalloc, the live channel, the waiting dedupe rows and connection
    // buffers it keeps the server within 64 MB at 256 concurrent deliveries (`cargo bench
    // --bench ingest`: 57 MB; 67 MB with 24 MB here). Reads that miss it are served from the
    // OS page cache.
    builder.set_cache_size(16 * 1024 * 1024);
    builder
}

/// The open data file of a running server.
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
    secrets: SecretBox,
    path: PathBuf,
    /// Installations and the webhook-token index, mirrored in memory: every delivery needs
    /// them, and they change only through the writer (kept in step after each commit).
    cache: Arc<installations::InstallationCache>,
    /// Committed events, announced in commit order.
    live: tokio::sync::broadcast::Sender<Arc<StoredEvent>>,
    /// Every flow, and the enabled ones by trigger: ingestion queues runs without a read.
    flow_index: Arc<flows::FlowIndex>,
    /// Committed runs on their way to the flow engine.
    run_dispatch: Arc<flows::RunDispatch>,
    /// Dedupe rows not yet written to their table.
    dedupe: Arc<dedupe::PendingDedupe>,
}

/// Committed events buffered for slow live listeners before they fall back to the store.
const LIVE_CHANNEL_CAPACITY: usize = 256;

impl Store {
    /// Opens (or creates) the data file, migrates it forward and checks the encryption key.
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<Store, StoreError> {
        let db = builder().create(path)?;
        let secrets = SecretBox::new(key);
        prepare(&db, &secrets)?;
        let cache = Arc::new(installations::InstallationCache::load(&db)?);
        let flow_index = Arc::new(flows::FlowIndex::load(&db)?);
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let dedupe = Arc::new(dedupe::PendingDedupe::load(&db, now_ms)?);
        let db = Arc::new(db);
        let writer = Writer::start(db.clone());
        Ok(Store {
            db,
            writer,
            secrets,
            path: path.to_path_buf(),
            cache,
            live: tokio::sync::broadcast::channel(LIVE_CHANNEL_CAPACITY).0,
            flow_index,
            run_dispatch: Arc::new(flows::RunDispatch::new()),
            dedupe,
        })
    }

    /// Receives every event committed from now on, in commit order.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes queued writes and stops the writer; later writes fail with `Closed`.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Size of the data file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Readiness: a read transaction and a durable write transaction both succeed, and the
    /// data file is still where backups and restarts will look for it.
    pub async fn probe(&self) -> Result<(), String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let rtx = db.begin_read()?;
            rtx.open_table(META)?;
            Ok(())
        })
        .await
        .map_err(|e| format!("read check panicked: {e}"))?
        .map_err(|e| format!("read transaction failed: {e}"))?;
        self.writer
            .write(
                |wtx| {
                    let mut meta = wtx.open_table(META)?;
                    let now = jiff::Timestamp::now().as_millisecond().to_le_bytes();
                    meta.insert(b"last_probe".as_slice(), now.as_slice())?;
                    Ok(())
                },
                None,
            )
            .await
            .map_err(|e| format!("write transaction failed: {e}"))?;
        match std::fs::metadata(&self.path) {
            Ok(_) => {}
            Err(e) => return Err(format!("data file {} is gone: {e}", self.path.display())),
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::config::ensure_writable_dir_no_create(dir)?;
        Ok(())
    }

    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(op, None).await
    }

    /// Like [`Store::write`], then runs `after_commit` on the writer thread once the change is
    /// durable, in commit order (before the caller's future resolves).
    pub(crate) async fn write_then<T, F>(
        &self,
        op: F,
        after_commit: impl FnOnce(&T) + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(op, Some(Box::new(after_commit))).await
    }

    /// The record stored under `key` in `table`, decoded.
    pub(crate) async fn read_record<T: Send + 'static>(
        &self,
        table: Table,
        key: Vec<u8>,
        decode: fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.read(move |rtx| {
            let table = rtx.open_table(table)?;
            let found = table.get(key.as_slice())?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    /// Runs a read on the blocking pool inside its own read transaction.
    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let rtx = db.begin_read()?;
            op(&rtx)
        })
        .await
        .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}

/// Creates missing tables, checks the schema version (migrating older files forward) and
/// the encryption key, all in one transaction.
fn prepare(db: &Database, secrets: &SecretBox) -> Result<(), StoreError> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(redb::Durability::Immediate)?;
    for table in TABLES {
        wtx.open_table(*table)?;
    }
    {
        let mut meta = wtx.open_table(META)?;
        let found = meta
            .get(META_SCHEMA_VERSION)?
            .map(|v| read_u32(v.value()))
            .transpose()?;
        match found {
            None => {
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) => {
                drop(meta);
                for migration in &MIGRATIONS[(found as usize).saturating_sub(1)..] {
                    migration(&wtx)?;
                }
                let mut meta = wtx.open_table(META)?;
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
        }
    }
    {
        // A file without the watermark was written with every dedupe row in place (new, or
        // from a release that wrote them with their events).
        let mut meta = wtx.open_table(META)?;
        if meta.get(dedupe::META_INDEXED_UNTIL)?.is_none() {
            let now_ms = jiff::Timestamp::now().as_millisecond();
            meta.insert(dedupe::META_INDEXED_UNTIL, now_ms.to_le_bytes().as_slice())?;
        }
    }
    {
        let mut meta = wtx.open_table(META)?;
        let stored = meta.get(META_KEY_CHECK)?.map(|v| v.value().to_vec());
        match stored {
            Some(bytes) => {
                let sealed: Sealed = decode(&bytes)?;
                if secrets.open(&sealed)? != KEY_CHECK_PLAINTEXT {
                    return Err(StoreError::WrongKey);
                }
            }
            None => {
                let sealed = secrets.seal(KEY_CHECK_PLAINTEXT);
                meta.insert(META_KEY_CHECK, encode(&sealed).as_slice())?;
            }
        }
    }
    wtx.commit()?;
    Ok(())
}

fn read_u32(bytes: &[u8]) -> Result<u32, StoreError> {
    let array: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Decode("schema version is not 4 bytes".into()))?;
    Ok(u32::from_le_bytes(array))
}

/// What `check` found in a data file.
#[derive(Debug)]
pub struct CheckReport {
    pub schema_version: u32,
    /// `None` when the server holds the file: the full integrity check needs exclusive access,
    /// so only a full read of every table was done.
    pub integrity_verified: Option<bool>,
    pub tables: Vec<(String, u64)>,
    pub file_size: u64,
}

/// Opens the file without the encryption key and checks it: integrity (when no server holds
/// it), schema version, and a full read of every table.
pub fn check(path: &Path) -> Result<CheckReport, StoreError> {
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let file_size = std::fs::metadata(path)?.len();
    match builder().open(path) {
        Ok(mut db) => {
            let integrity = db.check_integrity()?;
            let (schema_version, tables) = scan(&db)?;
            Ok(CheckReport {
                schema_version,
                integrity_verified: Some(integrity),
                tables,
                file_size,
            })
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => {
            let db = builder().open_read_only(path)?;
            let (schema_version, tables) = scan(&db)?;
            Ok(CheckReport {
                schema_version,
                integrity_verified: None,
                tables,
                file_size,
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Reads every entry of every table (so a damaged page surfaces) and checks the schema version.
fn scan(db: &impl ReadableDatabase) -> Result<(u32, Vec<(String, u64)>), StoreError> {
    let rtx = db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let version = meta
        .get(META_SCHEMA_VERSION)?
        .map(|v| read_u32(v.value()))
        .transpose()?
        .ok_or_else(|| StoreError::Decode("no schema version record".into()))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let mut counts = Vec::new();
    for table in TABLES {
        let handle = match rtx.open_table(*table) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                counts.push((table.name().to_string(), 0));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for entry in handle.iter()? {
            let (k, v) = entry?;
            std::hint::black_box((k.value().len(), v.value().len()));
            n += 1;
        }
        debug_assert_eq!(n, handle.len()?);
        counts.push((table.name().to_string(), n));
    }
    Ok((version, counts))
}

/// Writes a consistent copy of the data file to `dest`: every table is copied inside one
/// read transaction, committed durably to a temporary file, then renamed into place. Works
/// while a server holds the file (it reads alongside the writer) and when none does.
pub fn backup(src: &Path, dest: &Path) -> Result<u64, StoreError> {
    if !src.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            src.display()
        )));
    }
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let copied = match builder().open_read_only(src) {
        Ok(db) => copy_tables(&db, &tmp)?,
        // A file left by a crash needs a repair, which only a writer may do; that is possible
        // exactly when no server holds it.
        Err(redb::DatabaseError::RepairAborted) | Err(redb::DatabaseError::Storage(_)) => {
            let db = builder().open(src)?;
            copy_tables(&db, &tmp)?
        }
        Err(other) => return Err(other.into()),
    };
    std::fs::rename(&tmp, dest)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(copied)
}

fn copy_tables(src: &impl ReadableDatabase, tmp: &Path) -> Result<u64, StoreError> {
    let rtx = src.begin_read()?;
    let dest = Builder::new().create(tmp)?;
    let mut wtx = dest.begin_write()?;
    wtx.set_durability(redb::Durability::Immediate)?;
    let mut copied = 0u64;
    for table in TABLES {
        let source = match rtx.open_table(*table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut target = wtx.open_table(*table)?;
        for entry in source.iter()? {
            let (k, v) = entry?;
            target.insert(k.value(), v.value())?;
            copied += 1;
        }
    }
    wtx.commit()?;
    drop(dest);
    Ok(copied)
}
