//! Encryption-key rotation on a file no server holds: every sealed secret (installation
//! tokens, webhook tokens, custom-source secrets, destination secrets and header values, the
//! header values of flows' "HTTP request" actions and of the flow copies runs keep, the key
//! check) is opened with the old key
//! and sealed with the new one in one write transaction. Afterwards the old key no longer
//! opens the file (its key check fails), so a server started with it refuses to start.

use redb::ReadableTable;

use super::db::{KEY_CHECK_PLAINTEXT, META_KEY_CHECK, open_unheld};
use super::destination_model::{decode_destination, encode_destination};
use super::error::StoreError;
use super::flow_model::{Flow, decode_flow, decode_run, encode_flow, encode_run};
use super::installation_model::{decode_installation, encode_installation};
use super::schema::{DESTINATIONS, FLOW_RUNS, FLOWS, INSTALLATIONS, META, SOURCES, decode, encode};
use super::secrets::{Sealed, SecretBox};
use super::sources::{all_sources, write_source};
use super::writer::begin_durable;

/// How many secrets a rotation re-sealed.
#[derive(Debug, Default)]
pub struct Rekeyed {
    pub installation_tokens: u64,
    pub webhook_tokens: u64,
    pub source_secrets: u64,
    /// Destination signing secrets and custom header values.
    pub destination_secrets: u64,
    /// Header values of flows' "HTTP request" actions (flows, and the copies runs keep).
    pub flow_header_values: u64,
}

/// Re-seals the header values of a flow's "HTTP request" actions; how many.
fn reseal_flow(old: &SecretBox, new: &SecretBox, flow: &mut Flow) -> Result<u64, StoreError> {
    let mut count = 0;
    for call in flow.actions.iter_mut().filter_map(|a| a.http.as_mut()) {
        for (_, value) in &mut call.headers {
            *value = reseal(old, new, value)?;
            count += 1;
        }
    }
    Ok(count)
}

fn reseal(old: &SecretBox, new: &SecretBox, sealed: &Sealed) -> Result<Sealed, StoreError> {
    Ok(new.seal(&old.open(sealed)?))
}

/// Re-seals every secret of the file at `path` from `old_key` to `new_key`. Fails with
/// [`StoreError::InUse`] when a server holds the file, and with [`StoreError::WrongKey`]
/// (changing nothing) when `old_key` is not the file's key.
pub fn rotate_key_file(
    path: &std::path::Path,
    old_key: &[u8; 32],
    new_key: &[u8; 32],
) -> Result<Rekeyed, StoreError> {
    let db = open_unheld(path)?;
    let (old, new) = (SecretBox::new(old_key), SecretBox::new(new_key));
    let mut done = Rekeyed::default();
    let wtx = begin_durable(&db)?;
    {
        let mut meta = wtx.open_table(META)?;
        let stored = meta.get(META_KEY_CHECK)?.map(|v| v.value().to_vec());
        let sealed: Sealed =
            decode(&stored.ok_or_else(|| StoreError::Decode("no encryption key check".into()))?)?;
        if old.open(&sealed)? != KEY_CHECK_PLAINTEXT {
            return Err(StoreError::WrongKey);
        }
        meta.insert(
            META_KEY_CHECK,
            encode(&new.seal(KEY_CHECK_PLAINTEXT)).as_slice(),
        )?;
    }
    {
        let mut table = wtx.open_table(INSTALLATIONS)?;
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            rows.push((k.value().to_vec(), decode_installation(v.value())?));
        }
        for (key, mut installation) in rows {
            if let Some(token) = &installation.auth_token {
                installation.auth_token = Some(reseal(&old, &new, token)?);
                done.installation_tokens += 1;
            }
            for token in &mut installation.webhook_tokens {
                token.token = reseal(&old, &new, &token.token)?;
                done.webhook_tokens += 1;
            }
            table.insert(
                key.as_slice(),
                encode_installation(&installation).as_slice(),
            )?;
        }
    }
    let sources = all_sources(&wtx.open_table(SOURCES)?)?;
    for mut source in sources {
        for secret in &mut source.secrets {
            secret.secret = reseal(&old, &new, &secret.secret)?;
            done.source_secrets += 1;
        }
        write_source(&wtx, &source)?;
    }
    {
        let mut table = wtx.open_table(DESTINATIONS)?;
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            rows.push((k.value().to_vec(), decode_destination(v.value())?));
        }
        for (key, mut destination) in rows {
            for secret in &mut destination.secrets {
                secret.secret = reseal(&old, &new, &secret.secret)?;
                done.destination_secrets += 1;
            }
            for (_, value) in &mut destination.headers {
                *value = reseal(&old, &new, value)?;
                done.destination_secrets += 1;
            }
            table.insert(key.as_slice(), encode_destination(&destination).as_slice())?;
        }
    }
    {
        let mut table = wtx.open_table(FLOWS)?;
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let mut flow = decode_flow(v.value())?;
            let count = reseal_flow(&old, &new, &mut flow)?;
            if count > 0 {
                rows.push((k.value().to_vec(), flow));
                done.flow_header_values += count;
            }
        }
        for (key, flow) in rows {
            table.insert(key.as_slice(), encode_flow(&flow).as_slice())?;
        }
    }
    {
        // Runs keep a copy of their flow; left sealed with the old key, those copies would
        // still open with it.
        let mut table = wtx.open_table(FLOW_RUNS)?;
        let mut rows = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let mut run = decode_run(v.value())?;
            let count = reseal_flow(&old, &new, &mut run.flow)?;
            if count > 0 {
                rows.push((k.value().to_vec(), run));
                done.flow_header_values += count;
            }
        }
        for (key, run) in rows {
            table.insert(key.as_slice(), encode_run(&run).as_slice())?;
        }
    }
    wtx.commit()?;
    Ok(done)
}
