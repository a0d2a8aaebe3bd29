//! One async lock per workspace, for work that must not run twice at once for the same
//! workspace (subscription syncs, bootstraps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct WorkspaceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl WorkspaceLocks {
    pub fn lock_for(&self, ws: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("workspace locks")
            .entry(ws.to_string())
            .or_default()
            .clone()
    }
}
