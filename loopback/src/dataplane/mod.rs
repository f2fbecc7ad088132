//! The loopback data plane: an HTTP proxy on 127.0.0.1 programmed by the controller.
//!
//! [`serve`] routes each request by its Host header through the current [`RouteTable`]:
//! 404 with no body for an unknown host or path (as Envoy), a direct response where the
//! controller says so, otherwise the request forwarded to an endpoint of the route's cluster
//! over a connection of the cluster's [`pool`] (opened with [`upstream::connect`] when none is
//! idle). When the connection or the TLS handshake fails the client gets 503 with Envoy's body
//! text, and the backend never sees the request.

pub mod dns;
pub mod pool;
pub mod secure;
pub mod table;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::disruption::{Disruption, Disruptions};

use dns::ClusterDns;
use pool::SendFailure;
pub use table::RouteTable;
use table::{Cluster, Endpoint};
use table::{HostRewrite, RouteAction, Transport, UpstreamFailureResponse};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// The first words of every Envoy body for a failed upstream connection.
pub const UPSTREAM_FAILURE_PREFIX: &str = "upstream connect error or disconnect/reset before headers.";

/// Installs `table` as the proxy's configuration. A cluster keeps the connections of the
/// cluster of the same name it replaces when both connect the same way; when its TLS settings
/// changed it starts with none, as Envoy drains the pools of a cluster whose configuration
/// changed (a rotated client certificate has a new SDS name in Contour, a new CA bundle is new
/// inline bytes).
pub fn publish(routes: &watch::Sender<Arc<RouteTable>>, table: RouteTable) {
    let previous = routes.borrow().clone();
    let mut placed: Vec<&Cluster> = Vec::new();
    for cluster in table.clusters() {
        let same = |other: &&&Cluster| other.name == cluster.name && other.transport.connects_like(&cluster.transport);
        let carried = placed.iter().find(same).copied().or_else(|| {
            let named: Vec<&Cluster> =
                previous.clusters().map(Arc::as_ref).filter(|old| old.name == cluster.name).collect();
            // Under the fault, a cluster whose settings changed keeps the old connections; one
            // that did not change still takes its own, never those of a sibling of the same
            // name with other settings (Contour names those apart), so the fault shows only
            // where settings change.
            let unchanged = named.iter().find(|old| old.transport.connects_like(&cluster.transport));
            unchanged.or(named.first().filter(|_| table.keep_connections_across_changes)).copied()
        });
        if let Some(from) = carried {
            cluster.pool.share(from.pool.get());
        }
        placed.push(cluster);
    }
    routes.send_replace(Arc::new(table));
}

