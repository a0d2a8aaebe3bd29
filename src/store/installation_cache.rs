//! Installations and the webhook-token index mirrored in memory: every delivery and API call
//! needs them, and they change only through the writer (kept in step after each commit).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::error::StoreError;
use super::installation_model::{Installation, decode_installation};
use super::schema::INSTALLATIONS;

/// In-memory mirror of the installations table and the webhook-token index.
#[derive(Default)]
pub(crate) struct InstallationCache {
    /// Shared, not copied, per request: every delivery and API call looks one up.
    installations: RwLock<HashMap<String, Arc<Installation>>>,
    tokens: RwLock<HashMap<[u8; 32], String>>,
}

impl InstallationCache {
    pub(crate) fn load(db: &Database) -> Result<InstallationCache, StoreError> {
        let cache = InstallationCache::default();
        let rtx = db.begin_read()?;
        let table = rtx.open_table(INSTALLATIONS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            cache.put(decode_installation(v.value())?);
        }
        Ok(cache)
    }

    /// Takes over the contents of `fresh` (after the file was reopened).
    pub(crate) fn replace_with(&self, fresh: InstallationCache) {
        *self.installations.write().expect("installation cache lock") = fresh
            .installations
            .into_inner()
            .expect("installation cache lock");
        *self.tokens.write().expect("token cache lock") =
            fresh.tokens.into_inner().expect("token cache lock");
    }

    pub(super) fn get(&self, ws: &str) -> Option<Arc<Installation>> {
        self.installations
            .read()
            .expect("installation cache lock")
            .get(ws)
            .cloned()
    }

    /// Every installation, by workspace id.
    pub(super) fn all(&self) -> Vec<Installation> {
        let mut all: Vec<Installation> = self
            .installations
            .read()
            .expect("installation cache lock")
            .values()
            .map(|installation| Installation::clone(installation))
            .collect();
        all.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
        all
    }

    /// The workspace a webhook token (by digest) belongs to.
    pub(super) fn workspace_of(&self, digest: &[u8; 32]) -> Option<String> {
        self.tokens
            .read()
            .expect("token cache lock")
            .get(digest)
            .cloned()
    }

    pub(super) fn put(&self, installation: Installation) {
        let ws = installation.workspace_id.clone();
        let mut tokens = self.tokens.write().expect("token cache lock");
        tokens.retain(|_, owner| *owner != ws);
        for token in &installation.webhook_tokens {
            tokens.insert(token.digest, ws.clone());
        }
        drop(tokens);
        self.installations
            .write()
            .expect("installation cache lock")
            .insert(ws, Arc::new(installation));
    }

    pub(super) fn remove(&self, ws: &str) {
        self.tokens
            .write()
            .expect("token cache lock")
            .retain(|_, owner| owner != ws);
        self.installations
            .write()
            .expect("installation cache lock")
            .remove(ws);
    }
}
