//! TLS on peer connections (https peer URLs, etcd's `--peer-*` flags): every peer
//! connection, stream, snapshot or join, is wrapped before its first frame; a peer that
//! speaks plaintext to a TLS member gets nothing.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

/// A peer connection, plain or TLS.
pub(crate) trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// A boxed peer connection.
pub(crate) type PeerStream = Box<dyn PeerIo>;

/// Both sides of peer TLS: what this member presents when accepting, and how it dials.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl PeerTls {
    /// Peer TLS from PEM files' contents: this member's certificate chain and key (it
    /// presents them both as a server and as a client), and the CA peers' certificates
    /// must chain to. With `verify_peers` false (etcd's `--peer-auto-tls` with no CA), a
    /// peer's certificate is not verified, as etcd does for self-signed peer certificates.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        trusted_ca_pem: Option<&[u8]>,
        client_cert_auth: bool,
    ) -> Result<PeerTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_ca = trusted_ca_pem.filter(|_| client_cert_auth);
        let mut server = (*crate::tls::server_config(cert_pem, key_pem, client_ca)?).clone();
        server.alpn_protocols.clear();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read the peer certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("cannot read the peer key: {e}"))?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("peer TLS setup failed: {e}"))?;
        let builder = match trusted_ca_pem {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| format!("cannot read the peer CA: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("cannot use the peer CA: {e}"))?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let client = builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("the peer certificate and key do not work together: {e}"))?;
        Ok(PeerTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// Accepts any server certificate whose signatures check out: for self-signed peer
/// certificates (`--peer-auto-tls` without a CA), as etcd's InsecureSkipVerify.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS server name of a peer URL's host (an IP address or a DNS name).
pub(crate) fn server_name(host_port: &str) -> Result<ServerName<'static>, String> {
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => host_port,
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("bad peer host {host}: {e}"))
}
