//! The sidebar page and static assets. For now: the page a browser without a token sees,
//! and the icon the manifest points at.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use crate::server::App;

const ICON_SVG: &[u8] = include_bytes!("../assets/icon.svg");

pub fn routes() -> Router<App> {
    Router::new()
        .route("/ui", get(page))
        .route("/assets/icon.svg", get(icon))
}

async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        ICON_SVG,
    )
}

async fn page(State(app): State<App>) -> impl IntoResponse {
    let manifest_url = format!("{}/manifest", app.config.base_url);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Clockify Studio</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem\">\
         <h1>Clockify Studio</h1>\
         <p>This page is meant to be opened inside Clockify, as the add-on's sidebar.</p>\
         <p>To install it, open your workspace's <strong>Add-ons</strong> settings in Clockify \
         (a developer workspace for unpublished add-ons) and install from the manifest URL:</p>\
         <p><a href=\"{url}\"><code>{url}</code></a></p></body></html>",
        url = html_escape(&manifest_url)
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::HeaderName::from_static("content-security-policy"),
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors https://*.clockify.me",
            ),
            (
                header::HeaderName::from_static("referrer-policy"),
                "no-referrer",
            ),
            (
                header::HeaderName::from_static("x-content-type-options"),
                "nosniff",
            ),
        ],
        Html(body),
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
