//! The store's one error type: what callers outside `store` see of redb and of record decoding.

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
