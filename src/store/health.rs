//! Whether the data file can be used, and the shared handle to it. Readers take the handle from
//! here for each read; the writer thread is the only one that replaces it (after an I/O error
//! it reopens the file, see `writer`). A damaged file is dropped for good: nothing read from it
//! is served as data until the operator has restored a backup.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::Database;

use super::error::StoreError;

/// What is known about the data file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    Usable,
    /// A write failed because the disk is full. Reads go on; writes are refused until space
    /// returns and the writer has reopened the file.
    OutOfSpace(String),
    /// Another I/O error: the writer is reopening the file.
    Reopening(String),
    /// Reopening failed repeatedly for a reason other than space; the writer keeps trying,
    /// slowly, and liveness fails.
    Unusable(String),
    /// Damage was found (at a read, by the integrity pass, or when reopening).
    Damaged(String),
}

/// Readiness and liveness of the store, each with the reason when it fails.
#[derive(Clone, Debug)]
pub struct StoreStatus {
    pub ready: Result<(), String>,
    pub alive: Result<(), String>,
}

pub(crate) struct Slot {
    db: RwLock<Option<Arc<Database>>>,
    condition: Mutex<Condition>,
    path: PathBuf,
    /// Device and inode of the file opened: a file deleted or replaced under the server would
    /// take writes that no restart sees.
    identity: Mutex<Option<(u64, u64)>>,
    /// Wakes the integrity pass: a read met a record that does not decode, or the file was
    /// reopened.
    pub(crate) suspect: tokio::sync::Notify,
}

impl Slot {
    pub(crate) fn new(db: Database, path: &Path) -> Slot {
        Slot {
            db: RwLock::new(Some(Arc::new(db))),
            condition: Mutex::new(Condition::Usable),
            path: path.to_path_buf(),
            identity: Mutex::new(identity(path)),
            suspect: tokio::sync::Notify::new(),
        }
    }

    /// Marks the file unusable when the path no longer names the file that was opened.
    pub(crate) fn check_identity(&self) {
        let opened = *self.identity.lock().expect("store identity lock");
        if identity(&self.path) != opened {
            self.set_condition(Condition::Unusable(
                "the file at this path is not the one the server opened: it was deleted or replaced while the server ran".into(),
            ));
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn condition(&self) -> Condition {
        self.condition.lock().expect("store condition lock").clone()
    }

    pub(crate) fn set_condition(&self, condition: Condition) {
        let mut current = self.condition.lock().expect("store condition lock");
        // Damage is final for this process.
        if matches!(*current, Condition::Damaged(_)) || *current == condition {
            return;
        }
        match &condition {
            Condition::Usable => {
                tracing::info!(path = %self.path.display(), "the data file is usable again")
            }
            Condition::OutOfSpace(detail) => {
                tracing::error!(path = %self.path.display(), %detail, "the disk holding the data file is full: writes are refused until space is freed")
            }
            Condition::Reopening(detail) => {
                tracing::error!(path = %self.path.display(), %detail, "I/O error on the data file: reopening it")
            }
            Condition::Unusable(detail) => {
                tracing::error!(path = %self.path.display(), %detail, "the data file cannot be reopened")
            }
            Condition::Damaged(detail) => {
                tracing::error!(path = %self.path.display(), %detail, advice = %damage_advice(&self.path), "the data file is damaged")
            }
        }
        if let Condition::Damaged(_) = condition {
            // Nothing more is read from it; readers in flight finish with what they have.
            self.db.write().expect("store handle lock").take();
        }
        *current = condition;
    }

    /// The open file, for one read or one write batch.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Condition::Damaged(detail) = self.condition() {
            return Err(StoreError::Damaged(detail));
        }
        match self.db.read().expect("store handle lock").as_ref() {
            Some(db) => Ok(db.clone()),
            None => Err(StoreError::Unavailable(format!(
                "the data file is being reopened after an error ({}); retry shortly",
                self.condition_text()
            ))),
        }
    }

    /// Why writes are refused right now, if they are.
    pub(crate) fn write_refusal(&self) -> Option<StoreError> {
        match self.condition() {
            Condition::Usable => None,
            Condition::OutOfSpace(detail) => Some(StoreError::OutOfSpace(detail)),
            Condition::Reopening(detail) | Condition::Unusable(detail) => {
                Some(StoreError::Unavailable(format!(
                    "the data file is being reopened after an I/O error ({detail}); retry shortly"
                )))
            }
            Condition::Damaged(detail) => Some(StoreError::Damaged(detail)),
        }
    }

