//! What a URL must be before an HTTP tool sends anything to it: http or https, no
//! credentials, a host the tool allows (`allow_hosts`), and — when the host is an IP
//! literal — an address the [`AddressPolicy`] allows. Literals never reach the resolver
//! (hyper connects to them directly), so they are judged here, parsed exactly as hyper
//! parses them, after the URL parser has normalised `127.1`, `2130706433` or `0x7f.1`
//! to `127.0.0.1`.
//!
//! `allow_hosts` entries: `example.com` (that name only), `*.example.org` (any name
//! below example.org, not example.org itself), or an IP address (`203.0.113.7`,
//! `2001:db8::1` or `[2001:db8::1]`). Names are compared after the URL parser's
//! normalisation (lower case, IDNA, one trailing dot dropped), addresses by value. Any
//! port is allowed: the host and the connected address are what the sandbox guards.

use std::net::IpAddr;

use reqwest::Url;

use super::{canonical, AddressPolicy};
use crate::tools::ToolError;

/// The hosts one tool may talk to (`allow_hosts`).
#[derive(Debug, Clone)]
pub struct HostRules {
    rules: Vec<HostRule>,
    /// The entries as configured, for messages.
    listed: String,
}

#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    Name(String),
    /// `*.suffix`: names strictly below `suffix`.
    Below(String),
    Ip(IpAddr),
}

/// A URL's host as hyper will treat it: an address to connect to, or a name to resolve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Host<'a> {
    Ip(IpAddr),
    /// Without a trailing dot.
    Name(&'a str),
}

/// The host of `url`, if it has one.
pub fn host_of(url: &Url) -> Option<Host<'_>> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host.strip_suffix('.').unwrap_or(host)),
    })
}

impl HostRules {
    pub fn new(entries: &[String]) -> Result<Self, String> {
        if entries.is_empty() {
            return Err("allow_hosts: list the hosts this tool may fetch from \
                 (e.g. [\"example.com\", \"*.example.org\"])"
                .into());
        }
        let rules = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                rule(entry.trim()).map_err(|why| format!("allow_hosts[{i}]: `{entry}` {why}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(HostRules {
            rules,
            listed: entries.join(", "),
        })
    }

    pub fn allows(&self, host: Host<'_>) -> bool {
        self.rules.iter().any(|rule| match (rule, host) {
            (HostRule::Ip(allowed), Host::Ip(ip)) => *allowed == canonical(ip),
            (HostRule::Name(allowed), Host::Name(name)) => allowed == name,
            (HostRule::Below(suffix), Host::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            _ => false,
        })
    }
}

fn rule(entry: &str) -> Result<HostRule, String> {
    let (below, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.contains('*') {
        return Err("has a `*` that is not a leading `*.`".into());
    }
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match below {
            false => Ok(HostRule::Ip(canonical(ip))),
            true => Err("puts `*.` before an address".into()),
        };
    }
    if name.contains([':', '/', '\\', '@', '?', '#', '[', ']']) {
        return Err("must be a bare host name, without scheme, port or path".into());
    }
    let url =
        Url::parse(&format!("http://{name}/")).map_err(|e| format!("is not a host name ({e})"))?;
    if url.path() != "/"
        || url.port().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("must be a bare host name, without scheme, port or path".into());
    }
    match host_of(&url) {
        Some(Host::Ip(ip)) if !below => Ok(HostRule::Ip(canonical(ip))),
        Some(Host::Ip(_)) => Err("puts `*.` before an address".into()),
        Some(Host::Name(n)) if below => Ok(HostRule::Below(n.to_owned())),
        Some(Host::Name(n)) => Ok(HostRule::Name(n.to_owned())),
        None => Err("has no host".into()),
    }
}

/// Check `url` before anything is sent to it. `hosts: None` skips the host list (a
/// webhook's URL is configured, not chosen by the model).
pub fn check(
    url: &Url,
    hosts: Option<&HostRules>,
    policy: &AddressPolicy,
) -> Result<(), ToolError> {
    let refuse = |why: String| Err(ToolError::Refused(why));
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return refuse(format!(
            "only http and https URLs may be fetched, not `{scheme}:`"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("URLs with credentials (`user@host`) are not allowed".into());
    }
    let Some(host) = host_of(url) else {
        return refuse("the URL has no host".into());
    };
    if let Some(rules) = hosts {
        if !rules.allows(host) {
            return refuse(format!(
                "host `{}` is not allowed (allowed: {})",
                url.host_str().unwrap_or_default(),
                rules.listed
            ));
        }
    }
    if let Host::Ip(ip) = host {
        if let Err(refusal) = policy.check(ip) {
            return refuse(format!("{refusal}; this tool may not connect to it"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> HostRules {
        HostRules::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allowed(rules: &HostRules, url: &str) -> bool {
        let url = Url::parse(url).unwrap();
        check(&url, Some(rules), &AddressPolicy::default()).is_ok()
    }

    #[test]
    fn names_wildcards_and_addresses() {
        let r = rules(&[
            "Example.COM",
            "*.example.org",
            "8.8.8.8",
            "[2606:4700::1111]",
        ]);
        assert!(allowed(&r, "http://example.com/"));
        assert!(allowed(&r, "https://EXAMPLE.com.:8443/x"));
        assert!(!allowed(&r, "http://www.example.com/"));
        assert!(!allowed(&r, "http://example.com.evil.net/"));
        assert!(allowed(&r, "http://a.example.org/"));
        assert!(allowed(&r, "http://a.b.example.org/"));
        assert!(!allowed(&r, "http://example.org/"));
        assert!(!allowed(&r, "http://badexample.org/"));
        assert!(allowed(&r, "http://8.8.8.8/"));
        assert!(allowed(&r, "http://134744072/"));
        assert!(allowed(&r, "http://[::ffff:8.8.8.8]/"));
        assert!(allowed(&r, "http://[2606:4700::1111]/"));
        assert!(!allowed(&r, "http://8.8.4.4/"));
    }

    #[test]
    fn literals_are_judged_by_address_after_normalisation() {
        let r = rules(&["127.0.0.1"]);
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let err = check(
                &Url::parse(url).unwrap(),
                Some(&r),
                &AddressPolicy::default(),
            );
            assert!(
                matches!(err, Err(ToolError::Refused(ref m)) if m.contains("loopback")),
                "{url}: {err:?}"
            );
        }
    }

    #[test]
    fn schemes_and_credentials() {
        let r = rules(&["example.com"]);
        let p = AddressPolicy::default();
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "data:text/plain,hi",
            "http://u:p@example.com/",
            "http://u@example.com/",
        ] {
            let err = check(&Url::parse(url).unwrap(), Some(&r), &p);
            assert!(matches!(err, Err(ToolError::Refused(_))), "{url}: {err:?}");
        }
    }

    #[test]
    fn bad_entries_name_the_key() {
        for (entries, needle) in [
            (vec![], "allow_hosts: list"),
            (vec!["ok.com", ""], "allow_hosts[1]"),
            (vec!["*"], "allow_hosts[0]"),
            (vec!["a.*.com"], "`*`"),
            (vec!["http://example.com"], "bare host"),
            (vec!["example.com:80"], "bare host"),
            (vec!["*.10.0.0.1"], "address"),
        ] {
            let entries: Vec<String> = entries.into_iter().map(String::from).collect();
            let err = HostRules::new(&entries).unwrap_err();
            assert!(err.contains(needle), "{entries:?}: {err}");
        }
    }
}
