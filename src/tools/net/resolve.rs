//! The DNS resolver of the HTTP tools' client. It looks a name up and hands hyper the
//! answers only when the [`AddressPolicy`] allows every one of them: a name with any
//! refused address fails to resolve (a name that mixes public and private answers is
//! not one to trust), so no connection is ever made to a refused address. Because the
//! addresses checked are the addresses connected to, DNS rebinding (public on one
//! lookup, private on the next) gets nowhere; the client keeps no idle connections, so
//! every call and every redirect resolves, and is judged, again.
//!
//! The lookup is injectable ([`Lookup`]) so tests can make a name resolve to loopback,
//! or rebind, without real DNS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{AddressPolicy, Refusal};

/// A name's addresses, in place of the system resolver (tests).
pub type Lookup = Arc<dyn Fn(&str) -> Vec<IpAddr> + Send + Sync>;

/// A name resolved to an address the tool may not connect to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{host}` resolves to {}, {}; this tool may not connect to it", .refusal.ip, .refusal.what)]
pub struct AddressRefused {
    pub host: String,
    pub refusal: Refusal,
}

/// A name that did not resolve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve `{host}`: {reason}")]
pub struct LookupFailed {
    pub host: String,
    pub reason: String,
}

/// Resolves with the system resolver (or a [`Lookup`]) and filters by the policy.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
    lookup: Option<Lookup>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>, lookup: Option<Lookup>) -> Self {
        PolicyResolver { policy, lookup }
    }

    /// The addresses of `host`, all allowed, or why not.
    pub async fn addresses(
        &self,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let failed = |reason: String| LookupFailed {
            host: host.to_owned(),
            reason,
        };
        let addrs: Vec<IpAddr> = match &self.lookup {
            Some(lookup) => lookup(host),
            None => tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(failed("no addresses".into()).into());
        }
        for ip in &addrs {
            if let Err(refusal) = self.policy.check(*ip) {
                return Err(AddressRefused {
                    host: host.to_owned(),
                    refusal,
                }
                .into());
            }
        }
        Ok(addrs)
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.addresses(name.as_str()).await?;
            // Port 0: hyper puts the URL's port in.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(answers: Vec<&'static str>) -> PolicyResolver {
        let policy = AddressPolicy::new(&["127.0.0.2/32".into()]).unwrap();
        let lookup: Lookup =
            Arc::new(move |_| answers.iter().map(|a| a.parse().unwrap()).collect());
        PolicyResolver::new(Arc::new(policy), Some(lookup))
    }

    #[tokio::test]
    async fn one_refused_answer_refuses_the_name() {
        let err = resolver(vec!["8.8.8.8", "127.0.0.1"])
            .addresses("mixed.test")
            .await
            .unwrap_err();
        let refused = err.downcast_ref::<AddressRefused>().unwrap();
        assert_eq!(
            refused.to_string(),
            "`mixed.test` resolves to 127.0.0.1, a loopback address; this tool may not connect to it"
        );
    }

    #[tokio::test]
    async fn allowed_answers_pass_and_empty_ones_fail() {
        let ok = resolver(vec!["8.8.8.8", "127.0.0.2"])
            .addresses("ok.test")
            .await
            .unwrap();
        assert_eq!(ok.len(), 2);
        let err = resolver(vec![]).addresses("none.test").await.unwrap_err();
        assert!(err.downcast_ref::<LookupFailed>().is_some(), "{err}");
    }
}
