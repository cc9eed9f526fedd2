//! Test support: a real `redis-server` on a free 127.0.0.1 port, for the response cache's
//! shared second level (pipeline/cache/redis.rs). `make test` installs `redis-server`.
//!
//! Self-contained (std only): the unit tests of `src/pipeline/cache/redis.rs` compile this
//! same file with `#[path]`, so it must not use anything else from `tests/common`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh redis-server gets to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// A redis-server child process; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// The `redis-server` binary on PATH, if any.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    }

    /// Start on a free port. None (after saying so on stderr) when `redis-server` is not
    /// installed, so a test can skip; panics when it is installed but does not come up.
    pub fn start() -> Option<RedisServer> {
        Self::binary().is_some().then(Self::start_new).or_else(|| {
            eprintln!("SKIPPED: redis-server is not on PATH (run `make redis-server`)");
            None
        })
    }

    fn start_new() -> RedisServer {
        // The port is free when chosen but could be taken before redis binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start_on(free_port()) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Start on a given port (e.g. the port of a server that was killed, to test
    /// reconnection). Panics when it does not come up.
    pub fn start_on(port: u16) -> RedisServer {
        Self::try_start_on(port)
            .unwrap_or_else(|error| panic!("redis-server did not start: {error}"))
    }

    fn try_start_on(port: u16) -> Result<RedisServer, String> {
        let binary = Self::binary().ok_or("redis-server is not on PATH")?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("spawn: {error}"))?;
        let mut server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if ping(port) {
                return Ok(server);
            }
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    server.child = None;
                    return Err(format!("exited with {status} (port {port} taken?)"));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no PONG on port {port} within {READY_WITHIN:?}"))
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        url_for_port(self.port)
    }

    /// The child's process id (e.g. to SIGSTOP it), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the server at once (SIGKILL) and wait until it is gone; the port is free after.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) the server: connections stay open, nothing answers.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill -{signal} {pid} failed"
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill(); // SIGKILL also ends a stopped process
    }
}

/// `redis://127.0.0.1:PORT/`, e.g. for a port nothing listens on yet.
pub fn url_for_port(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// A 127.0.0.1 port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// True when a redis answers PING on the port.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
