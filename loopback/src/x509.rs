//! The few X.509 fields loopback reads itself, without a full parser: [`Names::read`] walks a
//! DER certificate down to its subject common name and subjectAltName entries, and
//! [`pem_blocks`] splits PEM text as Go's `encoding/pem` does for Contour's Secret checks.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Go's text for a certificate whose DER does not parse.
pub const MALFORMED: &str = "x509: malformed certificate";

/// The names a certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Every subject CN attribute, in order.
    pub common_names: Vec<String>,
    /// dNSName entries of the subjectAltName extension.
    pub dns: Vec<String>,
    /// iPAddress entries of the subjectAltName extension.
    pub ip: Vec<IpAddr>,
    /// uniformResourceIdentifier entries of the subjectAltName extension.
    pub uri: Vec<String>,
}

impl Names {
    /// Reads the names of a DER certificate.
    ///
    /// # Errors
    /// [`MALFORMED`] when the certificate's structure does not parse.
    pub fn read(der: &[u8]) -> Result<Names, &'static str> {
        Self::walk(der).ok_or(MALFORMED)
    }

    fn walk(der: &[u8]) -> Option<Names> {
        let (certificate, rest) = Tlv::read(der)?;
        if certificate.tag != SEQUENCE || !rest.is_empty() {
            return None;
        }
        let (tbs, _) = Tlv::read(certificate.body)?;
        let mut fields = tbs.children();
        // [0] version (optional), serial, signature, issuer, validity, subject, key.
        if fields.next()?.tag == 0xa0 {
            fields.next()?;
        }
        let subject = fields.nth(3)?;
        fields.next()?;
        let mut names = Names::default();
        for rdn in subject.children() {
            for attribute in rdn.children() {
                let mut parts = attribute.children();
                let (oid, value) = (parts.next()?, parts.next()?);
                if oid.tag == OID && oid.body == COMMON_NAME {
                    names.common_names.push(String::from_utf8_lossy(value.body).into_owned());
                }
            }
        }
        for field in fields {
            if field.tag != 0xa3 {
                continue; // issuer and subject unique IDs
            }
            let (extensions, _) = Tlv::read(field.body)?;
            for extension in extensions.children() {
                let mut parts = extension.children();
                let oid = parts.next()?;
                let mut value = parts.next()?;
                if value.tag == BOOLEAN {
                    value = parts.next()?; // critical
                }
                if oid.body != SUBJECT_ALT_NAME {
                    continue;
                }
                let (general_names, _) = Tlv::read(value.body)?;
                for name in general_names.children() {
                    match name.tag {
                        0x82 => names.dns.push(String::from_utf8_lossy(name.body).into_owned()),
                        0x86 => names.uri.push(String::from_utf8_lossy(name.body).into_owned()),
                        0x87 => match name.body.len() {
                            4 => names.ip.push(IpAddr::from(<[u8; 4]>::try_from(name.body).ok()?)),
                            16 => names.ip.push(IpAddr::from(<[u8; 16]>::try_from(name.body).ok()?)),
                            _ => return None,
                        },
                        _ => {}
                    }
                }
            }
        }
        Some(names)
    }
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
/// 2.5.4.3
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER tag-length-value.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// The element at the start of `input` and what follows it; `None` if it is cut short.
    fn read(input: &'a [u8]) -> Option<(Tlv<'a>, &'a [u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
        };
        let (body, rest) = rest.split_at_checked(len)?;
        Some((Tlv { tag, body }, rest))
    }

    /// The elements inside a constructed element; stops at the first that does not parse.
    fn children(self) -> impl Iterator<Item = Tlv<'a>> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (next, after) = Tlv::read(rest)?;
            rest = after;
            Some(next)
        })
    }
}

/// One PEM block: its label (`CERTIFICATE`, `PRIVATE KEY`, ...) and decoded contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// The PEM blocks of `data`, as Contour reads Secret values: blocks are read while a
/// `-----BEGIN ...-----` header is left on one line; text around them is ignored.
///
/// # Errors
/// `failed to parse PEM block`, Go's words for a header without a well-formed block.
pub fn pem_blocks(data: &[u8]) -> Result<Vec<PemBlock>, &'static str> {
    const FAILED: &str = "failed to parse PEM block";
    let text = String::from_utf8_lossy(data);
    let mut rest = text.as_ref();
    let mut blocks = Vec::new();
    while let Some(start) = header_at(rest) {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after.find("-----").ok_or(FAILED)?;
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let body_end = after.find(&end_marker).ok_or(FAILED)?;
        let body: String = after[label_end + 5..body_end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = BASE64.decode(body).map_err(|_| FAILED)?;
        blocks.push(PemBlock { label: label.to_string(), der });
        rest = &after[body_end + end_marker.len()..];
    }
    Ok(blocks)
}

/// Where a `-----BEGIN` header whose closing dashes are on the same line starts.
fn header_at(text: &str) -> Option<usize> {
    let start = text.find("-----BEGIN")?;
    let end = text[start + 10..].find("-----")?;
    (!text[start..start + 10 + end].contains('\n')).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(configure: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        configure(&mut params);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_are_read_from_subject_and_alt_names() {
        let der = certificate(|p| {
            p.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
            p.distinguished_name.push(rcgen::DnType::CommonName, "echo.backend.test");
            p.subject_alt_names = vec![
                rcgen::SanType::DnsName("a.example".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()),
                rcgen::SanType::URI("spiffe://cluster/ns/x".try_into().unwrap()),
                rcgen::SanType::DnsName("*.b.example".try_into().unwrap()),
            ];
        });
        let names = Names::read(&der).unwrap();
        assert_eq!(names.common_names, ["echo.backend.test"]);
        assert_eq!(names.dns, ["a.example", "*.b.example"]);
        assert_eq!(names.ip, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(names.uri, ["spiffe://cluster/ns/x"]);
    }

    #[test]
    fn a_certificate_without_names_has_none_and_garbage_does_not_parse() {
        let names = Names::read(&certificate(|p| p.distinguished_name = rcgen::DistinguishedName::new())).unwrap();
        assert!(names.common_names.is_empty() && names.dns.is_empty() && names.ip.is_empty());
        assert_eq!(Names::read(b"\x30\x03\x02\x01"), Err(MALFORMED));
        assert_eq!(Names::read(b"not der at all"), Err(MALFORMED));
    }

    #[test]
    fn pem_blocks_follow_go() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\ntrailing\n";
        let blocks = pem_blocks(pem.as_bytes()).unwrap();
        assert_eq!(blocks, [PemBlock { label: "CERTIFICATE".into(), der: vec![0, 1, 2] }]);
        assert_eq!(pem_blocks(b"no pem here").unwrap(), []);
        assert_eq!(pem_blocks(b"-----BEGIN X-----\nAAEC\n").unwrap_err(), "failed to parse PEM block");
        assert_eq!(pem_blocks(b"-----BEGIN X-----\n!!!\n-----END X-----\n").unwrap_err(), "failed to parse PEM block");
    }
}
