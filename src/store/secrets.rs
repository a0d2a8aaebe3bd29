//! Secrets at rest (installation tokens, webhook tokens, source secrets) are sealed with
//! XChaCha20-Poly1305 under a 256-bit key kept in a file beside (not inside) the data file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::error::StoreError;

const NONCE_LEN: usize = 24;

/// Encrypted bytes: nonce followed by ciphertext and tag. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

impl Sealed {
    /// Sealed bytes as they travel outside the store (an export's encrypted secrets).
    pub fn from_bytes(bytes: Vec<u8>) -> Sealed {
        Sealed(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("operating system random source");
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Sealed(out)
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, StoreError> {
        if sealed.0.len() < NONCE_LEN {
            return Err(StoreError::WrongKey);
        }
        let (nonce, ciphertext) = sealed.0.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| StoreError::WrongKey)
    }

    pub fn seal_str(&self, plaintext: &str) -> Sealed {
        self.seal(plaintext.as_bytes())
    }

    pub fn open_str(&self, sealed: &Sealed) -> Result<String, StoreError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| StoreError::WrongKey)
    }
}

/// Reads an existing key file (64 hex characters); never creates one.
pub fn read_key(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_key(text.trim())
        .ok_or_else(|| format!("{} does not hold a key (64 hex characters)", path.display()))
}

/// Writes `key` to `path` atomically (a temporary file with mode 0600, synced, then renamed
/// over it), so a crash leaves either the old key or the new one.
pub fn replace_key_file(path: &Path, key: &[u8; 32]) -> Result<(), String> {
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Reads the key file (64 hex characters), creating it with mode 0600 when it does not exist.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(text.trim())
            .ok_or_else(|| format!("{} does not hold a key (64 hex characters)", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| format!("no random source: {e}"))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new encryption key; back it up with the data file");
            Ok(key)
        }
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}
