//! The one way out to Clockify. Every call: base URL from the installation (never a
//! hard-coded host), a host allowlist checked before any connection, a per-workspace token
//! bucket shared by every caller, bounded retries with backoff and jitter on 429/5xx
//! (honouring `Retry-After`), and an `X-Addon-Token` that never reaches logs, errors or
//! responses. Redirects are never followed: the allowlist vouches for the first URL only, and
//! a followed redirect would carry the token to wherever it points (ureq keeps
//! `X-Addon-Token` across hops), so a 3xx is returned as the answer. ureq is blocking, so
//! each attempt runs on the blocking pool.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Config, MAX_RPS_CAP};
use crate::store::{Installation, SecretBox};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body kept; Clockify pages are far smaller.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// A `Retry-After` longer than this is not waited for; the call fails instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Response headers passed on to callers; everything else is dropped.
const SAFE_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "date",
    // Where a 3xx pointed (not followed): shown so the answer explains itself.
    "location",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];
/// Clockify's own regional API hosts (PLATFORM.md §6).
const REGIONAL_PREFIXES: &[&str] = &["euc1", "use2", "euw2", "apse2"];

/// Which installation URL an operation is served from (the spec gives each path its own
/// server, PLATFORM.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ServerFamily {
    /// `…/api` paths: the installation's `backendUrl` (or the install payload's `apiUrl`).
    Backend,
    /// Reports: `reportsUrl`.
    Reports,
    /// Time off (deprecated PTO paths): `ptoUrl`.
    Pto,
}

impl ServerFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerFamily::Backend => "backend",
            ServerFamily::Reports => "reports",
            ServerFamily::Pto => "pto",
        }
    }
}

/// Whose token the call carries.
#[derive(Clone)]
pub enum Acting {
    /// The installation token (admin over the workspace).
    Addon,
    /// A user token (the caller's own permissions).
    User(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubled per attempt, with full jitter.
    pub base_backoff_ms: u64,
    /// Retry 5xx and transport errors for POST/PATCH too (they may have taken effect).
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_backoff_ms: 250,
            retry_non_idempotent: false,
        }
    }
}

/// One call, fully resolved except for the base URL and the token.
#[derive(Clone)]
pub struct ApiRequest {
    /// For metrics and logs.
    pub operation_id: String,
    pub server: ServerFamily,
    pub method: String,
    /// Path below the base URL, parameters already substituted and encoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Vec<u8>>,
    pub acting: Acting,
    pub retry: RetryPolicy,
}

#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: u16,
    /// A safe subset of the response headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub duration: Duration,
    pub attempts: u32,
    /// The URL called (no token is ever part of it).
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the installation has no {0} URL to call")]
    NoBaseUrl(&'static str),
    #[error("the installation has no usable token (deleted, or the key changed)")]
    NoToken,
    #[error(
        "refusing to call {0}: the host is not a Clockify API host nor allowed by --allow-api-host"
    )]
    HostNotAllowed(String),
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    #[error("Clockify could not be reached after {attempts} attempt(s): {message}")]
    Transport { attempts: u32, message: String },
    #[error("Clockify asked to wait {0:?} before retrying, longer than this call may wait")]
    RetryAfterTooLong(Duration),
}

/// The outbound host allowlist.
#[derive(Clone, Debug)]
pub struct HostAllowlist {
    /// `host` or `host:port` entries from `--allow-api-host` (http allowed for these).
    extra: Vec<String>,
}

impl HostAllowlist {
    pub fn new(extra: &[String]) -> HostAllowlist {
        HostAllowlist {
            extra: extra.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `url` may be called: https to a Clockify host, or any configured extra host.
    pub fn check(&self, url: &str) -> Result<(), ClientError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ClientError::InvalidUrl(url.to_string()))?;
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let scheme = uri.scheme_str().unwrap_or("");
        let extra = self.extra.iter().any(|e| *e == authority || *e == host);
        if extra && matches!(scheme, "http" | "https") {
            return Ok(());
        }
        let clockify = host == "api.clockify.me"
            || host.ends_with(".api.clockify.me")
            || REGIONAL_PREFIXES.iter().any(|p| host == format!("{p}.clockify.me"))
            // Subdomain and developer workspaces live under clockify.me too (PLATFORM.md §6).
            || host.ends_with(".clockify.me");
        let default_port = uri.port_u16().is_none_or(|p| p == 443);
        if scheme == "https" && clockify && default_port && !host.contains('@') {
            return Ok(());
        }
        metrics::counter!("clockify_api_refused_hosts_total").increment(1);
        Err(ClientError::HostNotAllowed(format!(
            "{scheme}://{authority}"
        )))
    }
}

