//! The add-on's own OpenAPI 3.1 document, generated from the handlers' annotations and the
//! body types they return, built once and served at `GET /api/openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    audit, destinations, events, explorer, flows, lifecycle, ops, runs, sources, transfer,
    webhooks, workspace,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clockify-studio",
        description = "The HTTP API of a clockify-studio server: the Clockify-facing routes (manifest, lifecycle, webhooks), custom sources' deliveries, the sidebar UI's JSON API under /api (authenticated by a Clockify user token in X-Addon-Token, scoped to its workspace; writes need OWNER or WORKSPACE_ADMIN), and operations routes. Every error is {error, code, requestId} (validation errors add problems: [{path, message}])."
    ),
    paths(
        ops::manifest,
        lifecycle::installed,
        lifecycle::status_changed,
        lifecycle::settings_updated,
        lifecycle::deleted,
        webhooks::receive,
        webhooks::receive_for_event,
        webhooks::receive_custom,
        ops::health,
        ops::ready,
        ops::metrics,
        serve,
        workspace::overview,
        events::list,
        events::stream_ticket,
        events::stream,
        events::get,
        events::delete,
        events::raw,
        events::types,
        events::export,
        events::runs,
        flows::replay,
        sources::list,
        sources::create,
        sources::delete,
        sources::rotate,
        flows::list,
        flows::create,
        flows::read,
        flows::update,
        flows::remove,
        flows::enable,
        flows::disable,
        flows::test,
        flows::test_unsaved,
        flows::pause,
        flows::resume,
        flows::candidates,
        runs::flow_runs,
        runs::run,
        runs::list,
        runs::retry,
        destinations::list,
        destinations::create,
        destinations::get,
        destinations::update,
        destinations::remove,
        destinations::rotate_secret,
        destinations::test,
        destinations::deliveries,
        destinations::retry,
        destinations::recover,
        explorer::list,
        explorer::get,
        explorer::execute,
        explorer::history,
        workspace::get_settings,
        workspace::patch_settings,
        workspace::get_subscriptions,
        workspace::sync_subscriptions,
        workspace::get_bootstrap,
        workspace::start_bootstrap,
        workspace::entities,
        audit::list,
        transfer::export,
        transfer::export_with_secrets,
        transfer::import,
    ),
    modifiers(&UserToken),
    tags(
        (name = "deliveries", description = "Events arriving: Clockify's webhooks and custom sources"),
        (name = "lifecycle", description = "Clockify's add-on lifecycle messages"),
        (name = "events", description = "The stored event log"),
        (name = "sources", description = "Custom sources"),
        (name = "flows", description = "No-code flows and their runs"),
        (name = "destinations", description = "Forwarding events to the workspace's own endpoints, signed and retried"),
        (name = "explorer", description = "The Clockify API explorer"),
        (name = "workspace", description = "Settings, subscriptions, bootstrap, entities, overview"),
        (name = "operations", description = "Health, readiness, metrics, the manifest, this document"),
    )
)]
struct ApiDoc;

/// `/api/*` routes take the Clockify user token in `X-Addon-Token`.
struct UserToken;

impl Modify for UserToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "userToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Addon-Token"))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/") || path == "/api/openapi.json" {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "userToken",
                        Vec::<String>::new(),
                    )]);
            }
        }
    }
}

/// The document, as JSON.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = crate::telemetry::VERSION.to_string();
        doc.to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    &DOCUMENT
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server", content_type = "application/json")))]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
