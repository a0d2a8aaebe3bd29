//! Offline and side-by-side work on a data file: `check` (integrity, schema version, counts
//! per table, used and free pages), `backup` (a consistent copy taken inside one read
//! transaction), `compact` (gives free pages back to the file system; offline only), and the
//! integrity pass a running server makes in the background.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableHandle};

use super::cache::check_cache_record;
use super::db::{Store, builder, check_schema};
use super::entity_index::{Bucket, META_BUCKETS};
use super::erase::{TableCounts, check_workspace_id, count_workspace};
use super::error::StoreError;
use super::event_record::decode_event;
use super::flow_model::{decode_flow, decode_run, decode_stats};
use super::health::{Condition, LAST_BACKUP_FILE, Slot, catch_panic};
use super::installation_model::decode_installation;
use super::recent::RecentRow;
use super::schema::{
    EVENTS_LABEL, EventId, all_table_names, decode, events_table_workspace, insert_sorted,
    named_table,
};
use super::secrets::Sealed;
use super::sources::decode_source;
use super::subscriptions::check_report_record;
use super::writer::begin_durable;

/// What `check` found in a data file.
#[derive(Debug)]
pub struct CheckReport {
    pub schema_version: u32,
    /// `None` when the server holds the file: the full integrity check needs exclusive access,
    /// so only a full read of every table was done.
    pub integrity_verified: Option<bool>,
    pub tables: Vec<(String, u64)>,
    /// With a workspace asked for: its rows per table.
    pub workspace: Option<TableCounts>,
    pub file_size: u64,
    /// Pages in use and free (reused by later writes; `compact` returns them), when no server
    /// holds the file.
    pub pages: Option<PageUse>,
}

/// How the file's pages are used.
#[derive(Debug, Clone, Copy)]
pub struct PageUse {
    pub page_size: u64,
    pub used: u64,
    pub free: u64,
}

fn page_use(db: &redb::Database, file_size: u64) -> Result<PageUse, StoreError> {
    let wtx = db.begin_write()?;
    let stats = wtx.stats()?;
    wtx.abort()?;
    let page_size = stats.page_size() as u64;
    let used = stats.allocated_pages();
    Ok(PageUse {
        page_size,
        used,
        free: (file_size / page_size).saturating_sub(used),
    })
}

/// Gives the free pages of a file no server holds back to the file system; returns the file
/// size before and after. A server must be stopped first ([`StoreError::InUse`]).
pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let before = std::fs::metadata(path)?.len();
    let mut db = match builder().open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => return Err(StoreError::InUse),
        Err(other) => return Err(other.into()),
    };
    check_schema(&db)?;
    while db.compact()? {}
    drop(db);
    Ok((before, std::fs::metadata(path)?.len()))
}

/// Opens the file without the encryption key and checks it: integrity (when no server holds
/// it), schema version, and a full read of every table with every record decoded; with
/// `workspace`, also counts that workspace's rows per table.
pub fn check(path: &Path, workspace: Option<&str>) -> Result<CheckReport, StoreError> {
    if let Some(ws) = workspace {
        check_workspace_id(ws)?;
    }
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let file_size = std::fs::metadata(path)?.len();
    if file_size == 0 {
        return Err(StoreError::Damaged("the file is empty (0 bytes)".into()));
    }
    catch_panic(|| match builder().open(path) {
        Ok(mut db) => {
            let integrity = db.check_integrity()?;
            let (schema_version, tables) = scan(&db)?;
            Ok(CheckReport {
                schema_version,
                integrity_verified: Some(integrity),
                tables,
                workspace: workspace_counts(&db, workspace)?,
                pages: Some(page_use(&db, file_size)?),
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
                workspace: workspace_counts(&db, workspace)?,
                pages: None,
                file_size,
            })
        }
        Err(other) => Err(other.into()),
    })
}

fn workspace_counts(
    db: &impl ReadableDatabase,
    workspace: Option<&str>,
) -> Result<Option<TableCounts>, StoreError> {
    workspace
        .map(|ws| count_workspace(&db.begin_read()?, ws))
        .transpose()
}

