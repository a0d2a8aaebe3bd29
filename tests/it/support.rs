//! The test harness: the real server on 127.0.0.1 (ephemeral port, temp data dir, test key),
//! tokens signed like Clockify signs them, and a fake Clockify API that records calls.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clockify_studio::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const TEST_PRIVATE_KEY: &str = include_str!("../fixtures/test-signing-key.pem");
pub const TEST_PUBLIC_KEY: &str = include_str!("../fixtures/test-signing-key.pub.pem");
pub const OTHER_PRIVATE_KEY: &str = include_str!("../fixtures/other-key.pem");
pub const ADDON_KEY: &str = "clockify-studio";
pub const BIN: &str = env!("CARGO_BIN_EXE_clockify-studio");
/// An API base for tests that make no Clockify calls: loopback, and not on the allowlist,
/// so the client refuses it before connecting (nothing ever leaves the machine).
pub const UNREACHABLE_API: &str = "http://127.0.0.1:9";

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An `exp` claim at least `secs` from now, rounded up to the next minute: tokens made within
/// the same minute then have equal claims, so [`sign`] makes each of them once.
pub fn expiry_in(secs: u64) -> u64 {
    (now_secs() / 60 + 1) * 60 + secs
}

/// Signs `claims` with the test key, RS256, as Clockify does.
pub fn sign(claims: &Value) -> String {
    sign_with(claims, TEST_PRIVATE_KEY)
}

/// RS256 signing takes ~0.1 s in a debug build and gives the same token for the same key
/// and claims, so each distinct pair is signed once per test run.
pub fn sign_with(claims: &Value, private_pem: &str) -> String {
    static SIGNED: LazyLock<Mutex<HashMap<(String, String), String>>> =
        LazyLock::new(Mutex::default);
    let cache_key = (private_pem.to_string(), claims.to_string());
    if let Some(token) = SIGNED.lock().unwrap().get(&cache_key) {
        return token.clone();
    }
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("test key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign");
    SIGNED.lock().unwrap().insert(cache_key, token.clone());
    token
}