/// Serves proxy traffic on `listener` until `shutdown` turns true. Under
/// [`Disruption::ProxyRestart`] it goes away now and then: every connection is dropped and the
/// address refuses connections for a moment, then it listens again with the same routes.
pub async fn serve(
    mut listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    dns: ClusterDns,
    disruptions: Arc<Disruptions>,
    mut shutdown: watch::Receiver<bool>,
) {
    let turns = Arc::new(Turns { endpoint: AtomicUsize::new(0), dns });
    let mut connections = JoinSet::new();
    let restarts = disruptions.proxy_restarts();
    let mut next_restart = restarts.map(|(uptime, _)| tokio::time::Instant::now() + uptime);
    loop {
        let restart = async {
            match next_restart {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("proxy accept failed: {err}");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = restart => {
                let Some((uptime, downtime)) = restarts else { continue };
                let Ok(address) = listener.local_addr() else { return };
                drop(listener);
                connections.abort_all();
                disruptions.injected(Disruption::ProxyRestart);
                tracing::debug!("proxy restarting (disruption)");
                tokio::select! {
                    () = tokio::time::sleep(downtime) => {}
                    _ = shutdown.changed() => return,
                }
                listener = match TcpListener::bind(address).await {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!("proxy cannot listen again on {address}: {err}");
                        return;
                    }
                };
                next_restart = Some(tokio::time::Instant::now() + uptime);
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let routes = routes.clone();
        let turns = turns.clone();
        let service = service_fn(move |request| {
            let table = routes.borrow().clone();
            let turns = turns.clone();
            async move { Ok::<_, Infallible>(handle(request, &table, &turns).await) }
        });
        connections.spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that goes away mid-request is its own business.
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Whose turn it is among a cluster's endpoints (routes keep their own turns among clusters),
/// and how named endpoints resolve.
struct Turns {
    endpoint: AtomicUsize,
    dns: ClusterDns,
}

async fn handle(request: Request<Incoming>, table: &RouteTable, turns: &Turns) -> Response<Body> {
    let host = request_host(&request);
    let Some(route) = table.route(&host, request.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "");
    };
    let cluster = match &route.action {
        RouteAction::DirectResponse { status } => {
            return text(StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "");
        }
        RouteAction::Forward(clusters) => {
            let turn = route.turn.fetch_add(1, Ordering::Relaxed);
            match clusters.get(turn % clusters.len().max(1)) {
                Some(cluster) => cluster.clone(),
                None => return text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            }
        }
    };
    let Some(endpoint) = turns.endpoint_of(&cluster) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    let route_host = match &route.host_rewrite {
        Some(HostRewrite::Literal(literal)) => Some(literal.clone()),
        // Envoy leaves the Host alone when the header is missing or empty.
        Some(HostRewrite::FromHeader(name)) => request
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        None => None,
    };
    let request = match &route.mirror {
        None => request.map(BodyExt::boxed),
        Some(mirror) => {
            // The copy needs the body too: read it once, send it twice.
            let (parts, body) = request.into_parts();
            let Ok(body) = body.collect().await.map(http_body_util::Collected::to_bytes) else {
                return text(StatusCode::BAD_REQUEST, "");
            };
            let copy = Request::from_parts(parts.clone(), full(body.clone()));
            if let Some(endpoint) = turns.endpoint_of(mirror) {
                // Envoy marks the copy's host with a -shadow suffix.
                let shadow = format!("{}-shadow", upstream_host(table, mirror, route_host.as_deref(), &host));
                tokio::spawn(send_copy(mirror.clone(), endpoint, copy, shadow));
            }
            Request::from_parts(parts, full(body))
        }
    };
    let host = upstream_host(table, &cluster, route_host.as_deref(), &host);
    let failure_style = table.upstream_failure;
    match send(&cluster, endpoint, request, &host).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(SendFailure::Connect(failure)) => {
            tracing::debug!(cluster = %cluster.name, %endpoint, "upstream failure: {failure:?}");
            upstream_failure(failure_style, "remote connection failure", &failure.to_string())
        }
        // Envoy answers a reset for a protocol error 502, any other 503 (router.cc,
        // Filter::onUpstreamReset).
        Err(SendFailure::Http(err)) if is_protocol_error(&err) => match failure_style {
            UpstreamFailureResponse::Envoy => {
                text(StatusCode::BAD_GATEWAY, &format!("{UPSTREAM_FAILURE_PREFIX} reset reason: protocol error"))
            }
            UpstreamFailureResponse::Bare502 => text(StatusCode::BAD_GATEWAY, ""),
        },
        Err(SendFailure::Http(err)) => upstream_failure(failure_style, "connection termination", &err.to_string()),
    }
}

/// Whether the upstream broke the protocol: a response that does not parse, or an HTTP/2
/// error of the protocol's own (such as a frame too large: what an HTTP/1.1 answer read as
/// HTTP/2 looks like), as opposed to a connection that closed.
fn is_protocol_error(err: &hyper::Error) -> bool {
    if err.is_parse() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason().is_some_and(|r| r != h2::Reason::NO_ERROR && r != h2::Reason::CANCEL);
        }
        source = cause.source();
    }
    false
}

impl Turns {
    /// The cluster's next endpoint, if it has any: named endpoints count with every address
    /// their name resolves to now.
    fn endpoint_of(&self, cluster: &Cluster) -> Option<SocketAddr> {
        let turn = self.endpoint.fetch_add(1, Ordering::Relaxed);
        // Most clusters hold addresses only: pick one without building a list per request.
        let named = cluster.endpoints.iter().any(|endpoint| matches!(endpoint, Endpoint::Name { .. }));
        if !named {
            return match cluster.endpoints.get(turn % cluster.endpoints.len().max(1)) {
                Some(Endpoint::Address(address)) => Some(*address),
                _ => None,
            };
        }
        let addresses: Vec<SocketAddr> = cluster
            .endpoints
            .iter()
            .flat_map(|endpoint| match endpoint {
                Endpoint::Address(address) => vec![*address],
                Endpoint::Name { host, port } => {
                    self.dns.resolve(host).into_iter().map(|ip| SocketAddr::new(ip, *port)).collect()
                }
            })
            .collect();
        addresses.get(turn % addresses.len().max(1)).copied()
    }
}

