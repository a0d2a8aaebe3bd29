//! The process-wide Prometheus recorder (the metrics macros are global, so there is one) and
//! its upkeep; the version the binary reports.

use std::sync::OnceLock;
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
