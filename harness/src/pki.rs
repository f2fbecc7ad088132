//! The scenario's PKI, built with rcgen: [`Pki::build`] turns [`CertificateSpec`]s into
//! [`Material`] (PEM certificate and key, serial and fingerprint as nginx reports them).
//!
//! Keys are ECDSA P-256: fast to generate, so every run gets fresh keys. Certificates are
//! valid from an hour ago for 30 days.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::scenario::template::Bindings;
use crate::scenario::{CertificateSpec, KeyAlgorithmSpec};

/// A generated certificate and its key.
#[derive(Clone)]
pub struct Material {
    pub cert_pem: String,
    /// The certificate's DER in base64 on one line: a PEM block's contents.
    pub cert_der_base64: String,
    pub key_pem: String,
    /// Uppercase hex, as nginx's `$ssl_client_serial`.
    pub serial_hex: String,
    /// Lowercase hex SHA-1 of the DER, as nginx's `$ssl_client_fingerprint`.
    pub sha1_hex: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Material").field("serial_hex", &self.serial_hex).finish_non_exhaustive()
    }
}

/// A PKI entry that could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate certificate {name:?}: {source}")]
pub struct PkiError {
    pub name: String,
    pub source: rcgen::Error,
}

/// What to issue: the scenario's [`CertificateSpec`] without its source positions.
#[derive(Debug, Clone)]
pub struct CertificateRequest<'a> {
    pub name: &'a str,
    /// An earlier CA entry of the same [`Pki`]; self-signed when `None`.
    pub issuer: Option<&'a str>,
    pub ca: bool,
    /// Empty for a subject without a common name.
    pub common_name: &'a str,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// An RSA 2048 key instead of ECDSA P-256.
    pub rsa: bool,
}

impl<'a> From<&'a CertificateSpec> for CertificateRequest<'a> {
    fn from(spec: &'a CertificateSpec) -> Self {
        CertificateRequest {
            name: &spec.name.value,
            issuer: spec.issuer.as_ref().map(|i| i.value.as_str()),
            ca: spec.ca,
            common_name: spec.common_name.as_deref().unwrap_or(&spec.name.value),
            dns_names: spec.dns_names.iter().map(|n| n.value.clone()).collect(),
            uris: spec.uris.iter().map(|u| u.value.clone()).collect(),
            // The loader refuses what does not parse.
            ip_addresses: spec.ip_addresses.iter().filter_map(|ip| ip.value.parse().ok()).collect(),
            expired: spec.expired,
            not_yet_valid: spec.not_yet_valid,
            rsa: spec.key_algorithm == KeyAlgorithmSpec::Rsa2048,
        }
    }
}

/// Certificates by name, and the CAs among them ready to issue more.
#[derive(Debug, Default)]
pub struct Pki {
    material: BTreeMap<String, Material>,
    issuers: BTreeMap<String, Issuer<'static, KeyPair>>,
}

impl Pki {
    /// Generates every entry in order. Loading has checked that issuers exist, come first
    /// and are CAs.
    ///
    /// # Errors
    /// rcgen refuses an entry (for instance a DNS name it cannot encode).
    pub fn build(specs: &[CertificateSpec]) -> Result<Self, PkiError> {
        let mut pki = Pki::default();
        for spec in specs {
            pki.issue(&CertificateRequest::from(spec))?;
        }
        Ok(pki)
    }

    /// Issues (or re-issues, replacing the old one) a certificate.
    ///
    /// # Errors
    /// rcgen refuses the request.
    pub fn issue(&mut self, request: &CertificateRequest<'_>) -> Result<&Material, PkiError> {
        let error = |source| PkiError { name: request.name.to_string(), source };
        let key = if request.rsa { KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256) } else { KeyPair::generate() }
            .map_err(error)?;
        let (params, serial) = params(request).map_err(error)?;
        let certificate = match request.issuer.and_then(|i| self.issuers.get(i)) {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .map_err(error)?;
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate.der());
        let material = Material {
            cert_pem: certificate.pem(),
            cert_der_base64: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, certificate.der()),
            key_pem: key.serialize_pem(),
            serial_hex: hex(&serial, true),
            sha1_hex: hex(sha1.as_ref(), false),
        };
        crate::redaction::register_private_key(&material.key_pem, &material.cert_pem);
        if request.ca {
            self.issuers.insert(request.name.to_string(), Issuer::new(params, key));
        }
        self.material.insert(request.name.to_string(), material);
        Ok(&self.material[request.name])
    }

    pub fn get(&self, name: &str) -> Option<&Material> {
        self.material.get(name)
    }

    /// Adds `pki.NAME.*` values for every entry.
    pub fn bind(&self, bindings: &mut Bindings) {
        for (name, m) in &self.material {
            m.bind(bindings, &format!("pki.{name}"));
        }
    }
}

