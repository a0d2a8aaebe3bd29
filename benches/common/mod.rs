//! Shared by the benchmark programs: start the release binary with the test key, sign
//! tokens, read the server's RSS, percentiles.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const PRIVATE_KEY: &str = include_str!("../../tests/fixtures/test-signing-key.pem");
pub const PUBLIC_KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/test-signing-key.pub.pem"
);
const BIN: &str = env!("CARGO_BIN_EXE_clockify-studio");

/// The server binary: this build's, or `BENCH_SERVER_BIN` (to compare two builds with one
/// load generator).
pub fn server_bin() -> String {
    std::env::var("BENCH_SERVER_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub fn sign(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

pub fn claims(ws: &str, addon: &str) -> Value {
    json!({"iss": "clockify", "type": "addon", "sub": "clockify-studio", "workspaceId": ws, "addonId": addon})
}

pub fn user_token(ws: &str, addon: &str) -> String {
    let mut c = claims(ws, addon);
    c["workspaceRole"] = json!("OWNER");
    c["exp"] = json!(jiff::Timestamp::now().as_second() + 3600);
    sign(&c)
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with_args(data_dir, &[])
    }

    /// Like [`Server::start`], with extra `serve` flags.
    pub fn start_with_args(data_dir: &Path, extra: &[&str]) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(server_bin())
            // At the default log level, as self-hosters run it.
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--clockify-public-key")
            .arg(PUBLIC_KEY_FILE)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start server");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child, base }
    }

    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        Self::cpu_seconds_in(&format!("/proc/{}/stat", self.child.id()))
    }

    /// CPU seconds of the server's thread with this name (e.g. `store-writer`).
    pub fn thread_cpu_seconds(&self, name: &str) -> f64 {
        let dir = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
            .map(|task| Self::cpu_seconds_in(&task.path().join("stat").to_string_lossy()))
            .sum()
    }

    /// CPU time (user + system) this process (the load generator) has used so far.
    pub fn own_cpu_seconds() -> f64 {
        Self::cpu_seconds_in("/proc/self/stat")
    }

    fn cpu_seconds_in(stat_file: &str) -> f64 {
        let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Linux reports clock ticks of 1/100 s (USER_HZ).
        (ticks(11) + ticks(12)) / 100.0
    }

    /// SIGTERM and wait: the writer flushes before exit.
    pub fn stop(mut self) {
        unsafe_kill_term(self.child.id());
        let _ = self.child.wait();
    }
}

fn unsafe_kill_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(512)
        .build()
        .into()
}

/// The installation's API address: a local port the server is not allowed to call (no
/// `--allow-api-host`), so its background work after an install (bootstrap, webhook sync)
/// fails at once instead of resolving and calling the real Clockify from a benchmark.
const UNREACHABLE_API: &str = "http://127.0.0.1:9/api";

