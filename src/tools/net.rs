//! The network sandbox of the HTTP tools (`http_get`, `webhook`): which addresses a
//! tool may connect to. Every address is judged here twice over: IP literals in a URL
//! before the request is sent (`net::target`), and every name's answers in the DNS
//! resolver the tools' HTTP client uses (`net::resolve`) — so the address checked is
//! the address connected to, and a name that rebinds to a private address between two
//! lookups is refused on the lookup that matters. `net::fetch` builds that client and
//! reads bounded bodies.
//!
//! Refused unless inside a configured `allow_addresses` network: loopback, private
//! (RFC 1918, IPv6 unique local), link-local (with 169.254.169.254, the cloud metadata
//! endpoint), carrier-grade NAT (100.64.0.0/10), documentation and benchmarking ranges,
//! IETF special-purpose and reserved space (240.0.0.0/4, IPv6 outside 2000::/3).
//! Refused whatever the configuration says (no single host answers there, or the
//! kernel routes it to this machine): 0.0.0.0/8, `::`, broadcast, multicast. IPv6 forms
//! that carry an IPv4 address are judged as that address: mapped (`::ffff:a.b.c.d`),
//! compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).

pub mod fetch;
pub mod resolve;
pub mod target;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The addresses one tool may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// `allow_addresses`: non-public networks allowed anyway.
    allow: Vec<IpNet>,
}

/// Why an address was refused: `127.0.0.1 is a loopback address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    pub what: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}", self.ip, self.what)
    }
}

impl AddressPolicy {
    /// From `allow_addresses` (CIDR networks; a bare address counts as one host).
    pub fn new(allow_addresses: &[String]) -> Result<Self, String> {
        let mut allow = Vec::with_capacity(allow_addresses.len());
        for (i, entry) in allow_addresses.iter().enumerate() {
            let entry = entry.trim();
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!(
                        "allow_addresses[{i}]: `{entry}` is not a CIDR network \
                         (e.g. 10.0.0.0/8 or 127.0.0.1/32)"
                    )
                })?,
            };
            allow.push(net.trunc());
        }
        Ok(AddressPolicy { allow })
    }

    /// Whether the tool may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let canonical = canonical(ip);
        let refuse = |what: String| Err(Refusal { ip, what });
        if let Some(what) = never(canonical) {
            return refuse(what.to_owned());
        }
        if self.allow.iter().any(|net| net.contains(&canonical)) {
            return Ok(());
        }
        match non_public(canonical) {
            Some(what) => refuse(what),
            None => Ok(()),
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses as the
/// IPv4 address they are; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            // `::` and `::1` are IPv6's own unspecified and loopback addresses.
            if s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
                return IpAddr::V4(low_v4(v6));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// Destinations that are not one remote host: never allowed.
fn never(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => {
            Some("a \"this network\" address (0.0.0.0/8 reaches this machine)")
        }
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// What a non-public address is (`None`: public).
fn non_public(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4).map(str::to_owned),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

/// IPv4 special-purpose space (IANA registry), first match wins.
const V4_RANGES: [([u8; 4], u8, &str); 15] = [
    ([0, 0, 0, 0], 8, "a \"this network\" address"),
    ([10, 0, 0, 0], 8, "a private address"),
    ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
    ([127, 0, 0, 0], 8, "a loopback address"),
    (
        [169, 254, 0, 0],
        16,
        "a link-local address (where cloud metadata endpoints live)",
    ),
    ([172, 16, 0, 0], 12, "a private address"),
    ([192, 0, 0, 0], 24, "an IETF protocol address"),
    ([192, 0, 2, 0], 24, "a documentation address"),
    ([192, 88, 99, 0], 24, "a 6to4 relay address"),
    ([192, 168, 0, 0], 16, "a private address"),
    ([198, 18, 0, 0], 15, "a benchmarking address"),
    ([198, 51, 100, 0], 24, "a documentation address"),
    ([203, 0, 113, 0], 24, "a documentation address"),
    ([224, 0, 0, 0], 4, "a multicast address"),
    ([240, 0, 0, 0], 4, "a reserved address"),
];

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let n = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(base, len, _)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
            n & mask == u32::from_be_bytes(*base)
        })
        .map(|(_, _, what)| *what)
}

