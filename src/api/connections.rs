//! Connections: how many are served (in all and per client address), when an idle one is
//! closed, how slow a request body may be, and who makes room when the limit is reached.
//!
//! A connection is *idle* while no request of it is being handled: before its first request
//! head has arrived (a client that connects and sends nothing, or trickles its headers), and
//! between keep-alive requests. Idle connections cost a slot and nothing else, so they are what
//! gives way: at the connection limit the one idle longest is closed for the newcomer, a
//! client over its per-address cap loses its own idle longest, and a keep-alive connection idle
//! for `--keep-alive-timeout-secs` is closed. A connection in a request is left alone; the body
//! rate floor and the request timeout bound how long it can take.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::config::{BODY_RATE_GRACE, Config};

/// How often idle keep-alive connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max: usize,
    /// 0 = no cap.
    pub per_peer: usize,
    pub keep_alive: Duration,
    pub header_read_timeout: Duration,
    /// Bytes per second after [`BODY_RATE_GRACE`]; 0 = no floor.
    pub min_body_rate: u64,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max: config.max_connections,
            per_peer: config.max_connections_per_peer,
            keep_alive: config.keep_alive_timeout,
            header_read_timeout: config.header_read_timeout,
            min_body_rate: config.min_body_rate,
        }
    }
}

/// One open connection as the registry sees it.
struct Conn {
    peer: IpAddr,
    /// Requests being handled (a streamed response counts until its body ends).
    active: AtomicU32,
    served: AtomicU64,
    /// Milliseconds since the registry started: when the last request began or ended.
    last_active_ms: AtomicU64,
    /// It has a slot (it is served, or about to be); one waiting for a slot holds none to give.
    has_slot: AtomicBool,
    closing: AtomicBool,
    /// Closed to make room for a newcomer, which already took over its slot.
    handed_over: AtomicBool,
    close: Notify,
}

impl Conn {
    fn idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    per_peer: HashMap<IpAddr, usize>,
    /// Accepted connections waiting for a slot.
    waiting: usize,
}

/// Every connection of the server.
pub struct Connections {
    limits: Limits,
    registry: Mutex<Registry>,
    slots: Arc<Semaphore>,
    all_closed: Notify,
    started: Instant,
    router: Router,
    http1: hyper::server::conn::http1::Builder,
    shutdown: watch::Sender<bool>,
}

