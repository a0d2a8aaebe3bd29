//! `cargo bench --bench flows`: one enabled flow of one action (updateTimeEntry) in each of
//! 32 workspaces; signed NEW_TIME_ENTRY deliveries at c=16 (round-robin over the workspaces)
//! against the release binary; a fake Clockify inside this process answers the actions and
//! notes when each arrived. Clockify caps calls at 50/s per workspace, so the load is spread
//! over 32 workspaces with `--max-rps 50` (1,600 calls/s of headroom).
//!
//! Prints `flows c=16 runs=… runs_per_s=… commit_to_send_p50_ms=… p99_ms=…`, where commit →
//! send is the server's own histogram (event commit → first action handed to the client,
//! interpolated within buckets), then the same seen from outside: delivery acknowledged →
//! action received by the fake (a lower bound, since the commit precedes the ack) and
//! delivery sent → action received (an upper bound).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const WORKSPACES: usize = 32;
const CONCURRENCY: usize = 16;
const ADDON: &str = "addon-bench-flows";

fn workspace(i: usize) -> String {
    format!("65b7a1f0c0ffee00000b{i:04}")
}

/// Arrival time of every action, by time entry id; and how many other calls came in.
#[derive(Default)]
struct FakeState {
    actions: Mutex<HashMap<String, Instant>>,
    other: AtomicU64,
}

fn start_fake(state: Arc<FakeState>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let state = state.clone();
                async move {
                    let path = req.uri().path();
                    if req.method() == "PUT" && path.contains("/time-entries/") {
                        let id = path.rsplit('/').next().unwrap_or("").to_string();
                        state.actions.lock().unwrap().insert(id, Instant::now());
                    } else {
                        state.other.fetch_add(1, Ordering::Relaxed);
                    }
                    ([("content-type", "application/json")], "{}")
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr.to_string()
}

fn install(base: &str, ws: &str, api_base: &str) {
    let mut claims = claims(ws, ADDON);
    claims["backendUrl"] = json!(format!("{api_base}/api"));
    let body = json!({"addonId": ADDON, "authToken": sign(&claims), "workspaceId": ws,
        "apiUrl": format!("{api_base}/api"), "webhooks": []});
    let r = agent()
        .post(&format!("{base}/lifecycle/installed"))
        .header("x-addon-lifecycle-token", &sign(&common::claims(ws, ADDON)))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(&body).unwrap())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "install failed");
}

fn create_flow(base: &str, ws: &str) {
    let flow = json!({
        "name": "bench: tag new entries",
        "trigger": {"source": "clockify", "events": ["NEW_TIME_ENTRY"]},
        "conditions": {"rules": [{"path": "$.projectId", "op": "exists"}]},
        "actions": [{"name": "update", "operationId": "updateTimeEntry",
            "pathParams": {"id": "{{ event.id }}"},
            "body": {"start": "{{ event.timeInterval.start }}", "projectId": "{{ event.projectId }}",
                     "description": "{{ event.description }}", "tagIds": "{{ event.tagIds + ['bench'] }}"}}],
    });
    let r = agent()
        .post(&format!("{base}/api/flows"))
        .header("x-addon-token", &user_token(ws, ADDON))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(&flow).unwrap())
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "flow create failed");
}

