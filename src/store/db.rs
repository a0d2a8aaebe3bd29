//! The open data file: how it is opened (created, migrated forward, key checked), the
//! in-memory views kept beside it, readiness, and the read and write entry points every other
//! store file goes through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable};

use super::dedupe::PendingDedupe;
use super::destination_model::{DeliveryDispatch, DestinationIndex};
use super::entity_index::{EntityIndex, IndexLoader};
use super::error::StoreError;
use super::event_record::StoredEvent;
use super::flow_index::FlowIndex;
use super::health::{Slot, StoreStatus, catch_panic, damage_advice};
use super::installation_cache::InstallationCache;
use super::pause_mirror::PauseMirror;
use super::run_dispatch::RunDispatch;
use super::schema::{META, TABLES, Table, decode, encode};
use super::secrets::{Sealed, SecretBox};
use super::writer::{Reopen, Writer, begin_durable};

/// Schema of the data file written by this release. Bump it with a migration in
/// [`MIGRATIONS`] whenever a table or record layout changes incompatibly.
pub const SCHEMA_VERSION: u32 = 10;

/// Migration `i` moves a file from schema `i + 1` to `i + 2`; run in order inside one transaction.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;
const MIGRATIONS: &[Migration] = &[
    // 1 → 2: event records gained `V2` (compressed body). `V1` records stay readable, so
    // nothing is rewritten; the bump makes older binaries refuse the file instead of
    // failing on every `V2` record.
    |_| Ok(()),
    // 2 → 3: runs may be retries (`RunOrigin::Retry`, appended, so older runs still read);
    // older binaries would fail on such a run, so they refuse the file instead.
    |_| Ok(()),
    // 3 → 4: bootstrap progress gained `V2` (steps know whether they were truncated). `V1`
    // records stay readable; the bump makes older binaries refuse the file.
    |_| Ok(()),
    // 4 → 5: destinations and their deliveries (new tables, created on first use). Older
    // binaries would neither deliver the queued ones nor erase them with a workspace.
    |_| Ok(()),
    // 5 → 6: new `audit` and `flow_pauses` tables (created empty on open). Older binaries
    // would not erase them with a workspace nor honour a pause, so they refuse the file.
    |_| Ok(()),
    // 6 → 7: event records gained `V3` (zstd with a dictionary; older records still read),
    // the log of recent events and the entity index. The dedupe rows that waited in memory
    // were rebuilt at every start from the events after a watermark: that is done once
    // more here, into the log, which every later start reads instead.
    super::migrations::recent_events_from_watermark,
    // 7 → 8: flow and run records gained `V2` (actions may be "HTTP request"s, with sealed
    // header values). `V1` records stay readable; the bump makes older binaries refuse the
    // file instead of failing on every `V2` flow.
    |_| Ok(()),
    // 8 → 9: an entity-index row may stand for a run of events (the older ids in its value).
    // Rows of one event still read; older binaries would miss the runs' older events and
    // call the file damaged, so they refuse it instead.
    |_| Ok(()),
    // 9 → 10: each workspace's events move to a table of their own, keyed by id alone.
    super::migrations::events_to_workspace_tables,
];

pub(super) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub(super) const META_KEY_CHECK: &[u8] = b"key_check";
pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"clockify-studio encryption key check";

pub(super) fn builder() -> Builder {
    let mut builder = Builder::new();
    // One writer process; `backup` and `check` may read the file while the server runs.
    builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    // Page cache; with jemalloc, the live channel, the waiting dedupe rows and connection
    // buffers it keeps the server within 64 MB at 256 concurrent deliveries (`cargo bench
    // --bench ingest`: 57 MB; 67 MB with 24 MB here). Reads that miss it are served from the
    // OS page cache.
    builder.set_cache_size(16 * 1024 * 1024);
    // A full repair (a file last written without the allocator state, e.g. by an older
    // version, then killed) walks every page: say so, it can take a while on a big file.
    let logged = std::cell::Cell::new(-1i32);
    builder.set_repair_callback(move |session| {
        let quarter = (session.progress() * 4.0) as i32;
        if quarter > logged.get() {
            logged.set(quarter);
            tracing::warn!(
                progress_pct = quarter * 25,
                "repairing the data file after an unclean stop (a walk of the whole file)"
            );
        }
    });
    builder
}