impl Connections {
    pub fn new(limits: Limits, router: Router) -> Arc<Connections> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        Arc::new(Connections {
            limits,
            registry: Mutex::default(),
            slots: Arc::new(Semaphore::new(limits.max)),
            all_closed: Notify::new(),
            started: Instant::now(),
            router,
            http1,
            shutdown: watch::channel(false).0,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Takes an accepted connection: serves it, or makes room for it, or refuses it (a client
    /// over its cap with no idle connection to give up). Never waits.
    pub fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip();
        let (id, conn, taken_over) = {
            let mut registry = self.registry.lock().expect("connections lock");
            let of_peer = registry.per_peer.get(&ip).copied().unwrap_or(0);
            // Over its cap, a client gives up its own connection idle longest, whose slot this
            // one takes over.
            let over_cap = self.limits.per_peer > 0 && of_peer >= self.limits.per_peer;
            if over_cap && !self.shed_oldest_idle(&registry, Some(ip)) {
                drop(registry);
                metrics::counter!("http_connections_refused_total", "reason" => "per_peer")
                    .increment(1);
                tracing::debug!(%peer, "connection refused: too many from this address");
                return;
            }
            if registry.waiting >= self.limits.max {
                drop(registry);
                metrics::counter!("http_connections_refused_total", "reason" => "backlog")
                    .increment(1);
                return;
            }
            registry.next_id += 1;
            let id = registry.next_id;
            let conn = Arc::new(Conn {
                peer: ip,
                active: AtomicU32::new(0),
                served: AtomicU64::new(0),
                last_active_ms: AtomicU64::new(self.now_ms()),
                has_slot: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                handed_over: AtomicBool::new(false),
                close: Notify::new(),
            });
            registry.open.insert(id, conn.clone());
            *registry.per_peer.entry(ip).or_default() += 1;
            if over_cap {
                (id, conn, Some(Slot::taken_over(&self.slots)))
            } else {
                (id, conn, None)
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = taken_over.or_else(|| {
            self.slots
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| Slot::own(p, &self.slots))
        });
        // At the limit: the connection idle longest makes room, and this one takes its slot.
        let slot = slot.or_else(|| {
            let registry = self.registry.lock().expect("connections lock");
            self.shed_oldest_idle(&registry, None)
                .then(|| Slot::taken_over(&self.slots))
        });
        match slot {
            Some(slot) => {
                // Set here, not when the task starts: the accept loop may admit many before any
                // of their tasks runs, and each must be one a newcomer can take the place of.
                conn.has_slot.store(true, Ordering::Release);
                tokio::spawn(self.clone().serve(id, conn, stream, slot));
            }
            None => {
                // Every connection is in a request: wait for one to end (in the backlog's stead).
                metrics::counter!("http_connections_waited_total").increment(1);
                self.registry.lock().expect("connections lock").waiting += 1;
                let this = self.clone();
                tokio::spawn(async move {
                    let mut shutdown = this.shutdown.subscribe();
                    let slot = tokio::select! {
                        slot = tokio::time::timeout(this.limits.header_read_timeout, this.slots.clone().acquire_owned()) => slot.ok().and_then(Result::ok).map(|p| Slot::own(p, &this.slots)),
                        _ = shutdown.wait_for(|stop| *stop) => None,
                    };
                    this.registry.lock().expect("connections lock").waiting -= 1;
                    match slot {
                        Some(slot) => this.serve(id, conn, stream, slot).await,
                        None => this.forget(id),
                    }
                });
            }
        }
    }

    /// Asks the connection idle longest (of `peer`, when given) to close; false if none is.
    fn shed_oldest_idle(&self, registry: &Registry, peer: Option<IpAddr>) -> bool {
        let oldest = registry
            .open
            .values()
            .filter(|c| peer.is_none_or(|p| c.peer == p))
            .filter(|c| {
                c.has_slot.load(Ordering::Acquire) && c.idle() && !c.closing.load(Ordering::Acquire)
            })
            .min_by_key(|c| c.last_active_ms.load(Ordering::Acquire));
        match oldest {
            Some(conn) => {
                conn.closing.store(true, Ordering::Release);
                conn.handed_over.store(true, Ordering::Release);
                conn.close.notify_one();
                let reason = if peer.is_some() { "per_peer" } else { "limit" };
                metrics::counter!("http_connections_shed_total", "reason" => reason).increment(1);
                true
            }
            None => false,
        }
    }

    /// Closes keep-alive connections idle longer than the keep-alive timeout, until shutdown.
    pub async fn sweep_idle(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let cutoff = self
                .now_ms()
                .saturating_sub(self.limits.keep_alive.as_millis() as u64);
            let registry = self.registry.lock().expect("connections lock");
            for conn in registry.open.values() {
                let keep_alive_idle = conn.served.load(Ordering::Acquire) > 0
                    && conn.idle()
                    && conn.last_active_ms.load(Ordering::Acquire) < cutoff;
                if keep_alive_idle && !conn.closing.swap(true, Ordering::AcqRel) {
                    conn.close.notify_one();
                    metrics::counter!("http_connections_shed_total", "reason" => "keep_alive")
                        .increment(1);
                }
            }
        }
    }

    /// Shutdown: idle connections close now, the others after their request.
    pub fn close_all(&self) {
        self.shutdown.send_replace(true);
        let registry = self.registry.lock().expect("connections lock");
        for conn in registry.open.values() {
            conn.closing.store(true, Ordering::Release);
            conn.close.notify_one();
        }
    }

    /// Resolves when no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self
                .registry
                .lock()
                .expect("connections lock")
                .open
                .is_empty()
            {
                return;
            }
            notified.await;
        }
    }

    fn forget(&self, id: u64) {
        let mut registry = self.registry.lock().expect("connections lock");
        if let Some(conn) = registry.open.remove(&id)
            && let Some(count) = registry.per_peer.get_mut(&conn.peer)
        {
            *count -= 1;
            if *count == 0 {
                registry.per_peer.remove(&conn.peer);
            }
        }
        if registry.open.is_empty() {
            self.all_closed.notify_waiters();
        }
    }

