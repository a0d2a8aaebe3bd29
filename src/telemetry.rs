//! The process-wide Prometheus recorder (the metrics macros are global, so there is one) and
//! its upkeep; the version the binary reports; the log budget of rejected requests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often recorded histogram samples are folded into their buckets (the exporter's own
/// default).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("static buckets are valid");
            let handle = builder.install_recorder().unwrap_or_else(|_| {
                // Another recorder was installed first (only possible when embedded); keep a
                // private one so /metrics still answers.
                PrometheusBuilder::new().build_recorder().handle()
            });
            metrics::gauge!("build_info", "version" => VERSION).set(1.0);
            handle
        })
        .clone()
}

/// Folds histogram samples into their buckets every [`METRICS_UPKEEP_INTERVAL`] until
/// `shutdown` turns true. The recorder keeps each sample until then; with upkeep left to
/// `/metrics` scrapes, a server nobody scrapes would hold one per request and commit for ever.
pub async fn run_metrics_upkeep(
    handle: PrometheusHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(METRICS_UPKEEP_INTERVAL) => handle.run_upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The log budget of rejected requests: per route and status, the first `burst` of each
/// interval get their `handled` line; the others are only counted (they are in the request
/// metrics anyway) and [`RejectionLog::summarise`] writes one line for them per interval.
pub struct RejectionLog {
    burst: u32,
    /// (route, status) → (logged, not logged) in the current interval. Routes are the route
    /// table's templates and statuses the server's own, so the map stays small.
    counts: Mutex<HashMap<(String, u16), (u32, u64)>>,
}

impl RejectionLog {
    pub fn new(burst: u32) -> RejectionLog {
        RejectionLog {
            burst,
            counts: Mutex::default(),
        }
    }

    /// Whether this rejection gets its own line.
    pub fn admit(&self, route: &str, status: u16) -> bool {
        let mut counts = self.counts.lock().expect("rejection log lock");
        let entry = counts.entry((route.to_string(), status)).or_default();
        if entry.0 < self.burst {
            entry.0 += 1;
            true
        } else {
            entry.1 += 1;
            false
        }
    }

    /// Ends the interval: one line per route and status with rejections left unlogged.
    pub fn summarise(&self, interval: Duration) {
        let counts = std::mem::take(&mut *self.counts.lock().expect("rejection log lock"));
        for ((route, status), (logged, suppressed)) in counts {
            if suppressed > 0 {
                tracing::warn!(
                    route,
                    status,
                    logged,
                    suppressed,
                    interval_secs = interval.as_secs(),
                    "{suppressed} more rejected requests not logged"
                );
            }
        }
    }
}

/// The header a request id travels in (both ways).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being handled; set by the HTTP layer for the whole request.
    pub static REQUEST_ID: String;
}

/// The id of the request being handled, for error bodies and log lines; empty outside a
/// request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

std::thread_local! {
    /// Set while code that turns panics into errors runs (see [`expected_panics`]).
    static EXPECTING_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the panic hook quiet on this thread: `f` catches panics itself and reports
/// them as errors (redb may panic on a file damaged outside it), so the operator reads one
/// line about it, not a panic message and a backtrace besides.
pub fn expected_panics<T>(f: impl FnOnce() -> T) -> T {
    let before = EXPECTING_PANICS.replace(true);
    let result = f();
    EXPECTING_PANICS.set(before);
    result
}

/// Replaces the default panic hook (a message and maybe a backtrace on stderr) with one log
/// line naming the thread, the request (inside one) and where it panicked. Whoever catches
/// the panic decides what follows: a request answers 500, a flow run fails, a background task
/// that ends this way stops the server with a non-zero exit.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if EXPECTING_PANICS.get() {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let request_id = current_request_id();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            request_id,
            panic = message,
            "panicked"
        );
    }));
}
