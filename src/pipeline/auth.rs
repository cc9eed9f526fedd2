//! Stage 1, auth: an API key (`Authorization: Bearer`) → the tenant it belongs to.
//! Keys are configured as SHA-256 hashes; with none configured the gateway is open and
//! every request belongs to the `anonymous` tenant.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::AuthError;

/// Who is asking: later stages isolate caches and rate limits by tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    pub fn anonymous() -> Self {
        Tenant(Arc::from("anonymous"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The configured keys, by hash.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    by_hash: HashMap<[u8; 32], Tenant>,
}

impl Auth {
    pub fn from_config(config: &AuthConfig) -> Self {
        let mut by_hash = HashMap::new();
        for key in &config.keys {
            let mut hash = [0u8; 32];
            // validate() has checked the hex already; a bad entry simply never matches.
            if hex::decode_to_slice(&key.sha256, &mut hash).is_ok() {
                by_hash.insert(hash, Tenant(Arc::from(key.tenant.as_str())));
            }
        }
        Auth { by_hash }
    }

    /// True when no keys are configured.
    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The tenant for an `Authorization` header value (or its absence).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Tenant, AuthError> {
        if self.is_open() {
            return Ok(Tenant::anonymous());
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&hash).cloned().ok_or(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn auth() -> Auth {
        let sha = hex::encode(Sha256::digest(b"sk-team-a"));
        Auth::from_config(&AuthConfig {
            keys: vec![ApiKeyConfig {
                tenant: "team-a".into(),
                sha256: sha,
                tools: Vec::new(),
            }],
        })
    }

    #[test]
    fn a_known_key_maps_to_its_tenant() {
        let t = auth().authenticate(Some("Bearer sk-team-a")).unwrap();
        assert_eq!(t.as_str(), "team-a");
    }

    #[test]
    fn missing_and_wrong_keys_are_refused() {
        assert_eq!(auth().authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth().authenticate(Some("Basic x")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth().authenticate(Some("Bearer sk-other")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn no_keys_means_open() {
        let open = Auth::default();
        assert_eq!(open.authenticate(None).unwrap(), Tenant::anonymous());
    }
}
