//! The scenario's PKI, built with rcgen: [`Pki::build`] turns [`CertificateSpec`]s into
//! [`Material`] (PEM certificate and key, serial and fingerprint as nginx reports them).
//!
//! Keys are ECDSA P-256: fast to generate, so every run gets fresh keys. Certificates are
//! valid from an hour ago for 30 days.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::scenario::CertificateSpec;
use crate::scenario::template::Bindings;

/// A generated certificate and its key.
#[derive(Clone)]
pub struct Material {
    pub cert_pem: String,
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

/// All certificates of one scenario run, by name.
#[derive(Debug, Default)]
pub struct Pki {
    material: BTreeMap<String, Material>,
}

impl Pki {
    /// Generates every entry in order. Loading has checked that issuers exist, come first
    /// and are CAs.
    ///
    /// # Errors
    /// rcgen refuses an entry (for instance a DNS name it cannot encode).
    pub fn build(specs: &[CertificateSpec]) -> Result<Self, PkiError> {
        let mut issuers: BTreeMap<String, Issuer<'static, KeyPair>> = BTreeMap::new();
        let mut material = BTreeMap::new();
        for spec in specs {
            let name = spec.name.value.clone();
            let error = |source| PkiError { name: name.clone(), source };
            let key = KeyPair::generate().map_err(error)?;
            let (params, serial) = params(spec).map_err(error)?;
            let certificate = match spec.issuer.as_ref().and_then(|i| issuers.get(&i.value)) {
                Some(issuer) => params.signed_by(&key, issuer),
                None => params.self_signed(&key),
            }
            .map_err(error)?;
            let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate.der());
            material.insert(
                name.clone(),
                Material {
                    cert_pem: certificate.pem(),
                    key_pem: key.serialize_pem(),
                    serial_hex: hex(&serial, true),
                    sha1_hex: hex(sha1.as_ref(), false),
                },
            );
            if spec.ca {
                issuers.insert(name, Issuer::new(params, key));
            }
        }
        Ok(Pki { material })
    }

    pub fn get(&self, name: &str) -> Option<&Material> {
        self.material.get(name)
    }

    /// Adds `pki.NAME.*` values for every entry.
    pub fn bind(&self, bindings: &mut Bindings) {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (name, m) in &self.material {
            bindings.insert(format!("pki.{name}.cert"), m.cert_pem.clone());
            bindings.insert(format!("pki.{name}.certBase64"), b64(&m.cert_pem));
            bindings.insert(format!("pki.{name}.key"), m.key_pem.clone());
            bindings.insert(format!("pki.{name}.keyBase64"), b64(&m.key_pem));
            bindings.insert(format!("pki.{name}.serial"), m.serial_hex.clone());
            bindings.insert(format!("pki.{name}.sha1"), m.sha1_hex.clone());
        }
    }
}

fn params(spec: &CertificateSpec) -> Result<(CertificateParams, Vec<u8>), rcgen::Error> {
    let mut params = CertificateParams::new(spec.dns_names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.clone().unwrap_or_else(|| spec.name.value.clone()));
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(30);
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] = (serial[0] & 0x7f) | 0x10; // positive, no leading zero byte
    params.serial_number = Some(SerialNumber::from(serial.to_vec()));
    if spec.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.use_authority_key_identifier_extension = spec.issuer.is_some();
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
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }
}
