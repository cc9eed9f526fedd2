//! HTTPS for the listener (`[server.tls]`), with rustls and its ring provider (the one
//! reqwest already brings, no C toolchain needed).
//!
//! ```text
//! TcpListener ──▶ listener.rs   accepts, runs each handshake in its own task with the
//!                               rustls config current at that moment, hands finished
//!                               streams to axum::serve (which drains them on shutdown)
//! Certificates ◀── reload.rs    SIGHUP (or a ReloadHandle) re-reads the files; a bad file
//!                               keeps the config in use and logs an error
//! ```
//!
//! A reload swaps the config that *new* handshakes use; connections already open keep
//! the session they negotiated, so streams in flight finish undisturbed.

mod listener;
mod reload;

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, TlsConfig, TlsVersion};

pub use listener::TlsListener;
pub use reload::{reload_channel, ReloadHandle, Reloads};

/// A TLS file that cannot be used, named by its config key (`server.tls.cert`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        TlsError {
            key,
            message: message.into(),
        }
    }
}

/// The rustls server config in use; [`Certificates::reload`] replaces it.
pub struct Certificates {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Read every file of `config` (cert, key, client CA).
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Certificates {
            current: RwLock::new(server_config(config)?),
            config: config.clone(),
        })
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files again; on success new handshakes use them, on failure the
    /// config in use stays (and the error says which file is wrong).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.config)?;
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

/// The rustls server config `tls` describes: its protocol versions, client
/// verification and certificate, HTTP/1.1 by ALPN.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(&tls.cert).map_err(|e| TlsError::new("server.tls.cert", e))?;
    let key = read_key(&tls.key).map_err(|e| TlsError::new("server.tls.key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new("server.tls.min_version", e.to_string()))?;
    let builder = match (&tls.client_ca, tls.client_auth()) {
        (Some(path), Some(auth)) => {
            builder.with_client_cert_verifier(client_verifier(path, auth, provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::new(
            "server.tls.key",
            format!(
                "{} does not fit the certificate in {}: {e}",
                tls.key.display(),
                tls.cert.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let key = "server.tls.client_ca";
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path).map_err(|e| TlsError::new(key, e))? {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                key,
                format!("{}: not a CA certificate: {e}", path.display()),
            )
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| TlsError::new(key, format!("{}: {e}", path.display())))
}

/// Every PEM certificate in the file at `path` (at least one), or what is wrong,
/// naming the file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first PEM private key in the file at `path`, or what is wrong, naming the file
/// (never the key).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: no PEM private key (-----BEGIN PRIVATE KEY-----) in it",
            path.display()
        ),
        _ => format!("{}: not a PEM private key", path.display()),
    })
}