/// Reads every entry of every table, decoding each record (so a damaged page or value
/// surfaces), and checks the schema version.
fn scan(db: &impl ReadableDatabase) -> Result<(u32, Vec<(String, u64)>), StoreError> {
    let version = check_schema(db)?;
    let rtx = db.begin_read()?;
    let mut counts: Vec<(String, u64)> = Vec::new();
    let names = all_table_names(rtx.list_tables()?.map(|t| t.name().to_string()));
    // The per-workspace events tables are counted as one.
    let mut events = 0u64;
    for name in &names {
        let handle = match rtx.open_table(named_table(name)) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                counts.push((name.clone(), 0));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for entry in handle.iter()? {
            let (k, v) = entry?;
            check_value(name, k.value(), v.value())?;
            n += 1;
        }
        match events_table_workspace(name) {
            Some(_) => events += n,
            None => counts.push((name.clone(), n)),
        }
    }
    counts.insert(3.min(counts.len()), (EVENTS_LABEL.to_string(), events));
    Ok((version, counts))
}

/// Whether a value of `table` reads back as what that table holds: records decode (event
/// bodies decompress), index values have their fixed shapes. Public for the fuzz targets.
pub fn check_value(table: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    let shape = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(StoreError::Decode(format!(
                "a value in {table} is not {what} ({} bytes)",
                value.len()
            )))
        }
    };
    match table {
        "meta" => match key {
            b"key_check" => decode::<Sealed>(value).map(drop),
            META_BUCKETS => decode::<Vec<Bucket>>(value).map(drop),
            _ => shape(value.len() == 4 || value.len() == 8, "a number"),
        },
        "installations" => decode_installation(value).map(drop),
        "events" => {
            // `[len][ws][id]` (schema 9 and older); the key only fills in what a record
            // leaves out.
            let (ws, id) = split_event_key(key).unwrap_or_default();
            decode_event(&ws, &id, value).map(drop)
        }
        name if events_table_workspace(name).is_some() => {
            let ws = events_table_workspace(name).unwrap_or_default();
            let id: EventId = key.try_into().unwrap_or_default();
            decode_event(ws, &id, value).map(drop)
        }
        "recent_events" => decode::<RecentRow>(value).map(drop),
        "flows" => decode_flow(value).map(drop),
        "flow_stats" => decode_stats(value).map(drop),
        "flow_runs" => decode_run(value).map(drop),
        "sources" => decode_source(value).map(drop),
        "subscriptions" => check_report_record(value),
        "entities" | "bootstrap" | "executions" => check_cache_record(table, value),
        "webhook_tokens" | "flow_run_queue" => {
            shape(std::str::from_utf8(value).is_ok(), "a workspace id")
        }
        "event_dedupe" => shape(value.len() == 24, "a dedupe row"),
        "flow_runs_by_event" => shape(value.len() == 16, "a run id"),
        "flow_run_starts" => shape(value.len() == 4, "a count"),
        "events_by_type" | "sources_by_workspace" | "flow_runs_by_flow" => {
            shape(value.is_empty(), "empty")
        }
        "entity_events" => shape(value.len() % 16 == 0, "event ids"),
        _ => Ok(()),
    }
}

/// The workspace and event id of an `events` key.
fn split_event_key(key: &[u8]) -> Option<(String, EventId)> {
    let (len, rest) = key.split_first()?;
    let (ws, id) = rest.split_at_checked(*len as usize)?;
    Some((
        std::str::from_utf8(ws).ok()?.to_string(),
        id.try_into().ok()?,
    ))
}

/// Entries read per read transaction by the integrity pass: short transactions do not hold
/// old pages from reuse for long.
const VERIFY_CHUNK: usize = 1_000;
/// Pause between chunks, so the pass leaves the disk and a core to requests.
const VERIFY_PAUSE: Duration = Duration::from_millis(2);
/// The first pass waits this long after start, so start-up traffic goes first.
const FIRST_PASS_DELAY: Duration = Duration::from_secs(1);