/// The open data file of a running server.
pub struct Store {
    /// The open file and what is known about it (shared with the writer, which reopens it
    /// after an I/O error).
    pub(super) slot: Arc<Slot>,
    pub(super) writer: Writer,
    secrets: SecretBox,
    path: PathBuf,
    /// Installations and the webhook-token index, mirrored in memory: every delivery needs
    /// them, and they change only through the writer (kept in step after each commit).
    pub(super) cache: Arc<InstallationCache>,
    /// Committed events, announced in commit order.
    pub(super) live: tokio::sync::broadcast::Sender<Arc<StoredEvent>>,
    /// Every flow, and the enabled ones by trigger: ingestion queues runs without a read.
    pub(super) flow_index: Arc<FlowIndex>,
    /// Committed runs on their way to the flow engine.
    pub(super) run_dispatch: Arc<RunDispatch>,
    /// Dedupe rows not yet written to their table.
    pub(super) dedupe: Arc<PendingDedupe>,
    /// Enabled destinations by workspace: ingestion queues deliveries without a read.
    pub(super) destination_index: Arc<DestinationIndex>,
    /// Committed deliveries on their way to the delivery engine.
    pub(super) delivery_dispatch: Arc<DeliveryDispatch>,
    /// Workspaces whose flows are paused.
    pub(super) pauses: Arc<PauseMirror>,
    /// Entity index rows not yet written to their table, and the buckets.
    pub(super) entity_index: Arc<EntityIndex>,
}

/// Committed events buffered for slow live listeners before they fall back to the store.
const LIVE_CHANNEL_CAPACITY: usize = 256;