fn main() {
    let seconds: u64 = std::env::var("FLOWS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let fake = Arc::new(FakeState::default());
    let fake_host = start_fake(fake.clone());
    let fake_base = format!("http://{fake_host}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(
        dir.path(),
        &["--allow-api-host", &fake_host, "--max-rps", "50"],
    );
    let workspaces: Vec<String> = (0..WORKSPACES).map(workspace).collect();
    // FLOWS_BASELINE=1: the same deliveries with no flows, to see what flows add.
    let baseline = std::env::var("FLOWS_BASELINE").is_ok_and(|v| v == "1");
    for ws in &workspaces {
        install(&server.base, ws, &fake_base);
        if !baseline {
            create_flow(&server.base, ws);
        }
    }
    // Installing registers webhooks and starts a bootstrap, through the same rate limits:
    // let that settle before measuring.
    let mut last = u64::MAX;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(1500));
        let now = fake.other.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }

    let template: serde_json::Value = json!({
        "id": "", "description": "Bench entry", "tagIds": ["t1"], "userId": "u1", "billable": true,
        "projectId": "p1", "timeInterval": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z", "duration": "PT1H"},
        "workspaceId": "", "isLocked": false,
    });
    let signatures: Vec<String> = workspaces
        .iter()
        .map(|ws| sign(&claims(ws, ADDON)))
        .collect();
    let counter = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let addr = server.base.trim_start_matches("http://").to_string();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    // id → (sent, acknowledged)
    let sent: HashMap<String, (Instant, Instant)> = client.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (addr, counter, failures) = (addr.clone(), counter.clone(), failures.clone());
            let (workspaces, signatures, template) =
                (workspaces.clone(), signatures.clone(), template.clone());
            tasks.spawn(async move {
                let mut connection = RawConnection::connect(&addr).await;
                let mut sent = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                    let i = n % WORKSPACES;
                    let id = format!("bench-{n}");
                    let mut body = template.clone();
                    body["id"] = json!(id);
                    body["workspaceId"] = json!(workspaces[i]);
                    let body = serde_json::to_vec(&body).unwrap();
                    let head = format!(
                        "POST /webhooks/clockify/NEW_TIME_ENTRY HTTP/1.1\r\nHost: {addr}\r\n\
                         clockify-signature: {}\r\nclockify-webhook-event-type: NEW_TIME_ENTRY\r\n\
                         Content-Type: application/json\r\n",
                        signatures[i]
                    );
                    let t = Instant::now();
                    match connection.send(&head, &body).await {
                        Ok(200) => sent.push((id, (t, Instant::now()))),
                        Ok(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            connection = RawConnection::connect(&addr).await;
                        }
                    }
                }
                sent
            });
        }
        let mut all = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    // Every acknowledged event must reach the fake as one action.
    let wait = Instant::now();
    while fake.actions.lock().unwrap().len() < sent.len()
        && wait.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let actions = fake.actions.lock().unwrap().clone();
    let last_action = actions.values().max().copied().unwrap_or(started);
    let elapsed = last_action.duration_since(started).as_secs_f64();
    let mut ack_to_send = Vec::new();
    let mut sent_to_send = Vec::new();
    for (id, (t_sent, t_ack)) in &sent {
        if let Some(t_recv) = actions.get(id) {
            let ms = |a: Instant, b: Instant| {
                b.checked_duration_since(a)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            ack_to_send.push(ms(*t_ack, *t_recv));
            sent_to_send.push(ms(*t_sent, *t_recv));
        }
    }
    ack_to_send.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sent_to_send.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut response = agent()
        .get(&format!("{}/metrics", server.base))
        .call()
        .unwrap();
    let metrics = response.body_mut().read_to_string().unwrap();
    let name = "flow_commit_to_first_send_seconds";
    let runs = actions.len();
    if baseline {
        println!(
            "flows baseline (no flows) c={CONCURRENCY} acked={} acked_per_s={:.0}",
            sent.len(),
            sent.len() as f64 / seconds as f64
        );
    }
    println!(
        "flows c={CONCURRENCY} runs={runs} runs_per_s={:.0} commit_to_send_p50_ms={:.2} p99_ms={:.2}",
        runs as f64 / elapsed,
        histogram_quantile(&metrics, name, 0.50),
        histogram_quantile(&metrics, name, 0.99),
    );
    println!(
        "flows store: commits={:.0} mean_batch={:.1} mean_commit_ms={:.2} commit_p99_ms={:.2}",
        metric_value(&metrics, "store_commit_seconds_count"),
        metric_mean(&metrics, "store_commit_batch_size"),
        metric_mean(&metrics, "store_commit_seconds") * 1000.0,
        histogram_quantile(&metrics, "store_commit_seconds", 0.99),
    );
    println!(
        "flows seen from outside: ack_to_action_p50_ms={:.2} p99_ms={:.2} sent_to_action_p50_ms={:.2} p99_ms={:.2} acked={} failed={} workspaces={WORKSPACES} rss_mb={:.1}",
        percentile(&ack_to_send, 0.50),
        percentile(&ack_to_send, 0.99),
        percentile(&sent_to_send, 0.50),
        percentile(&sent_to_send, 0.99),
        sent.len(),
        failures.load(Ordering::Relaxed),
        server.rss_mb(),
    );
    server.stop();
    // A failed request may still have been stored (and run); an acknowledged one must run.
    assert!(
        baseline || sent.keys().all(|id| actions.contains_key(id)),
        "an acknowledged event did not run its flow"
    );
    if !baseline && failures.load(Ordering::Relaxed) == 0 {
        assert_eq!(runs, sent.len(), "every event runs its flow exactly once");
    }
}