/// An unsigned token with `alg: none`.
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// HS256 signed with the public key as the HMAC secret (the classic key-confusion attack).
pub fn hs256_with_public_key(claims: &Value) -> String {
    let key = EncodingKey::from_secret(TEST_PUBLIC_KEY.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("sign")
}

/// Base claims every Clockify token carries.
pub fn base_claims(workspace_id: &str, addon_id: &str) -> Value {
    json!({"iss": "clockify", "type": "addon", "sub": ADDON_KEY, "workspaceId": workspace_id, "addonId": addon_id})
}

/// A lifecycle token for `workspace_id` / `addon_id`.
pub fn lifecycle_token(workspace_id: &str, addon_id: &str) -> String {
    sign(&base_claims(workspace_id, addon_id))
}

/// An installation token whose URL claims point at `api_base` (the fake Clockify).
pub fn installation_token(workspace_id: &str, addon_id: &str, api_base: &str) -> String {
    let mut claims = base_claims(workspace_id, addon_id);
    claims["user"] = json!("owner-user");
    claims["backendUrl"] = json!(format!("{api_base}/api"));
    claims["reportsUrl"] = json!(format!("{api_base}/reports"));
    sign(&claims)
}

/// A 30-minute user token as the sidebar iframe receives it.
pub fn user_token(workspace_id: &str, addon_id: &str, role: &str) -> String {
    user_token_of(workspace_id, addon_id, role, "user-1")
}

/// [`user_token`] for the Clockify user `user`.
pub fn user_token_of(workspace_id: &str, addon_id: &str, role: &str, user: &str) -> String {
    let mut claims = base_claims(workspace_id, addon_id);
    claims["user"] = json!(user);
    claims["workspaceRole"] = json!(role);
    claims["exp"] = json!(expiry_in(1800));
    sign(&claims)
}

/// A webhook signature token (the "reduced" claim set).
pub fn webhook_token(workspace_id: &str, addon_id: &str) -> String {
    sign(&base_claims(workspace_id, addon_id))
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The problems of a validation error, each as `path: message` (the message alone when
    /// it concerns the whole request), checking the shape on the way.
    pub fn problems(&self) -> Vec<String> {
        let body = self.json();
        assert_eq!(body["code"], "validation", "not a validation error: {body}");
        body["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("no problems in {body}"))
            .iter()
            .map(|p| {
                let path = p["path"].as_str().expect("a problem has a path");
                let message = p["message"].as_str().expect("a problem has a message");
                if path.is_empty() {
                    message.to_string()
                } else {
                    format!("{path}: {message}")
                }
            })
            .collect()
    }

    /// The error text of a `{"error", "code", "requestId"}` body, checking the shape on the way.
    pub fn error(&self) -> String {
        let body = self.json();
        assert!(
            body["requestId"].as_str().is_some_and(|s| !s.is_empty()),
            "no requestId in {body}"
        );
        assert!(
            body["code"].as_str().is_some_and(
                |c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            ),
            "no machine-readable code in {body}"
        );
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {body}"))
            .to_string()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `request`, with a transport failure (the server died, say) returned instead of a panic.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ureq::Error> {
    let agent = agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let result = match body {
        Some(bytes) => agent.run(builder.body(bytes.to_vec()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = result?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Path of a file in the repository (tests never read outside it).
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Path of a file under `tests/fixtures/` (see its README for where each came from).
pub fn fixture(name: &str) -> PathBuf {
    repo_file("tests/fixtures").join(name)
}

/// Every webhook sample: (event type, raw bytes).
pub fn webhook_samples() -> Vec<(String, Vec<u8>)> {
    let mut samples: Vec<(String, Vec<u8>)> = std::fs::read_dir(repo_file("assets/samples"))
        .expect("samples dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let event = p.file_stem().unwrap().to_string_lossy().to_string();
            (event, std::fs::read(&p).unwrap())
        })
        .collect();
    samples.sort();
    samples
}

/// Reports a test that cannot run here. Written straight to the process's stderr, past the
/// test harness's output capture, so the line shows in a plain `cargo test` run.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Requests to a server under test by its base URL. [`TestServer`] derefs to one; a clone
/// goes where the server cannot (another thread), and a server run as a child process has one.
#[derive(Clone)]
pub struct TestClient {
    pub base: String,
}

impl TestClient {
    pub fn new(base: &str) -> TestClient {
        TestClient {
            base: base.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request("GET", &self.url(path), headers, None)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        request("POST", &self.url(path), &all, Some(body))
    }

    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        self.post(path, headers, &serde_json::to_vec(body).unwrap())
    }

    /// Sends a lifecycle message signed for the body's workspace/add-on.
    pub fn lifecycle(&self, hook: &str, body: &Value) -> Response {
        let token = lifecycle_token(
            body["workspaceId"].as_str().unwrap_or(""),
            body["addonId"].as_str().unwrap_or(""),
        );
        self.post_json(
            &format!("/lifecycle/{hook}"),
            &[("x-addon-lifecycle-token", &token)],
            body,
        )
    }

    /// Delivers a Clockify webhook signed with a valid webhook JWT for `workspace_id`.
    pub fn deliver(
        &self,
        workspace_id: &str,
        addon_id: &str,
        event: &str,
        body: &[u8],
    ) -> Response {
        let token = webhook_token(workspace_id, addon_id);
        self.post(
            &format!("/webhooks/clockify/{event}"),
            &[
                ("clockify-signature", &token),
                ("clockify-webhook-event-type", event),
            ],
            body,
        )
    }

    /// GET with an admin user token of `workspace_id`.
    pub fn admin_get(&self, workspace_id: &str, addon_id: &str, path: &str) -> Response {
        let token = user_token(workspace_id, addon_id, "OWNER");
        self.get(path, &[("x-addon-token", &token)])
    }

    /// Sends `method` to an `/api` route as a user with `role`.
    pub fn api(
        &self,
        method: &str,
        workspace_id: &str,
        addon_id: &str,
        role: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Response {
        let token = user_token(workspace_id, addon_id, role);
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        request(
            method,
            &self.url(path),
            &[
                ("x-addon-token", &token),
                ("content-type", "application/json"),
            ],
            bytes.as_deref(),
        )
    }

    /// Installs the add-on on `workspace_id` with tokens pointing at `api_base`.
    pub fn install(&self, workspace_id: &str, addon_id: &str, api_base: &str) -> Response {
        let body = install_payload(workspace_id, addon_id, api_base);
        let response = self.lifecycle("installed", &body);
        assert_eq!(response.status, 200, "install failed: {}", response.body);
        response
    }

    /// A counter or gauge value from /metrics, summed over series whose labels contain `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.get("/metrics", &[]).body;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Installs `ws` against `api_base` and waits until the install's bootstrap and subscription
/// sync are over, so later calls to a fake Clockify are the test's own.
pub fn install_settled(server: &TestClient, ws: &str, addon: &str, api_base: &str) {
    server.install(ws, addon, api_base);
    let settled = wait_until(Duration::from_secs(60), || {
        let bootstrap = server.admin_get(ws, addon, "/api/bootstrap").json();
        let subscriptions = server.admin_get(ws, addon, "/api/subscriptions").json();
        bootstrap["status"] != "running" && subscriptions["syncedAt"].is_string()
    });
    assert!(settled, "install side effects did not settle");
}

/// Number of stored events of `ws` (up to 200).
pub fn count_events(server: &TestClient, ws: &str, addon: &str) -> usize {
    let r = server.admin_get(ws, addon, "/api/webhooks?limit=200");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().len()
}

/// Runs the binary with `args` then `--data-dir dir`.
pub fn run_on(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run binary")
}

/// The stdout of a run that must have succeeded.
pub fn succeeded(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The server under test, on its own runtime thread.
pub struct TestServer {
    client: TestClient,
    pub data_dir: PathBuf,
    _temp: Option<Arc<tempfile::TempDir>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// Like [`TestServer::start_in`] on a fresh temporary directory that lives as long as
    /// the server.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let temp = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut server = TestServer::start_in(temp.path(), tweak);
        server._temp = Some(temp);
        server
    }

    /// Starts on `data_dir`, with `tweak` adjusting the test configuration first.
    pub fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut config = Config::for_data_dir(data_dir);
        config.listen = addr;
        config.base_url = format!("http://{addr}");
        config.clockify_public_key_pem = TEST_PUBLIC_KEY.to_string();
        tweak(&mut config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                clockify_studio::server::launch(config, listener, async {
                    let _ = rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let server = TestServer {
            client: TestClient::new(&format!("http://{addr}")),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            shutdown: Some(tx),
            thread: Some(thread),
        };
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok()),
            "server did not start"
        );
        // The listener was bound before the server opened its data file, so a connection is
        // accepted by the kernel either way: only an answer says the server is up (a test
        // that reads the file with the CLI at once would otherwise race the server for it).
        let health = server.get("/healthz", &[]);
        assert_eq!(health.status, 200, "server did not start: {}", health.body);
        server
    }

    /// Graceful stop; the data dir stays (as long as the returned value lives) for a restart.
    pub fn stop(mut self) -> DataDir {
        self.shutdown_and_join()
            .expect("server stopped with an error");
        DataDir {
            path: self.data_dir.clone(),
            _temp: self._temp.take(),
        }
    }

    fn shutdown_and_join(&mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| "server thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for TestServer {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown_and_join();
    }
}

/// A stopped server's data dir; a temp dir is removed when this is dropped.
pub struct DataDir {
    pub path: PathBuf,
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl std::ops::Deref for DataDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

pub fn install_payload(workspace_id: &str, addon_id: &str, api_base: &str) -> Value {
    json!({
        "addonId": addon_id,
        "authToken": installation_token(workspace_id, addon_id, api_base),
        "workspaceId": workspace_id,
        "asUser": "owner-user",
        "apiUrl": format!("{api_base}/api"),
        "addonUserId": "addon-user",
        "webhooks": [
            {"path": "/webhooks/clockify/NEW_TIME_ENTRY", "webhookType": "ADDON",
             "authToken": webhook_token(workspace_id, addon_id)}
        ]
    })
}

/// One request the fake Clockify received.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

type Responder =
    Arc<dyn Fn(&RecordedCall) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> + Send + Sync>;

/// A fake Clockify API on 127.0.0.1 that records every call and answers with the first
/// matching scripted response (or 200 `{}`).
pub struct FakeClockify {
    pub base: String,
    pub host: String,
    calls: Arc<Mutex<Vec<RecordedCall>>>,
    responders: Arc<Mutex<Vec<Responder>>>,
    holds: Arc<Mutex<Vec<Hold>>>,
    _runtime: tokio::runtime::Runtime,
}

/// Keeps the first call matching `matches` waiting (without blocking the fake) until released.
struct Hold {
    matches: Box<dyn Fn(&RecordedCall) -> bool + Send + Sync>,
    used: bool,
    release: tokio::sync::watch::Receiver<bool>,
}

impl FakeClockify {
    pub fn start() -> FakeClockify {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let calls: Arc<Mutex<Vec<RecordedCall>>> = Arc::default();
        let responders: Arc<Mutex<Vec<Responder>>> = Arc::default();
        let holds: Arc<Mutex<Vec<Hold>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (c, r, h) = (calls.clone(), responders.clone(), holds.clone());
        runtime.spawn(async move {
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (c, r, h) = (c.clone(), r.clone(), h.clone());
                async move { fake_answer(req, c, r, h).await }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FakeClockify {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            calls,
            responders,
            holds,
            _runtime: runtime,
        }
    }

    /// Adds a scripted answer; earlier scripts win.
    pub fn respond(
        &self,
        f: impl Fn(&RecordedCall) -> Option<(u16, Vec<(String, String)>, Vec<u8>)>
        + Send
        + Sync
        + 'static,
    ) {
        self.responders.lock().unwrap().push(Arc::new(f));
    }

    /// Holds the answer to the first call matching `matches` (it is recorded at once) until
    /// the returned sender sends `true` or is dropped.
    pub fn hold_first(
        &self,
        matches: impl Fn(&RecordedCall) -> bool + Send + Sync + 'static,
    ) -> tokio::sync::watch::Sender<bool> {
        let (release, receiver) = tokio::sync::watch::channel(false);
        self.holds.lock().unwrap().push(Hold {
            matches: Box::new(matches),
            used: false,
            release: receiver,
        });
        release
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap().clone()
    }
}

async fn fake_answer(
    req: axum::extract::Request,
    calls: Arc<Mutex<Vec<RecordedCall>>>,
    responders: Arc<Mutex<Vec<Responder>>>,
    holds: Arc<Mutex<Vec<Hold>>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let call = RecordedCall {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    };
    calls.lock().unwrap().push(call.clone());
    let held = holds
        .lock()
        .unwrap()
        .iter_mut()
        .find(|h| !h.used && (h.matches)(&call))
        .map(|h| {
            h.used = true;
            h.release.clone()
        });
    if let Some(mut release) = held {
        let _ = release.wait_for(|go| *go).await;
    }
    let scripted = responders.lock().unwrap().iter().find_map(|r| r(&call));
    let (status, headers, body) = scripted.unwrap_or((200, vec![], b"{}".to_vec()));
    let mut response = (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    for (k, v) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    response
}

/// The binary run as a server (`serve` on an ephemeral port, JSON logs), its log lines read
/// on a thread as they come.
pub struct LoggedServer {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
    /// Every line read so far.
    pub seen: Vec<Value>,
    pub client: TestClient,
}

impl LoggedServer {
    /// Starts `serve` on `data_dir` with `args` added; returns once it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> LoggedServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("CLOCKIFY_STUDIO_LOG_LEVEL")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the server");
        let (sender, lines) = std::sync::mpsc::channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).expect("JSON log lines");
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        let mut server = LoggedServer {
            child,
            lines,
            seen: Vec::new(),
            client: TestClient::new(""),
        };
        let listening = server
            .wait_for(Duration::from_secs(30), |line| {
                line["message"] == "listening"
            })
            .expect("the server did not start listening");
        let address = listening["address"].as_str().unwrap();
        server.client = TestClient::new(&format!("http://{address}"));
        server
    }

    /// Reads lines until one matches `wanted` (returned) or `timeout` passes.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    /// Kills the server and returns every line it wrote.
    pub fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        self.seen.extend(self.lines.try_iter());
        std::mem::take(&mut self.seen)
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary run as a child process (for what only a process can show: its exit, its
/// log, a SIGKILL), with the test key and JSON logs on stdout, read by a thread.
pub struct ChildServer {
    pub child: std::process::Child,
    pub client: TestClient,
    log: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

/// How a child server start ended before it listened.
#[derive(Debug)]
pub struct ChildExit {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    pub log: Vec<String>,
}

impl ChildServer {
    /// `serve` on `data_dir`, port 0, JSON logs, the test key; add flags to it.
    pub fn command(data_dir: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--clockify-public-key")
            .arg(fixture("test-signing-key.pub.pem"))
            .env_remove("CLOCKIFY_STUDIO_LOG_LEVEL");
        command
    }

    /// Starts `command` and waits for it to listen.
    pub fn start(command: std::process::Command) -> ChildServer {
        ChildServer::try_start(command).unwrap_or_else(|exit| panic!("the server exited: {exit:?}"))
    }

    /// Starts `command`; `Err` with what it printed when it exits before listening.
    pub fn try_start(mut command: std::process::Command) -> Result<ChildServer, ChildExit> {
        use std::io::{BufRead, Read};
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let mut err_pipe = child.stderr.take().unwrap();
        let err_text = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match err_pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err_text
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n])),
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let address = log.lock().unwrap().iter().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                (value["message"] == "listening")
                    .then(|| value["address"].as_str().map(String::from))?
            });
            if let Some(address) = address {
                return Ok(ChildServer {
                    child,
                    client: TestClient::new(&format!("http://{address}")),
                    log,
                    stderr,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last output.
                std::thread::sleep(Duration::from_millis(200));
                return Err(ChildExit {
                    status,
                    stderr: stderr.lock().unwrap().clone(),
                    log: log.lock().unwrap().clone(),
                });
            }
            assert!(
                Instant::now() < deadline,
                "the server neither listened nor exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines so far (JSON), and what went to stderr.
    pub fn output(&self) -> String {
        let mut out = self.log.lock().unwrap().join("\n");
        out.push_str("\n--- stderr ---\n");
        out.push_str(&self.stderr.lock().unwrap());
        out
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd stops it; returns how long it took to exit, and its status.
    pub fn terminate(mut self, patience: Duration) -> (Duration, Option<std::process::ExitStatus>) {
        let started = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (started.elapsed(), Some(status));
            }
            if started.elapsed() > patience {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (started.elapsed(), None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl std::ops::Deref for ChildServer {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs the test mounts itself (to fill a disk); unmounted when dropped. `None`
/// (with a visible SKIPPED line) where mounting is not possible, except under `CI=true`,
/// where it fails the test.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(err) => err.to_string(),
                };
                let why = format!("cannot mount a tmpfs (needs root): {why}");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: {why}"
                );
                skipped(test, &why);
                None
            }
        }
    }

    /// Fills the file system, leaving about `leave` bytes free; returns the filler's path.
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            if self.free() <= leave + chunk.len() as u64 {
                break;
            }
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        filler
    }

    /// Bytes free, as `df` reports them.
    pub fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