impl Store {
    /// Opens (or creates) the data file, migrates it forward and checks the encryption key.
    /// A file that exists but is empty, or that redb cannot read, is refused as
    /// [`StoreError::Damaged`] (never reinitialised).
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<Store, StoreError> {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Damaged(
                "the file is empty (0 bytes), so it holds no data; if this is a fresh install, remove it".into(),
            ));
        }
        let secrets = SecretBox::new(key);
        let (db, cache, flow_index, destination_index, dedupe, pauses, entity_index) =
            catch_panic(|| {
                let db = builder().create(path)?;
                prepare(&db, &secrets)?;
                let cache = Arc::new(InstallationCache::load(&db)?);
                let flow_index = Arc::new(FlowIndex::load(&db)?);
                let destination_index = Arc::new(DestinationIndex::load(&db)?);
                let pauses = Arc::new(PauseMirror::load(&db)?);
                let (dedupe, entity_index) = load_recent_views(&db)?;
                Ok((
                    db,
                    cache,
                    flow_index,
                    destination_index,
                    Arc::new(dedupe),
                    pauses,
                    Arc::new(entity_index),
                ))
            })
            .map_err(|err| match err {
                // Every record read at open was written by this or an older release.
                StoreError::Decode(detail) => {
                    StoreError::Damaged(format!("a record does not decode: {detail}"))
                }
                other => other,
            })?;
        let slot = Arc::new(Slot::new(db, path));
        let reopen = {
            let path = path.to_path_buf();
            let (cache, flow_index) = (cache.clone(), flow_index.clone());
            let destinations = destination_index.clone();
            let pauses = pauses.clone();
            let (dedupe, entity_index) = (dedupe.clone(), entity_index.clone());
            Reopen {
                // `open`, not `create`: a file that vanished must not come back empty.
                open: Box::new(move || Ok(builder().open(&path)?)),
                // The batch that failed was aborted: the views come back from what the file
                // holds, as at a restart.
                reload: Box::new(move |db| {
                    cache.replace_with(InstallationCache::load(db)?);
                    flow_index.replace_with(FlowIndex::load(db)?);
                    destinations.replace_with(DestinationIndex::load(db)?);
                    pauses.replace_with(PauseMirror::load(db)?);
                    let (fresh_dedupe, fresh_index) = load_recent_views(db)?;
                    dedupe.replace_with(fresh_dedupe);
                    entity_index.replace_with(fresh_index);
                    Ok(())
                }),
            }
        };
        let writer = Writer::start(slot.clone(), reopen);
        Ok(Store {
            slot,
            writer,
            secrets,
            path: path.to_path_buf(),
            cache,
            live: tokio::sync::broadcast::channel(LIVE_CHANNEL_CAPACITY).0,
            flow_index,
            run_dispatch: Arc::new(RunDispatch::new()),
            dedupe,
            destination_index,
            delivery_dispatch: Arc::new(DeliveryDispatch::new()),
            pauses,
            entity_index,
        })
    }

    /// Readiness and liveness of the data file, each with the reason when it fails.
    pub fn status(&self) -> StoreStatus {
        self.slot.status()
    }

    /// What to tell an operator about a damaged data file at `path`.
    pub fn damage_advice(path: &Path) -> String {
        damage_advice(path)
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
        self.status().ready?;
        self.read(|rtx| {
            rtx.open_table(META)?;
            Ok(())
        })
        .await
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

    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(op, None).await
    }

    /// Like [`Store::write`], then runs `after_commit` on the writer thread once the change is
    /// durable, in commit order (before the caller's future resolves).
    pub(super) async fn write_then<T, F>(
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
    pub(super) async fn read_record<T: Send + 'static>(
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

    /// Runs a read on the blocking pool inside its own read transaction. Damage it meets
    /// marks the file damaged; a record that does not decode, or a panic, wakes the integrity
    /// pass, which decides.
    pub(super) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.read_db(move |db| {
            let rtx = db.begin_read()?;
            op(&rtx)
        })
        .await
    }

    /// [`Store::read`] for reads that begin their own read transactions (entity lookups).
    pub(super) async fn read_db<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.slot.db()?;
        let result = tokio::task::spawn_blocking(move || {
            // redb may panic on a page damaged outside it: caught here (the hook kept quiet),
            // answered as an error, and left to the integrity pass to judge.
            crate::telemetry::expected_panics(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&db)))
            })
            .map_err(|panic| super::health::panic_text(&*panic))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .unwrap_or_else(|panic| {
            self.slot.suspect.notify_one();
            Err(StoreError::Storage(format!("a read failed: {panic}")))
        });
        self.slot.observe(&result);
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}

/// The dedupe rows and entity index rows that wait in memory, rebuilt from the log of recent
/// events alone (at open, and after the writer reopened the file).
fn load_recent_views(db: &Database) -> Result<(PendingDedupe, EntityIndex), StoreError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let dedupe = PendingDedupe::default();
    let mut index = IndexLoader::new(&db.begin_read()?)?;
    super::recent::for_each(db, |id, row| {
        dedupe.restore(&id, &row, now_ms);
        index.add(&id, &row);
    })?;
    Ok((dedupe, index.finish()))
}

/// Creates missing tables, checks the schema version (migrating older files forward) and
/// the encryption key, all in one transaction.
fn prepare(db: &Database, secrets: &SecretBox) -> Result<(), StoreError> {
    let wtx = begin_durable(db)?;
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

pub(super) fn read_u32(bytes: &[u8]) -> Result<u32, StoreError> {
    let array: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Decode("schema version is not 4 bytes".into()))?;
    Ok(u32::from_le_bytes(array))
}

/// Opens a data file for an offline command (`erase-workspace`, `rotate-key`): it must exist,
/// no server may hold it ([`StoreError::InUse`] otherwise), and a newer release must not have
/// written it.
pub(super) fn open_unheld(path: &Path) -> Result<Database, StoreError> {
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let db = match builder().open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => return Err(StoreError::InUse),
        Err(other) => return Err(other.into()),
    };
    check_schema(&db)?;
    Ok(db)
}

/// The file's schema version, refused when a newer release wrote it.
pub(super) fn check_schema(db: &impl ReadableDatabase) -> Result<u32, StoreError> {
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
    Ok(version)
}
