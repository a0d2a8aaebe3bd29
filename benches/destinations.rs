//! `cargo bench --bench destinations`: what forwarding every event to a destination costs.
//! Signed NEW_TIME_ENTRY deliveries at 64 clients against the release binary, first without
//! a destination, then (on a fresh data file) with one destination that matches every event
//! and a local receiver in this process answering 200 at once. Prints, one line each:
//!
//! - `without`: ingest events/s and p99 with no destination;
//! - `with`: ingest events/s and p99 with the destination, and the change against `without`;
//! - `forwarded`: events the receiver got per second (first arrival to last), how many of the
//!   acknowledged ones arrived, and the delay from the ingest answer to the first attempt's
//!   arrival (p50/p99; an attempt can arrive before the answer, counted as 0), and the
//!   server's own `destination_first_attempt_delay_seconds` (enqueue → first attempt) p50/p99.
//!
//! The server runs with `--destination-concurrency 64 --destination-max-rps 100000`: the
//! defaults (4 at once, 50 a second per destination) protect a small receiver and would make
//! this a measure of the limit. `DEST_SECONDS` (default 10) sets the length of each run;
//! `DEST_CLIENTS` (default 64) the ingest clients.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const WS: &str = "65b7a1f0c0ffee0000000dest";
const ADDON: &str = "addon-bench";
/// Attempts in flight at once for the destination.
const DEST_CONCURRENCY: usize = 64;

type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

/// A receiver that answers 200 to every POST and notes when each `benchSeq` first arrived.
fn receiver(arrivals: Arrivals) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let arrivals = arrivals.clone();
                    async move {
                        let now = Instant::now();
                        if let Some(n) = seq(&body) {
                            arrivals.lock().unwrap().entry(n).or_insert(now);
                        }
                        "ok"
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

/// The `n` of a body starting `{"benchSeq":n,`.
fn seq(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(b"{\"benchSeq\":")?;
    let end = rest.iter().position(|b| *b == b',')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn main() {
    let seconds: f64 = std::env::var("DEST_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let concurrency: usize = std::env::var("DEST_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let sample = include_str!("../assets/samples/NEW_TIME_ENTRY.json");
    let mut sample: serde_json::Value = serde_json::from_str(sample).unwrap();
    sample["workspaceId"] = serde_json::json!(WS);
    let template = serde_json::to_string(&sample).unwrap();
    let signature = sign(&claims(WS, ADDON));
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "destinations server={} clients={concurrency} seconds={seconds}",
        server_bin()
    );

    // Without a destination.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    install(&server.base, WS, ADDON);
    let addr = server.base.trim_start_matches("http://").to_string();
    let without = drive(&client, &addr, &signature, &template, concurrency, seconds);
    server.stop();
    let rps_without = without.acks.len() as f64 / without.seconds;
    let p99_without = percentile(&without.latencies(), 0.99);
    println!(
        "without rps={rps_without:.0} p99_ms={p99_without:.1} failed={}",
        without.failed
    );

    // With one destination matching every event.
    let arrivals: Arrivals = Arc::default();
    let port = receiver(arrivals.clone());
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{port}");
    // The per-destination limits are raised from their defaults (4 at once, 50 a second,
    // which protect a small receiver) to measure what the engine itself can forward.
    let server = Server::start_with_args(
        dir.path(),
        &[
            "--allow-destination-host",
            &host,
            "--destination-concurrency",
            &DEST_CONCURRENCY.to_string(),
            "--destination-max-rps",
            "100000",
        ],
    );
    install(&server.base, WS, ADDON);
    let created = agent()
        .post(format!("{}/api/destinations", server.base))
        .header("x-addon-token", &user_token(WS, ADDON))
        .send_json(serde_json::json!({
            "name": "bench receiver",
            "url": format!("http://{host}/hook"),
            "filter": {"source": null, "events": []},
        }))
        .expect("create the destination");
    assert_eq!(created.status(), 201);
    let addr = server.base.trim_start_matches("http://").to_string();
    let with = drive(&client, &addr, &signature, &template, concurrency, seconds);
    let rps_with = with.acks.len() as f64 / with.seconds;
    let p99_with = percentile(&with.latencies(), 0.99);
    println!(
        "with rps={rps_with:.0} p99_ms={p99_with:.1} failed={} change_pct={:+.1}",
        with.failed,
        (rps_with / rps_without - 1.0) * 100.0
    );

    // Wait until every acknowledged event has arrived (or a minute has passed).
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().unwrap().len() < with.acks.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = scrape(&server.base);
    server.stop();
    let arrivals = arrivals.lock().unwrap();
    let mut delays: Vec<f64> = with
        .acks
        .iter()
        .filter_map(|(n, acked, _)| {
            arrivals
                .get(n)
                .map(|at| at.saturating_duration_since(*acked))
        })
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let first = arrivals.values().min().copied();
    let last = arrivals.values().max().copied();
    let span = match (first, last) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    println!(
        "forwarded per_s={:.0} arrived={} of_acked={} delay_after_ack_p50_ms={:.1} p99_ms={:.1} server_first_attempt_p50_ms={:.1} p99_ms={:.1}",
        arrivals.len() as f64 / span,
        arrivals.len(),
        with.acks.len(),
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        histogram_quantile(&metrics, "destination_first_attempt_delay_seconds", 0.50),
        histogram_quantile(&metrics, "destination_first_attempt_delay_seconds", 0.99),
    );
    assert_eq!(
        arrivals.len(),
        with.acks.len(),
        "acknowledged events were not forwarded within a minute"
    );
}