/// What an integrity pass read.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: u64,
    pub elapsed: Duration,
}

enum Chunk {
    /// Entries read, and the last key when the table goes on.
    Read(u64, Option<Vec<u8>>),
    /// The file was closed or is being reopened: try again later.
    Interrupted,
}

impl Store {
    /// Runs the integrity pass after start, then again whenever a read meets a record that
    /// does not decode or the file was reopened, until `shutdown`. A pass that finds damage
    /// marks the file damaged: readiness and liveness fail with the advice, reads and writes
    /// are refused.
    pub async fn watch_integrity(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(FIRST_PASS_DELAY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        loop {
            match self.verify(&shutdown).await {
                Ok(Some(report)) => {
                    metrics::counter!("store_integrity_passes_total", "outcome" => "ok")
                        .increment(1);
                    tracing::info!(
                        entries = report.entries,
                        seconds = report.elapsed.as_secs_f64(),
                        "integrity pass over the data file found no damage"
                    );
                }
                Ok(None) => {}
                Err(err) => {
                    metrics::counter!("store_integrity_passes_total", "outcome" => "damaged")
                        .increment(1);
                    tracing::debug!(error = %err, "integrity pass found damage");
                }
            }
            if matches!(self.slot.condition(), Condition::Damaged(_)) {
                // Nothing more to find; the server stays up to say so.
                let _ = shutdown.wait_for(|stop| *stop).await;
                return;
            }
            tokio::select! {
                _ = self.slot.suspect.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One pass over every table, decoding every record, a chunk at a time. `Ok(None)` when
    /// it was interrupted (shutdown, or the file is being reopened).
    pub async fn verify(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<VerifyReport>, StoreError> {
        let started = Instant::now();
        let mut report = VerifyReport::default();
        let names = self
            .read(|rtx| {
                Ok(all_table_names(
                    rtx.list_tables()?.map(|t| t.name().to_string()),
                ))
            })
            .await?;
        for table in names {
            let mut after: Option<Vec<u8>> = None;
            loop {
                if *stop.borrow() {
                    return Ok(None);
                }
                let slot = self.slot.clone();
                let from = after.take();
                let name = table.clone();
                let chunk = tokio::task::spawn_blocking(move || verify_chunk(&slot, name, from))
                    .await
                    .map_err(|e| StoreError::Storage(format!("integrity pass failed: {e}")))?;
                match chunk {
                    Ok(Chunk::Read(n, last)) => {
                        report.entries += n;
                        match last {
                            Some(last) => after = Some(last),
                            None => break,
                        }
                    }
                    Ok(Chunk::Interrupted) => return Ok(None),
                    Err(err) => {
                        let detail = match &err {
                            StoreError::Damaged(detail) => detail.clone(),
                            other => other.to_string(),
                        };
                        self.slot
                            .set_condition(Condition::Damaged(format!("table {table}: {detail}")));
                        return Err(err);
                    }
                }
                tokio::time::sleep(VERIFY_PAUSE).await;
            }
        }
        report.elapsed = started.elapsed();
        Ok(Some(report))
    }
}

/// Reads up to [`VERIFY_CHUNK`] entries of `table` after the key `after`.
fn verify_chunk(
    slot: &Arc<Slot>,
    table: String,
    after: Option<Vec<u8>>,
) -> Result<Chunk, StoreError> {
    let db = match slot.db() {
        Ok(db) => db,
        Err(StoreError::Unavailable(_)) => return Ok(Chunk::Interrupted),
        Err(err) => return Err(err),
    };
    let result = catch_panic(|| {
        let rtx = db.begin_read()?;
        let handle = match rtx.open_table(named_table(&table)) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Chunk::Read(0, None)),
            Err(e) => return Err(e.into()),
        };
        let range = match &after {
            Some(key) => {
                handle.range::<&[u8]>((Bound::Excluded(key.as_slice()), Bound::Unbounded))?
            }
            None => handle.iter()?,
        };
        let mut n = 0u64;
        for entry in range {
            let (k, v) = entry?;
            check_value(&table, k.value(), v.value()).map_err(|e| match e {
                StoreError::Decode(detail) => StoreError::Damaged(detail),
                other => other,
            })?;
            n += 1;
            if n as usize == VERIFY_CHUNK {
                return Ok(Chunk::Read(n, Some(k.value().to_vec())));
            }
        }
        Ok(Chunk::Read(n, None))
    });
    match result {
        // Closed under it (a reopen, or shutdown): not damage.
        Err(StoreError::Storage(_) | StoreError::Io(_) | StoreError::Unavailable(_)) => {
            Ok(Chunk::Interrupted)
        }
        other => other,
    }
}

/// Writes a consistent copy of the data file to `dest`: every table is copied inside one
/// read transaction, committed durably to a temporary file, then renamed into place. Works
/// while a server holds the file (it reads alongside the writer) and when none does. A
/// failed backup leaves nothing behind (no `.partial` file filling the target disk).
pub fn backup(src: &Path, dest: &Path) -> Result<u64, StoreError> {
    if !src.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            src.display()
        )));
    }
    yield_to_requests();
    let copied = write_whole(dest, |tmp| catch_panic(|| write_copy(src, tmp)))?;
    note_backup(src, dest);
    Ok(copied)
}