pub fn install(base: &str, ws: &str, addon: &str) {
    let installation = sign(
        &json!({"iss": "clockify", "type": "addon", "sub": "clockify-studio",
        "workspaceId": ws, "addonId": addon, "backendUrl": UNREACHABLE_API}),
    );
    let body = json!({"addonId": addon, "authToken": installation, "workspaceId": ws,
        "apiUrl": UNREACHABLE_API, "webhooks": []});
    let r = agent()
        .post(&format!("{base}/lifecycle/installed"))
        .header("x-addon-lifecycle-token", &sign(&claims(ws, addon)))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(&body).unwrap())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "install failed");
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// `events` rows of the `check` output.
pub fn stored_events(data_dir: &Path) -> u64 {
    let out = Command::new(server_bin())
        .args(["check", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("table events: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A minimal keep-alive HTTP/1.1 client on one connection: the load generator must cost far
/// less CPU than the server it measures on the same two cores, so a request is one write from
/// a reused buffer and the response is parsed in place.
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl RawConnection {
    pub async fn connect(addr: &str) -> RawConnection {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        RawConnection {
            stream,
            request: Vec::with_capacity(8 * 1024),
            response: Vec::with_capacity(4 * 1024),
        }
    }

    /// Sends one request and returns the status code (the body is read and dropped).
    pub async fn send(&mut self, head: &str, body: &[u8]) -> std::io::Result<u16> {
        use std::io::Write;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.request.clear();
        self.request.extend_from_slice(head.as_bytes());
        write!(self.request, "Content-Length: {}\r\n\r\n", body.len())?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.response.clear();
        let (status, body_start, length) = loop {
            if self.stream.read_buf(&mut self.response).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(end) = find(&self.response, b"\r\n\r\n") {
                let (status, length) = parse_head(&self.response[..end]);
                break (status, end + 4, length);
            }
        };
        while self.response.len() < body_start + length {
            if self.stream.read_buf(&mut self.response).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(status)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status code and `Content-Length` of a response head.
fn parse_head(head: &[u8]) -> (u16, usize) {
    let text = std::str::from_utf8(head).unwrap_or("");
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    (status, length)
}

/// `q`-quantile of a Prometheus histogram, interpolated within its bucket, in ms.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower * 1000.0;
            }
            let within = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return (lower + (le - lower) * within) * 1000.0;
        }
        lower = le;
        below = count;
    }
    lower * 1000.0
}

/// The value of an unlabelled series in Prometheus text.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{series} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Mean of a Prometheus histogram (sum / count).
pub fn metric_mean(metrics: &str, name: &str) -> f64 {
    metric_value(metrics, &format!("{name}_sum"))
        / metric_value(metrics, &format!("{name}_count")).max(1.0)
}

/// The server's `/metrics` text.
pub fn scrape(base: &str) -> String {
    agent()
        .get(&format!("{base}/metrics"))
        .call()
        .expect("scrape metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text")
}

/// What [`drive`] saw: each acknowledged delivery's sequence number, when its answer came
/// and how long it took.
pub struct Driven {
    pub acks: Vec<(u64, std::time::Instant, f64)>,
    pub failed: u64,
    pub seconds: f64,
}

impl Driven {
    /// Latencies in milliseconds, sorted.
    pub fn latencies(&self) -> Vec<f64> {
        let mut l: Vec<f64> = self.acks.iter().map(|a| a.2).collect();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        l
    }
}

/// Posts signed `NEW_TIME_ENTRY` deliveries (the `template` body with a unique leading
/// `"benchSeq":n` field) from `concurrency` connections until `seconds` have passed.
pub fn drive(
    client: &tokio::runtime::Runtime,
    addr: &str,
    signature: &str,
    template: &str,
    concurrency: usize,
    seconds: f64,
) -> Driven {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;
    let counter = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let acks = client.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (addr, template, counter, failures) = (
                addr.to_string(),
                template.to_string(),
                counter.clone(),
                failures.clone(),
            );
            let head = format!(
                "POST /webhooks/clockify/NEW_TIME_ENTRY HTTP/1.1\r\nHost: {addr}\r\n\
                 clockify-signature: {signature}\r\nclockify-webhook-event-type: NEW_TIME_ENTRY\r\n\
                 Content-Type: application/json\r\n"
            );
            tasks.spawn(async move {
                let mut connection = RawConnection::connect(&addr).await;
                let mut acks = Vec::new();
                let mut body = Vec::with_capacity(template.len() + 32);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    body.clear();
                    write!(body, "{{\"benchSeq\":{n},").unwrap();
                    body.extend_from_slice(&template.as_bytes()[1..]);
                    let t = Instant::now();
                    match connection.send(&head, &body).await {
                        Ok(200) => {
                            let now = Instant::now();
                            acks.push((n, now, (now - t).as_secs_f64() * 1000.0));
                        }
                        Ok(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            connection = RawConnection::connect(&addr).await;
                        }
                    }
                }
                acks
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    Driven {
        acks,
        failed: failures.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}
