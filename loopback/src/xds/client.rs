//! A state-of-the-world xDS subscriber, subscribing as Envoy does with the configuration
//! Contour gives it.
//!
//! Contour's bootstrap and clusters name plain gRPC config sources, not ADS, so Envoy opens a
//! stream per subscription: one for listeners, one for clusters, one for route configurations
//! and secrets, and **one per cluster for its endpoints**, each starting with no version.
//! Contour keeps endpoints in a cache that answers a stream only about the names it asked for
//! and what changed since it last answered that stream, so subscribing to them any other way
//! (one stream for all names, or a wildcard) misses endpoints. Here every stream is an
//! aggregated (`StreamAggregatedResources`) stream carrying that one subscription, which the
//! server treats the same way.
//!
//! Only listener and cluster responses carry the whole state of their type and replace it; a
//! response of the other types carries what changed, which is merged into what is known
//! ([`apply`]). Each response is ACKed with its version and nonce (or NACKed, keeping the
//! previous version, when it does not decode); every request repeats the subscription. A
//! dropped stream is reopened with exponential backoff; the resources already received stay in
//! force meanwhile, as in Envoy.

use std::collections::{BTreeMap, BTreeSet};
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
use tokio::sync::{mpsc as channel, watch};
use tokio::task::JoinHandle;

use super::translate::Resources;

/// The node this client introduces itself as. Contour serves every node the same snapshot.
pub const NODE_ID: &str = "loopback";
/// The Envoy cluster name in the node; Contour's bootstrap uses `contour`.
pub const NODE_CLUSTER: &str = "contour";

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One subscription: a type, and the names asked for (all of them when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    type_url: String,
    names: Vec<String>,
}

/// Subscribes to everything `xds_address` serves and calls `on_update` with the whole set of
/// resources after every accepted response, until `shutdown` turns true.
pub async fn subscribe(
    xds_address: SocketAddr,
    mut on_update: impl FnMut(&Resources),
    shutdown: watch::Receiver<bool>,
) {
    let (responses, mut received) = channel::unbounded_channel::<DiscoveryResponse>();
    let wildcard = |type_url: String| Subscription { type_url, names: Vec::new() };
    let mut streams: Vec<JoinHandle<()>> =
        [Cluster::type_url(), Listener::type_url(), RouteConfiguration::type_url(), Secret::type_url()]
            .into_iter()
            .map(|type_url| tokio::spawn(stream(xds_address, wildcard(type_url), responses.clone(), shutdown.clone())))
            .collect();
    // One stream per endpoint name, as Envoy opens one per cluster.
    let mut endpoint_streams: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
    let mut resources = Resources::default();
    let mut stop = shutdown.clone();
    loop {
        let response = tokio::select! {
            response = received.recv() => match response {
                Some(response) => response,
                None => break,
            },
            _ = stop.changed() => break,
        };
        if apply(&mut resources, &response).is_err() {
            // The stream that received it NACKed it already.
            continue;
        }
        if response.type_url == ClusterLoadAssignment::type_url() {
            // An answer already on its way from a stream closed since then changes nothing.
            resources.load_assignments.retain(|name, _| endpoint_streams.contains_key(name));
        }
        if response.type_url == Cluster::type_url() {
            let wanted = endpoint_service_names(&resources);
            endpoint_streams.retain(|name, task| {
                let keep = wanted.contains(name);
                if !keep {
                    task.abort();
                }
                keep
            });
            resources.load_assignments.retain(|name, _| wanted.contains(name));
            for name in wanted {
                endpoint_streams.entry(name.clone()).or_insert_with(|| {
                    let subscription = Subscription { type_url: ClusterLoadAssignment::type_url(), names: vec![name] };
                    tokio::spawn(stream(xds_address, subscription, responses.clone(), shutdown.clone()))
                });
            }
        }
        on_update(&resources);
    }
    streams.extend(endpoint_streams.into_values());
    for task in streams {
        task.abort();
    }
}

