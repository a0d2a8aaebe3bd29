//! The listener: accepts connections (bounded), serves them through hyper-util with a
//! header-read timeout, starts and owns every background task, and shuts down gracefully:
//! stop accepting, let requests and background work finish (each bounded), flush the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
pub use crate::app::StartError;
use crate::config::Config;
use crate::telemetry::{self, VERSION};
use crate::{api, bootstrap, control, entities, flows, retention, subscriptions};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// How long background work started by requests (syncs, bootstraps, cleanups) gets to finish
/// once the connections are drained.
const TASKS_TIMEOUT: Duration = Duration::from_secs(5);

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
    serve(app, listener, shutdown).await
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// (up to a deadline) and flushes the writer.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let router = api::router(&app);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(app.config.max_connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .keep_alive(true);
    tracing::info!(address = %listener.local_addr()?, version = VERSION, "listening");
    let retention = tokio::spawn(retention::run(app.clone()));
    let metrics_upkeep = tokio::spawn(telemetry::run_metrics_upkeep(
        app.metrics.clone(),
        app.shutdown.subscribe(),
    ));
    let periodic_sync = tokio::spawn(subscriptions::run_periodic(app.clone()));
    app.spawn(bootstrap::resume_all(app.clone()));
    let rejection_summaries = tokio::spawn(summarise_rejections(app.clone()));
    let entity_applier = tokio::spawn(entities::run_applier(app.clone()));
    let entity_refresh = tokio::spawn(entities::run_refresh(app.clone()));
    let control = control::start(app.clone()).await;
    let flow_engine = flows::engine::start(app.clone());
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
    app.shutdown.send_replace(true);
    let _ = retention.await;
    let _ = metrics_upkeep.await;
    let _ = periodic_sync.await;
    let _ = rejection_summaries.await;
    let _ = entity_applier.await;
    let _ = entity_refresh.await;
    if let Some(control) = control {
        let _ = control.await;
    }
    // In-flight flow actions finish (bounded) while connections drain, before the writer stops.
    let (_, drained) = tokio::join!(
        flow_engine,
        tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
    );
    if drained.is_err() {
        tracing::warn!("some connections did not finish in time");
    }
    // Background work started by requests; what does not finish resumes or is redone later
    // (bootstraps resume from their stored progress, syncs run again periodically).
    app.tasks.close();
    if tokio::time::timeout(TASKS_TIMEOUT, app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = app.tasks.len(),
            "background tasks still running at shutdown"
        );
    }
    let store_app = app.clone();
    tokio::task::spawn_blocking(move || store_app.store.shutdown())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

/// Ends each rejection-log interval with its summary lines, and the last one at shutdown.
async fn summarise_rejections(app: App) {
    let interval = app.config.rejection_log_interval;
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => app.rejection_log.summarise(interval),
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    app.rejection_log.summarise(interval);
}
