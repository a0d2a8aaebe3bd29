//! The outbound side of destinations (and of flows' "HTTP request" actions): which URLs may
//! be called, and requests with the safety rules every attempt follows. The connector
//! resolves the host and drops loopback, private, link-local and other internal addresses
//! (so a name cannot be pointed at the server's own network, also not between a check and
//! the connection) unless the operator allowed that host; redirects are never followed; at
//! most the first KB of the answer is kept; the connection and the whole attempt have time
//! limits.
//!
//! Requests go through hyper's pooled client on the runtime's own threads, not a blocking
//! client on the blocking pool: an attempt that waits for its answer then costs no thread
//! switch, which is what forwarding every event spends most on (docs/performance.md).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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

/// A connection to a receiver: plain TCP (only to an allowed host) or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Opens connections for the client: resolves through [`CachingResolver`], keeps only
/// public addresses unless the host is allowed (checked on every connection, so a remembered
/// answer is checked as a fresh one is), refuses plain http to a host not allowed, and
/// speaks TLS for https.
#[derive(Clone)]
struct GuardedConnector {
    resolver: Arc<CachingResolver>,
    allowed: AllowedHosts,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl tower_service::Service<http::Uri> for GuardedConnector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(uri).await.map(TokioIo::new) })
    }
}

impl GuardedConnector {
    async fn connect(&self, uri: http::Uri) -> io::Result<Stream> {
        let refused = |message: String| io::Error::new(io::ErrorKind::PermissionDenied, message);
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(refused(format!("refused: {uri} is not an http(s) URL"))),
        };
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let allowed = self.allowed.allows(host, port);
        if !tls && !allowed {
            return Err(refused(format!(
                "refused: plain http only for hosts allowed by --allow-destination-host ({host}:{port} is not)"
            )));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let resolved = self.resolver.lookup_host(bare, port).await?;
        let kept: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| allowed || !is_internal(a.ip()))
            .collect();
        if kept.is_empty() {
            let found: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
            return Err(refused(format!(
                "refused: {host} resolves only to internal addresses ({}); allow it with --allow-destination-host",
                found.join(", ")
            )));
        }
        let mut last = None;
        let mut connected = None;
        for addr in kept {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    connected = Some(stream);
                    break;
                }
                Ok(Err(err)) => last = Some(err),
                Err(_) => {
                    last = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timeout to {addr}"),
                    ))
                }
            }
        }
        let Some(stream) = connected else {
            return Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")));
        };
        // Requests are small and answered at once: no reason to wait for more to send.
        stream.set_nodelay(true)?;
        if !tls {
            return Ok(Stream::Plain(stream));
        }
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = self.tls.connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// rustls with the ring provider and the Mozilla roots (as ureq's client for Clockify),
/// HTTP/1.1 only; made once (a flow run with an HTTP action makes its own client).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static TLS: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    TLS.get_or_init(new_tls_connector).clone()
}

fn new_tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
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

impl Exchange {
    /// A 2xx answer: the attempt delivered.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One POST of a run: URL, headers and body.
pub type Post = (String, Vec<(String, String)>, Vec<u8>);

/// The client every destination attempt and flow HTTP action goes through.
#[derive(Clone)]
pub struct Outbound {
    client: Client<GuardedConnector, Full<Bytes>>,
    timeout: Duration,
    user_agent: String,
}

impl Outbound {
    pub fn new(config: &Config) -> Outbound {
        let connector = GuardedConnector {
            resolver: Arc::new(CachingResolver::default()),
            allowed: AllowedHosts::new(&config.allow_destination_hosts),
            tls: tls_connector(),
            connect_timeout: CONNECT_TIMEOUT.min(config.destination_timeout),
        };
        // Keep a connection per attempt that may be in flight to a receiver: otherwise most
        // attempts would open and close a connection of their own.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.destination_concurrency.max(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Outbound {
            client,
            timeout: config.destination_timeout,
            user_agent: format!("clockify-studio/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// One POST; never fails (a transport error is an exchange without a status).
    pub async fn post(&self, url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Exchange {
        let mut exchanges = self.post_run(vec![(url.to_string(), headers, body)]).await;
        exchanges.pop().expect("a run of one makes one attempt")
    }

    /// POSTs one after the other (the connection kept between them). Stops after the first
    /// attempt without a 2xx answer: the receiver is failing or slow, and the rest should
    /// not wait behind it. Returns the exchanges of the attempts made, in order (at least
    /// one when `requests` is not empty).
    pub async fn post_run(&self, requests: Vec<Post>) -> Vec<Exchange> {
        let mut exchanges = Vec::with_capacity(requests.len());
        for (url, headers, body) in requests {
            let started = Instant::now();
            let outcome = self
                .send("POST", &url, headers, Some(body), RESPONSE_KEEP_BYTES)
                .await;
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
            let succeeded = exchange.succeeded();
            exchanges.push(exchange);
            if !succeeded {
                break;
            }
        }
        exchanges
    }

    /// One request, keeping at most `keep` bytes of the answer; the whole of it (connecting,
    /// sending, the answer's head and the bytes kept) within the destination timeout. `Err`
    /// says why no answer came (refused, timed out …).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Answer, String> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::USER_AGENT, self.user_agent.as_str());
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = response.status().as_u16();
            let retry_after = if matches!(status, 429 | 503) {
                let values: Vec<(String, String)> = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| vec![("retry-after".to_string(), v.to_string())])
                    .unwrap_or_default();
                crate::clockify::client::retry_after(&values)
            } else {
                None
            };
            // Only `keep` bytes are kept; a slow or endless body is cut there (one more is
            // read to tell a cut body from one of exactly that size).
            let mut kept = Vec::with_capacity(keep.min(64 * 1024));
            let mut body = response.into_body();
            while kept.len() <= keep {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            kept.extend_from_slice(&data[..data.len().min(keep + 1 - kept.len())]);
                        }
                    }
                    // A body cut short still leaves the status and what came.
                    Some(Err(_)) | None => break,
                }
            }
            let truncated = kept.len() > keep;
            kept.truncate(keep);
            Ok(Answer {
                status,
                body: kept,
                truncated,
                retry_after,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "timeout: no complete answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}

/// An error with its causes, as one line (the client's own says only "client error").
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
