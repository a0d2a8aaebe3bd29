//! `cargo bench --bench ingest`: signed NEW_TIME_ENTRY deliveries (the sample body in assets/samples,
//! made unique per delivery) over real HTTP at several concurrencies against the release
//! binary; every 2xx is durable. Prints one line per level and checks stored == acked.

mod common;

use common::*;

const WS: &str = "65b7a1f0c0ffee0000000bench";
const ADDON: &str = "addon-bench";

fn main() {
    let sample = include_str!("../assets/samples/NEW_TIME_ENTRY.json");
    let mut sample_json: serde_json::Value = serde_json::from_str(sample).unwrap();
    sample_json["workspaceId"] = serde_json::json!(WS);
    let template = serde_json::to_string(&sample_json).unwrap();
    let levels: Vec<usize> = std::env::var("INGEST_LEVELS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64, 256]);
    let seconds: u64 = std::env::var("INGEST_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    // The client runs on one thread so the server keeps most of the machine.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut all_stored = true;
    for &concurrency in &levels {
        // A fresh server and data file per level: each line's stored count and commit
        // figures are that level's own.
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        install(&server.base, WS, ADDON);
        let signature = sign(&claims(WS, ADDON));
        let addr = server.base.trim_start_matches("http://").to_string();
        let cpu_before = (
            server.cpu_seconds(),
            server.thread_cpu_seconds("store-writer"),
            Server::own_cpu_seconds(),
        );
        let run = drive(
            &client,
            &addr,
            &signature,
            &template,
            concurrency,
            seconds as f64,
        );
        let elapsed = run.seconds;
        let latencies = run.latencies();
        let acked = latencies.len() as u64;
        let per_event = |seconds: f64| seconds * 1e6 / acked.max(1) as f64;
        let cpu_us = per_event(server.cpu_seconds() - cpu_before.0);
        let writer_us = per_event(server.thread_cpu_seconds("store-writer") - cpu_before.1);
        let client_us = per_event(Server::own_cpu_seconds() - cpu_before.2);
        let metrics = scrape(&server.base);
        let rss = server.rss_mb();
        server.stop();
        let stored = stored_events(dir.path());
        let failed = run.failed;
        println!(
            "ingest c={concurrency} rps={:.0} p50_ms={:.2} p99_ms={:.2} acked={acked} stored={stored} failed={failed} rss_mb={rss:.1} batch_mean={:.1} commit_mean_ms={:.2} batch_mean_ms={:.2} server_cpu_us_per_event={cpu_us:.0} writer_cpu_us={writer_us:.0} client_cpu_us_per_event={client_us:.0}",
            acked as f64 / elapsed,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            metric_mean(&metrics, "store_commit_batch_size"),
            metric_mean(&metrics, "store_commit_seconds") * 1000.0,
            metric_mean(&metrics, "store_batch_seconds") * 1000.0,
        );
        // A failed request may still have been stored; an acknowledged one must be.
        all_stored &= stored >= acked && (failed > 0 || stored == acked);
    }
    assert!(all_stored, "acknowledged events are missing from the store");
}