    async fn serve(self: Arc<Self>, id: u64, conn: Arc<Conn>, stream: TcpStream, slot: Slot) {
        conn.last_active_ms.store(self.now_ms(), Ordering::Release);
        conn.has_slot.store(true, Ordering::Release);
        let router = TowerToHyperService::new(self.router.clone());
        let tracked = conn.clone();
        let this = self.clone();
        let min_rate = self.limits.min_body_rate;
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let guard = RequestGuard::begin(tracked.clone(), this.clone());
            let request = request.map(|body| Body::new(MinRate::new(body, min_rate)));
            let router = router.clone();
            async move {
                let response = hyper::service::Service::call(&router, request).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Guarded {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        });
        let connection = self.http1.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                // A close asked before this waits is not lost: `Notify` keeps it.
                _ = conn.close.notified(), if !draining => {
                    if conn.idle() {
                        break;
                    }
                    // In a request: finish it, then close.
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
        if conn.handed_over.load(Ordering::Acquire) {
            // The newcomer that made this one close holds the slot now.
            slot.hand_over();
        }
        self.forget(id);
    }
}

/// A connection's place among the `--max-connections`: a permit of its own, or one taken over
/// from a connection closed to make room (given back to the pool when this one ends).
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Semaphore>,
    owed: bool,
}

impl Slot {
    fn own(permit: OwnedSemaphorePermit, slots: &Arc<Semaphore>) -> Slot {
        Slot {
            permit: Some(permit),
            slots: slots.clone(),
            owed: false,
        }
    }

    fn taken_over(slots: &Arc<Semaphore>) -> Slot {
        Slot {
            permit: None,
            slots: slots.clone(),
            owed: true,
        }
    }

    /// Leaves the place to the connection that took it over.
    fn hand_over(mut self) {
        if let Some(permit) = self.permit.take() {
            permit.forget();
        }
        self.owed = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.owed {
            self.slots.add_permits(1);
        }
    }
}

/// Counts a request as active from its head until its response body is done.
struct RequestGuard {
    conn: Arc<Conn>,
    connections: Arc<Connections>,
}

impl RequestGuard {
    fn begin(conn: Arc<Conn>, connections: Arc<Connections>) -> RequestGuard {
        conn.active.fetch_add(1, Ordering::AcqRel);
        conn.served.fetch_add(1, Ordering::AcqRel);
        conn.last_active_ms
            .store(connections.now_ms(), Ordering::Release);
        RequestGuard { conn, connections }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.connections.now_ms(), Ordering::Release);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as active until it ends.
struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that arrived slower than `--min-body-rate-bytes` allows.
#[derive(Debug)]
pub struct BodyTooSlow {
    pub min_rate: u64,
}

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes per second",
            self.min_rate
        )
    }
}

impl std::error::Error for BodyTooSlow {}

/// A request body with a rate floor: after [`BODY_RATE_GRACE`], the bytes received so far
/// must have come at `min_rate` bytes per second or more, else the body ends in
/// [`BodyTooSlow`].
struct MinRate {
    inner: Incoming,
    min_rate: u64,
    started: tokio::time::Instant,
    received: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MinRate {
    fn new(inner: Incoming, min_rate: u64) -> MinRate {
        let started = tokio::time::Instant::now();
        MinRate {
            inner,
            min_rate,
            started,
            received: 0,
            deadline: (min_rate > 0)
                .then(|| Box::pin(tokio::time::sleep_until(started + BODY_RATE_GRACE))),
        }
    }

    /// When the bytes received so far stop being on schedule.
    fn due(&self) -> tokio::time::Instant {
        self.started
            + BODY_RATE_GRACE
            + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64)
    }
}

impl HttpBody for MinRate {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let due = self.due();
                    if let Some(deadline) = self.deadline.as_mut() {
                        deadline.as_mut().reset(due);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let min_rate = self.min_rate;
                let late = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if late {
                    metrics::counter!("http_request_bodies_too_slow_total").increment(1);
                    Poll::Ready(Some(Err(Box::new(BodyTooSlow { min_rate }))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `err` (or an error it wraps) is a body cut by the rate floor.
pub fn too_slow<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTooSlow> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(slow) = err.downcast_ref::<BodyTooSlow>() {
            return Some(slow);
        }
        current = err.source();
    }
    None
}
