//! Builds the application (store, verifier, router), serves it through hyper-util with
//! header-read and request timeouts and a connection limit, and shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{delete, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;

use crate::clockify::client::ApiClient;
use crate::clockify::token::TokenVerifier;
use crate::config::Config;
use crate::store::{Store, load_or_create_key};
use crate::webhooks::{api as events_api, custom};
use crate::{
    flows, http, lifecycle, manifest, ops, overview, retention, subscriptions, ui, webhooks,
};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Everything a handler may need; cheap to clone.
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
    pub sync_locks: crate::locks::WorkspaceLocks,
    /// One bootstrap per workspace at a time.
    pub bootstrap_locks: crate::locks::WorkspaceLocks,
    /// Turns true when the server begins shutting down; long-lived tasks watch it.
    pub shutdown: watch::Sender<bool>,
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
    Store {
        path: String,
        source: crate::store::StoreError,
    },
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
            crate::store::StoreError::WrongKey => StartError::Config {
                flag: "--encryption-key-file",
                message: format!(
                    "{} does not decrypt the secrets in {}; use the key file that was created with this data file",
                    config.encryption_key_file.display(),
                    path.display()
                ),
            },
            source => StartError::Store {
                path: path.display().to_string(),
                source,
            },
        })?;
        let manifest = manifest::render(&config.base_url, &config.addon_key);
        let clockify = ApiClient::new(&config);
        Ok(App(Arc::new(AppInner {
            config,
            store,
            tokens,
            clockify,
            metrics: ops::metrics_handle(),
            manifest,
            started: Instant::now(),
            sync_locks: Default::default(),
            bootstrap_locks: Default::default(),
            shutdown: watch::channel(false).0,
        })))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/manifest", get(manifest::serve))
            .route("/manifest.json", get(manifest::serve))
            .route("/lifecycle/installed", post(lifecycle::installed))
            .route("/lifecycle/deleted", post(lifecycle::deleted))
            .route("/lifecycle/uninstalled", post(lifecycle::deleted))
            .route("/lifecycle/status-changed", post(lifecycle::status_changed))
            .route(
                "/lifecycle/settings-updated",
                post(lifecycle::settings_updated),
            )
            .route("/healthz", get(ops::health))
            .route("/health", get(ops::health))
            .route("/readyz", get(ops::ready))
            .route("/ready", get(ops::ready))
            .route("/metrics", get(ops::metrics))
            .route("/webhooks/clockify", post(webhooks::receive))
            .route(
                "/webhooks/clockify/{event}",
                post(webhooks::receive_for_event),
            )
            .route("/webhooks/custom/{source}", post(custom::receive))
            .route("/api/webhooks", get(events_api::list))
            .route("/api/webhooks/stream", get(events_api::stream))
            .route(
                "/api/webhooks/{id}",
                get(events_api::get).delete(events_api::delete),
            )
            .route("/api/webhooks/{id}/raw", get(events_api::raw))
            .route("/api/execute", post(crate::execute::execute))
            .route("/api/executions", get(crate::execute::history))
            .route(
                "/api/bootstrap",
                get(crate::bootstrap::get).post(crate::bootstrap::post),
            )
            .route("/api/entities", get(crate::bootstrap::entities))
            .route(
                "/api/settings",
                get(crate::settings::get).patch(crate::settings::patch),
            )
            .route("/api/subscriptions", get(subscriptions::get))
            .route("/api/subscriptions/sync", post(subscriptions::post_sync))
            .route("/api/sources", get(custom::list).post(custom::create))
            .route("/api/sources/{id}", delete(custom::delete))
            .route("/api/sources/{id}/rotate", post(custom::rotate))
            .route("/api/operations", get(crate::explorer::list))
            .route("/api/operations/{operation_id}", get(crate::explorer::get))
            .merge(flows::api::routes())
            .route("/api/overview", get(overview::get))
            .merge(ui::routes())
            .fallback(http::not_found)
            .method_not_allowed_fallback(http::method_not_allowed)
            // Inner to outer: panics become JSON 500s inside the request's id scope.
            .layer(CatchPanicLayer::custom(http::panic_response))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                http::request_context,
            ))
            .with_state(self.clone())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (up to a deadline) and flushes the writer.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let router = self.router();
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(self.config.max_connections));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .keep_alive(true);
        tracing::info!(address = %listener.local_addr()?, version = ops::VERSION, "listening");
        let retention = tokio::spawn(retention::run(self.clone()));
        let metrics_upkeep = tokio::spawn(ops::run_metrics_upkeep(self.clone()));
        let periodic_sync = tokio::spawn(subscriptions::run_periodic(self.clone()));
        tokio::spawn(crate::bootstrap::resume_all(self.clone()));
        let flow_engine = flows::engine::start(self.clone());
        tokio::pin!(shutdown);
        loop {
            // Waiting for a permit before accepting makes excess clients queue in the backlog.
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => permit.expect("semaphore never closes"),
                () = &mut shutdown => break,
            };
            let (stream, _peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let connection = http1.serve_connection(TokioIo::new(stream), service);
            let watched = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = watched.await;
                drop(permit);
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining connections");
        self.shutdown.send_replace(true);
        let _ = retention.await;
        let _ = metrics_upkeep.await;
        let _ = periodic_sync.await;
        // In-flight flow actions finish (bounded) while connections drain, before the writer stops.
        let (_, drained) = tokio::join!(
            flow_engine,
            tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        );
        if drained.is_err() {
            tracing::warn!("some connections did not finish in time");
        }
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.store.shutdown())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the app and serves it on `listener` until `shutdown` resolves. Tests bind
/// `127.0.0.1:0` and pass a oneshot; `main` binds the configured address and waits for signals.
pub async fn launch(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let app = tokio::task::spawn_blocking(move || App::open(config))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    app.serve(listener, shutdown).await
}
