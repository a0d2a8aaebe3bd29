//! Scheduled snapshots (`--snapshot-dir`, `--snapshot-every`, `--snapshot-keep`): a consistent
//! copy of the data file, taken like `backup` inside one read transaction (ingestion goes on
//! meanwhile), written under a temporary name and renamed into place, then the oldest copies
//! beyond the count are removed. The directory itself is the record of what was taken, so a
//! restart neither loses the schedule nor takes an extra copy.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::app::App;

const PREFIX: &str = "clockify-studio-";
const SUFFIX: &str = ".redb";

/// The newest snapshot in a directory.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub path: PathBuf,
    /// Unix milliseconds (the file's modification time).
    pub taken_at: i64,
    pub bytes: u64,
}

/// Snapshot files in `dir`, oldest first (their names sort by time).
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    files.sort();
    files
}

/// The newest snapshot of the configured directory, if snapshots are on and one exists.
pub fn latest(app: &App) -> Option<Snapshot> {
    let dir = app.config.snapshot_dir.as_ref()?;
    let path = snapshot_files(dir).pop()?;
    let meta = std::fs::metadata(&path).ok()?;
    let taken_at = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    Some(Snapshot {
        path,
        taken_at,
        bytes: meta.len(),
    })
}

fn file_name(now_ms: i64) -> String {
    let stamp = jiff::Timestamp::from_millisecond(now_ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| now_ms.to_string());
    format!("{PREFIX}{stamp}{SUFFIX}")
}

fn publish(snapshot: &Snapshot) {
    metrics::gauge!("snapshot_last_success_timestamp_seconds")
        .set(snapshot.taken_at as f64 / 1000.0);
    metrics::gauge!("snapshot_last_size_bytes").set(snapshot.bytes as f64);
}

/// Takes one snapshot into the configured directory and removes the oldest beyond the
/// count; returns it.
pub async fn take(app: &App) -> Result<Snapshot, String> {
    let dir = app
        .config
        .snapshot_dir
        .clone()
        .ok_or_else(|| "no --snapshot-dir".to_string())?;
    let dest = dir.join(file_name(crate::time::now_ms()));
    app.store
        .snapshot(dest.clone())
        .await
        .map_err(|e| format!("snapshot to {} failed: {e}", dest.display()))?;
    let files = snapshot_files(&dir);
    let excess = files
        .len()
        .saturating_sub(app.config.snapshot_keep as usize);
    for old in &files[..excess] {
        if let Err(err) = std::fs::remove_file(old) {
            tracing::warn!(path = %old.display(), error = %err, "cannot remove an old snapshot");
        }
    }
    let snapshot = latest(app).ok_or_else(|| format!("{} vanished", dest.display()))?;
    publish(&snapshot);
    metrics::counter!("snapshots_total").increment(1);
    tracing::info!(path = %snapshot.path.display(), bytes = snapshot.bytes, "snapshot written");
    Ok(snapshot)
}

/// Takes a snapshot whenever the newest is `--snapshot-every` old, until shutdown (started
/// only with `--snapshot-dir`: the server treats a background task that ends as a failure).
pub async fn run(app: App) {
    if app.config.snapshot_dir.is_none() {
        return;
    }
    let every = app.config.snapshot_every;
    let mut shutdown = app.shutdown.subscribe();
    if let Some(existing) = latest(&app) {
        publish(&existing);
    }
    loop {
        let wait = match latest(&app) {
            Some(last) => {
                let due = last.taken_at + every.as_millis() as i64;
                Duration::from_millis((due - crate::time::now_ms()).max(0) as u64)
            }
            None => Duration::ZERO,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(err) = take(&app).await {
            metrics::counter!("snapshot_failures_total").increment(1);
            tracing::error!(error = %err, "scheduled snapshot failed");
            // Try again after a tenth of the interval (at least a minute), not at once.
            let pause = (every / 10).max(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
