//! The TLS test service: a real TLS 1.3/1.2 handshake (rustls, ring) on the TLS port, then a
//! bulk/echo connection inside it. The certificate is self-signed and made at start-up; `check`
//! cannot trust it by name, but its digest is recorded with each connection (notes
//! "tls_certificate_sha256", and printed at start): a client that compares it with the
//! certificate it received sees an interception proxy that substituted its own.

use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use rustls::{
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    ServerConfig,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{bulk, sha256_hex, Idle, Recorder, IDLE_TIMEOUT};

/// The certificate's name when none is given.
pub(super) const DEFAULT_NAME: &str = "mptcp-probe.test";
/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(super) enum TlsError {
    #[error("cannot make a certificate for {names:?}: {source}")]
    Certificate { names: Vec<String>, source: rcgen::Error },
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

pub(super) struct Tls {
    acceptor: TlsAcceptor,
    #[cfg(test)]
    cert: rustls::pki_types::CertificateDer<'static>,
    fingerprint: String,
}

impl Tls {
    /// A fresh key and self-signed certificate for `names` (DNS names or IP addresses).
    pub(super) fn new(names: Vec<String>) -> Result<Self, TlsError> {
        let ck = rcgen::generate_simple_self_signed(names.clone())
            .map_err(|source| TlsError::Certificate { names, source })?;
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        let fingerprint = sha256_hex(&cert);
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            #[cfg(test)]
            cert,
            fingerprint,
        })
    }

    /// SHA-256 of the certificate (DER), hex.
    pub(super) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate, for clients that are to trust it (the tests).
    #[cfg(test)]
    pub(super) fn certificate(&self) -> &rustls::pki_types::CertificateDer<'static> {
        &self.cert
    }
}

pub(super) async fn serve(stream: TcpStream, rec: Arc<Recorder>) {
    let fd = stream.as_raw_fd();
    let tls = &rec.state.tls;
    let accept = tls.acceptor.accept(Idle::new(stream, IDLE_TIMEOUT));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake: not done within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let (_, conn) = stream.get_ref();
    // Noted before the preamble names the test: every view of the connection carries them.
    rec.note("tls_certificate_sha256", tls.fingerprint());
    if let Some(v) = conn.protocol_version() {
        rec.note("tls_version", &format!("{v:?}"));
    }
    if let Some(cs) = conn.negotiated_cipher_suite() {
        rec.note("tls_cipher_suite", &format!("{:?}", cs.suite()));
    }
    if let Some(sni) = conn.server_name() {
        rec.note("tls_sni", sni);
    }
    bulk::serve(stream, &rec, fd).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_what_it_was_asked_for() {
        let t = Tls::new(vec![DEFAULT_NAME.into(), "192.0.2.7".into()]).unwrap();
        assert_eq!(t.fingerprint().len(), 64);
        assert_eq!(t.fingerprint(), sha256_hex(t.certificate()));
        let der: &[u8] = t.certificate();
        // The DNS name and the IP address (as its four bytes) are in the SAN extension.
        assert!(der.windows(DEFAULT_NAME.len()).any(|w| w == DEFAULT_NAME.as_bytes()));
        assert!(der.windows(4).any(|w| w == [192, 0, 2, 7]));
        assert!(matches!(Tls::new(vec!["exämple.test".into()]), Err(TlsError::Certificate { .. })));
    }
}