/// Writes `dest` through `write`, which fills the `.partial` file beside it: `dest` appears,
/// durably, only when `write` succeeded, and a failure leaves no `.partial` file behind.
fn write_whole(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<u64, StoreError>,
) -> Result<u64, StoreError> {
    let tmp = partial_path(dest);
    let _ = std::fs::remove_file(&tmp);
    let written = write(&tmp).and_then(|written| {
        std::fs::rename(&tmp, dest)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(written)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Lowers the calling thread's CPU and I/O priority (on Linux both are per thread): a backup
/// reads the whole file, and on a small machine it would otherwise take a core and the disk
/// from the server's requests. It goes at full speed when the machine is idle. Best effort.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, with constant arguments.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        // IOPRIO_WHO_PROCESS (1), this thread (0), best-effort class (2) at its lowest level (7).
        libc::syscall(libc::SYS_ioprio_set, 1, 0, (2 << 13) | 7);
    }
}

/// Where a backup to `dest` is written before it is complete.
pub fn partial_path(dest: &Path) -> PathBuf {
    dest.with_extension("partial")
}

fn write_copy(src: &Path, tmp: &Path) -> Result<u64, StoreError> {
    match builder().open_read_only(src) {
        Ok(db) => copy_tables(&db, src, tmp),
        // A file left by a crash needs a repair, which only a writer may do; that is possible
        // exactly when no server holds it.
        Err(redb::DatabaseError::RepairAborted) | Err(redb::DatabaseError::Storage(_)) => {
            let db = builder().open(src)?;
            copy_tables(&db, src, tmp)
        }
        Err(other) => Err(other.into()),
    }
}

/// Names the backup in the data directory, so advice about a damaged file can point at it
/// (best effort: a backup that cannot say so is still a backup).
fn note_backup(src: &Path, dest: &Path) {
    let Some(dir) = src.parent() else { return };
    let dest = std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
    let when = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let _ = std::fs::write(
        dir.join(LAST_BACKUP_FILE),
        format!("{}, written {when}\n", dest.display()),
    );
}

impl Store {
    /// [`backup`] from the server's own open file (a second open of it in this process is
    /// refused): every table copied inside one read transaction, so writers go on meanwhile.
    /// Runs on the blocking pool; returns the records copied.
    pub async fn snapshot(&self, dest: std::path::PathBuf) -> Result<u64, StoreError> {
        let db = self.slot.db()?;
        let src_path = self.path().to_path_buf();
        let (done, outcome) = tokio::sync::oneshot::channel();
        // Its own thread: the lowered priority must not stay with a pooled thread.
        let copy = move || {
            yield_to_requests();
            write_whole(&dest, |tmp| copy_tables(&*db, &src_path, tmp))
        };
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let _ = done.send(copy());
            })?;
        outcome
            .await
            .map_err(|e| StoreError::Storage(format!("snapshot task failed: {e}")))?
    }
}

