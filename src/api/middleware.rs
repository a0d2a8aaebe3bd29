//! What every request goes through: a request id (echoed in `X-Request-Id`), the request
//! timeout, request metrics and the `handled` log line; and the JSON answers for a panic, an
//! unknown route and a wrong method.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use tracing::Instrument;

use super::error::ApiError;
use crate::app::App;
use crate::telemetry::{REQUEST_ID, REQUEST_ID_HEADER};

/// Accepts a caller's id when it is short printable ASCII, else makes a time-ordered one.
fn valid_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    ok.then(|| text.to_string())
}

/// A UUIDv7 (uuid's `fast-rng` feature: no system call per id).
fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Gives every request an id, runs it inside a span carrying that id (made at `debug`),
/// echoes it in `X-Request-Id`, records request metrics by route and status, and logs a
/// `handled` line (at the default level only for rejections and failures).
pub async fn request_context(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(valid_request_id)
        .unwrap_or_else(new_request_id);
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // At debug, every line of the request carries its id through this span. Made at the
    // default level too, it and a line per request cost ~8% of ingest throughput at peak.
    let span = tracing::debug_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    // The timeout covers producing the response head; streamed bodies (SSE) are not cut.
    let timeout = app.config.request_timeout;
    let mut response = REQUEST_ID
        .scope(id.clone(), async move {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::Timeout(format!(
                    "the request took longer than {} s",
                    timeout.as_secs()
                ))
                .into_response(),
            }
        })
        .instrument(span)
        .await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let (requests, duration) = request_metrics(&method, route, status);
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    // Successes are counted in the metrics; a line for each would flood the journal at peak
    // ingestion (thousands a second). Rejections and failures show at the default level, with
    // the fields the (debug) span would have added.
    // A flood of rejections (bad signatures, refused tokens …) would write a line each: only
    // the first few per route and status in each interval are logged, then a summary.
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    match status {
        400.. if !app.rejection_log.admit(route, status) => {}
        500.. => tracing::warn!(request_id = %id, %method, route, status, elapsed_ms, "handled"),
        400..500 => tracing::info!(request_id = %id, %method, route, status, elapsed_ms, "handled"),
        _ => tracing::debug!(request_id = %id, %method, route, status, elapsed_ms, "handled"),
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The handles of one route's request metrics.
#[derive(Default)]
struct RouteMetrics {
    duration: Option<Histogram>,
    requests: Vec<(&'static str, u16, Counter)>,
}

/// The `method` label: the standard methods by name, anything a client made up as `other`,
/// so no request can add a series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", |known| known.as_str())
}

/// `http_requests_total{method,route,status}` and `http_request_duration_seconds{route}`,
/// registered once per label set: building the labelled keys (three strings) and looking them
/// up on every request showed in the ingest profile. Every label comes from a fixed set:
/// routes are the route table's templates (`unmatched` for any other path), methods are
/// folded by [`method_label`], and statuses are the ones this server answers with.
fn request_metrics(method: &Method, route: &str, status: u16) -> (Counter, Histogram) {
    let method = method_label(method);
    static BY_ROUTE: LazyLock<Mutex<HashMap<String, RouteMetrics>>> = LazyLock::new(Mutex::default);
    let mut by_route = BY_ROUTE.lock().expect("request metrics lock");
    if !by_route.contains_key(route) {
        by_route.insert(route.to_string(), RouteMetrics::default());
    }
    let metrics = by_route.get_mut(route).expect("inserted above");
    let duration = metrics
        .duration
        .get_or_insert_with(
            || metrics::histogram!("http_request_duration_seconds", "route" => route.to_string()),
        )
        .clone();
    let requests = match metrics
        .requests
        .iter()
        .find(|(m, s, _)| *m == method && *s == status)
    {
        Some((_, _, counter)) => counter.clone(),
        None => {
            let counter = metrics::counter!("http_requests_total", "method" => method, "route" => route.to_string(), "status" => status.to_string());
            metrics.requests.push((method, status, counter.clone()));
            counter
        }
    };
    (requests, duration)
}

pub async fn not_found() -> ApiError {
    ApiError::NoSuchRoute
}

/// A handler panicked: log it and answer a plain JSON 500 (never the panic text).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Bodies smaller than this go out as they are: compressing them saves nothing.
const COMPRESS_ABOVE: u64 = 256;
/// gzip 5 / brotli 5: most of the size gain of the top levels for a fraction of the CPU
/// (brotli's default, 11, is made for precompressed files, not per-response work).
const COMPRESSION_QUALITY: i32 = 5;

type CompressPredicate = fn(
    axum::http::StatusCode,
    axum::http::Version,
    &axum::http::HeaderMap,
    &axum::http::Extensions,
) -> bool;

/// Whether a response is text the UI loads: HTML, JavaScript, CSS, JSON, NDJSON or SVG.
/// Not the live stream (each event must go out at once) nor anything already compressed.
fn compressible(
    _: axum::http::StatusCode,
    _: axum::http::Version,
    headers: &axum::http::HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    [
        "text/html",
        "text/javascript",
        "text/css",
        "application/json",
        "application/x-ndjson",
        "image/svg+xml",
    ]
    .iter()
    .any(|t| content_type.starts_with(t))
}

/// gzip or brotli, as the client accepts, for [`compressible`] responses over
/// [`COMPRESS_ABOVE`] bytes (small webhook acknowledgements go out as they are).
pub fn compression() -> tower_http::compression::CompressionLayer<
    tower_http::compression::predicate::And<
        tower_http::compression::predicate::SizeAbove,
        CompressPredicate,
    >,
> {
    use tower_http::compression::predicate::{Predicate, SizeAbove};
    tower_http::compression::CompressionLayer::new()
        .quality(tower_http::compression::CompressionLevel::Precise(
            COMPRESSION_QUALITY,
        ))
        .compress_when(SizeAbove::new(COMPRESS_ABOVE).and(compressible as CompressPredicate))
}
