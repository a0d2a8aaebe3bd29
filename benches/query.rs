//! `cargo bench --bench query`: newest-50 page for one workspace among 100 workspaces with
//! QUERY_EVENTS (default 1,000,000) stored events, unfiltered and filtered by event type,
//! over real HTTP against the release binary. Prints p50/p99 per query, then a text search
//! that matches nothing (every event of the workspace examined): its time and the rows
//! examined per second. `QUERY_BODY=sample` stores the NEW_TIME_ENTRY sample (with its own
//! id and text) instead of a small body.

mod common;

use std::time::Instant;

use clockify_studio::store::{NewEvent, Store, load_or_create_key};
use common::*;

const WORKSPACES: usize = 100;
const EVENT_TYPES: [&str; 5] = [
    "NEW_TIME_ENTRY",
    "TIME_ENTRY_UPDATED",
    "NEW_PROJECT",
    "NEW_TAG",
    "TIMER_STOPPED",
];

fn ws(i: usize) -> String {
    format!("65b7a1f0c0ffee{i:010}")
}

fn fill(dir: &std::path::Path, total: usize) {
    let key = load_or_create_key(&dir.join("secret.key")).unwrap();
    let store = std::sync::Arc::new(Store::open(&dir.join("clockify-studio.redb"), &key).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // QUERY_BODY=sample stores webhook-sized bodies (the text search's rate depends on them).
    let sample: Option<std::sync::Arc<serde_json::Value>> =
        (std::env::var("QUERY_BODY").as_deref() == Ok("sample")).then(|| {
            std::sync::Arc::new(
                serde_json::from_str(include_str!("../assets/samples/NEW_TIME_ENTRY.json"))
                    .unwrap(),
            )
        });
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..total {
            if tasks.len() >= 2048 {
                tasks.join_next().await.unwrap().unwrap();
            }
            let store = store.clone();
            let sample = sample.clone();
            tasks.spawn(async move {
                // Vary the type within each workspace, not across them.
                let event_type = EVENT_TYPES[(n / WORKSPACES) % EVENT_TYPES.len()];
                let body = match &sample {
                    // The NEW_TIME_ENTRY sample with its own id and text.
                    Some(sample) => {
                        let mut body = (**sample).clone();
                        body["id"] = format!("{n:024x}").into();
                        body["description"] = format!("entry {n}").into();
                        body["workspaceId"] = ws(n % WORKSPACES).into();
                        serde_json::to_string(&body).unwrap()
                    }
                    None => format!(
                        "{{\"id\":\"{n:024x}\",\"description\":\"entry {n}\",\"workspaceId\":\"{}\",\"userId\":\"5a0ab5acb07987125438b60f\",\"billable\":true}}",
                        ws(n % WORKSPACES)
                    ),
                };
                store
                    .ingest(NewEvent {
                        workspace_id: ws(n % WORKSPACES),
                        event_type: event_type.to_string(),
                        source: "clockify".into(),
                        source_id: None,
                        headers: vec![("content-type".into(), "application/json".into())],
                        dedupe: clockify_studio::store::Dedupe::Body,
                        entities: vec![],
                        body: body.into_bytes(),
                    })
                    .await
                    .unwrap();
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    store.shutdown();
    println!(
        "query fill events={total} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
}

fn measure(base: &str, token: &str, path: &str, rounds: usize) -> (f64, f64, usize) {
    let agent = agent();
    let mut latencies = Vec::with_capacity(rounds);
    let mut count = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut r = agent
            .get(&format!("{base}{path}"))
            .header("x-addon-token", token)
            .call()
            .unwrap();
        let body: serde_json::Value = r.body_mut().read_json().unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        count = body["items"].as_array().map_or(0, Vec::len);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        count,
    )
}

fn main() {
    let total: usize = std::env::var("QUERY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), total);
    let server = Server::start(dir.path());
    for i in 0..WORKSPACES {
        install(&server.base, &ws(i), "addon-q");
    }
    let token = user_token(&ws(42), "addon-q");
    for (name, path) in [
        ("newest50", "/api/webhooks?limit=50"),
        ("by_type", "/api/webhooks?limit=50&event=NEW_TAG"),
        (
            "two_types",
            "/api/webhooks?limit=50&event=NEW_TAG&event=TIMER_STOPPED",
        ),
    ] {
        let _ = measure(&server.base, &token, path, 20);
        let (p50, p99, items) = measure(&server.base, &token, path, 500);
        println!(
            "query {name} events={total} workspaces={WORKSPACES} items={items} p50_ms={p50:.2} p99_ms={p99:.2}"
        );
    }
    let agent = agent();
    let mut rates = Vec::new();
    let mut times = Vec::new();
    let mut scanned = 0;
    for round in 0..25 {
        let t = Instant::now();
        let mut r = agent
            .get(&format!(
                "{}/api/webhooks?limit=50&q=no%20such%20text",
                server.base
            ))
            .header("x-addon-token", &token)
            .call()
            .unwrap();
        let body: serde_json::Value = r.body_mut().read_json().unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        scanned = body["scanned"].as_u64().unwrap_or(0);
        if round >= 5 {
            times.push(ms);
            rates.push(scanned as f64 / (ms / 1000.0));
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "query text_search events={total} scanned={scanned} p50_ms={:.2} rows_per_s_p50={:.0}",
        percentile(&times, 0.5),
        percentile(&rates, 0.5)
    );
    server.stop();
}
