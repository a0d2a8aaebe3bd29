//! Small bodies several resources share.

use serde::Serialize;
use utoipa::ToSchema;

/// The answer to a successful delete.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    deleted: bool,
    /// The id of what was deleted.
    id: String,
}

impl Deleted {
    pub fn new(id: impl Into<String>) -> Deleted {
        Deleted {
            deleted: true,
            id: id.into(),
        }
    }
}