fn copy_tables(
    src: &impl ReadableDatabase,
    src_path: &Path,
    tmp: &Path,
) -> Result<u64, StoreError> {
    let rtx = src.begin_read()?;
    // Written the way the server writes (two-phase commits), so the allocator state is kept
    // and a server started on a restored copy opens it without walking the whole file.
    let dest = builder().create(tmp)?;
    let writeback = Writeback::new(tmp, src_path)?;
    let wtx = begin_durable(&dest)?;
    let prefetch = prefetch_wanted(
        std::fs::metadata(src_path).map_or(0, |m| m.len()),
        mem_available(),
        writeback.busy(),
    );
    let copy_done = std::sync::atomic::AtomicBool::new(false);
    // Rows are read on this thread and inserted on a second one: reading a tree and building
    // one cost about the same, so on an idle machine the copy takes both cores.
    let (send, receive) = std::sync::mpsc::sync_channel::<Run>(4);
    let copied = std::thread::scope(|scope| {
        if prefetch {
            scope.spawn(|| read_ahead(src_path, &copy_done));
        }
        let inserter = scope.spawn(move || insert_rows(wtx, receive, writeback));
        let read = read_rows(&rtx, &send);
        copy_done.store(true, std::sync::atomic::Ordering::Relaxed);
        if read.is_ok() {
            // Only a reader that got to the end says so: the copy is committed after this.
            let _ = send.send(Run::End);
        }
        drop(send);
        let inserted = inserter
            .join()
            .unwrap_or_else(|_| Err(StoreError::Storage("the backup's writer panicked".into())));
        // A read error ends the copy early; an insert error closes the channel under the
        // reader, which then stops: either way the first error is the one to report.
        read.and(inserted)
    })?;
    drop(dest);
    Ok(copied)
}

/// Whether to read the source file ahead of the copy, front to back, into the page cache. The
/// copy walks each table's tree, whose pages lie all over the file: from a file not in the
/// page cache (a big file after a busy day) that is a random read per page, several times
/// slower than reading the file in order alongside (docs/performance.md). Not when the file
/// would not fit in the memory available (what it read first would be gone before the copy
/// got to it, with the server's own pages), nor while the server writes (the copy is paced
/// then, and the file's pages in use are cached).
fn prefetch_wanted(file_len: u64, mem_available: Option<u64>, busy: bool) -> bool {
    !busy && mem_available.is_some_and(|available| file_len <= available / 2)
}

/// `MemAvailable` of /proc/meminfo, in bytes (`None` where there is none).
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads `path` front to back in large blocks (into one buffer, thrown away) until its end or
/// until `done`; returns the bytes read. Best effort: an error just ends it.
fn read_ahead(path: &Path, done: &std::sync::atomic::AtomicBool) -> u64 {
    use std::io::Read;
    yield_to_requests();
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut buffer = vec![0u8; 8 << 20];
    let mut read = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        match file.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n as u64,
        }
    }
    read
}

/// What the reader hands the inserter.
enum Run {
    Rows(Rows),
    /// Every table was read.
    End,
}

/// A run of rows of one table, keys and values end to end in `bytes`.
struct Rows {
    table: Arc<str>,
    bytes: Vec<u8>,
    /// Where each key ends and its value ends, in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Rows {
    /// Rows per run: big enough that the channel costs nothing per row.
    const BYTES: usize = 1 << 20;

    fn new(table: &Arc<str>) -> Rows {
        Rows {
            table: table.clone(),
            bytes: Vec::with_capacity(Rows::BYTES + 64 * 1024),
            ends: Vec::new(),
        }
    }
}

