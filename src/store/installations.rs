//! Installations through the store: read from the in-memory mirror, changed atomically (the
//! mirror follows after the commit). Removing one is part of erasing its workspace (`erase`).

use std::sync::Arc;

use redb::ReadableTable;

use super::db::Store;
use super::error::StoreError;
use super::installation_model::{Installation, decode_installation, encode_installation};
use super::schema::{INSTALLATIONS, WEBHOOK_TOKENS};

impl Store {
    pub async fn installation(
        &self,
        workspace_id: &str,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        Ok(self.cache.get(workspace_id))
    }

    pub async fn installations(&self) -> Result<Vec<Installation>, StoreError> {
        Ok(self.cache.all())
    }

    /// Atomically reads the workspace's installation, lets `decide` compute the new one (or
    /// leave it, with `None`), and commits. `decide` runs on the writer thread: keep it short.
    /// Its own error leaves the file unchanged.
    pub async fn update_installation<R, E, F>(
        &self,
        workspace_id: &str,
        decide: F,
    ) -> Result<Result<R, E>, StoreError>
    where
        R: Send + 'static,
        E: Send + 'static,
        F: FnOnce(Option<Installation>) -> Result<(Option<Installation>, R), E> + Send + 'static,
    {
        let workspace_id = workspace_id.to_string();
        let cache = self.cache.clone();
        let (result, written) = self
            .write_then(
                move |wtx| {
                    let mut table = wtx.open_table(INSTALLATIONS)?;
                    let current = table
                        .get(workspace_id.as_bytes())?
                        .map(|v| decode_installation(v.value()))
                        .transpose()?;
                    let previous_digests: Vec<[u8; 32]> = current
                        .iter()
                        .flat_map(|i| i.webhook_tokens.iter().map(|t| t.digest))
                        .collect();
                    match decide(current) {
                        Err(e) => Ok((Err(e), None)),
                        Ok((None, result)) => Ok((Ok(result), None)),
                        Ok((Some(next), result)) => {
                            let bytes = encode_installation(&next);
                            table.insert(workspace_id.as_bytes(), bytes.as_slice())?;
                            // Keep the digest → workspace index in step with the stored tokens.
                            let mut index = wtx.open_table(WEBHOOK_TOKENS)?;
                            for old in previous_digests {
                                index.remove(old.as_slice())?;
                            }
                            for token in &next.webhook_tokens {
                                index.insert(token.digest.as_slice(), workspace_id.as_bytes())?;
                            }
                            Ok((Ok(result), Some(next)))
                        }
                    }
                },
                move |(_, written): &(Result<R, E>, Option<Installation>)| {
                    if let Some(next) = written {
                        cache.put(next.clone());
                    }
                },
            )
            .await?;
        drop(written);
        Ok(result)
    }

    /// The workspace a webhook token was issued for, found by the token's SHA-256
    /// ([`token_digest`]).
    pub async fn workspace_of_webhook_token(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<String>, StoreError> {
        Ok(self.cache.workspace_of(digest))
    }
}
