//! The application state every part of the server shares ([`App`]), and how it is opened
//! from a [`Config`]. It holds the store, the token verifier, the Clockify client and a few
//! process-wide pieces; it knows no feature module, so every feature can depend on it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::clockify::client::ApiClient;
use crate::clockify::token::TokenVerifier;
use crate::config::Config;
use crate::locks::WorkspaceLocks;
use crate::store::{DestinationId, RunId, Store, StoreError, load_or_create_key};
use crate::telemetry::RejectionLog;
use crate::tickets::StreamTickets;
use crate::{manifest, telemetry};

/// Everything a handler or a background task may need; cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub store: Store,
    pub tokens: TokenVerifier,
    /// Every call to Clockify goes through this client (rate limit, retries, allowlist).
    pub clockify: ApiClient,
    pub metrics: PrometheusHandle,
    pub manifest: Vec<u8>,
    pub started: Instant,
    /// One subscription sync per workspace at a time.
    pub sync_locks: WorkspaceLocks,
    /// One bootstrap per workspace at a time.
    pub bootstrap_locks: WorkspaceLocks,
    /// Flow runs being executed right now (their stored status may still say queued:
    /// idempotent first actions are not preceded by a write).
    pub active_runs: Mutex<HashSet<RunId>>,
    /// Turns true when the server begins shutting down; long-lived tasks watch it.
    pub shutdown: watch::Sender<bool>,
    /// Work started in the background by a request or a lifecycle event (a subscription
    /// sync, a bootstrap, a cleanup): the server waits for it at shutdown.
    pub tasks: TaskTracker,
    /// Single-use tickets that open the live event stream.
    pub stream_tickets: StreamTickets,
    /// How many rejected requests get a log line of their own.
    pub rejection_log: RejectionLog,
    /// Consecutive failed subscription syncs per workspace (for the notification hook).
    pub sync_failures: Mutex<std::collections::HashMap<String, u32>>,
    /// Pending deliveries per destination as the delivery engine last counted them: how
    /// many, and when the oldest was queued (unix ms). The engine holds the queue in memory,
    /// so the list of destinations shows its depth without scanning the store.
    pub delivery_queue: Mutex<std::collections::HashMap<DestinationId, (u64, i64)>>,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{flag}: {message}")]
    Config { flag: &'static str, message: String },
    #[error("data file {path}: {source}")]
    Store { path: String, source: StoreError },
    /// The data file is damaged: the whole line an operator reads, advice included.
    #[error("{0}")]
    Damaged(String),
    /// The server stopped by itself (a background task ended early).
    #[error("the server stopped: {0}")]
    Stopped(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl App {
    /// Opens the data file and prepares everything; fails with a message naming the cause.
    pub fn open(config: Config) -> Result<App, StartError> {
        crate::config::ensure_writable_dir(&config.data_dir).map_err(|message| {
            StartError::Config {
                flag: "--data-dir",
                message,
            }
        })?;
        let key = load_or_create_key(&config.encryption_key_file).map_err(|message| {
            StartError::Config {
                flag: "--encryption-key-file",
                message,
            }
        })?;
        let tokens = TokenVerifier::new(&config.clockify_public_key_pem, &config.addon_key)
            .map_err(|message| StartError::Config {
                flag: "--clockify-public-key",
                message,
            })?;
        let path = config.data_file();
        let store = Store::open(&path, &key).map_err(|source| match source {
            StoreError::WrongKey => StartError::Config {
                flag: "--encryption-key-file",
                message: format!(
                    "{} does not decrypt the secrets in {}; use the key file that was created with this data file",
                    config.encryption_key_file.display(),
                    path.display()
                ),
            },
            StoreError::Damaged(detail) => StartError::Damaged(format!(
                "the data file {} is damaged ({detail}); the server does not start on it: {}",
                path.display(),
                Store::damage_advice(&path)
            )),
            source => StartError::Store {
                path: path.display().to_string(),
                source,
            },
        })?;
        let manifest = manifest::render(&config.base_url, &config.addon_key);
        let clockify = ApiClient::new(&config);
        let rejection_log = RejectionLog::new(config.rejection_log_burst);
        Ok(App(Arc::new(AppInner {
            config,
            store,
            tokens,
            clockify,
            metrics: telemetry::metrics_handle(),
            manifest,
            started: Instant::now(),
            sync_locks: Default::default(),
            bootstrap_locks: Default::default(),
            active_runs: Default::default(),
            shutdown: watch::channel(false).0,
            tasks: TaskTracker::new(),
            stream_tickets: StreamTickets::default(),
            rejection_log,
            sync_failures: Default::default(),
            delivery_queue: Default::default(),
        })))
    }

    /// Runs `task` in the background, tracked so that shutdown waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }
}
