//! `sluice healthcheck`: the container's HEALTHCHECK (slim images have no curl). One
//! plain HTTP/1.1 `GET /healthz` to the gateway on this host, with a short timeout;
//! healthy means a `200` status line. The address is `--url`, else the
//! `SLUICE__SERVER__LISTEN` the server itself reads (an unspecified address such as
//! `0.0.0.0` is reached on loopback), else `127.0.0.1:8080`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where the server listens by default (`server.listen`'s default port on loopback).
const DEFAULT: &str = "http://127.0.0.1:8080/healthz";

/// The URL to probe: `url`, else one built from `listen` (the env override), else the
/// default.
pub fn target(url: Option<&str>, listen: Option<&str>) -> String {
    if let Some(url) = url {
        return url.to_owned();
    }
    let Some(addr) = listen.and_then(|l| l.trim().parse::<SocketAddr>().ok()) else {
        return DEFAULT.to_owned();
    };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, addr.port()))
}

/// Probe `url` (`http://host:port/path`); `Ok` on a 200, else why not.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs can be probed"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("`{authority}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{authority}` has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: sluice-healthcheck\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    if status_line.starts_with("HTTP/1.") && status == "200" {
        Ok(())
    } else {
        Err(format!("{url} answered status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_listen_override() {
        assert_eq!(target(None, None), DEFAULT);
        assert_eq!(
            target(None, Some("0.0.0.0:9000")),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(target(None, Some("[::]:9000")), "http://[::1]:9000/healthz");
        assert_eq!(
            target(None, Some("10.0.0.5:80")),
            "http://10.0.0.5:80/healthz"
        );
        assert_eq!(
            target(Some("http://x:1/h"), Some("0.0.0.0:9000")),
            "http://x:1/h"
        );
        assert_eq!(target(None, Some("nonsense")), DEFAULT);
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(probe("https://a/healthz", Duration::from_secs(1)).is_err());
    }
}