/// The host sent upstream: the route's rewrite, else the cluster's, else the client's. Envoy
/// sets a weighted cluster's `host_rewrite_literal` first and then finalizes the route's
/// headers, whose own Host rewrite overwrites it (source/common/router/
/// weighted_cluster_specifier.cc `WeightedClusterEntry::finalizeRequestHeaders`, then
/// config_impl.cc `RouteEntryImplBase::finalizeHostHeader`). The SNI is another matter: it is
/// the cluster's, the service's Host first (docs/contract.md N1). The fault
/// `service-host-beats-route-host-header` ([`RouteTable::cluster_host_wins`]) reverses them.
fn upstream_host(table: &RouteTable, cluster: &Cluster, route_host: Option<&str>, client_host: &str) -> String {
    let cluster_host = cluster.host_rewrite.as_deref();
    let first = if table.cluster_host_wins { cluster_host.or(route_host) } else { route_host.or(cluster_host) };
    first.unwrap_or(client_host).to_string()
}

/// Sends `request` to `endpoint` of `cluster` with `host` as its host, as the cluster speaks.
async fn send(
    cluster: &Cluster,
    endpoint: SocketAddr,
    request: Request<Body>,
    host: &str,
) -> Result<Response<Incoming>, SendFailure> {
    let (http2, scheme) = match &cluster.transport {
        Transport::Plaintext { http2 } => (*http2, "http"),
        Transport::Tls(settings) => (settings.http2, "https"),
    };
    let request = upstream_request(request, host, http2, scheme);
    cluster.pool.get().send(endpoint, &cluster.transport, http2, request).await
}

/// Sends a mirror's copy and reads its answer to the end, so that the connection can serve
/// again; the answer goes nowhere, as Envoy drops a shadow's response.
async fn send_copy(mirror: Arc<Cluster>, endpoint: SocketAddr, copy: Request<Body>, host: String) {
    match send(&mirror, endpoint, copy, &host).await {
        Ok(response) => {
            let _ = response.into_body().collect().await;
        }
        Err(failure) => tracing::debug!(cluster = %mirror.name, %endpoint, "mirror failure: {failure:?}"),
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The request as it goes upstream: HTTP/1.1 with `host` in the Host header, or HTTP/2 with
/// `host` in `:authority`.
pub(crate) fn upstream_request(request: Request<Body>, host: &str, http2: bool, scheme: &str) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    parts.headers.insert("x-forwarded-proto", header::HeaderValue::from_static("http"));
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    if http2 {
        // HTTP/2 carries the host in :authority, taken from an absolute URI.
        parts.version = http::Version::HTTP_2;
        parts.headers.remove(header::HOST);
        parts.uri = format!("{scheme}://{host}{path}").parse().unwrap_or_default();
    } else {
        parts.version = http::Version::HTTP_11;
        if let Ok(value) = header::HeaderValue::from_str(host) {
            parts.headers.insert(header::HOST, value);
        }
        parts.uri = path.parse().unwrap_or_default();
    }
    Request::from_parts(parts, body)
}

/// Envoy's 503 for a failed upstream connection (or the fault's bare 502).
fn upstream_failure(style: UpstreamFailureResponse, reset_reason: &str, transport_reason: &str) -> Response<Body> {
    match style {
        UpstreamFailureResponse::Envoy => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "{UPSTREAM_FAILURE_PREFIX} reset reason: {reset_reason}, transport failure reason: {transport_reason}"
            ),
        ),
        UpstreamFailureResponse::Bare502 => text(StatusCode::BAD_GATEWAY, ""),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    }
    response.headers_mut().insert("server", header::HeaderValue::from_static("envoy"));
    response
}

/// The request's host, lowercase and without a port.
fn request_host<B>(request: &Request<B>) -> String {
    let raw = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or_default();
    let host = if let Some(bracketed) = raw.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