impl Material {
    /// Adds `PREFIX.cert`, `PREFIX.certBase64`, ... for this certificate.
    pub fn bind(&self, bindings: &mut Bindings, prefix: &str) {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        bindings.insert(format!("{prefix}.cert"), self.cert_pem.clone());
        bindings.insert(format!("{prefix}.certBase64"), b64(&self.cert_pem));
        bindings.insert(format!("{prefix}.certDer"), self.cert_der_base64.clone());
        bindings.insert(format!("{prefix}.key"), self.key_pem.clone());
        bindings.insert(format!("{prefix}.keyBase64"), b64(&self.key_pem));
        bindings.insert(format!("{prefix}.serial"), self.serial_hex.clone());
        bindings.insert(format!("{prefix}.sha1"), self.sha1_hex.clone());
    }
}

fn params(request: &CertificateRequest<'_>) -> Result<(CertificateParams, Vec<u8>), rcgen::Error> {
    let mut params = CertificateParams::new(request.dns_names.clone())?;
    for uri in &request.uris {
        params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
    }
    for ip in &request.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    if !request.common_name.is_empty() {
        dn.push(DnType::CommonName, request.common_name);
    }
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    if request.expired {
        params.not_before = now - Duration::days(90);
        params.not_after = now - Duration::days(30);
    } else if request.not_yet_valid {
        params.not_before = now + Duration::days(30);
        params.not_after = now + Duration::days(90);
    } else {
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
    }
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] = (serial[0] & 0x7f) | 0x10; // positive, no leading zero byte
    params.serial_number = Some(SerialNumber::from(serial.to_vec()));
    if request.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.use_authority_key_identifier_extension = request.issuer.is_some();
    Ok((params, serial.to_vec()))
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load::parse;
    use rustls::client::danger::ServerCertVerifier;
    use std::path::Path;

    #[test]
    fn builds_a_chain_and_binds_templates() {
        let text = "name: t\ndescription: d\ncontract: [V3]\npki:\n  - name: ca\n    ca: true\n  - name: leaf\n    issuer: ca\n    dnsNames: [a.test]\nsteps:\n  - request:\n      expect:\n        status: 200\n";
        let loaded = parse(Path::new("t.yaml"), text).unwrap();
        let pki = Pki::build(&loaded.scenario.pki).unwrap();
        let leaf = pki.get("leaf").unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(leaf.serial_hex.len(), 32);
        assert_eq!(leaf.sha1_hex.len(), 40);
        assert!(!format!("{leaf:?}").contains("PRIVATE"), "debug output must not show keys");

        // The leaf verifies against the CA with the SAN, as a TLS client would check it.
        let ca_der = rustls::pki_types::CertificateDer::from(pem_body(&pki.get("ca").unwrap().cert_pem));
        let leaf_der = rustls::pki_types::CertificateDer::from(pem_body(&leaf.cert_pem));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        verifier.verify_server_cert(&leaf_der, &[], &name, &[], rustls::pki_types::UnixTime::now()).unwrap();

        let mut bindings = Bindings::default();
        pki.bind(&mut bindings);
        assert_eq!(bindings.expand("${pki.leaf.serial}").unwrap(), leaf.serial_hex);
        // certDer is the PEM's body on one line.
        assert_eq!(
            bindings.expand("${pki.leaf.certDer}").unwrap(),
            leaf.cert_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
        );
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_fail_verification_for_their_dates() {
        let text = "name: t\ndescription: d\ncontract: [V3]\npki:\n  - name: ca\n    ca: true\n  - name: old\n    issuer: ca\n    dnsNames: [a.test]\n    expired: true\n  - name: new\n    issuer: ca\n    dnsNames: [a.test]\n    notYetValid: true\nsteps:\n  - request:\n      expect:\n        status: 200\n";
        let loaded = parse(Path::new("t.yaml"), text).unwrap();
        let pki = Pki::build(&loaded.scenario.pki).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(pem_body(&pki.get("ca").unwrap().cert_pem))).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        // rustls says Expired or NotValidYet, with or without the dates as context.
        for (entry, why) in [("old", "Expired"), ("new", "NotValidYet")] {
            let der = rustls::pki_types::CertificateDer::from(pem_body(&pki.get(entry).unwrap().cert_pem));
            let now = rustls::pki_types::UnixTime::now();
            match verifier.verify_server_cert(&der, &[], &name, &[], now) {
                Err(rustls::Error::InvalidCertificate(e)) => {
                    assert!(format!("{e:?}").starts_with(why), "{entry}: {e:?}")
                }
                other => panic!("{entry}: {other:?}"),
            }
        }
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }
}