pub struct ApiClient {
    agent: ureq::Agent,
    allowlist: HostAllowlist,
    default_rps: u32,
    limiters: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl ApiClient {
    pub fn new(config: &Config) -> ApiClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow a redirect (see the module docs); 0 returns the 3xx as it is.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .user_agent(format!("clockify-studio/{}", env!("CARGO_PKG_VERSION")))
            // Flows call one host at up to `--flow-workspace-concurrency` per workspace at
            // once: keep those connections (ureq keeps 3 per host by default).
            .max_idle_connections_per_host(64)
            .max_idle_connections(256)
            .build();
        let agent = ureq::Agent::with_parts(
            agent,
            ureq::unversioned::transport::DefaultConnector::default(),
            crate::resolve::CachingResolver::default(),
        );
        ApiClient {
            agent,
            allowlist: HostAllowlist::new(&config.allow_api_hosts),
            default_rps: config.max_rps,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    pub fn allowlist(&self) -> &HostAllowlist {
        &self.allowlist
    }

    /// The base URL of `server` for this installation.
    pub fn base_url(
        installation: &Installation,
        server: ServerFamily,
    ) -> Result<String, ClientError> {
        let base = match server {
            ServerFamily::Backend => installation
                .backend_url
                .clone()
                .or_else(|| Some(installation.api_url.clone()).filter(|u| !u.is_empty())),
            ServerFamily::Reports => installation.reports_url.clone(),
            ServerFamily::Pto => installation.pto_url.clone(),
        };
        base.map(|b| b.trim_end_matches('/').to_string())
            .ok_or(ClientError::NoBaseUrl(server.as_str()))
    }

    /// The full URL of a request (what is shown to users and stored in histories).
    pub fn url(installation: &Installation, request: &ApiRequest) -> Result<String, ClientError> {
        let mut url = format!(
            "{}{}",
            ApiClient::base_url(installation, request.server)?,
            request.path
        );
        if !request.query.is_empty() {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &request.query {
                serializer.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&serializer.finish());
        }
        Ok(url)
    }

    /// The token bucket of a workspace, re-created when its rate setting changes.
    fn limiter(&self, installation: &Installation) -> Arc<DefaultDirectRateLimiter> {
        let rps = installation
            .settings
            .whole_number("max_rps")
            .unwrap_or(self.default_rps)
            .clamp(1, MAX_RPS_CAP);
        let mut limiters = self.limiters.lock().expect("limiter lock");
        match limiters.get(&installation.workspace_id) {
            Some((current, limiter)) if *current == rps => limiter.clone(),
            _ => {
                let quota = Quota::per_second(NonZeroU32::new(rps).expect("rps ≥ 1"));
                let limiter = Arc::new(RateLimiter::direct(quota));
                limiters.insert(installation.workspace_id.clone(), (rps, limiter.clone()));
                limiter
            }
        }
    }

    /// Sends `request` for `installation`, retrying per its policy. A 4xx/5xx that is not
    /// retried (or still fails) is returned as a response, not an error.
    pub async fn send(
        &self,
        installation: &Installation,
        secrets: &SecretBox,
        request: ApiRequest,
    ) -> Result<ApiResponse, ClientError> {
        let url = ApiClient::url(installation, &request)?;
        self.allowlist.check(&url)?;
        let token = match &request.acting {
            Acting::Addon => {
                let sealed = installation
                    .auth_token
                    .as_ref()
                    .ok_or(ClientError::NoToken)?;
                secrets.open_str(sealed).map_err(|_| ClientError::NoToken)?
            }
            Acting::User(token) => token.clone(),
        };
        let limiter = self.limiter(installation);
        let operation = request.operation_id.clone();
        let idempotent = matches!(
            request.method.as_str(),
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
        );
        let max_attempts = request.retry.max_attempts.max(1);
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            limiter.until_ready().await;
            let outcome = self.attempt(&request, &url, &token).await;
            let retryable_transport = idempotent || request.retry.retry_non_idempotent;
            let wait = match &outcome {
                Ok((429, headers, _)) => {
                    metrics::counter!("clockify_api_throttled_total", "operation" => operation.clone()).increment(1);
                    Some(retry_after(headers).unwrap_or_else(|| backoff(&request.retry, attempt)))
                }
                Ok((status, headers, _)) if *status >= 500 && retryable_transport => {
                    Some(retry_after(headers).unwrap_or_else(|| backoff(&request.retry, attempt)))
                }
                Err(_) if retryable_transport => Some(backoff(&request.retry, attempt)),
                _ => None,
            };
            match wait {
                Some(wait) if attempt < max_attempts => {
                    if wait > MAX_RETRY_AFTER {
                        return Err(ClientError::RetryAfterTooLong(wait));
                    }
                    metrics::counter!("clockify_api_retries_total", "operation" => operation.clone()).increment(1);
                    tracing::debug!(operation = %operation, attempt, wait_ms = wait.as_millis() as u64, "retrying Clockify call");
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let elapsed = started.elapsed();
                    let class = match &outcome {
                        Ok((status, _, _)) => format!("{}xx", status / 100),
                        Err(_) => "error".to_string(),
                    };
                    metrics::counter!("clockify_api_calls_total", "operation" => operation.clone(), "status" => class)
                        .increment(1);
                    metrics::histogram!("clockify_api_call_duration_seconds", "operation" => operation.clone())
                        .record(elapsed.as_secs_f64());
                    return match outcome {
                        Ok((status, headers, body)) => Ok(ApiResponse {
                            status,
                            headers,
                            body,
                            duration: elapsed,
                            attempts: attempt,
                            url,
                        }),
                        Err(message) => Err(ClientError::Transport {
                            attempts: attempt,
                            message,
                        }),
                    };
                }
            }
        }
    }

    /// One HTTP exchange on the blocking pool: (status, safe headers, body) or a transport
    /// error text (which never contains the token: it is only ever in a header).
    async fn attempt(
        &self,
        request: &ApiRequest,
        url: &str,
        token: &str,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
        let agent = self.agent.clone();
        let (method, url, token, body) = (
            request.method.clone(),
            url.to_string(),
            token.to_string(),
            request.body.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let builder = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url)
                .header("X-Addon-Token", token)
                .header("Accept", "application/json");
            let result = match body {
                Some(body) => agent.run(
                    builder
                        .header("Content-Type", "application/json")
                        .body(body)
                        .map_err(|e| e.to_string())?,
                ),
                None => agent.run(builder.body(()).map_err(|e| e.to_string())?),
            };
            let mut response = result.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter(|(name, _)| SAFE_RESPONSE_HEADERS.contains(&name.as_str()))
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        value.to_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(|e| e.to_string())?;
            Ok((status, headers, body))
        })
        .await
        .map_err(|e| format!("call task failed: {e}"))?
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = policy
        .base_backoff_ms
        .saturating_mul(1u64 << (attempt.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF.as_millis() as u64);
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("operating system random source");
    let jitter = u64::from_le_bytes(random) % (ceiling / 2 + 1);
    // Half fixed, half random: never hammer, never wait less than half the backoff.
    Duration::from_millis(ceiling / 2 + jitter)
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let value = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.trim())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Some(Duration::from_millis(wait.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_accepts_clockify_hosts_and_configured_extras_only() {
        let list = HostAllowlist::new(&["127.0.0.1:9999".to_string()]);
        for ok in [
            "https://api.clockify.me/api/v1/user",
            "https://reports.api.clockify.me/v1/x",
            "https://euc1.clockify.me/api/v1/x",
            "https://acme.clockify.me/report/v1/x",
            "http://127.0.0.1:9999/api/v1/user",
        ] {
            assert!(list.check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.clockify.me/api",
            "https://clockify.me.evil.com/api",
            "https://evil.com/api",
            "https://api.clockify.me:8443/api",
            "http://127.0.0.1:9998/api",
            "http://169.254.169.254/latest",
        ] {
            assert!(list.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let headers = vec![("retry-after".to_string(), "2".to_string())];
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let policy = RetryPolicy::default();
        let b = backoff(&policy, 3);
        assert!(
            b >= Duration::from_millis(500) && b <= Duration::from_millis(1000),
            "{b:?}"
        );
    }
}
