//! Faults at the boundary every controller speaks through, its xDS output: [`apply`] changes
//! what the management server sent before the data plane reads it, as a bug in the
//! controller's translation would. They need no model of the controller, so they prove
//! scenarios of front doors that have none (Gateway API's BackendTLSPolicy) able to fail.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, TlsParameters, UpstreamTlsContext, common_tls_context, secret,
    tls_parameters::TlsProtocol,
};
use envoy_types::util::pack_any;

use super::translate::{Resources, decode};
use crate::config::Fault;

/// The faults [`apply`] acts on.
pub use crate::config::XDS_FAULTS;

/// Changes `resources` as each of `faults` that acts on xDS says; the others are left alone.
pub fn apply(resources: &mut Resources, faults: &[Fault]) {
    let faults: Vec<Fault> = faults.iter().copied().filter(|f| XDS_FAULTS.contains(f)).collect();
    if faults.is_empty() {
        return;
    }
    for cluster in resources.clusters.values_mut() {
        change_cluster(cluster, &faults);
    }
    if faults.contains(&Fault::XdsIgnoreSubjectNames) {
        for secret in resources.secrets.values_mut() {
            if let Some(secret::Type::ValidationContext(context)) = &mut secret.r#type {
                forget_names(context);
            }
        }
    }
}

fn change_cluster(cluster: &mut Cluster, faults: &[Fault]) {
    let Some(socket) = &mut cluster.transport_socket else { return };
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else { return };
    let Some(mut context) = decode::<UpstreamTlsContext>(any) else { return };
    if faults.contains(&Fault::XdsPlaintextUpstreams) {
        cluster.transport_socket = None;
        return;
    }
    let common = context.common_tls_context.get_or_insert_with(CommonTlsContext::default);
    if faults.contains(&Fault::XdsTls12Only) {
        let params = common.tls_params.get_or_insert_with(TlsParameters::default);
        params.tls_maximum_protocol_version = TlsProtocol::TlSv12 as i32;
    }
    if faults.contains(&Fault::XdsDropValidation) {
        common.validation_context_type = None;
    }
    if faults.contains(&Fault::XdsIgnoreSubjectNames) {
        match &mut common.validation_context_type {
            Some(common_tls_context::ValidationContextType::ValidationContext(context)) => forget_names(context),
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) => {
                if let Some(default) = &mut combined.default_validation_context {
                    forget_names(default);
                }
            }
            _ => {}
        }
    }
    socket.config_type = Some(transport_socket::ConfigType::TypedConfig(pack_any(context)));
}

#[allow(deprecated)]
fn forget_names(context: &mut CertificateValidationContext) {
    context.match_typed_subject_alt_names.clear();
    context.match_subject_alt_names.clear();
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::TransportSocket;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher;

    use super::*;

    fn resources() -> Resources {
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher::default()],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cluster = Cluster {
            name: "c".into(),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
            }),
            ..Default::default()
        };
        let mut resources = Resources::default();
        resources.clusters.insert("c".into(), cluster);
        resources
    }

    fn context(resources: &Resources) -> Option<UpstreamTlsContext> {
        match &resources.clusters["c"].transport_socket.as_ref()?.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any)) => decode(any),
            _ => None,
        }
    }

    fn changed(fault: Fault) -> Resources {
        let mut resources = resources();
        apply(&mut resources, &[fault]);
        resources
    }

    #[test]
    fn each_fault_changes_the_clusters_as_it_says() {
        let common = |r: &Resources| context(r).unwrap().common_tls_context.unwrap();
        assert!(context(&changed(Fault::XdsPlaintextUpstreams)).is_none());
        assert!(common(&changed(Fault::XdsDropValidation)).validation_context_type.is_none());
        let params = common(&changed(Fault::XdsTls12Only)).tls_params.unwrap();
        assert_eq!(params.tls_maximum_protocol_version, TlsProtocol::TlSv12 as i32);
        let Some(common_tls_context::ValidationContextType::ValidationContext(validation)) =
            common(&changed(Fault::XdsIgnoreSubjectNames)).validation_context_type
        else {
            panic!("the validation context stays");
        };
        assert!(validation.match_typed_subject_alt_names.is_empty());
        // Other faults leave the resources as they are.
        let mut untouched = resources();
        apply(&mut untouched, &[Fault::SkipCaVerification]);
        assert_eq!(untouched.clusters, resources().clusters);
    }
}
