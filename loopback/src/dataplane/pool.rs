//! Upstream connections kept for reuse, as Envoy keeps them per cluster: a request takes an
//! idle connection to its endpoint when there is one and opens a new one otherwise; an HTTP/1.1
//! connection goes back to the pool once its response has been read, an HTTP/2 connection
//! serves every request to its endpoint at once.
//!
//! A pool belongs to one cluster version. [`super::publish`] hands a cluster the pool of the
//! cluster it replaces only when both connect the same way, so a change of TLS settings (a
//! rotated client certificate, a new CA bundle, another SNI) is met by new connections, as
//! Envoy drains a cluster's pools when the cluster changes (docs/contract.md C2).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;

use super::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::table::Transport;
use super::upstream::{self, UpstreamFailure};

/// How long an idle connection is kept. Shorter than nginx's default `keepalive_timeout` (75 s),
/// so the proxy never writes a request into a connection the backend is about to close.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The idle connections of one cluster version, by endpoint.
#[derive(Debug, Default)]
pub struct ConnectionPool {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    endpoint: SocketAddr,
    sender: Sender,
    since: Instant,
}

/// One upstream connection, ready to carry requests.
#[derive(Debug)]
pub enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendFailure {
    /// No connection could be opened (TCP or TLS).
    Connect(UpstreamFailure),
    /// The connection failed while the request was on it.
    Http(hyper::Error),
}

impl Sender {
    /// Opens a connection to `endpoint` speaking `transport`, HTTP/2 when `http2` unless the
    /// backend chose HTTP/1.1 by ALPN (which it can only do when the proxy offered it).
    async fn open(endpoint: SocketAddr, transport: &Transport, http2: bool) -> Result<Sender, SendFailure> {
        let stream = upstream::connect(endpoint, transport).await.map_err(SendFailure::Connect)?;
        let http2 = http2 && stream.alpn() != Some(b"http/1.1");
        let io = TokioIo::new(stream);
        if http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.map_err(SendFailure::Http)?;
            tokio::spawn(connection);
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(SendFailure::Http)?;
            tokio::spawn(connection);
            Ok(Sender::Http1(sender))
        }
    }

    fn usable(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    /// Sends `request`; on failure, gives the request back when it never left.
    async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Body>>)> {
        let result = match self {
            Sender::Http1(s) => s.try_send_request(as_http1(request)).await,
            Sender::Http2(s) => s.try_send_request(request).await,
        };
        result.map_err(|mut failed| {
            let request = failed.take_message();
            (failed.into_error(), request)
        })
    }
}

/// A request made for HTTP/2 (`:authority` in an absolute URI) as HTTP/1.1 sends it, for a
/// connection on which the backend chose HTTP/1.1.
fn as_http1(request: Request<Body>) -> Request<Body> {
    match request.uri().authority().filter(|_| request.version() == http::Version::HTTP_2) {
        Some(authority) => {
            let host = authority.as_str().to_string();
            super::upstream_request(request, &host, false, "http")
        }
        None => request,
    }
}

impl ConnectionPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many idle connections the pool holds that could take a request now.
    pub fn idle(&self) -> usize {
        let idle = self.lock();
        idle.iter().filter(|i| i.sender.usable()).count()
    }

    /// Sends `request` to `endpoint` over an idle connection, or a new one when there is none
    /// or the idle one turns out closed before the request left.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        transport: &Transport,
        http2: bool,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let mut request = request;
        if let Some(mut sender) = self.take(endpoint) {
            match sender.send(request).await {
                Ok(response) => {
                    self.give_back(endpoint, sender);
                    return Ok(response);
                }
                Err((_, Some(unsent))) => request = unsent,
                Err((err, None)) => return Err(SendFailure::Http(err)),
            }
        }
        let mut sender = Sender::open(endpoint, transport, http2).await?;
        let response = sender.send(request).await.map_err(|(err, _)| SendFailure::Http(err))?;
        self.give_back(endpoint, sender);
        Ok(response)
    }

    /// An idle connection to `endpoint`: an HTTP/1.1 one leaves the pool, an HTTP/2 one is
    /// shared.
    fn take(&self, endpoint: SocketAddr) -> Option<Sender> {
        let mut idle = self.lock();
        let now = Instant::now();
        idle.retain(|i| now.duration_since(i.since) < IDLE_LIMIT && i.sender.usable());
        let at = idle.iter().position(|i| i.endpoint == endpoint)?;
        match &mut idle[at] {
            Idle { sender: Sender::Http2(shared), since, .. } => {
                *since = now;
                Some(Sender::Http2(shared.clone()))
            }
            Idle { sender: Sender::Http1(_), .. } => Some(idle.swap_remove(at).sender),
        }
    }

    /// Returns a connection after use: an HTTP/1.1 one once its response has been read (the
    /// client may still be reading it), an HTTP/2 one at once unless the pool shares one already.
    fn give_back(self: &Arc<Self>, endpoint: SocketAddr, sender: Sender) {
        match sender {
            Sender::Http1(mut sender) => {
                let pool = Arc::downgrade(self);
                tokio::spawn(async move {
                    if sender.ready().await.is_ok()
                        && let Some(pool) = pool.upgrade()
                    {
                        pool.keep(endpoint, Sender::Http1(sender));
                    }
                });
            }
            Sender::Http2(sender) => {
                let mut idle = self.lock();
                if !idle.iter().any(|i| i.endpoint == endpoint && matches!(i.sender, Sender::Http2(_))) {
                    idle.push(Idle { endpoint, sender: Sender::Http2(sender), since: Instant::now() });
                }
            }
        }
    }

    fn keep(&self, endpoint: SocketAddr, sender: Sender) {
        let mut idle = self.lock();
        idle.push(Idle { endpoint, sender, since: Instant::now() });
    }
}
