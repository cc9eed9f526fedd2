//! The cache benchmark's client side (see main.rs): a deliberately small HTTP/1.1 client
//! over one keep-alive TCP connection (TCP_NODELAY), the request bodies, a timerfd
//! pacer and the /proc readings (CPU time, RSS).
//!
//! Why not hyper: the load generator shares the 2 cores with sluice, so its own work per
//! request is kept small (most of its CPU is then the kernel's loopback TCP work). A
//! response is parsed only as far as the benchmark needs — status, `content-length`,
//! `x-sluice-cache`, `connection: close` — and a request is one `write` of bytes prepared
//! in advance.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `x-sluice-cache` said.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
    Other,
    Absent,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Other => "other",
            CacheStatus::Absent => "no header",
        }
    }
}

/// Where to send requests: the socket address and the request line's parts.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// The complete HTTP/1.1 request for a JSON `body`, ready to write.
    pub fn request(&self, body: &str) -> Vec<u8> {
        format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            self.path,
            self.authority,
            body.len(),
            body
        )
        .into_bytes()
    }
}

const CALCULATOR: &str = r#"[{"type":"function","function":{"name":"calculator","description":"Evaluate an arithmetic expression","parameters":{"type":"object","properties":{"expression":{"type":"string"}},"required":["expression"]}}}]"#;

/// A chat completion in the demo model's world: `What is {a} * 7?` with the calculator
/// tool, temperature 0 (so sluice caches it). The hit workload always sends a = 12; the
/// miss workload counts a up from 100, so every miss is a new prompt of the same shape.
pub fn chat_body(model: &str, a: u64, max_tokens: u32) -> String {
    let model = serde_json::to_string(model).unwrap_or_default();
    format!(
        r#"{{"model":{model},"messages":[{{"role":"user","content":"What is {a} * 7?"}}],"tools":{CALCULATOR},"temperature":0,"max_tokens":{max_tokens}}}"#
    )
}

/// One parsed response; the body stays in the connection's buffer (`Conn::body`).
pub struct Reply {
    pub status: u16,
    pub cache: CacheStatus,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    body_start: usize,
    reusable: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn, &'static str> {
        let stream = TcpStream::connect(addr).await.map_err(|_| "connect")?;
        stream.set_nodelay(true).map_err(|_| "connect")?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            body_start: 0,
            reusable: true,
        })
    }

    /// Whether the connection can carry another request (no error, no `connection: close`).
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body_start..]
    }

    /// Write `request`, read the whole response (content-length framing only).
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Reply, &'static str> {
        self.reusable = false;
        self.stream.write_all(request).await.map_err(|_| "write")?;
        self.buf.clear();
        let mut scanned: usize = 0;
        let head_end = loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|_| "read")?;
            if n == 0 {
                return Err("closed");
            }
            if let Some(i) = find(&self.buf[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                break scanned.saturating_sub(3) + i + 4;
            }
            scanned = self.buf.len();
            if scanned > 64 * 1024 {
                return Err("bad_head");
            }
        };
        let head = &self.buf[..head_end];
        let status = head
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or("bad_head")?;
        let mut length = None;
        let mut cache = CacheStatus::Absent;
        let mut close = false;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if name.eq_ignore_ascii_case(b"x-sluice-cache") {
                cache = match value {
                    b"hit" => CacheStatus::Hit,
                    b"miss" => CacheStatus::Miss,
                    b"bypass" => CacheStatus::Bypass,
                    _ => CacheStatus::Other,
                };
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case(b"close");
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err("chunked_body");
            }
        }
        let length = length.ok_or("no_content_length")?;
        let total = head_end + length;
        while self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|_| "read")?;
            if n == 0 {
                return Err("closed");
            }
        }
        if self.buf.len() != total {
            return Err("extra_bytes");
        }
        self.body_start = head_end;
        self.reusable = !close;
        Ok(Reply { status, cache })
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The answer part of a chat completion body: from `"choices"` on. The `id` and
/// `created` before it differ between two hits of the same entry; the rest must not.
pub fn answer_part(body: &[u8]) -> Option<&[u8]> {
    find(body, b"\"choices\"").map(|i| &body[i..])
}

/// `usage.completion_tokens` of a chat completion body.
pub fn completion_tokens(body: &[u8]) -> Option<u64> {
    let key = b"\"completion_tokens\":";
    let i = find(body, key)? + key.len();
    let digits: Vec<u8> = body[i..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Pacing: a timerfd that fires every period, read through tokio's reactor (the same as
// bench-loadgen's), so arrivals are evenly spaced rather than bunched on tokio's 1 ms tick.

pub struct Pacer {
    fd: AsyncFd<OwnedFd>,
}

impl Pacer {
    pub fn new(period: Duration) -> std::io::Result<Pacer> {
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: a valid timerfd and a valid itimerspec.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the pacer owns `fd` (an OwnedFd, never handed out) for the AsyncFd's
        // whole lifetime, so it stays open and refers to this timer.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Pacer { fd })
    }

    /// Waits for the next expiry; returns how many periods have passed since the last read.
    pub async fn tick(&self) -> std::io::Result<u64> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                if n == 8 {
                    Ok(u64::from_ne_bytes(buf))
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc

/// utime + stime of a process (all its threads), in seconds; `pid` may be "self".
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 is f[0]; utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / if tck > 0 { tck as f64 } else { 100.0 })
}

/// Voluntary + involuntary context switches summed over all threads of `pid`.
pub fn ctx_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for l in s.lines() {
            if l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// A `kB` line of /proc/PID/status, e.g. "VmHWM:".
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
