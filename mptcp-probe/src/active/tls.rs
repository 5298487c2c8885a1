//! The tls test's client: a real TLS handshake on port 443 (rustls), then a transfer inside it.
//! The server's certificate is self-signed, so it is not verified against a CA; its fingerprint
//! is recorded instead (a TLS-inspecting middlebox presents another).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use super::client::{bulk_over, finish, open, sha256_hex, Run};
use mptcp_probe_model::{ConnectionKind, Transport};

use crate::protocol::BulkMode;

/// Accepts any certificate: the test measures the path, not the server's identity.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls(
    addr: SocketAddr,
    transport: Transport,
    test_id: &str,
    bytes: u64,
    timeout: Duration,
) -> Run {
    let (mut run, stream, fd) = match open(addr, transport, timeout, ConnectionKind::Tls).await {
        Ok(opened) => opened,
        Err(failed) => return failed,
    };
    let res = tokio::time::timeout(timeout * 3, async {
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = connector().connect(name, stream).await?;
        let (_, session) = tls.get_ref();
        if let Some(c) = run.connections.first_mut() {
            if let Some(cert) = session.peer_certificates().and_then(|c| c.first()) {
                c.notes.insert("certificate_sha256".into(), sha256_hex(cert.as_ref()));
            }
            if let Some(v) = session.protocol_version() {
                c.notes.insert("tls_version".into(), format!("{v:?}"));
            }
        }
        bulk_over(tls, test_id, BulkMode::Up, bytes, &mut run).await
    })
    .await;
    finish(&mut run, res, fd.as_ref());
    run
}
