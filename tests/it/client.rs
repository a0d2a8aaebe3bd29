//! The outbound client against the fake Clockify: retries, Retry-After, rate limit,
//! allowlist, and the token never leaking.

use std::time::{Duration, Instant};

use clockify_studio::clockify::client::{
    Acting, ApiClient, ApiRequest, ClientError, RetryPolicy, ServerFamily,
};
use clockify_studio::config::Config;
use clockify_studio::store::{Installation, InstallationStatus, SecretBox};

use crate::support::*;

fn installation(api_base: &str, secrets: &SecretBox, max_rps: Option<f64>) -> Installation {
    let mut settings = clockify_studio::store::WorkspaceSettings::default();
    if let Some(rps) = max_rps {
        settings.values.push((
            "max_rps".into(),
            clockify_studio::store::SettingValue::Number(rps),
        ));
    }
    Installation {
        workspace_id: "ws-client".into(),
        addon_id: "addon".into(),
        auth_token: Some(secrets.seal_str("installation-token-secret")),
        api_url: format!("{api_base}/api"),
        backend_url: Some(format!("{api_base}/api")),
        reports_url: Some(format!("{api_base}/reports")),
        locations_url: None,
        screenshots_url: None,
        pto_url: None,
        as_user: None,
        addon_user_id: None,
        status: InstallationStatus::Active,
        settings,
        webhook_tokens: vec![],
        installed_at: 0,
        updated_at: 0,
        deleted_at: None,
        generation: 1,
    }
}

fn client_for(fake: &FakeClockify, rps: u32) -> ApiClient {
    let mut config = Config::for_data_dir("/nonexistent");
    config.allow_api_hosts = vec![fake.host.clone()];
    config.max_rps = rps;
    ApiClient::new(&config)
}

fn get(path: &str) -> ApiRequest {
    ApiRequest {
        operation_id: "getTest".into(),
        server: ServerFamily::Backend,
        method: "GET".into(),
        path: path.into(),
        query: vec![("page".into(), "1".into()), ("name".into(), "a b&c".into())],
        body: None,
        acting: Acting::Addon,
        retry: RetryPolicy {
            max_attempts: 3,
            base_backoff_ms: 20,
            retry_non_idempotent: false,
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sends_the_installation_token_to_the_installation_url() {
    let fake = FakeClockify::start();
    let secrets = SecretBox::new(&[1; 32]);
    let client = client_for(&fake, 25);
    let response = runtime()
        .block_on(client.send(
            &installation(&fake.base, &secrets, None),
            &secrets,
            get("/v1/user"),
        ))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.attempts, 1);
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/api/v1/user");
    assert_eq!(calls[0].query, "page=1&name=a+b%26c");
    assert_eq!(
        calls[0].headers["x-addon-token"],
        "installation-token-secret"
    );
    assert!(!response.url.contains("installation-token-secret"));
}

#[test]
fn a_429_is_retried_after_retry_after() {
    let fake = FakeClockify::start();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    fake.respond(move |call| {
        (call.path == "/api/v1/throttled"
            && h.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0)
            .then(|| {
                (
                    429,
                    vec![("retry-after".into(), "1".into())],
                    b"{\"message\":\"Too many requests\"}".to_vec(),
                )
            })
    });
    let secrets = SecretBox::new(&[1; 32]);
    let client = client_for(&fake, 25);
    let started = Instant::now();
    let response = runtime()
        .block_on(client.send(
            &installation(&fake.base, &secrets, None),
            &secrets,
            get("/v1/throttled"),
        ))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fake.calls().len(), 2);
}

#[test]
fn a_5xx_is_retried_for_reads_but_not_for_creates() {
    let fake = FakeClockify::start();
    fake.respond(|call| (call.path.ends_with("/broken")).then(|| (503, vec![], b"{}".to_vec())));
    let secrets = SecretBox::new(&[1; 32]);
    let client = client_for(&fake, 50);
    let inst = installation(&fake.base, &secrets, None);
    let rt = runtime();
    let response = rt
        .block_on(client.send(&inst, &secrets, get("/v1/broken")))
        .unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.attempts, 3, "GET retried up to max_attempts");
    let mut post = get("/v1/broken");
    post.method = "POST".into();
    post.body = Some(b"{}".to_vec());
    let response = rt.block_on(client.send(&inst, &secrets, post)).unwrap();
    assert_eq!(
        response.attempts, 1,
        "POST is not retried on 5xx by default"
    );
    assert_eq!(fake.calls().len(), 4);
}

#[test]
fn the_workspace_budget_is_respected() {
    let fake = FakeClockify::start();
    let secrets = SecretBox::new(&[1; 32]);
    let client = std::sync::Arc::new(client_for(&fake, 50));
    // The workspace setting (5 rps) wins over the server default (50).
    let inst = installation(&fake.base, &secrets, Some(5.0));
    let rt = runtime();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..15 {
            let (client, inst, secrets) = (client.clone(), inst.clone(), secrets.clone());
            tasks
                .spawn(async move { client.send(&inst, &secrets, get("/v1/user")).await.unwrap() });
        }
        while tasks.join_next().await.is_some() {}
    });
    let elapsed = started.elapsed().as_secs_f64();
    let calls = fake.calls().len() as f64;
    // 15 calls at 5/s with a burst of 5: at least ~2 s.
    assert_eq!(calls, 15.0);
    assert!(
        elapsed >= 1.8,
        "15 calls took {elapsed:.2}s: budget not respected"
    );
    println!(
        "measured {:.1} calls/s against a budget of 5/s",
        calls / elapsed
    );
}

#[test]
fn hosts_outside_the_allowlist_are_refused_before_connecting() {
    let fake = FakeClockify::start();
    let secrets = SecretBox::new(&[1; 32]);
    // No --allow-api-host for the fake: its plain-http host is not Clockify's.
    let client = ApiClient::new(&Config::for_data_dir("/nonexistent"));
    let err = runtime()
        .block_on(client.send(
            &installation(&fake.base, &secrets, None),
            &secrets,
            get("/v1/user"),
        ))
        .unwrap_err();
    assert!(matches!(err, ClientError::HostNotAllowed(_)), "{err}");
    assert!(!err.to_string().contains("installation-token-secret"));
    assert!(fake.calls().is_empty());
}
