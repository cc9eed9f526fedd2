//! Test support for the network tools (`http_get`, `webhook`): a loopback *canary*
//! that records every connection it is offered (the sandbox must give it none), and an
//! allowed upstream on the same port of 127.0.0.2 (the whole of 127/8 is loopback on
//! Linux), so a test allows `127.0.0.2/32` and anything that reaches 127.0.0.1 — by a
//! literal, a name, a redirect or a proxy — is seen from outside the code under test.
//! Only 127.0.0.x and ::1 traffic; names come from an injected lookup, never from DNS.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use sluice::config::ToolConfig;
use sluice::tools::net::resolve::Lookup;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Listeners on 127.0.0.1:PORT (and [::1]:PORT when IPv6 is there) that record peers.
pub struct Canary {
    pub port: u16,
    seen: watch::Receiver<Vec<SocketAddr>>,
    addrs: Vec<SocketAddr>,
}

/// A canary and an unused listener on 127.0.0.2 with the same port, for the upstream.
pub async fn pair() -> (Canary, TcpListener) {
    for _ in 0..50 {
        let upstream = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = upstream.local_addr().unwrap().port();
        let Ok(v4) = TcpListener::bind(("127.0.0.1", port)).await else {
            continue;
        };
        let v6 = match TcpListener::bind(("::1", port)).await {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => None, // no IPv6 loopback here
        };
        let (tx, seen) = watch::channel(Vec::new());
        let tx = Arc::new(tx);
        let mut addrs = Vec::new();
        for listener in std::iter::once(v4).chain(v6) {
            addrs.push(listener.local_addr().unwrap());
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    tx.send_modify(|seen| seen.push(peer));
                    drop(stream);
                }
            });
        }
        return (Canary { port, seen, addrs }, upstream);
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

impl Canary {
    /// Assert that no connection reached the canary. A sentinel connection is made
    /// last on each listener; once the canary has accepted it, every connection made
    /// before it has been accepted too (the accept queue is first in, first out).
    pub async fn assert_untouched(&self) {
        let mut sentinels = Vec::new();
        for addr in &self.addrs {
            let s = TcpStream::connect(addr)
                .await
                .expect("connect to the canary");
            sentinels.push((s.local_addr().unwrap(), s));
        }
        let mut seen = self.seen.clone();
        let all = tokio::time::timeout(
            Duration::from_secs(5),
            seen.wait_for(|peers| sentinels.iter().all(|(a, _)| peers.contains(a))),
        )
        .await
        .expect("the canary accepts the sentinel")
        .expect("the canary runs")
        .clone();
        let others: Vec<_> = all
            .iter()
            .filter(|p| !sentinels.iter().any(|(a, _)| a == *p))
            .collect();
        assert!(
            others.is_empty(),
            "the canary on port {} was connected to from {others:?}",
            self.port
        );
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Serve `app` on `listener`.
pub fn serve(listener: TcpListener, app: axum::Router) {
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
}

/// A `[tools.NAME]` table from TOML lines (after `kind`).
pub fn config(kind: &str, lines: &str) -> ToolConfig {
    toml::from_str(&format!("kind = \"{kind}\"\n{lines}")).expect("test tool config")
}

/// A lookup answering from `names` (each call to a name takes its next answer list;
/// the last one repeats), and counting calls per name.
pub struct FakeDns {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    calls: Mutex<HashMap<String, usize>>,
    pub total: AtomicUsize,
}

impl FakeDns {
    pub fn new(names: &[(&str, &[&[&str]])]) -> Arc<FakeDns> {
        let answers = names
            .iter()
            .map(|(name, lists)| {
                let lists = lists
                    .iter()
                    .map(|l| l.iter().map(|a| a.parse().unwrap()).collect())
                    .collect();
                (name.to_string(), lists)
            })
            .collect();
        Arc::new(FakeDns {
            answers,
            calls: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    pub fn lookup(self: &Arc<Self>) -> Lookup {
        let dns = self.clone();
        Arc::new(move |name: &str| {
            dns.total.fetch_add(1, Ordering::SeqCst);
            let mut calls = dns.calls.lock().unwrap();
            let n = calls.entry(name.to_owned()).or_default();
            let out = dns
                .answers
                .get(name)
                .and_then(|lists| lists.get(*n).or(lists.last()))
                .cloned()
                .unwrap_or_default();
            *n += 1;
            out
        })
    }

    pub fn calls(&self, name: &str) -> usize {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}
