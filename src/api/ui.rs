//! The sidebar page (`/ui`) and the static assets under `assets/`, baked into the binary.
//!
//! Assets are addressed as `/assets/<build hash>/<path>`: one hash over every file, so ES
//! modules can import each other by relative path and still be cached forever. The page
//! itself is never cached (it carries the user's theme and language).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::app::App;
use crate::auth;

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

/// Page templates live beside the assets but are not served as files.
const TEMPLATE_DIR: &str = "templates/";
/// Always allowed to frame the page: Clockify's own web app.
const CLOCKIFY_FRAME_ANCESTOR: &str = "https://*.clockify.me";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Unversioned URLs (the manifest's icon, old links) revalidate daily by ETag.
const UNVERSIONED: &str = "public, max-age=86400";
const HASH_LEN: usize = 16;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(home))
        .route("/ui", get(page))
        .route("/assets/{*path}", get(asset))
}

/// A hash over every asset's path and content: the version segment of asset URLs.
pub fn build_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut paths: Vec<_> = Assets::iter().collect();
        paths.sort();
        let mut hasher = Sha256::new();
        for path in paths {
            if let Some(file) = Assets::get(&path) {
                hasher.update(path.as_bytes());
                hasher.update([0]);
                hasher.update(file.metadata.sha256_hash());
            }
        }
        hex::encode(hasher.finalize())[..HASH_LEN].to_string()
    })
}

fn asset_base() -> String {
    format!("/assets/{}", build_hash())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("html") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The Content-Security-Policy of every UI response: nothing inline, nothing foreign.
fn content_security_policy(app: &App) -> String {
    let mut ancestors = vec![CLOCKIFY_FRAME_ANCESTOR.to_string()];
    ancestors.extend(app.config.ui_frame_ancestors.iter().cloned());
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'none'; frame-ancestors {}",
        ancestors.join(" ")
    )
}

fn security_headers(app: &App, headers: &mut HeaderMap) {
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(app)) {
        headers.insert(HeaderName::from_static("content-security-policy"), csp);
    }
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
}

fn etag_matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `GET /assets/<hash>/<path>` (immutable) or `GET /assets/<path>` (revalidated by ETag).
async fn asset(
    State(app): State<App>,
    Path(path): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let (cache, file_path) = match path.split_once('/') {
        Some((version, rest))
            if version.len() == HASH_LEN && version.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            // A page from an older build may still ask for its version: answer with the
            // current file but do not let it be cached as that version forever.
            let cache = if version == build_hash() {
                IMMUTABLE
            } else {
                "no-cache"
            };
            (cache, rest)
        }
        _ => (UNVERSIONED, path.as_str()),
    };
    // In debug builds rust-embed reads from disk: never let a path climb out of assets/.
    let safe = !file_path.starts_with(TEMPLATE_DIR)
        && !file_path.contains('\\')
        && file_path
            .split('/')
            .all(|part| !part.is_empty() && part != "..");
    let file = safe
        .then(|| Assets::get(file_path))
        .flatten()
        .ok_or_else(|| ApiError::NotFound(format!("no asset {file_path}")))?;
    let etag = format!("\"{}\"", &hex::encode(file.metadata.sha256_hash())[..24]);
    let mut response = if etag_matches(&request, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(file_path))],
            file.data.into_owned(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    security_headers(&app, headers);
    Ok(response)
}

