//! The HTTP layer: the one route table, the middleware every request goes through, the
//! extractors, one file per resource, the error mapping, and the add-on's own OpenAPI
//! document. The only code that speaks axum; handlers parse, call a domain function and shape
//! the typed response.

mod audit;
pub mod connections;
mod destinations;
mod error;
mod events;
mod explorer;
mod extract;
mod flows;
mod lifecycle;
mod middleware;
mod openapi;
mod ops;
mod runs;
mod sources;
mod transfer;
mod types;
mod ui;
mod webhooks;
mod workspace;

use axum::Router;
use axum::routing::{delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use openapi::document;

use crate::app::App;

/// Every route of the server.
pub fn router(app: &App) -> Router {
    Router::new()
        // Clockify-facing.
        .route("/manifest", get(ops::manifest))
        .route("/manifest.json", get(ops::manifest))
        .route("/lifecycle/installed", post(lifecycle::installed))
        .route("/lifecycle/deleted", post(lifecycle::deleted))
        .route("/lifecycle/uninstalled", post(lifecycle::deleted))
        .route("/lifecycle/status-changed", post(lifecycle::status_changed))
        .route(
            "/lifecycle/settings-updated",
            post(lifecycle::settings_updated),
        )
        .route("/webhooks/clockify", post(webhooks::receive))
        .route(
            "/webhooks/clockify/{event}",
            post(webhooks::receive_for_event),
        )
        .route("/webhooks/custom/{source}", post(webhooks::receive_custom))
        // Operations.
        .route("/healthz", get(ops::health))
        .route("/health", get(ops::health))
        .route("/readyz", get(ops::ready))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        // The UI's JSON API.
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/overview", get(workspace::overview))
        .route("/api/webhooks", get(events::list))
        .route("/api/webhooks/stream", get(events::stream))
        .route("/api/webhooks/stream-ticket", post(events::stream_ticket))
        .route(
            "/api/webhooks/{id}",
            get(events::get).delete(events::delete),
        )
        .route("/api/webhooks/types", get(events::types))
        .route("/api/webhooks/export", get(events::export))
        .route("/api/webhooks/{id}/raw", get(events::raw))
        .route("/api/webhooks/{id}/runs", get(events::runs))
        .route("/api/webhooks/{id}/replay", post(flows::replay))
        .route("/api/sources", get(sources::list).post(sources::create))
        .route("/api/sources/{id}", delete(sources::delete))
        .route("/api/sources/{id}/rotate", post(sources::rotate))
        .route("/api/flows", get(flows::list).post(flows::create))
        .route("/api/flows/test", post(flows::test_unsaved))
        .route("/api/flows/pause", post(flows::pause))
        .route("/api/flows/resume", post(flows::resume))
        .route("/api/flows/candidates", post(flows::candidates))
        .route(
            "/api/flows/{id}",
            get(flows::read).put(flows::update).delete(flows::remove),
        )
        .route("/api/flows/{id}/enable", post(flows::enable))
        .route("/api/flows/{id}/disable", post(flows::disable))
        .route("/api/flows/{id}/test", post(flows::test))
        .route("/api/flows/{id}/runs", get(runs::flow_runs))
        .route("/api/runs", get(runs::list))
        .route("/api/runs/{id}", get(runs::run))
        .route("/api/runs/{id}/retry", post(runs::retry))
        .route(
            "/api/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/api/destinations/{id}",
            get(destinations::get)
                .put(destinations::update)
                .delete(destinations::remove),
        )
        .route(
            "/api/destinations/{id}/rotate-secret",
            post(destinations::rotate_secret),
        )
        .route("/api/destinations/{id}/test", post(destinations::test))
        .route(
            "/api/destinations/{id}/deliveries",
            get(destinations::deliveries),
        )
        .route(
            "/api/destinations/{id}/recover",
            post(destinations::recover),
        )
        .route("/api/deliveries/{id}/retry", post(destinations::retry))
        .route("/api/operations", get(explorer::list))
        .route("/api/operations/{operationId}", get(explorer::get))
        .route("/api/execute", post(explorer::execute))
        .route("/api/executions", get(explorer::history))
        .route(
            "/api/settings",
            get(workspace::get_settings).patch(workspace::patch_settings),
        )
        .route("/api/subscriptions", get(workspace::get_subscriptions))
        .route(
            "/api/subscriptions/sync",
            post(workspace::sync_subscriptions),
        )
        .route(
            "/api/bootstrap",
            get(workspace::get_bootstrap).post(workspace::start_bootstrap),
        )
        .route("/api/entities", get(workspace::entities))
        .route("/api/audit", get(audit::list))
        .route(
            "/api/config/export",
            get(transfer::export).post(transfer::export_with_secrets),
        )
        .route("/api/config/import", post(transfer::import))
        // The sidebar page and its assets.
        .merge(ui::routes())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        // Inner to outer: panics become JSON 500s inside the request's id scope.
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ))
        .layer(middleware::compression())
        .with_state(app.clone())
}