    /// Takes the handle out (readers get `Unavailable` meanwhile) once no reader holds it, so
    /// the file can be closed and reopened. `None` when readers kept it for `patience`.
    pub(crate) fn take_when_unused(&self, patience: std::time::Duration) -> Option<Database> {
        let mut db = self.db.write().expect("store handle lock").take()?;
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => return Some(db),
                Err(shared) if std::time::Instant::now() < deadline => {
                    db = shared;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(shared) => {
                    *self.db.write().expect("store handle lock") = Some(shared);
                    return None;
                }
            }
        }
    }

    /// Puts a reopened handle in place; `opened` is the path's identity taken before the open.
    pub(crate) fn put(&self, db: Database, opened: Option<(u64, u64)>) {
        *self.identity.lock().expect("store identity lock") = opened;
        *self.db.write().expect("store handle lock") = Some(Arc::new(db));
    }

    /// The identity of the file the path names now.
    pub(crate) fn path_identity(&self) -> Option<(u64, u64)> {
        identity(&self.path)
    }

    /// Notes what a read or write met: damage marks the file damaged, an undecodable record
    /// wakes the integrity pass.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Err(StoreError::Damaged(detail)) => {
                self.set_condition(Condition::Damaged(detail.clone()))
            }
            Err(StoreError::Decode(_)) => self.suspect.notify_one(),
            _ => {}
        }
    }

    fn condition_text(&self) -> String {
        match self.condition() {
            Condition::Usable => "usable".into(),
            Condition::OutOfSpace(d)
            | Condition::Reopening(d)
            | Condition::Unusable(d)
            | Condition::Damaged(d) => d,
        }
    }

    pub(crate) fn status(&self) -> StoreStatus {
        if self.condition() == Condition::Usable {
            self.check_identity();
        }
        match self.condition() {
            Condition::Usable => StoreStatus {
                ready: Ok(()),
                alive: Ok(()),
            },
            Condition::OutOfSpace(detail) => StoreStatus {
                ready: Err(format!(
                    "the disk holding {} is full ({detail}{}): deliveries are refused with 507 until space is freed, then the server recovers by itself",
                    self.path.display(),
                    free_space_text(&self.path),
                )),
                alive: Ok(()),
            },
            Condition::Reopening(detail) => StoreStatus {
                ready: Err(format!(
                    "I/O error on {} ({detail}): reopening it",
                    self.path.display()
                )),
                alive: Ok(()),
            },
            Condition::Unusable(detail) => {
                let why = format!(
                    "the data file {} is unusable ({detail}); check the disk and the file, then restart",
                    self.path.display()
                );
                StoreStatus {
                    ready: Err(why.clone()),
                    alive: Err(why),
                }
            }
            Condition::Damaged(detail) => {
                let why = format!(
                    "the data file is damaged ({detail}): stop the server, {}",
                    damage_advice(&self.path)
                );
                StoreStatus {
                    ready: Err(why.clone()),
                    alive: Err(why),
                }
            }
        }
    }
}

/// What to do about a damaged data file, in one sentence naming the command and the backup.
pub fn damage_advice(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let backup = match last_backup(dir) {
        Some(last) => format!("the latest backup ({last})"),
        None => "your latest backup (made with `clockify-studio backup --to FILE`)".to_string(),
    };
    format!(
        "run `clockify-studio check --data-dir {}` and restore {backup} in its place (docs/operations.md, \"Restoring a backup\")",
        dir.display()
    )
}

/// Device and inode of `path`.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// File in the data directory naming the last backup `backup` wrote.
pub(crate) const LAST_BACKUP_FILE: &str = "last-backup";

fn last_backup(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(LAST_BACKUP_FILE)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Bytes available to this process on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated path and `stat` a valid out-pointer for the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // Both are u64 on Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

fn free_space_text(path: &Path) -> String {
    match free_bytes(path) {
        Some(bytes) => format!(", {} KiB free", bytes / 1024),
        None => String::new(),
    }
}

/// Runs `f` (a call into redb), turning a panic into [`StoreError::Damaged`]: redb may panic on
/// a file changed outside it. The panic hook stays quiet for it; the error carries the message.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    crate::telemetry::expected_panics(|| std::panic::catch_unwind(AssertUnwindSafe(f)))
        .unwrap_or_else(|panic| Err(StoreError::Damaged(panic_text(&*panic))))
}

/// The message of a panic payload.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
        .to_string()
}
