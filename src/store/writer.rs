//! The single writer: every write of the process goes through one thread that batches
//! whatever requests are waiting into one durable transaction (group commit). A caller's
//! future resolves only after the transaction holding its change has been committed.
//!
//! After an I/O error redb refuses every later transaction until the file is reopened. The
//! writer does that itself: at once for most errors, and for a full disk once space has come
//! back (reads go on meanwhile); jobs that arrive before are refused at once with the reason.
//! Reopening in the process, rather than exiting for systemd to restart it, keeps answering
//! (507 to deliveries, readiness saying why) while the disk is full, and needs no supervisor.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, Table, TableDefinition, TableHandle, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;
use super::health::{Condition, Slot, catch_panic, free_bytes, panic_text};
use super::schema::named_table;

/// Upper bound on jobs per transaction, so one commit never grows without limit.
const MAX_BATCH: usize = 1024;

/// Called after the commit with its outcome (`None` = committed).
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A byte-keyed table as the writer keeps it open.
pub(crate) type OpenTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;
type ByteTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The batch's transaction with the tables that ingestion jobs have opened, kept open from one
/// such job to the next: opening a table looks it up in redb's table tree, and three opens per
/// event were ~9% of the writer thread's CPU at 256 clients (`cargo bench --bench ingest`).
/// Any other job sees the bare transaction, after the cache is closed, so it may open any table.
pub(crate) struct OpenTables<'txn> {
    wtx: &'txn WriteTransaction,
    open: Vec<(String, OpenTable<'txn>)>,
}

impl<'txn> OpenTables<'txn> {
    pub(crate) fn new(wtx: &'txn WriteTransaction) -> OpenTables<'txn> {
        OpenTables {
            wtx,
            open: Vec::new(),
        }
    }

    pub(crate) fn wtx(&self) -> &'txn WriteTransaction {
        self.wtx
    }

    /// `definition`'s table, opened on first use in this batch.
    pub(crate) fn get(
        &mut self,
        definition: ByteTable,
    ) -> Result<&mut OpenTable<'txn>, StoreError> {
        self.get_named(definition.name())
    }

    /// The table called `name` (an events table), opened (created) on first use in this batch.
    pub(crate) fn get_named(&mut self, name: &str) -> Result<&mut OpenTable<'txn>, StoreError> {
        let at = match self.open.iter().position(|(open, _)| open == name) {
            Some(at) => at,
            None => {
                let table = self.wtx.open_table(named_table(name))?;
                self.open.push((name.to_string(), table));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[at].1)
    }

    /// Closes every cached table (a table can be open only once per transaction).
    fn close(&mut self) {
        self.open.clear();
    }
}

