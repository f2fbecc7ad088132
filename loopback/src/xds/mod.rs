//! The data plane programmed over xDS, as Envoy is by Contour: [`client`] subscribes to a
//! management server's aggregated discovery service and [`translate`] turns what it receives
//! into the [`RouteTable`] the loopback proxy serves from. [`run`] ties the two together.

pub mod client;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::dataplane::RouteTable;

/// Keeps `routes` equal to the translation of what `xds_address` serves, until `shutdown`
/// turns true. The table is replaced after every accepted xDS response; while the server is
/// unreachable the last table stays in force.
pub async fn run(xds_address: SocketAddr, routes: watch::Sender<Arc<RouteTable>>, shutdown: watch::Receiver<bool>) {
    client::subscribe(
        xds_address,
        |resources| {
            crate::dataplane::publish(&routes, translate::translate(resources));
        },
        shutdown,
    )
    .await;
}
