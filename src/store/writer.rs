//! The single writer: every write of the process goes through one thread that batches
//! whatever requests are waiting into one durable transaction (group commit). A caller's
//! future resolves only after the transaction holding its change has been committed.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, Table, TableDefinition, TableHandle, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

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
        let at = match self
            .open
            .iter()
            .position(|(name, _)| *name == definition.name())
        {
            Some(at) => at,
            None => {
                let table = self.wtx.open_table(definition)?;
                self.open.push((definition.name().to_string(), table));
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
    /// Runs inside the shared transaction; returns the completion and whether the job hit a
    /// storage error that poisons the transaction.
    fn run(self: Box<Self>, tables: &mut OpenTables<'_>) -> (Completion, bool);
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
    fn run(self: Box<Self>, tables: &mut OpenTables<'_>) -> (Completion, bool) {
        let TypedJob {
            op,
            after_commit,
            reply,
        } = *self;
        let result = op.apply(tables);
        let poisons = matches!(result, Err(StoreError::Storage(_)));
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

impl Writer {
    pub(crate) fn start(db: Arc<Database>) -> Writer {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, receiver))
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

fn run(db: Arc<Database>, receiver: mpsc::Receiver<Box<dyn Job>>) {
    let mut previous_batch = 1usize;
    while let Ok(first) = receiver.recv() {
        let mut batch = Batch::new();
        let wtx = match begin(&db) {
            Ok(wtx) => wtx,
            Err(err) => {
                tracing::error!(error = %err, "cannot begin a write transaction");
                first.fail(&err);
                continue;
            }
        };
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
        batch.commit(wtx);
    }
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut wtx = db.begin_write()?;
    if let Err(err) = wtx.set_durability(Durability::Immediate) {
        tracing::error!(error = %err, "cannot set durable commits");
    }
    Ok(wtx)
}

/// The jobs of one write transaction: each runs as soon as it joins, so the work of a batch
/// overlaps the wait for its last jobs.
struct Batch {
    completions: Vec<Completion>,
    poisoned: bool,
    started: Instant,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            completions: Vec::new(),
            poisoned: false,
            started: Instant::now(),
        }
    }

    fn len(&self) -> usize {
        self.completions.len()
    }

    fn add(&mut self, job: Box<dyn Job>, tables: &mut OpenTables<'_>) {
        let (completion, poisons) = job.run(tables);
        self.poisoned |= poisons;
        self.completions.push(completion);
    }

    fn commit(self, wtx: WriteTransaction) {
        let batch_size = self.len();
        let committing = Instant::now();
        let outcome = if self.poisoned {
            let _ = wtx.abort();
            Err(StoreError::Storage(
                "a write in this batch failed; nothing was committed".into(),
            ))
        } else {
            wtx.commit().map_err(StoreError::from)
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
