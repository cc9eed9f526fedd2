//! `[server.tls]`: serve HTTPS with a certificate chain and key read from PEM files.
//! TLS 1.3 only unless `min_version = "1.2"`; with `client_ca`, clients must present a
//! certificate signed by it (or may, with `client_auth = "optional"`). The files are
//! read at start and again on SIGHUP (src/tls/); validation reads them once so that
//! `sluice check-config` names an unreadable or mismatched file by its key.

use std::path::PathBuf;

use serde::Deserialize;

/// HTTPS on `server.listen`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Oldest TLS version accepted: "1.3" (default) or "1.2".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// PEM certificates of the CAs that sign client certificates; when set, clients
    /// authenticate with a certificate (see `client_auth`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (default: a handshake without a valid client
    /// certificate fails) or `optional` (a certificate, if sent, must be valid).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// The oldest TLS protocol version the listener accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether a client certificate is required when `client_ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

impl TlsConfig {
    /// The effective client authentication: None without `client_ca`.
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_ca
            .as_ref()
            .map(|_| self.client_auth.unwrap_or_default())
    }
}

/// Every problem of `[server.tls]`: `client_auth` without `client_ca`, and whatever
/// reading and combining the files reports (the key path and the file's path).
pub(super) fn validate(tls: &TlsConfig, issue: &mut impl FnMut(String, String)) {
    if tls.client_auth.is_some() && tls.client_ca.is_none() {
        issue(
            "server.tls.client_auth".into(),
            "only used with server.tls.client_ca (the CA that signs client certificates)".into(),
        );
    }
    if let Err(e) = crate::tls::server_config(tls) {
        issue(e.key.to_owned(), e.message);
    }
}
