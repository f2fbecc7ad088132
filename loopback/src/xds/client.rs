//! A state-of-the-world ADS subscriber, as Envoy's xDS client but for five resource types.
//!
//! One `StreamAggregatedResources` stream carries a wildcard subscription (empty
//! `resource_names`) per type. Contour's go-control-plane caches answer a wildcard request of
//! any type with every resource of that type, so there is no need to chase RDS, EDS and SDS
//! names from listeners and clusters: resources nobody references are ignored by
//! [`translate`](super::translate). Each response replaces all resources of its type and is
//! ACKed with its version and nonce (or NACKed, keeping the previous version, when it does not
//! decode). A dropped stream is reopened with exponential backoff; the resources already
//! received stay in force meanwhile, as in Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures::channel::mpsc;
use prost::{Message, Name};
use tokio::sync::watch;

use super::translate::Resources;

/// The node this client introduces itself as. Contour serves every node the same snapshot.
pub const NODE_ID: &str = "loopback";
/// The Envoy cluster name in the node; Contour's bootstrap uses `contour`.
pub const NODE_CLUSTER: &str = "contour";

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The resource types subscribed to, in Envoy's order (clusters before listeners).
pub fn type_urls() -> [String; 5] {
    [
        Cluster::type_url(),
        ClusterLoadAssignment::type_url(),
        Listener::type_url(),
        RouteConfiguration::type_url(),
        Secret::type_url(),
    ]
}

/// Subscribes to everything `xds_address` serves and calls `on_update` with the whole set of
/// resources after every accepted response, until `shutdown` turns true.
pub async fn subscribe(
    xds_address: SocketAddr,
    mut on_update: impl FnMut(&Resources),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut resources = Resources::default();
    let mut backoff = FIRST_BACKOFF;
    while !*shutdown.borrow() {
        let outcome = tokio::select! {
            outcome = stream_once(xds_address, &mut resources, &mut on_update, &mut backoff) => outcome,
            _ = shutdown.changed() => return,
        };
        match outcome {
            Ok(()) => tracing::debug!(%xds_address, "xDS stream closed by the server"),
            Err(err) => tracing::debug!(%xds_address, "xDS stream failed: {err}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One ADS stream, from connecting until it ends. Resets `backoff` once the server answers.
async fn stream_once(
    xds_address: SocketAddr,
    resources: &mut Resources,
    on_update: &mut impl FnMut(&Resources),
    backoff: &mut Duration,
) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{xds_address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);

    let (requests, outbound) = mpsc::unbounded();
    let node = Node { id: NODE_ID.into(), cluster: NODE_CLUSTER.into(), ..Default::default() };
    // The last accepted version per type, sent again with every request of that type.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    for type_url in type_urls() {
        // Envoy sends the node on the first request of a stream only; sending it on each
        // initial request is allowed and keeps the requests independent.
        let request = DiscoveryRequest { node: Some(node.clone()), type_url, ..Default::default() };
        requests.unbounded_send(request).map_err(|e| e.to_string())?;
    }
    let mut inbound =
        client.stream_aggregated_resources(outbound).await.map_err(|s| format!("open stream: {s}"))?.into_inner();

    while let Some(response) = inbound.message().await.map_err(|s| format!("receive: {s}"))? {
        *backoff = FIRST_BACKOFF;
        let type_url = response.type_url.clone();
        let mut ack = DiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        match apply(resources, &response) {
            Ok(()) => {
                versions.insert(type_url.clone(), response.version_info.clone());
                ack.version_info = response.version_info.clone();
                tracing::debug!(%type_url, version = %response.version_info, count = response.resources.len(), "xDS update");
                on_update(resources);
            }
            Err(message) => {
                tracing::warn!(%type_url, version = %response.version_info, "rejecting xDS response: {message}");
                ack.version_info = versions.get(&type_url).cloned().unwrap_or_default();
                ack.error_detail =
                    Some(RpcStatus { code: tonic::Code::InvalidArgument as i32, message, details: vec![] });
            }
        }
        requests.unbounded_send(ack).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Replaces the resources of the response's type with the response's.
///
/// # Errors
/// A resource of another type than announced, or one that does not decode.
pub fn apply(resources: &mut Resources, response: &DiscoveryResponse) -> Result<(), String> {
    let type_url = response.type_url.as_str();
    if type_url == Listener::type_url() {
        resources.listeners = decode_all(response, |l: &Listener| l.name.clone())?;
    } else if type_url == RouteConfiguration::type_url() {
        resources.route_configurations = decode_all(response, |r: &RouteConfiguration| r.name.clone())?;
    } else if type_url == Cluster::type_url() {
        resources.clusters = decode_all(response, |c: &Cluster| c.name.clone())?;
    } else if type_url == ClusterLoadAssignment::type_url() {
        resources.load_assignments = decode_all(response, |c: &ClusterLoadAssignment| c.cluster_name.clone())?;
    } else if type_url == Secret::type_url() {
        resources.secrets = decode_all(response, |s: &Secret| s.name.clone())?;
    } else {
        return Err(format!("unexpected resource type {type_url}"));
    }
    Ok(())
}

fn decode_all<T: Message + Name + Default>(
    response: &DiscoveryResponse,
    name: impl Fn(&T) -> String,
) -> Result<BTreeMap<String, T>, String> {
    response
        .resources
        .iter()
        .map(|any: &Any| {
            if any.type_url != T::type_url() {
                return Err(format!("resource of type {} in a {} response", any.type_url, response.type_url));
            }
            let resource = T::decode(any.value.as_slice()).map_err(|e| format!("{}: {e}", T::full_name()))?;
            Ok((name(&resource), resource))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use envoy_types::util::pack_any;

    use super::*;

    #[test]
    fn a_response_replaces_its_type_and_a_mistyped_one_is_refused() {
        let mut resources = Resources::default();
        let cluster = |name: &str| Cluster { name: name.into(), ..Default::default() };
        let response = |resources: Vec<Any>| DiscoveryResponse {
            type_url: Cluster::type_url(),
            version_info: "1".into(),
            resources,
            ..Default::default()
        };
        apply(&mut resources, &response(vec![pack_any(cluster("a")), pack_any(cluster("b"))])).unwrap();
        apply(&mut resources, &response(vec![pack_any(cluster("b"))])).unwrap();
        assert_eq!(resources.clusters.keys().collect::<Vec<_>>(), ["b"]);
        let listener = Listener { name: "ingress_http".into(), ..Default::default() };
        assert!(apply(&mut resources, &response(vec![pack_any(listener)])).is_err());
        assert_eq!(resources.clusters.keys().collect::<Vec<_>>(), ["b"], "a refused response changes nothing");
    }
}