/// Sends every table's rows in runs; stops early (without error) when the inserter is gone.
fn read_rows(
    rtx: &redb::ReadTransaction,
    send: &std::sync::mpsc::SyncSender<Run>,
) -> Result<(), StoreError> {
    for name in all_table_names(rtx.list_tables()?.map(|t| t.name().to_string())) {
        let source = match rtx.open_table(named_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let name: Arc<str> = name.into();
        // Every table is sent, an empty one too, so that the copy has the same tables.
        let mut rows = Rows::new(&name);
        for entry in source.iter()? {
            let (k, v) = entry?;
            rows.bytes.extend_from_slice(k.value());
            let key_end = rows.bytes.len();
            rows.bytes.extend_from_slice(v.value());
            rows.ends.push((key_end, rows.bytes.len()));
            if rows.bytes.len() >= Rows::BYTES {
                let full = std::mem::replace(&mut rows, Rows::new(&name));
                if send.send(Run::Rows(full)).is_err() {
                    return Ok(());
                }
            }
        }
        if send.send(Run::Rows(rows)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Inserts the runs of rows as they come and commits when the reader says it got to the end;
/// returns how many rows. A reader that stops without saying so failed: the copy is then
/// dropped uncommitted (committing it would write out a partial copy for nothing).
fn insert_rows(
    wtx: redb::WriteTransaction,
    receive: std::sync::mpsc::Receiver<Run>,
    mut writeback: Writeback,
) -> Result<u64, StoreError> {
    // As the reader's thread (the copy's priority is not left to inheritance).
    yield_to_requests();
    let mut copied = 0u64;
    loop {
        let rows = match receive.recv() {
            Ok(Run::Rows(rows)) => rows,
            Ok(Run::End) => break,
            Err(_) => {
                return Err(StoreError::Storage(
                    "the backup stopped before every table was read".into(),
                ));
            }
        };
        let mut target = wtx.open_table(named_table(&rows.table))?;
        let mut start = 0;
        let entries: Vec<(&[u8], &[u8])> = rows
            .ends
            .iter()
            .map(|&(key_end, end)| {
                let entry = (&rows.bytes[start..key_end], &rows.bytes[key_end..end]);
                start = end;
                entry
            })
            .collect();
        // In key order into an empty table: one gap, written as full leaves.
        insert_sorted(&mut target, &entries)?;
        copied += rows.ends.len() as u64;
        writeback.wrote(rows.bytes.len());
    }
    wtx.commit()?;
    Ok(copied)
}

/// Writes a copy out to the disk as it goes, a few MB at a time, waiting for each step, and
/// holds it to a modest rate while the server is writing. Every commit of the server flushes
/// the disk's cache, and that flush also carries whatever the copy wrote since the previous
/// one: unpaced, a backup made each commit wait for tens of MB. The kernel would also keep the
/// whole copy in memory and write it at the final sync, in one burst the commits queue behind
/// (the disk's scheduler, e.g. mq-deadline, ignores the backup's lower I/O priority).
struct Writeback {
    file: std::fs::File,
    /// The file being copied: written within [`Writeback::BUSY`] means the server is at work.
    source: PathBuf,
    since: usize,
    step_started: Instant,
}

impl Writeback {
    const STEP: usize = 4 * 1024 * 1024;
    /// A source written this recently is in use.
    const BUSY: Duration = Duration::from_millis(500);
    /// Bytes per second the copy keeps to while the server writes: a 600 MB copy then takes
    /// about 40 s under load (docs/performance.md has the measurements).
    const BUSY_RATE: f64 = 16e6;

    fn new(path: &Path, source: &Path) -> Result<Writeback, StoreError> {
        Ok(Writeback {
            file: std::fs::OpenOptions::new().write(true).open(path)?,
            source: source.to_path_buf(),
            since: 0,
            step_started: Instant::now(),
        })
    }

    fn busy(&self) -> bool {
        std::fs::metadata(&self.source)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|ago| ago < Self::BUSY))
    }

    fn wrote(&mut self, bytes: usize) {
        self.since += bytes;
        if self.since < Self::STEP {
            return;
        }
        let step = std::mem::take(&mut self.since);
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor this struct owns. Best effort:
            // an error only means the rest is written at the final sync, as without this.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        std::thread::sleep(Self::pause(step, self.step_started.elapsed(), self.busy()));
        self.step_started = Instant::now();
    }

    /// How long to wait after a step of `step` bytes that took `took`.
    fn pause(step: usize, took: Duration, busy: bool) -> Duration {
        if !busy {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(step as f64 / Self::BUSY_RATE).saturating_sub(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file is read ahead of the copy only when it fits in half the memory available and
    /// the server is not writing it; reading ahead goes to the end unless the copy is done.
    #[test]
    fn a_backup_reads_its_source_ahead_only_when_that_helps() {
        let gb = 1 << 30;
        assert!(prefetch_wanted(gb, Some(4 * gb), false));
        assert!(
            !prefetch_wanted(gb, Some(4 * gb), true),
            "busy: the copy is paced"
        );
        assert!(
            !prefetch_wanted(3 * gb, Some(4 * gb), false),
            "too big for the memory"
        );
        assert!(!prefetch_wanted(gb, None, false), "memory unknown");
        if cfg!(target_os = "linux") {
            assert!(mem_available().is_some_and(|bytes| bytes > 0));
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        std::fs::write(&path, vec![7u8; 20 << 20]).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        assert_eq!(read_ahead(&path, &done), 20 << 20);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(read_ahead(&path, &done), 0, "a finished copy needs no more");
    }

    /// The inserter commits the copy only once the reader says it read every table: a reader
    /// that failed half-way (a damaged page) leaves an uncommitted copy, not a partial one
    /// written out in full.
    #[test]
    fn a_copy_is_committed_only_when_every_table_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("data.redb");
        std::fs::write(&source, b"").unwrap();
        let table: Arc<str> = Arc::from("meta");
        let copy_with = |end: bool| {
            let path = dir.path().join(format!("copy-{end}"));
            let db = builder().create(&path).unwrap();
            let writeback = Writeback::new(&path, &source).unwrap();
            let (send, receive) = std::sync::mpsc::sync_channel(4);
            let mut rows = Rows::new(&table);
            rows.bytes.extend_from_slice(b"keyvalue");
            rows.ends.push((3, 8));
            send.send(Run::Rows(rows)).unwrap();
            if end {
                send.send(Run::End).unwrap();
            }
            drop(send);
            let outcome = insert_rows(begin_durable(&db).unwrap(), receive, writeback);
            let tables = db.begin_read().unwrap().list_tables().unwrap().count();
            (outcome.map_err(|e| e.to_string()), tables)
        };
        assert_eq!(copy_with(true), (Ok(1), 1));
        let (outcome, tables) = copy_with(false);
        assert!(
            outcome
                .as_ref()
                .is_err_and(|e| e.contains("before every table was read")),
            "{outcome:?}"
        );
        assert_eq!(
            tables, 0,
            "nothing of a copy whose reader stopped is committed"
        );
    }

    /// While the server writes its file, each step of the copy is spread over the time the
    /// busy rate allows; on an idle file the copy does not wait.
    #[test]
    fn a_backup_paces_its_writes_while_the_source_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (source, copy) = (dir.path().join("data.redb"), dir.path().join("copy"));
        std::fs::write(&copy, b"").unwrap();
        let file = std::fs::File::create(&source).unwrap();
        let writeback = Writeback::new(&copy, &source).unwrap();
        assert!(writeback.busy(), "a file written just now is in use");
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(5))
            .unwrap();
        assert!(!writeback.busy(), "a file untouched for seconds is idle");

        let step = Writeback::STEP;
        let whole = Duration::from_secs_f64(step as f64 / Writeback::BUSY_RATE);
        assert_eq!(
            Writeback::pause(step, Duration::ZERO, false),
            Duration::ZERO
        );
        assert_eq!(Writeback::pause(step, Duration::ZERO, true), whole);
        let took = Duration::from_millis(100);
        assert_eq!(Writeback::pause(step, took, true), whole - took);
        assert_eq!(Writeback::pause(step, whole * 2, true), Duration::ZERO);
    }
}
