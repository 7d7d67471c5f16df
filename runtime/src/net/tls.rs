//! TLS on a listener (rustls with the ring provider): loading the
//! certificate, key and optional client CA named in the config, and the
//! handshake, after which a verified client certificate's common name names
//! the user (see `auth`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// A TLS setup that cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read TLS {what} {}: {message}", path.display())]
    Read { what: &'static str, path: PathBuf, message: String },
    #[error("TLS setup with {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let read = |message: String| TlsSetupError::Read { what, path: path.to_owned(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(read("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Build the acceptor for `config`; `resolve` turns config paths into files.
pub fn acceptor(
    config: &TlsConfig,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<TlsAcceptor, TlsSetupError> {
    let cert_path = resolve(&config.cert);
    let key_path = resolve(&config.key);
    let chain = certificates(&cert_path, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsSetupError::Read {
        what: "private key",
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid { path: cert_path.clone(), message: e.to_string() })?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let ca_path = resolve(ca);
            let mut roots = RootCertStore::empty();
            for cert in certificates(&ca_path, "client CA")? {
                roots
                    .add(cert)
                    .map_err(|e| TlsSetupError::Invalid { path: ca_path.clone(), message: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier =
                if config.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier
                .build()
                .map_err(|e| TlsSetupError::Invalid { path: ca_path, message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Invalid { path: key_path, message: e.to_string() })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Run the handshake within `timeout`; returns the stream and the common
/// name of the client's verified certificate, if it sent one.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Option<String>), HandshakeError> {
    let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))??;
    let user = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(common_name);
    Ok((stream, user))
}

/// The subject common name of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}
