//! The outbound side of destinations (and of flows' "HTTP request" actions): which URLs may
//! be called, and one request with the safety rules every attempt follows. The host is resolved by a resolver that drops
//! loopback, private, link-local and other internal addresses (so a name cannot be pointed
//! at the server's own network, also not between a check and the connection) unless the
//! operator allowed that host; redirects are never followed; at most the first KB of the
//! answer is kept; the connection and the whole attempt have time limits.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::Config;
use crate::resolve::CachingResolver;

/// The part of an answer kept in the attempt log.
pub const RESPONSE_KEEP_BYTES: usize = 1024;
/// What the API shows instead of a stored header value; sent back unchanged, it keeps it.
pub const MASK: &str = "********";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an address is internal: anything but a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                // NAT64 and 6to4 carry an IPv4 address that may be internal.
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0])
                || s[0] == 0x2002
                || v6 == Ipv6Addr::from([0u8; 16])
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
}

/// Destination hosts the operator allowed (`--allow-destination-host`).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    pub fn new(hosts: &[String]) -> AllowedHosts {
        AllowedHosts(Arc::new(
            hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        ))
    }

    /// Whether `host` (with `port`, the URL's or its scheme's default) is allowed.
    fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.iter().any(|entry| {
            let entry = entry.as_str();
            let bare = entry.trim_start_matches('[');
            entry == host
                || bare == format!("{host}]")
                || entry == format!("{host}:{port}")
                || bare == format!("{host}]:{port}")
        })
    }
}

/// Why a URL may not be a destination.
pub fn check_url(url: &str, allowed: &AllowedHosts) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    let scheme = uri.scheme_str().unwrap_or("");
    let Some(authority) = uri.authority() else {
        return Err("must be an absolute URL (https://…)".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not contain user credentials".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("has no host".into());
    }
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    let allowed_host = allowed.allows(host, port);
    match scheme {
        "https" => {}
        "http" if allowed_host => {}
        "http" => {
            return Err(format!(
                "must use https (plain http only for hosts allowed by --allow-destination-host; {host}:{port} is not)"
            ));
        }
        _ => return Err("must use https".into()),
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>()
        && is_internal(ip)
        && !allowed_host
    {
        return Err(format!(
            "{ip} is an internal address (allow it with --allow-destination-host {host}:{port})"
        ));
    }
    Ok(())
}

/// Resolves through [`CachingResolver`], then keeps only public addresses unless the host is
/// allowed; refuses the connection when none is left. The filter runs on every request, so a
/// remembered answer is checked as a fresh one is.
#[derive(Debug)]
struct GuardedResolver {
    inner: CachingResolver,
    allowed: AllowedHosts,
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.inner.lookup(uri, config, timeout)?;
        let host = uri.host().unwrap_or("");
        let port = resolved.first().map(|a| a.port()).unwrap_or(0);
        let allowed = self.allowed.allows(host, port);
        let kept = self
            .inner
            .collect(resolved.iter().filter(|a| allowed || !is_internal(a.ip())));
        if kept.is_empty() {
            let found: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
            return Err(ureq::Error::Other(
                format!(
                    "refused: {host} resolves only to internal addresses ({}); allow it with --allow-destination-host",
                    found.join(", ")
                )
                .into(),
            ));
        }
        Ok(kept)
    }
}

/// What one POST brought back.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// `None` when no answer came.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first KB of the answer, or what went wrong.
    pub response: String,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

/// One POST of a run: URL, headers and body.
pub type Post = (String, Vec<(String, String)>, Vec<u8>);

/// The agent every destination attempt goes through.
#[derive(Clone)]
pub struct Outbound {
    agent: ureq::Agent,
}

