//! TLS for client URLs (rustls, ring provider): the server configuration from etcd's
//! flags (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`), a
//! self-signed certificate for `--auto-tls`, and the common name of a verified client
//! certificate (which names the caller under `--client-cert-auth`, as in etcd).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The server configuration type, for callers that do not depend on rustls themselves.
pub type TlsServerConfig = ServerConfig;

/// The rustls server configuration for one set of client TLS flags. With `client_ca_pem`
/// every client must present a certificate that chains to it (etcd's
/// `--client-cert-auth` with `--trusted-ca-file`).
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot read the private key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("cannot read the trusted CA: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("cannot use the trusted CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("cannot verify clients with the trusted CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not work together: {e}"))?;
    // gRPC needs HTTP/2; /health and /metrics may come over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed certificate and its key (PEM) for `hosts` (names or IP addresses), for
/// `--auto-tls`. Made in memory at start; nothing is written to disk.
pub fn self_signed(hosts: &[String]) -> Result<(String, String), String> {
    let mut names: Vec<String> = hosts.to_vec();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == default) {
            names.push(default.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// The subject common name of a DER certificate, if it has one that is UTF-8.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    /// 2.5.4.3, id-at-commonName.
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, cert, _) = der_item(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = der_item(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // version (optional), serialNumber, signature, issuer, validity, then subject.
    let (tag, _, rest) = der_item(tbs)?;
    if tag == VERSION {
        tbs = rest;
    }
    for _ in 0..4 {
        tbs = der_item(tbs)?.2;
    }
    let (tag, mut subject, _) = der_item(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = der_item(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = der_item(rdn)?;
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = der_item(attribute)?;
            if tag == OID && oid == CN_OID {
                let (_, text, _) = der_item(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// One DER item at the start of `data`: (tag, contents, what follows). Single-byte tags
/// and lengths up to 4 bytes, which is all a certificate needs.
fn der_item(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_read_from_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "corekv tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), Some("alice".into()));
        // No CN at all.
        let params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        let mut params = params;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        // Garbage never panics.
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn self_signed_certificates_make_a_server_config() {
        let (cert, key) = self_signed(&["node1.example".into()]).unwrap();
        server_config(cert.as_bytes(), key.as_bytes(), None).unwrap();
        server_config(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes())).unwrap();
        assert!(server_config(b"", key.as_bytes(), None).is_err());
        assert!(server_config(cert.as_bytes(), b"not a key", None).is_err());
    }
}
