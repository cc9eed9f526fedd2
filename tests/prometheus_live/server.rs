//! The `prometheus` server of tests/prometheus_live.rs: its config derived from
//! `prometheus/prometheus.yml`, rule copies with short `for:`, the process (killed on
//! drop) and its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ROOT, SHORT_FOR};

/// A `prometheus` child process; killed on drop.
pub struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/prometheus");
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    on_path
        .or(debian.is_file().then_some(debian))
        .expect("the prometheus server is not installed: run make ops-tools")
}

/// `prometheus/prometheus.yml` scraping `target` every second, and copies of the rule
/// files with every `for:` shortened to SHORT_FOR. Returns the number of rules copied.
pub fn write_config(dir: &Path, target: &str) -> usize {
    let mut config = std::fs::read_to_string(format!("{ROOT}/prometheus/prometheus.yml")).unwrap();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
        ("\"sluice:8080\"", &format!("\"{target}\"")),
        ("\"alertmanager:9093\"", "\"127.0.0.1:9\""),
    ] {
        assert!(
            config.contains(from),
            "prometheus.yml no longer has `{from}`: update this test"
        );
        config = config.replace(from, to);
    }
    assert!(config.contains("rules/*.yml") && config.contains("job_name: sluice"));
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::create_dir(dir.join("rules")).unwrap();
    let mut rules = 0;
    for entry in std::fs::read_dir(format!("{ROOT}/prometheus/rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let copy: Vec<String> = text
            .lines()
            .map(|line| match line.trim_start().strip_prefix("for:") {
                Some(_) => format!(
                    "{}for: {SHORT_FOR}",
                    &line[..line.len() - line.trim_start().len()]
                ),
                None => line.to_owned(),
            })
            .collect();
        rules += text
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
            })
            .count();
        std::fs::write(
            dir.join("rules").join(path.file_name().unwrap()),
            copy.join("\n"),
        )
        .unwrap();
    }
    rules
}

impl Prometheus {
    pub async fn start(dir: &Path) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus starts");
        let prom = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = prom.http.get(format!("{}/-/ready", prom.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return prom;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 20 s:\n{}",
                prom.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let resp = self
            .http
            .get(format!("{}/api/v1/{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector `expr` returns now.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    pub async fn rules(&self) -> Vec<Value> {
        let data = self.api("rules", &[]).await;
        data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect()
    }

    pub async fn alerts(&self, name: &str) -> Vec<Value> {
        let data = self.api("alerts", &[]).await;
        data["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}