fn v6_kind(ip: Ipv6Addr) -> Option<String> {
    let s = ip.segments();
    let embedded = |form: &str, v4: Ipv4Addr| {
        never(IpAddr::V4(v4))
            .or_else(|| v4_kind(v4))
            .map(|what| format!("a {form} address embedding {v4}, {what}"))
    };
    if ip.is_loopback() {
        return Some("a loopback address".into());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return embedded("NAT64", low_v4(ip));
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return embedded("6to4", Ipv4Addr::new(a, b, c, d));
    }
    let what = if s[0] & 0xe000 != 0x2000 {
        // Outside global unicast (2000::/3).
        match s[0] {
            x if x & 0xfe00 == 0xfc00 => "a unique local (private) address",
            x if x & 0xffc0 == 0xfe80 => "a link-local address",
            x if x & 0xffc0 == 0xfec0 => "a site-local address",
            _ => "a reserved address",
        }
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000) {
        "a documentation address"
    } else if s[0] == 0x2001 && s[1] < 0x0200 {
        // 2001::/23: Teredo, benchmarking, ORCHID and other IETF assignments.
        "an IETF special-purpose address"
    } else {
        return None;
    };
    Some(what.into())
}

/// The IPv4 address in the low 32 bits.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(policy: &AddressPolicy, ip: &str) -> Result<(), String> {
        let ip: IpAddr = ip.parse().unwrap();
        policy.check(ip).map_err(|r| r.to_string())
    }

    #[test]
    fn non_public_addresses_are_refused_with_what_they_are() {
        let p = AddressPolicy::default();
        for (ip, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("::", "unspecified"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.170", "IETF protocol"),
            ("2001::1", "IETF special-purpose"),
            ("100::1", "reserved"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("::ffff:0.0.0.0", "this network"),
            (
                "64:ff9b::7f00:1",
                "NAT64 address embedding 127.0.0.1, a loopback",
            ),
            ("64:ff9b::a9fe:a9fe", "embedding 169.254.169.254"),
            ("2002:7f00:1::", "6to4 address embedding 127.0.0.1"),
            ("2002:c0a8:101::1", "embedding 192.168.1.1, a private"),
        ] {
            let err = verdict(&p, ip).expect_err(ip);
            assert!(err.contains(what), "{ip}: {err}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let p = AddressPolicy::default();
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4007::64",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(verdict(&p, ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allow_addresses_open_non_public_networks_but_not_the_never_list() {
        let p = AddressPolicy::new(&[
            "127.0.0.2/32".into(),
            "10.1.0.0/16".into(),
            "fd00::1".into(),
            "0.0.0.0/0".into(),
            "::/0".into(),
        ])
        .unwrap();
        assert_eq!(verdict(&p, "127.0.0.2"), Ok(()));
        assert_eq!(verdict(&p, "::ffff:127.0.0.2"), Ok(()));
        assert_eq!(verdict(&p, "10.1.2.3"), Ok(()));
        assert_eq!(verdict(&p, "fd00::1"), Ok(()));
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(verdict(&p, ip).is_err(), "{ip}");
        }
        let narrow = AddressPolicy::new(&["127.0.0.2/32".into()]).unwrap();
        assert!(verdict(&narrow, "127.0.0.1").is_err());
        assert!(verdict(&narrow, "::1").is_err());
    }

    #[test]
    fn bad_networks_name_the_key() {
        let err = AddressPolicy::new(&["10.0.0.0/8".into(), "10.0.0.0/33".into()]).unwrap_err();
        assert!(
            err.starts_with("allow_addresses[1]: `10.0.0.0/33`"),
            "{err}"
        );
        assert!(AddressPolicy::new(&["localhost".into()]).is_err());
    }
}
