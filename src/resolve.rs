//! Name resolution for outbound requests (Clockify's API through ureq; destinations and flow
//! HTTP actions through [`CachingResolver::lookup_host`]). ureq resolves before every request,
//! pooled connection or not, and with a timeout set it starts a thread per lookup, IP literals
//! included. [`CachingResolver`] takes a literal as it is and keeps a name's answer for
//! [`DNS_TTL`], so a busy destination or flow costs neither a thread nor a DNS query per
//! request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a name's addresses are reused.
pub const DNS_TTL: Duration = Duration::from_secs(30);
/// Names remembered at most (the cache is emptied beyond).
const DNS_CACHE_MAX: usize = 1024;
/// ureq keeps at most this many addresses of a lookup.
const MAX_ADDRS: usize = 16;

#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl CachingResolver {
    /// The addresses of `uri`'s host and port.
    pub fn lookup(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = format!("{host}:{port}");
        if let Some(addrs) = self.cached(&key) {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = self.inner.resolve(uri, config, timeout)?.to_vec();
        self.remember(key, &addrs);
        Ok(addrs)
    }

    /// The addresses of `host` (a name or an IP literal, without brackets) at `port`, for
    /// the async client; a name's lookup runs on the blocking pool, once per [`DNS_TTL`].
    pub async fn lookup_host(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = format!("{host}:{port}");
        if let Some(addrs) = self.cached(&key) {
            return Ok(addrs);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await?
            .take(MAX_ADDRS)
            .collect();
        self.remember(key, &addrs);
        Ok(addrs)
    }

    fn cached(&self, key: &str) -> Option<Vec<SocketAddr>> {
        let cache = self.cache.lock().expect("dns cache lock");
        let (at, addrs) = cache.get(key)?;
        (at.elapsed() < DNS_TTL).then(|| addrs.clone())
    }

    fn remember(&self, key: String, addrs: &[SocketAddr]) {
        let mut cache = self.cache.lock().expect("dns cache lock");
        if cache.len() >= DNS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), addrs.to_vec()));
    }

    /// ureq's container of addresses, filled from `addrs`.
    pub fn collect<'a>(&self, addrs: impl Iterator<Item = &'a SocketAddr>) -> ResolvedSocketAddrs {
        let mut out = self.inner.empty();
        for addr in addrs.take(MAX_ADDRS) {
            out.push(*addr);
        }
        out
    }
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.lookup(uri, config, timeout)?;
        Ok(self.collect(addrs.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_lookup_and_names_are_remembered() {
        let resolver = CachingResolver::default();
        let config = ureq::config::Config::default();
        let timeout = NextTimeout::default;
        let v4: http::Uri = "http://127.0.0.1:9000/x".parse().unwrap();
        assert_eq!(
            resolver.lookup(&v4, &config, timeout()).unwrap(),
            vec!["127.0.0.1:9000".parse().unwrap()]
        );
        let v6: http::Uri = "https://[::1]/x".parse().unwrap();
        assert_eq!(
            resolver.lookup(&v6, &config, timeout()).unwrap(),
            vec!["[::1]:443".parse().unwrap()]
        );
        let name: http::Uri = "http://localhost:9001/".parse().unwrap();
        let first = resolver.lookup(&name, &config, timeout()).unwrap();
        assert!(!first.is_empty());
        assert!(
            resolver
                .cache
                .lock()
                .unwrap()
                .contains_key("localhost:9001")
        );
        assert_eq!(resolver.lookup(&name, &config, timeout()).unwrap(), first);
        assert!(
            resolver.cache.lock().unwrap().len() == 1,
            "literals are not cached"
        );
    }
}