fn template(name: &str) -> String {
    Assets::get(&format!("{TEMPLATE_DIR}{name}"))
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .unwrap_or_else(|| format!("<!doctype html><title>missing template {name}</title>"))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_response(app: &App, status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    // The page reflects one user's token claims; nothing may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(app, headers);
    response
}

/// A short page of prose (no script) for the cases where the app cannot start.
fn message_page(app: &App, status: StatusCode, title: &str, paragraphs_html: &str) -> Response {
    let body = template("message.html")
        .replace("{{base}}", &asset_base())
        .replace("{{title}}", &html_escape(title))
        .replace("{{content}}", paragraphs_html);
    html_response(app, status, body)
}

/// How to install the add-on: the manifest URL built from `--base-url`, as a link.
fn install_instructions(app: &App) -> String {
    let manifest_url = html_escape(&format!("{}/manifest", app.config.base_url));
    format!(
        "<p>To install it, open your workspace's <strong>Add-ons</strong> settings in Clockify \
         (a developer workspace, for unpublished add-ons) and install it from this manifest \
         URL:</p>\
         <p class=\"manifest\"><a href=\"{manifest_url}\"><code>{manifest_url}</code></a></p>\
         <p>Then open <strong>Clockify Studio</strong> from Clockify's sidebar. The manifest \
         URL must be reachable by Clockify over HTTPS.</p>"
    )
}

fn install_page(app: &App) -> Response {
    let content = format!(
        "<p>This page is the sidebar of a Clockify add-on. Clockify opens it with a sign-in \
         token; opened directly it has nothing to show.</p>{}",
        install_instructions(app)
    );
    message_page(app, StatusCode::OK, "Clockify Studio", &content)
}

/// The repository URL from Cargo.toml's `repository`, when it has one (none today).
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// `GET /`: the base URL opened in a browser. Tells whoever checks a new deployment what this
/// is, its version, whether it is ready (the same probe as `/readyz`, so 503 when not) and how
/// to install it. No token, no workspace data.
async fn home(State(app): State<App>) -> Response {
    let (status, readiness) = match app.store.probe().await {
        Ok(()) => (
            StatusCode::OK,
            "<p class=\"readiness ready\">Status: <strong>ready</strong>.</p>".to_string(),
        ),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "<p class=\"readiness not-ready\">Status: <strong>not ready</strong>.</p>\
                     <p class=\"reason\">Reason: {}.</p>",
                    html_escape(&reason)
                ),
            )
        }
    };
    let docs = if REPOSITORY.is_empty() {
        "README.md and the docs/ folder of the source (configuration.md, operations.md, \
         security.md, API.md)"
            .to_string()
    } else {
        let repository = html_escape(REPOSITORY);
        format!(
            "README.md and the docs/ folder (configuration.md, operations.md, security.md, \
             API.md) at <a href=\"{repository}\">{repository}</a>"
        )
    };
    let content = format!(
        "<p>This server is a self-hosted Clockify add-on: it keeps a durable log of a \
         workspace's webhook events, lets workspace admins call the Clockify API and runs \
         no-code flows. Its pages open inside Clockify's sidebar.</p>\
         <p>Version <strong>{version}</strong>.</p>\
         {readiness}\
         {install}\
         <p>Documentation: {docs}. Installed from the Debian package: \
         <code>man clockify-studio</code> and <code>/usr/share/doc/clockify-studio</code>. \
         Checks: <a href=\"{base}/healthz\"><code>/healthz</code></a>, \
         <a href=\"{base}/readyz\"><code>/readyz</code></a>.</p>",
        base = html_escape(&app.config.base_url),
        version = html_escape(crate::telemetry::VERSION),
        install = install_instructions(&app),
    );
    message_page(&app, status, "Clockify Studio", &content)
}

fn refused_page(app: &App, error: &ApiError) -> Response {
    let reason = error.to_string();
    let reason = reason
        .strip_prefix("X-Addon-Token refused: ")
        .unwrap_or(&reason);
    let (title, advice) = match error.status() {
        StatusCode::UNAUTHORIZED => (
            "This sign-in link is not valid",
            "Clockify signs you in to the add-on with a link that lasts 30 minutes. \
             Close Clockify Studio and open it again from Clockify's sidebar.",
        ),
        StatusCode::FORBIDDEN => (
            "Clockify Studio is not available in this workspace",
            "The add-on has to be installed (and active) in the workspace. \
             Ask a workspace owner or admin to install or reinstall it.",
        ),
        _ => (
            "Clockify Studio could not start",
            "Try again in a moment. If it keeps failing, the server log has the details.",
        ),
    };
    let content = format!(
        "<p>{}</p><p class=\"reason\">Reason: {}.</p>",
        html_escape(advice),
        html_escape(reason)
    );
    message_page(app, error.status(), title, &content)
}

/// `GET /ui?auth_token=<user token>`: the app, once the token is verified like any API call.
async fn page(State(app): State<App>, uri: Uri) -> Response {
    let token = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "auth_token")
        .map(|(_, v)| v.trim().to_string())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return install_page(&app);
    };
    let user = match auth::user_from_token(&app, Some(&token)).await {
        Ok(user) => user,
        Err(error) => return refused_page(&app, &ApiError::from(error)),
    };
    // Rendered server-side so the first paint already has the right palette and language.
    let theme = match user.claims.theme.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("DARK") => "dark",
        _ => "light",
    };
    let lang = user
        .claims
        .language
        .as_deref()
        .filter(|l| {
            !l.is_empty()
                && l.len() <= 12
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(|l| l.replace('_', "-").to_ascii_lowercase())
        .unwrap_or_else(|| "en".to_string());
    let body = template("app.html")
        .replace("{{base}}", &asset_base())
        .replace("{{theme}}", theme)
        .replace("{{lang}}", &lang);
    html_response(&app, StatusCode::OK, body)
}
