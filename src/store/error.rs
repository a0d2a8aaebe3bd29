//! The store's one error type: what callers outside `store` see of redb and of record decoding.
//! redb's errors are sorted by what the caller can do about them: a full disk
//! ([`StoreError::OutOfSpace`]) and other I/O failures ([`StoreError::Io`]) pass once the store
//! has reopened the file, a damaged file ([`StoreError::Damaged`]) needs the operator.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    /// The disk holding the data file is full; nothing of the failed write was stored.
    #[error("the disk holding the data file is full: {0}")]
    OutOfSpace(String),
    /// An I/O error; redb refuses further use of the file until it is reopened, which the
    /// writer does by itself.
    #[error("I/O error on the data file: {0}")]
    Io(String),
    /// The store cannot serve right now (it is reopening the file, or cannot); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The file is damaged: a page, the header or a record does not read back as written.
    #[error("the data file is damaged: {0}")]
    Damaged(String),
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
            StoreError::OutOfSpace(m) => StoreError::OutOfSpace(m.clone()),
            StoreError::Io(m) => StoreError::Io(m.clone()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Damaged(m) => StoreError::Damaged(m.clone()),
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

/// ENOSPC, or EDQUOT (a quota is a full disk for this process).
pub(crate) fn is_out_of_space(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull || matches!(err.raw_os_error(), Some(28 | 122))
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        if is_out_of_space(&err) {
            StoreError::OutOfSpace(err.to_string())
        } else {
            StoreError::Io(err.to_string())
        }
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(err: redb::StorageError) -> Self {
        use redb::StorageError as E;
        match err {
            E::Io(io) if is_out_of_space(&io) => StoreError::OutOfSpace(io.to_string()),
            // redb reports a file that is not (or no longer) a redb file this way.
            E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StoreError::Damaged(io.to_string())
            }
            E::Io(io) => StoreError::Io(io.to_string()),
            E::PreviousIo => StoreError::Io(
                "an earlier I/O error left the file unusable until it is reopened".into(),
            ),
            // A panic inside redb poisoned its locks: the handle is unusable, the file may not be.
            E::LockPoisoned(at) => StoreError::Io(format!("the storage engine failed at {at}")),
            E::Corrupted(message) => StoreError::Damaged(message),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

macro_rules! nested_storage_errors {
    ($($ty:ident),*) => {$(
        impl From<redb::$ty> for StoreError {
            fn from(err: redb::$ty) -> Self {
                match err {
                    redb::$ty::Storage(inner) => inner.into(),
                    other => StoreError::Storage(other.to_string()),
                }
            }
        }
    )*};
}
nested_storage_errors!(TransactionError, TableError, CommitError, CompactionError);

impl From<redb::SetDurabilityError> for StoreError {
    fn from(err: redb::SetDurabilityError) -> Self {
        StoreError::Storage(err.to_string())
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(err: redb::DatabaseError) -> Self {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            redb::DatabaseError::Storage(inner) => inner.into(),
            other => StoreError::Storage(other.to_string()),
        }
    }
}
