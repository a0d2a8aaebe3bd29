//! The listener: accepts connections (see `api::connections` for the limits and who gives
//! way), starts and owns every background task, and shuts down gracefully within the unit's
//! stop timeout: stop accepting, let requests and background work finish (all bounded by one
//! deadline), flush the store. A long-lived background task that ends early (a panic) stops
//! the server with an error, so systemd restarts it instead of leaving it half-working.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::connections::{Connections, Limits};
use crate::app::App;
pub use crate::app::StartError;
use crate::config::Config;
use crate::telemetry::{self, VERSION};
use crate::{api, bootstrap, control, destinations, entities, flows, retention, subscriptions};

/// Everything after the shutdown signal, up to the writer's flush, fits in this; systemd's
/// `TimeoutStopSec=30` leaves the rest for the runtime to stop and the process to exit.
pub const STOP_BUDGET: Duration = Duration::from_secs(20);
/// How long in-flight requests (and the flow engine's in-flight runs, in parallel) get to
/// finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long background work started by requests (syncs, bootstraps, cleanups) gets to finish
/// once the connections are drained.
const TASKS_TIMEOUT: Duration = Duration::from_secs(3);

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

/// The long-lived background tasks, by name.
#[derive(Default)]
struct Background {
    tasks: JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Background {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the next task to end; says which and why.
    async fn next_ended(&mut self) -> String {
        let (id, why) = match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => (id, "returned".to_string()),
            Some(Err(err)) if err.is_panic() => {
                let id = err.id();
                let panic = err.into_panic();
                (
                    id,
                    format!("panicked: {}", crate::store::panic_text(&*panic)),
                )
            }
            Some(Err(err)) => (err.id(), err.to_string()),
            None => return std::future::pending().await,
        };
        let name = self.names.remove(&id).unwrap_or("unknown");
        format!("background task {name:?} {why}")
    }

    /// The names of the tasks still running.
    fn running(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.names.values().copied().collect();
        names.sort_unstable();
        names
    }

    async fn join_all(&mut self) {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            let id = match ended {
                Ok((id, ())) => id,
                Err(err) => err.id(),
            };
            self.names.remove(&id);
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// (up to a deadline) and flushes the writer.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let connections = Connections::new(Limits::from_config(&app.config), api::router(&app));
    tracing::info!(address = %listener.local_addr()?, version = VERSION, "listening");
    let mut background = Background::default();
    background.spawn("retention", retention::run(app.clone()));
    background.spawn(
        "metrics upkeep",
        telemetry::run_metrics_upkeep(app.metrics.clone(), app.shutdown.subscribe()),
    );
    background.spawn(
        "subscription sync",
        subscriptions::run_periodic(app.clone()),
    );
    background.spawn("integrity pass", {
        let app = app.clone();
        let stop = app.shutdown.subscribe();
        async move { app.store.watch_integrity(stop).await }
    });
    background.spawn("idle connection sweep", connections.clone().sweep_idle());
    background.spawn("flow engine", flows::engine::run(app.clone()));
    background.spawn("delivery engine", destinations::engine::run(app.clone()));
    app.spawn(bootstrap::resume_all(app.clone()));
    background.spawn("rejection summaries", summarise_rejections(app.clone()));
    background.spawn("entity applier", entities::run_applier(app.clone()));
    background.spawn("entity refresh", entities::run_refresh(app.clone()));
    if let Some(control) = control::start(app.clone()).await {
        background.spawn("control socket", control);
    }
    if app.config.snapshot_dir.is_some() {
        background.spawn("snapshots", crate::snapshots::run(app.clone()));
    }
    let mut shutdown: Pin<&mut _> = std::pin::pin!(shutdown);
    let mut failure = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => connections.admit(stream, peer),
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            ended = background.next_ended() => {
                tracing::error!(reason = %ended, "stopping: a background task ended early; the server exits with an error so that it is restarted");
                failure = Some(ended);
                break;
            }
            () = &mut shutdown => break,
        }
    }
    let stop_by = Instant::now() + STOP_BUDGET;
    drop(listener);
    tracing::info!("shutting down: draining connections");
    app.shutdown.send_replace(true);
    connections.close_all();
    // In-flight flow actions finish (bounded) while connections drain, before the writer stops.
    let drain_by = Instant::now() + DRAIN_TIMEOUT;
    let (stopped, drained) = tokio::join!(
        tokio::time::timeout_at(drain_by, background.join_all()),
        tokio::time::timeout_at(drain_by, connections.drained()),
    );
    if drained.is_err() {
        tracing::warn!("some connections did not finish in time");
    }
    if stopped.is_err() {
        tracing::warn!(tasks = ?background.running(), "background tasks did not stop in time");
        background.tasks.abort_all();
    }
    // Background work started by requests; what does not finish resumes or is redone later
    // (bootstraps resume from their stored progress, syncs run again periodically).
    app.tasks.close();
    let tasks_by = (Instant::now() + TASKS_TIMEOUT).min(stop_by);
    if tokio::time::timeout_at(tasks_by, app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = app.tasks.len(),
            "background tasks still running at shutdown"
        );
    }
    let store_app = app.clone();
    let flushed = tokio::time::timeout_at(
        stop_by.max(Instant::now() + Duration::from_secs(1)),
        tokio::task::spawn_blocking(move || store_app.store.shutdown()),
    )
    .await;
    if flushed.is_err() {
        tracing::error!("the store did not flush in time");
    }
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(reason) => Err(StartError::Stopped(reason)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-lived task that panics is reported by name and cause: the server then stops
    /// with an error instead of running on without it.
    #[tokio::test]
    async fn a_background_task_that_panics_is_named() {
        let mut background = Background::default();
        background.spawn("quiet", std::future::pending());
        background.spawn("boom", async { panic!("kaboom") });
        let ended = background.next_ended().await;
        assert!(ended.contains("\"boom\""), "{ended}");
        assert!(ended.contains("panicked: kaboom"), "{ended}");
        assert_eq!(background.running(), ["quiet"]);
    }
}