/// Keeps one subscription open, reconnecting with backoff, and passes on every response it
/// accepts, until `shutdown` turns true.
async fn stream(
    xds_address: SocketAddr,
    subscription: Subscription,
    responses: channel::UnboundedSender<DiscoveryResponse>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    while !*shutdown.borrow() {
        let outcome = tokio::select! {
            outcome = stream_once(xds_address, &subscription, &responses, &mut backoff) => outcome,
            _ = shutdown.changed() => return,
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(%xds_address, type_url = %subscription.type_url, "xDS stream closed by the server")
            }
            Err(err) => tracing::debug!(%xds_address, type_url = %subscription.type_url, "xDS stream failed: {err}"),
        }
        if responses.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One stream, from connecting until it ends. Resets `backoff` once the server answers.
async fn stream_once(
    xds_address: SocketAddr,
    subscription: &Subscription,
    responses: &channel::UnboundedSender<DiscoveryResponse>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{xds_address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);

    let (requests, outbound) = mpsc::unbounded();
    let node = Node { id: NODE_ID.into(), cluster: NODE_CLUSTER.into(), ..Default::default() };
    let first = DiscoveryRequest {
        node: Some(node),
        type_url: subscription.type_url.clone(),
        resource_names: subscription.names.clone(),
        ..Default::default()
    };
    requests.unbounded_send(first).map_err(|e| e.to_string())?;
    let mut inbound =
        client.stream_aggregated_resources(outbound).await.map_err(|s| format!("open stream: {s}"))?.into_inner();

    // The last accepted version, sent again with every request.
    let mut version = String::new();
    while let Some(response) = inbound.message().await.map_err(|s| format!("receive: {s}"))? {
        *backoff = FIRST_BACKOFF;
        let mut ack = DiscoveryRequest {
            type_url: subscription.type_url.clone(),
            resource_names: subscription.names.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        // Decoding into a scratch set tells whether the response can be taken.
        let checked = if response.type_url == subscription.type_url {
            apply(&mut Resources::default(), &response)
        } else {
            Err(format!("a {} response on a {} stream", response.type_url, subscription.type_url))
        };
        match checked {
            Ok(()) => {
                version = response.version_info.clone();
                tracing::debug!(type_url = %response.type_url, names = ?subscription.names, %version, count = response.resources.len(), "xDS update");
                if responses.send(response).is_err() {
                    return Ok(());
                }
            }
            Err(message) => {
                tracing::warn!(type_url = %response.type_url, version = %response.version_info, "rejecting xDS response: {message}");
                ack.error_detail =
                    Some(RpcStatus { code: tonic::Code::InvalidArgument as i32, message, details: vec![] });
            }
        }
        ack.version_info = version.clone();
        requests.unbounded_send(ack).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The endpoint resource names the clusters take their endpoints from: each EDS cluster's
/// `eds_cluster_config.service_name`, or its own name when that is empty.
pub fn endpoint_service_names(resources: &Resources) -> BTreeSet<String> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
    resources
        .clusters
        .values()
        .filter(|c| {
            matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32)
        })
        .map(|c| super::translate::endpoint_service_name(c).to_string())
        .collect()
}

/// Takes in a response: listeners and clusters replace all of their type (their responses
/// carry the whole state); route configurations, endpoints and secrets are merged into what
/// is known (their responses carry what changed).
///
/// # Errors
/// A resource of another type than announced, or one that does not decode.
pub fn apply(resources: &mut Resources, response: &DiscoveryResponse) -> Result<(), String> {
    let type_url = response.type_url.as_str();
    if type_url == Listener::type_url() {
        resources.listeners = decode_all(response, |l: &Listener| l.name.clone())?;
    } else if type_url == RouteConfiguration::type_url() {
        resources.route_configurations.extend(decode_all(response, |r: &RouteConfiguration| r.name.clone())?);
    } else if type_url == Cluster::type_url() {
        resources.clusters = decode_all(response, |c: &Cluster| c.name.clone())?;
    } else if type_url == ClusterLoadAssignment::type_url() {
        resources.load_assignments.extend(decode_all(response, |c: &ClusterLoadAssignment| c.cluster_name.clone())?);
    } else if type_url == Secret::type_url() {
        resources.secrets.extend(decode_all(response, |s: &Secret| s.name.clone())?);
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
        assert_eq!(resources.clusters.keys().collect::<Vec<_>>(), ["b"], "clusters come whole");
        let listener = Listener { name: "ingress_http".into(), ..Default::default() };
        assert!(apply(&mut resources, &response(vec![pack_any(listener)])).is_err());
        assert_eq!(resources.clusters.keys().collect::<Vec<_>>(), ["b"], "a refused response changes nothing");
    }

    #[test]
    fn endpoint_responses_carry_what_changed_and_are_merged() {
        let mut resources = Resources::default();
        let assignment = |name: &str| ClusterLoadAssignment { cluster_name: name.into(), ..Default::default() };
        let response = |resources: Vec<Any>| DiscoveryResponse {
            type_url: ClusterLoadAssignment::type_url(),
            version_info: "v-1".into(),
            resources,
            ..Default::default()
        };
        apply(&mut resources, &response(vec![pack_any(assignment("ns/a/https"))])).unwrap();
        apply(&mut resources, &response(vec![pack_any(assignment("ns/b/https"))])).unwrap();
        assert_eq!(resources.load_assignments.keys().collect::<Vec<_>>(), ["ns/a/https", "ns/b/https"]);
    }

    #[test]
    fn endpoints_are_subscribed_by_the_names_eds_clusters_give() {
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
        };
        let eds = |name: &str, service: &str| Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig { service_name: service.into(), ..Default::default() }),
            ..Default::default()
        };
        let mut resources = Resources::default();
        for cluster in [
            eds("ns/a/443/h", "ns/a/https"),
            eds("ns/b/443/h", ""),
            Cluster { name: "static".into(), ..Default::default() },
        ] {
            resources.clusters.insert(cluster.name.clone(), cluster);
        }
        let names: Vec<String> = endpoint_service_names(&resources).into_iter().collect();
        assert_eq!(names, ["ns/a/https", "ns/b/443/h"]);
    }
}
