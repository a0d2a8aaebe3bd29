//! The single writer: every write of the process goes through one thread that batches
//! whatever requests are waiting into one durable transaction (group commit). A caller's
//! future resolves only after the transaction holding its change has been committed.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// Upper bound on jobs per transaction, so one commit never grows without limit.
const MAX_BATCH: usize = 1024;

/// Called after the commit with its outcome (`None` = committed).
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One caller's change, waiting for a batch.
trait Job: Send {
    /// Runs inside the shared transaction; returns the completion and whether the job hit a
    /// storage error that poisons the transaction.
    fn run(self: Box<Self>, wtx: &WriteTransaction) -> (Completion, bool);
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

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, wtx: &WriteTransaction) -> (Completion, bool) {
        let TypedJob {
            op,
            after_commit,
            reply,
        } = *self;
        let result = op(wtx);
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
        let Some(mut batch) = Batch::begin(&db, first) else {
            continue;
        };
        let linger_until = Instant::now() + MAX_LINGER;
        while batch.len() < MAX_BATCH {
            if let Ok(job) = receiver.try_recv() {
                batch.add(job);
                continue;
            }
            let now = Instant::now();
            if previous_batch <= 1 || now >= linger_until {
                break;
            }
            match receiver.recv_timeout(ARRIVAL_GAP.min(linger_until - now)) {
                Ok(job) => batch.add(job),
                Err(_) => break,
            }
        }
        previous_batch = batch.len();
        batch.commit();
    }
}

/// One write transaction being filled: each job runs as soon as it joins, so the work of a
/// batch overlaps the wait for its last jobs.
struct Batch {
    wtx: WriteTransaction,
    completions: Vec<Completion>,
    poisoned: bool,
    started: Instant,
}

impl Batch {
    /// Opens the transaction for `first`, or fails it when no transaction can start.
    fn begin(db: &Database, first: Box<dyn Job>) -> Option<Batch> {
        let started = Instant::now();
        let mut wtx = match db.begin_write() {
            Ok(wtx) => wtx,
            Err(err) => {
                let err = StoreError::from(err);
                tracing::error!(error = %err, "cannot begin a write transaction");
                first.fail(&err);
                return None;
            }
        };
        if let Err(err) = wtx.set_durability(Durability::Immediate) {
            tracing::error!(error = %err, "cannot set durable commits");
        }
        let mut batch = Batch {
            wtx,
            completions: Vec::new(),
            poisoned: false,
            started,
        };
        batch.add(first);
        Some(batch)
    }

    fn len(&self) -> usize {
        self.completions.len()
    }

    fn add(&mut self, job: Box<dyn Job>) {
        let (completion, poisons) = job.run(&self.wtx);
        self.poisoned |= poisons;
        self.completions.push(completion);
    }

    fn commit(self) {
        let batch_size = self.len();
        let committing = Instant::now();
        let outcome = if self.poisoned {
            let _ = self.wtx.abort();
            Err(StoreError::Storage(
                "a write in this batch failed; nothing was committed".into(),
            ))
        } else {
            self.wtx.commit().map_err(StoreError::from)
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
