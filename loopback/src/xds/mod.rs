//! The data plane programmed over xDS, as Envoy is by Contour: [`client`] subscribes to a
//! management server's aggregated discovery service and [`translate`] turns what it receives
//! into the [`RouteTable`] the loopback proxy serves from. [`run`] ties the two together,
//! with the [`faults`] that act on what the controller sent.

pub mod client;
pub mod faults;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Fault;
use crate::dataplane::RouteTable;

/// Keeps `routes` equal to the translation of what `xds_address` serves (changed as the xDS
/// `faults` say), until `shutdown` turns true. The table is replaced after every accepted xDS
/// response; while the server is unreachable the last table stays in force.
pub async fn run(
    xds_address: SocketAddr,
    faults: Vec<Fault>,
    routes: watch::Sender<Arc<RouteTable>>,
    shutdown: watch::Receiver<bool>,
) {
    client::subscribe(
        xds_address,
        |resources| {
            let table = if faults.iter().any(|f| faults::XDS_FAULTS.contains(f)) {
                let mut changed = resources.clone();
                faults::apply(&mut changed, &faults);
                translate::translate(&changed)
            } else {
                translate::translate(resources)
            };
            crate::dataplane::publish(&routes, table);
        },
        shutdown,
    )
    .await;
}