impl Outbound {
    pub fn new(config: &Config) -> Outbound {
        let ureq_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow a redirect: the URL was checked, where it points to was not.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(config.destination_timeout)))
            .timeout_global(Some(config.destination_timeout))
            // Keep a connection per attempt that may be in flight to a receiver (ureq keeps 3
            // per host by default): otherwise, at more than 3 at once, most attempts open and
            // close a connection of their own.
            .max_idle_connections_per_host(config.destination_concurrency.max(3))
            .max_idle_connections((config.destination_concurrency * 4).clamp(10, 256))
            .user_agent(format!("clockify-studio/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let resolver = GuardedResolver {
            inner: CachingResolver::default(),
            allowed: AllowedHosts::new(&config.allow_destination_hosts),
        };
        Outbound {
            agent: ureq::Agent::with_parts(ureq_config, DefaultConnector::default(), resolver),
        }
    }

    /// One POST on the blocking pool; never fails (a transport error is an exchange
    /// without a status).
    pub async fn post(&self, url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Exchange {
        let mut exchanges = self.post_run(vec![(url.to_string(), headers, body)]).await;
        exchanges.pop().unwrap_or_else(|| Exchange {
            status: None,
            latency_ms: 0,
            response: "request task failed".into(),
            retry_after: None,
        })
    }

    /// POSTs one after the other on one blocking thread (one hand-off for the run instead
    /// of one per request, and the connection kept between them). Stops after
    /// the first attempt without a 2xx answer: the receiver is failing or slow, and the
    /// rest should not wait behind it. Returns the exchanges of the attempts made, in order
    /// (at least one when `requests` is not empty).
    pub async fn post_run(&self, requests: Vec<Post>) -> Vec<Exchange> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let mut exchanges = Vec::with_capacity(requests.len());
            for (url, headers, body) in requests {
                let started = Instant::now();
                let outcome = send_blocking(
                    &agent,
                    "POST",
                    &url,
                    headers,
                    Some(body),
                    RESPONSE_KEEP_BYTES,
                );
                let latency_ms = started.elapsed().as_millis() as u64;
                let exchange = match outcome {
                    Ok(answer) => Exchange {
                        status: Some(answer.status),
                        latency_ms,
                        response: String::from_utf8_lossy(&answer.body).into_owned(),
                        retry_after: answer.retry_after,
                    },
                    Err(error) => Exchange {
                        status: None,
                        latency_ms,
                        response: error,
                        retry_after: None,
                    },
                };
                let succeeded = exchange.status.is_some_and(|s| (200..300).contains(&s));
                exchanges.push(exchange);
                if !succeeded {
                    break;
                }
            }
            exchanges
        })
        .await
        .unwrap_or_default()
    }

    /// One request on the blocking pool, keeping at most `keep` bytes of the answer. `Err`
    /// says why no answer came (refused, timed out …).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Answer, String> {
        let agent = self.agent.clone();
        let (method, url) = (method.to_string(), url.to_string());
        tokio::task::spawn_blocking(move || {
            send_blocking(&agent, &method, &url, headers, body, keep)
        })
        .await
        .unwrap_or_else(|e| Err(format!("request task failed: {e}")))
    }
}

/// One request on the calling thread; see [`Outbound::send`].
fn send_blocking(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    keep: usize,
) -> Result<Answer, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in &headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let mut response = match body {
        Some(body) => {
            let request = builder.body(body).map_err(|e| e.to_string())?;
            agent.run(request)
        }
        None => {
            let request = builder.body(()).map_err(|e| e.to_string())?;
            agent.run(request)
        }
    }
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let retry_after: Vec<(String, String)> = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(|v| vec![("retry-after".to_string(), v.to_string())])
        .unwrap_or_default();
    // Only `keep` bytes are kept; a slow or endless body is cut there (one more is read to
    // tell a cut body from one of exactly that size).
    let mut kept = Vec::with_capacity(keep.min(64 * 1024));
    let _ = response
        .body_mut()
        .as_reader()
        .take(keep as u64 + 1)
        .read_to_end(&mut kept);
    let truncated = kept.len() > keep;
    kept.truncate(keep);
    Ok(Answer {
        status,
        body: kept,
        truncated,
        retry_after: if matches!(status, 429 | 503) {
            crate::clockify::client::retry_after(&retry_after)
        } else {
            None
        },
    })
}

/// What one request brought back.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// At most the bytes asked for.
    pub body: Vec<u8>,
    /// The body was longer and was cut.
    pub truncated: bool,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_need_https_and_a_public_host_unless_allowed() {
        let none = AllowedHosts::default();
        let local = AllowedHosts::new(&["127.0.0.1:9000".into()]);
        assert!(check_url("https://example.com/hook", &none).is_ok());
        assert!(check_url("http://example.com/hook", &none).is_err());
        assert!(check_url("https://127.0.0.1:9000/", &none).is_err());
        assert!(check_url("https://[::1]/", &none).is_err());
        assert!(check_url("http://127.0.0.1:9000/x", &local).is_ok());
        assert!(check_url("http://127.0.0.1:9001/x", &local).is_err());
        assert!(check_url("https://user:pw@example.com/", &none).is_err());
        assert!(check_url("ftp://example.com/", &none).is_err());
    }
}