/// One caller's change, waiting for a batch.
trait Job: Send {
    /// Runs inside the shared transaction; returns the completion and the storage error that
    /// poisons the transaction, if the job hit one.
    fn run(self: Box<Self>, tables: &mut OpenTables<'_>) -> (Completion, Option<StoreError>);
    /// The batch could not start; report why.
    fn fail(self: Box<Self>, err: &StoreError);
}

/// Runs on the writer thread right after a successful commit, in commit order: the place
/// to update in-memory views of the file and to announce what was committed.
pub(crate) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

struct TypedJob<T, F> {
    op: F,
    after_commit: Option<AfterCommit<T>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

/// How a job's operation is handed the transaction.
trait Operation<T>: Send + 'static {
    fn apply(self, tables: &mut OpenTables<'_>) -> Result<T, StoreError>;
}

/// A plain write: the bare transaction.
struct OnTransaction<F>(F);

impl<T, F> Operation<T> for OnTransaction<F>
where
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(self, tables: &mut OpenTables<'_>) -> Result<T, StoreError> {
        tables.close();
        (self.0)(tables.wtx)
    }
}

/// A write through the batch's open tables.
struct OnOpenTables<F>(F);

impl<T, F> Operation<T> for OnOpenTables<F>
where
    F: FnOnce(&mut OpenTables<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(self, tables: &mut OpenTables<'_>) -> Result<T, StoreError> {
        (self.0)(tables)
    }
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: Operation<T>,
{
    fn run(self: Box<Self>, tables: &mut OpenTables<'_>) -> (Completion, Option<StoreError>) {
        let TypedJob {
            op,
            after_commit,
            reply,
        } = *self;
        // A panic inside a job (in redb, on a damaged page) fails the batch, not the thread.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.apply(tables)))
            .unwrap_or_else(|panic| {
                Err(StoreError::Io(format!(
                    "a write failed unexpectedly: {}",
                    panic_text(&*panic)
                )))
            });
        let poisons = match &result {
            Err(
                err @ (StoreError::Storage(_)
                | StoreError::OutOfSpace(_)
                | StoreError::Io(_)
                | StoreError::Damaged(_)),
            ) => Some(err.duplicate()),
            _ => None,
        };
        let completion: Completion = Box::new(move |commit_error| {
            let outcome = match commit_error {
                Some(err) => Err(err.duplicate()),
                None => result,
            };
            if let (Ok(value), Some(after_commit)) = (&outcome, after_commit) {
                after_commit(value);
            }
            let _ = reply.send(outcome);
        });
        (completion, poisons)
    }

    fn fail(self: Box<Self>, err: &StoreError) {
        let _ = self.reply.send(Err(err.duplicate()));
    }
}

pub(crate) struct Writer {
    sender: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Opens the data file again.
type OpenFile = Box<dyn Fn() -> Result<Database, StoreError> + Send>;
/// Brings in-memory views in line with a reopened file.
type Reload = Box<dyn Fn(&Database) -> Result<(), StoreError> + Send>;

/// How the writer reopens the file after an I/O error.
pub(crate) struct Reopen {
    /// Opens the file again (the old handle is closed first).
    pub(crate) open: OpenFile,
    /// Brings the in-memory views in line with the reopened file.
    pub(crate) reload: Reload,
}

impl Writer {
    pub(crate) fn start(slot: Arc<Slot>, reopen: Reopen) -> Writer {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(slot, receiver, reopen))
            .expect("spawn store writer thread");
        Writer {
            sender: std::sync::Mutex::new(Some(sender)),
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    /// Runs `op` inside the next batch and waits for the batch's durable commit.
    ///
    /// `op` must not write anything before returning a non-storage error: a logical error
    /// (not found, conflict …) leaves the shared transaction untouched, while a storage error
    /// aborts the whole batch.
    pub(crate) async fn write<T, F>(
        &self,
        op: F,
        after_commit: Option<AfterCommit<T>>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(OnTransaction(op), after_commit).await
    }

    /// Like [`Writer::write`], for a hot path that works through tables kept open across the
    /// batch ([`OpenTables`]).
    pub(crate) async fn write_with_tables<T, F>(
        &self,
        op: F,
        after_commit: Option<AfterCommit<T>>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut OpenTables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(OnOpenTables(op), after_commit).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        op: impl Operation<T>,
        after_commit: Option<AfterCommit<T>>,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Box<dyn Job> = Box::new(TypedJob {
            op,
            after_commit,
            reply,
        });
        {
            let guard = self.sender.lock().expect("writer sender lock");
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops accepting jobs, commits what is queued and waits for the thread to end.
    pub(crate) fn shutdown(&self) {
        drop(self.sender.lock().expect("writer sender lock").take());
        if let Some(thread) = self.thread.lock().expect("writer thread lock").take() {
            let _ = thread.join();
        }
    }
}

/// Under concurrency, the jobs of the next batch arrive one by one while their requests are
/// parsed; committing at the first gap in arrivals, not at the first job, lets one fsync
/// carry more of them (a third fewer commits at 16 callers in `cargo bench --bench ingest`,
/// which matters where fsyncs are slow). A lone caller (the previous batch held one job)
/// never waits.
const ARRIVAL_GAP: Duration = Duration::from_micros(200);
/// The most a batch waits for more jobs after its first.
const MAX_LINGER: Duration = Duration::from_millis(2);

fn run(slot: Arc<Slot>, receiver: mpsc::Receiver<Box<dyn Job>>, reopen: Reopen) {
    let mut previous_batch = 1usize;
    let mut recovery = Recovery::new();
    loop {
        let first = if slot.condition() == Condition::Usable {
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        } else {
            // Wake up now and then to try to recover even when nothing is written.
            recovery.attempt_if_due(&slot, &reopen);
            match receiver.recv_timeout(RECOVERY_POLL) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        if let Some(refusal) = slot.write_refusal() {
            first.fail(&refusal);
            continue;
        }
        let db = match slot.db() {
            Ok(db) => db,
            Err(err) => {
                first.fail(&err);
                continue;
            }
        };
        let wtx = match catch_panic(|| begin(&db)) {
            Ok(wtx) => wtx,
            Err(err) => {
                tracing::error!(error = %err, "cannot begin a write transaction");
                recovery.note_failure(&slot, &err);
                first.fail(&err);
                continue;
            }
        };
        let mut batch = Batch::new();
        let mut tables = OpenTables::new(&wtx);
        batch.add(first, &mut tables);
        let linger_until = Instant::now() + MAX_LINGER;
        while batch.len() < MAX_BATCH {
            if let Ok(job) = receiver.try_recv() {
                batch.add(job, &mut tables);
                continue;
            }
            let now = Instant::now();
            if previous_batch <= 1 || now >= linger_until {
                break;
            }
            match receiver.recv_timeout(ARRIVAL_GAP.min(linger_until - now)) {
                Ok(job) => batch.add(job, &mut tables),
                Err(_) => break,
            }
        }
        drop(tables);
        previous_batch = batch.len();
        if let Some(err) = batch.commit(wtx) {
            recovery.note_failure(&slot, &err);
        }
        recovery.check_identity(&slot);
    }
}

/// How often the writer looks again at a file it could not use, while nothing is written.
const RECOVERY_POLL: Duration = Duration::from_millis(250);
/// Free space wanted before writes are tried again after a full disk.
const FREE_TO_RECOVER: u64 = 4 * 1024 * 1024;
/// How long readers may keep the old handle before the reopen waits for another turn.
const READERS_PATIENCE: Duration = Duration::from_secs(5);
/// Failed reopens (other than for space) before the file is reported unusable.
const REOPENS_BEFORE_UNUSABLE: u32 = 3;
const MAX_RECOVERY_BACKOFF: Duration = Duration::from_secs(30);

/// Reopens a file that hit an I/O error, with growing pauses between attempts. After an I/O
/// error redb refuses reads too, so the file is reopened at once, full disk or not (the
/// reopen's repair writes little); a full disk then keeps writes refused until there is
/// room again, without another reopen.
struct Recovery {
    next_attempt: Instant,
    failures: u32,
    /// The handle saw an I/O error: redb refuses it until it is reopened.
    poisoned: bool,
    /// When the file's identity was last compared with the path's.
    identity_checked: Instant,
}

/// How often the writer makes sure the path still names the file it writes to.
const IDENTITY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Recovery {
    fn new() -> Recovery {
        Recovery {
            next_attempt: Instant::now(),
            failures: 0,
            poisoned: false,
            identity_checked: Instant::now(),
        }
    }

    /// What a failed write says about the file.
    fn note_failure(&mut self, slot: &Slot, err: &StoreError) {
        match err {
            StoreError::OutOfSpace(detail) => {
                self.poisoned = true;
                slot.set_condition(Condition::OutOfSpace(detail.clone()));
            }
            StoreError::Io(detail) => {
                self.poisoned = true;
                slot.set_condition(Condition::Reopening(detail.clone()));
            }
            StoreError::Damaged(detail) => slot.set_condition(Condition::Damaged(detail.clone())),
            _ => {}
        }
        self.next_attempt = Instant::now();
    }

    /// Now and then: the path must still name the file being written (one deleted or
    /// replaced under the server takes writes that no restart will see).
    fn check_identity(&mut self, slot: &Slot) {
        if self.identity_checked.elapsed() >= IDENTITY_CHECK_INTERVAL {
            self.identity_checked = Instant::now();
            slot.check_identity();
        }
    }

    fn attempt_if_due(&mut self, slot: &Slot, reopen: &Reopen) {
        let now = Instant::now();
        if now < self.next_attempt {
            return;
        }
        self.next_attempt = now + Duration::from_secs(1);
        // No write commits while the disk is full, so the check after each commit does not
        // run: a file deleted meanwhile (its space held by our handle) would otherwise keep
        // the server waiting for space forever while it reports itself alive.
        if matches!(slot.condition(), Condition::OutOfSpace(_)) {
            slot.check_identity();
        }
        let condition = slot.condition();
        let reopen_needed = match condition {
            Condition::Usable | Condition::Damaged(_) => return,
            Condition::OutOfSpace(_) => self.poisoned,
            Condition::Reopening(_) | Condition::Unusable(_) => true,
        };
        if !reopen_needed {
            if free_bytes(slot.path()).is_some_and(|free| free >= FREE_TO_RECOVER) {
                slot.set_condition(Condition::Usable);
            }
            return;
        }
        let Some(old) = slot.take_when_unused(READERS_PATIENCE) else {
            tracing::warn!("readers kept the data file busy; the reopen waits");
            return;
        };
        if let Err(err) = old.close() {
            tracing::debug!(error = %err, "closing the failed handle reported an error");
        }
        // Taken before the open: a file deleted after it shows as a different identity.
        let opened = slot.path_identity();
        let reopened = catch_panic(|| (reopen.open)()).and_then(|db| {
            catch_panic(|| (reopen.reload)(&db))?;
            Ok(db)
        });
        match reopened {
            Ok(db) => {
                slot.put(db, opened);
                self.poisoned = false;
                self.failures = 0;
                metrics::counter!("store_reopens_total", "outcome" => "reopened").increment(1);
                tracing::info!("reopened the data file");
                match condition {
                    Condition::OutOfSpace(_)
                        if free_bytes(slot.path()).is_some_and(|free| free < FREE_TO_RECOVER) => {}
                    _ => slot.set_condition(Condition::Usable),
                }
                // A repair ran: have the integrity pass look at the file again.
                slot.suspect.notify_one();
            }
            Err(err) => {
                self.failures += 1;
                metrics::counter!("store_reopens_total", "outcome" => "failed").increment(1);
                tracing::warn!(error = %err, attempts = self.failures, "reopening the data file failed");
                let condition = match err {
                    StoreError::OutOfSpace(detail) => Condition::OutOfSpace(detail),
                    StoreError::Damaged(detail) => Condition::Damaged(detail),
                    // Unusable stays so (a deleted file does not come back by retrying).
                    other
                        if self.failures >= REOPENS_BEFORE_UNUSABLE
                            || matches!(condition, Condition::Unusable(_)) =>
                    {
                        Condition::Unusable(format!("it cannot be reopened: {other}"))
                    }
                    other => Condition::Reopening(other.to_string()),
                };
                slot.set_condition(condition);
                let backoff = Duration::from_secs(1 << self.failures.min(5));
                self.next_attempt = Instant::now() + backoff.min(MAX_RECOVERY_BACKOFF);
            }
        }
    }
}

/// Starts a durable write transaction. Each commit also records the allocator state (redb's
/// quick repair): without it, the first open after a crash walks every page of the file to
/// rebuild that state, so the start after a kill would grow with the data.
pub(super) fn begin_durable(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(redb::Durability::Immediate)?;
    wtx.set_quick_repair(true);
    Ok(wtx)
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    begin_durable(db)
}

/// The jobs of one write transaction: each runs as soon as it joins, so the work of a batch
/// overlaps the wait for its last jobs.
struct Batch {
    completions: Vec<Completion>,
    /// The first storage error a job hit: the batch is aborted with it.
    poisoned: Option<StoreError>,
    started: Instant,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            completions: Vec::new(),
            poisoned: None,
            started: Instant::now(),
        }
    }

    fn len(&self) -> usize {
        self.completions.len()
    }

    fn add(&mut self, job: Box<dyn Job>, tables: &mut OpenTables<'_>) {
        let (completion, poisons) = job.run(tables);
        if self.poisoned.is_none() {
            self.poisoned = poisons;
        }
        self.completions.push(completion);
    }

    /// Commits (or, when a job failed, aborts) and completes every job; returns the error
    /// that failed the batch.
    fn commit(self, wtx: WriteTransaction) -> Option<StoreError> {
        let batch_size = self.len();
        let committing = Instant::now();
        let outcome = match self.poisoned {
            Some(err) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wtx.abort()));
                Err(match err {
                    StoreError::Storage(detail) => StoreError::Storage(format!(
                        "a write in this batch failed ({detail}); nothing was committed"
                    )),
                    other => other,
                })
            }
            None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wtx.commit().map_err(StoreError::from)
            }))
            .unwrap_or_else(|panic| {
                Err(StoreError::Io(format!(
                    "the commit failed unexpectedly: {}",
                    panic_text(&*panic)
                )))
            }),
        };
        metrics::histogram!("store_commit_batch_size").record(batch_size as f64);
        metrics::histogram!("store_commit_seconds").record(committing.elapsed().as_secs_f64());
        metrics::histogram!("store_batch_seconds").record(self.started.elapsed().as_secs_f64());
        if outcome.is_err() {
            metrics::counter!("store_commit_failures_total").increment(1);
        }
        let error = outcome.err();
        if let Some(err) = &error {
            tracing::error!(error = %err, batch_size, "store commit failed");
        }
        for completion in self.completions {
            completion(error.as_ref());
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("writer_test");

    /// Ingest jobs reuse the batch's open table; a plain job later in the same batch can
    /// still open it itself (a table open twice in one transaction is an error), and a cached
    /// job after that opens it again.
    #[test]
    fn cached_tables_and_plain_jobs_share_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("data.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        let mut tables = OpenTables::new(&wtx);
        let cached = |key: &'static [u8]| {
            OnOpenTables(move |tables: &mut OpenTables<'_>| {
                tables.get(TABLE)?.insert(key, b"".as_slice())?;
                Ok(())
            })
        };
        cached(b"a").apply(&mut tables).unwrap();
        cached(b"b").apply(&mut tables).unwrap();
        OnTransaction(|wtx: &WriteTransaction| {
            wtx.open_table(TABLE)?
                .insert(b"c".as_slice(), b"".as_slice())?;
            Ok(())
        })
        .apply(&mut tables)
        .unwrap();
        cached(b"d").apply(&mut tables).unwrap();
        drop(tables);
        wtx.commit().unwrap();
        let rtx = redb::ReadableDatabase::begin_read(&db).unwrap();
        assert_eq!(rtx.open_table(TABLE).unwrap().len().unwrap(), 4);
    }
}
