//! Open-loop load generator for the latency benchmark (loadtest/latency.sh).
//!
//! Sends chat completions at a fixed arrival rate (open model: request i is due at
//! start + i/rate whether or not earlier ones have finished; a timerfd paces the
//! arrivals with microsecond precision) over HTTP/1.1 keep-alive connections with
//! TCP_NODELAY, opening another connection whenever none is idle. The same generator,
//! rate and body go first straight to the upstream ("direct"), then through sluice
//! ("gateway"), in alternating rounds (D G, G D, ...) after a warm-up of each, so the
//! difference between the two is what sluice adds. Latency is measured per request from
//! the moment it is sent (taken from a pool or connected) to the last byte of the body;
//! how late the generator itself dispatched (`lag`) is reported separately. While a
//! phase runs it samples VmRSS of the watched processes and their CPU time.
//!
//! Subcommands:
//!   run --direct URL --gateway URL [--rate N] [--duration S] [--warmup S] [--rounds N]
//!       [--modes nonstream,stream] [--model NAME] [--gateway-pid PID] [--upstream-pid PID]
//!       [--timeout-ms MS] [--max-conns N] [--json FILE] [--target-p50-us US] [--target-p99-us US] [--target-rss-mb MB]
//!   wait-ready URL [--timeout S]     poll until GET URL answers 200
//!   free-port                        print a free loopback TCP port

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::unix::AsyncFd;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("run") => match Opts::parse(&args[1..]) {
            Ok(o) => run(o),
            Err(e) => {
                eprintln!("bench-loadgen: {e}");
                2
            }
        },
        Some("wait-ready") => wait_ready(&args[1..]),
        Some("free-port") => match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => {
                println!("{}", l.local_addr().map(|a| a.port()).unwrap_or(0));
                0
            }
            Err(e) => {
                eprintln!("bench-loadgen: {e}");
                1
            }
        },
        _ => {
            eprintln!("usage: bench-loadgen run|wait-ready|free-port ... (see the file header)");
            2
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// Options

struct Opts {
    direct: String,
    gateway: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    rounds: usize,
    modes: Vec<Mode>,
    model: String,
    gateway_pid: Option<u32>,
    upstream_pid: Option<u32>,
    timeout: Duration,
    max_conns: usize,
    json: Option<String>,
    target_p50_us: f64,
    target_p99_us: f64,
    target_rss_mb: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Nonstream,
    Stream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nonstream => "nonstream",
            Mode::Stream => "stream",
        }
    }
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            direct: String::new(),
            gateway: String::new(),
            rate: 2000.0,
            duration: 15.0,
            warmup: 3.0,
            rounds: 2,
            modes: vec![Mode::Nonstream, Mode::Stream],
            model: "bench-model".into(),
            gateway_pid: None,
            upstream_pid: None,
            timeout: Duration::from_secs(5),
            max_conns: 512,
            json: None,
            target_p50_us: 200.0,
            target_p99_us: 500.0,
            target_rss_mb: 50.0,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--direct" => o.direct = v.clone(),
                "--gateway" => o.gateway = v.clone(),
                "--rate" => o.rate = num(v)?,
                "--duration" => o.duration = num(v)?,
                "--warmup" => o.warmup = num(v)?,
                "--rounds" => o.rounds = num(v)? as usize,
                "--model" => o.model = v.clone(),
                "--gateway-pid" => o.gateway_pid = Some(num(v)? as u32),
                "--upstream-pid" => o.upstream_pid = Some(num(v)? as u32),
                "--timeout-ms" => o.timeout = Duration::from_millis(num(v)? as u64),
                "--max-conns" => o.max_conns = num(v)? as usize,
                "--json" => o.json = Some(v.clone()),
                "--target-p50-us" => o.target_p50_us = num(v)?,
                "--target-p99-us" => o.target_p99_us = num(v)?,
                "--target-rss-mb" => o.target_rss_mb = num(v)?,
                "--modes" => {
                    o.modes = v
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| match s {
                            "nonstream" => Ok(Mode::Nonstream),
                            "stream" => Ok(Mode::Stream),
                            _ => Err(format!("--modes: unknown mode {s}")),
                        })
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        if o.direct.is_empty() || o.gateway.is_empty() {
            return Err("--direct and --gateway are required".into());
        }
        if !(o.rate > 0.0 && o.rate <= 100_000.0) || o.duration <= 0.0 || o.rounds == 0 {
            return Err("need 0 < --rate <= 100000, --duration > 0, --rounds >= 1".into());
        }
        if o.duration > 600.0 || o.warmup > 600.0 || o.rounds > 20 {
            return Err("bounded runs only: --duration/--warmup <= 600 s, --rounds <= 20".into());
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// Targets and connections

struct Target {
    name: &'static str,
    addr: SocketAddr,
    authority: String,
    path: String,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
    open: Rc<Cell<usize>>,
    opened_total: Cell<usize>,
    max_conns: usize,
}

impl Target {
    fn new(name: &'static str, base: &str, max_conns: usize) -> Result<Target, String> {
        let server = sluice_bench::loopback(base)?;
        Ok(Target {
            name,
            addr: server.addr,
            authority: server.authority,
            path: format!("{}/chat/completions", server.prefix),
            idle: RefCell::new(Vec::new()),
            open: Rc::new(Cell::new(0)),
            opened_total: Cell::new(0),
            max_conns,
        })
    }

    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, &'static str> {
        loop {
            let s = self.idle.borrow_mut().pop();
            match s {
                Some(mut s) => {
                    if s.is_ready() {
                        return Ok(s);
                    }
                    if !s.is_closed() && s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => break,
            }
        }
        if self.open.get() >= self.max_conns {
            return Err("conn_limit");
        }
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|_| "connect")?;
        tcp.set_nodelay(true).map_err(|_| "connect")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|_| "handshake")?;
        self.open.set(self.open.get() + 1);
        self.opened_total.set(self.opened_total.get() + 1);
        let open = self.open.clone();
        tokio::task::spawn_local(async move {
            let _ = conn.await;
            open.set(open.get() - 1);
        });
        Ok(sender)
    }

    fn checkin(&self, s: SendRequest<Full<Bytes>>) {
        self.idle.borrow_mut().push(s);
    }
}

fn chat_body(model: &str, stream: bool) -> Bytes {
    let model = serde_json::to_string(model).unwrap_or_default();
    let stream = if stream { r#","stream":true"# } else { "" };
    Bytes::from(format!(
        concat!(
            r#"{{"model":{},"messages":[{{"role":"system","content":"You are a helpful assistant."}},"#,
            r#"{{"role":"user","content":"Say hello in one short sentence."}}],"max_tokens":32,"temperature":0{}}}"#
        ),
        model, stream
    ))
}

struct Done {
    ttfb: Instant,
    end: Instant,
}

/// One request on a pooled connection; returns the connection to the caller for reuse.
async fn exchange(
    target: &Target,
    body: Bytes,
    stream: bool,
) -> Result<(Done, SendRequest<Full<Bytes>>), String> {
    let mut sender = target.checkout().await.map_err(str::to_owned)?;
    let req = sluice_bench::json_post(&target.path, &target.authority, body)
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|_| "send".to_owned())?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut first = None;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body".to_owned())?;
        if let Some(d) = frame.data_ref() {
            first.get_or_insert_with(Instant::now);
            buf.extend_from_slice(d);
        }
    }
    let end = Instant::now();
    if !status.is_success() {
        return Err(format!("http_{}", status.as_u16()));
    }
    let valid = if stream {
        contains(&buf, b"chat.completion.chunk") && buf.ends_with(b"data: [DONE]\n\n")
    } else {
        contains(&buf, b"\"chat.completion\"") && contains(&buf, b"\"content\"")
    };
    if !valid {
        return Err("bad_body".to_owned());
    }
    Ok((
        Done {
            ttfb: first.unwrap_or(end),
            end,
        },
        sender,
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// /proc sampling

#[derive(Default, Clone, Copy)]
struct CpuTicks(u64);

fn proc_cpu_ticks(pid: &str) -> Option<CpuTicks> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": field 3 is f[0]; utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(CpuTicks(utime + stime))
}

/// Voluntary + involuntary context switches summed over all threads of `pid`.
fn ctx_switches(pid: &str) -> Option<u64> {
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

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

// ---------------------------------------------------------------------------------------
// Pacing: a timerfd that fires every 1/rate seconds, read through tokio's reactor.

struct Pacer {
    fd: AsyncFd<OwnedFd>,
}

impl Pacer {
    fn new(period: Duration) -> std::io::Result<Pacer> {
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the pacer owns `fd` (an OwnedFd, never handed out) for the AsyncFd's
        // whole lifetime, so it stays open and refers to this timer.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Pacer { fd })
    }

    /// Waits for the next expiry; returns how many periods have elapsed since the last read.
    async fn tick(&self) -> std::io::Result<u64> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut buf = [0u8; 8];
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                if n == 8 {
                    Ok(u64::from_ne_bytes(buf))
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
            match r {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One phase: `rate * duration` requests to one target.

#[derive(Default)]
struct Samples {
    lat_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    lag_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
    in_flight: usize,
}

struct PhaseRaw {
    mode: Mode,
    target: &'static str,
    round: usize,
    planned: u64,
    dispatch_secs: f64,
    samples: Samples,
    cpu_secs: BTreeMap<&'static str, f64>,
    ctx_switches: BTreeMap<&'static str, u64>,
    rss_max_kb: BTreeMap<&'static str, u64>,
    conns_opened: usize,
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    target: Rc<Target>,
    mode: Mode,
    round: usize,
    body: Bytes,
    rate: f64,
    duration: f64,
    timeout: Duration,
    watch: &[(&'static str, u32)],
) -> std::io::Result<PhaseRaw> {
    let planned = (rate * duration).round().max(1.0) as u64;
    let period = Duration::from_nanos((1e9 / rate).round() as u64);
    let samples = Rc::new(RefCell::new(Samples::default()));
    let stream = mode == Mode::Stream;
    let opened_before = target.opened_total.get();

    let cpu0: Vec<Option<CpuTicks>> = watch
        .iter()
        .map(|(_, p)| proc_cpu_ticks(&p.to_string()))
        .collect();
    let self0 = proc_cpu_ticks("self");
    let cs0: Vec<Option<u64>> = watch
        .iter()
        .map(|(_, p)| ctx_switches(&p.to_string()))
        .collect();

    // RSS sampler, every 50 ms until the phase ends.
    let stop = Rc::new(Cell::new(false));
    let rss_max: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(vec![0; watch.len()]));
    let sampler = {
        let (stop, rss_max) = (stop.clone(), rss_max.clone());
        let pids: Vec<u32> = watch.iter().map(|(_, p)| *p).collect();
        tokio::task::spawn_local(async move {
            while !stop.get() {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kb) = status_kb(*pid, "VmRSS:") {
                        let mut m = rss_max.borrow_mut();
                        m[i] = m[i].max(kb);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let pacer = Pacer::new(period)?;
    let start = Instant::now();
    let mut i: u64 = 0;
    while i < planned {
        let n = pacer.tick().await?;
        for _ in 0..n {
            if i >= planned {
                break;
            }
            i += 1;
            let due = start + period * (i as u32);
            let (target, body, samples) = (target.clone(), body.clone(), samples.clone());
            samples.borrow_mut().in_flight += 1;
            tokio::task::spawn_local(async move {
                let t0 = Instant::now();
                let r = tokio::time::timeout(timeout, exchange(&target, body, stream)).await;
                let reusable = {
                    let mut s = samples.borrow_mut();
                    s.in_flight -= 1;
                    s.lag_ns
                        .push(t0.saturating_duration_since(due).as_nanos() as u64);
                    match r {
                        Ok(Ok((done, sender))) => {
                            s.lat_ns.push((done.end - t0).as_nanos() as u64);
                            s.ttfb_ns.push((done.ttfb - t0).as_nanos() as u64);
                            Some(sender)
                        }
                        Ok(Err(e)) => {
                            *s.errors.entry(e).or_default() += 1;
                            None
                        }
                        Err(_) => {
                            *s.errors.entry("timeout".into()).or_default() += 1;
                            None
                        }
                    }
                };
                // Back to the pool once hyper has finished with the previous exchange.
                if let Some(mut sender) = reusable {
                    if sender.ready().await.is_ok() {
                        target.checkin(sender);
                    }
                }
            });
        }
    }
    let dispatch_secs = start.elapsed().as_secs_f64();
    // Let the last requests finish (each is bounded by `timeout`).
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while samples.borrow().in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.set(true);
    let _ = sampler.await;

    let tck = clk_tck();
    let mut cpu_secs = BTreeMap::new();
    let mut rss_max_kb = BTreeMap::new();
    let mut ctx_switches_n = BTreeMap::new();
    for (k, (name, pid)) in watch.iter().enumerate() {
        if let (Some(a), Some(b)) = (cs0[k], ctx_switches(&pid.to_string())) {
            ctx_switches_n.insert(*name, b.saturating_sub(a));
        }
        if let (Some(a), Some(b)) = (cpu0[k], proc_cpu_ticks(&pid.to_string())) {
            cpu_secs.insert(*name, (b.0.saturating_sub(a.0)) as f64 / tck);
        }
        rss_max_kb.insert(*name, rss_max.borrow()[k]);
    }
    if let (Some(a), Some(b)) = (self0, proc_cpu_ticks("self")) {
        cpu_secs.insert("loadgen", (b.0.saturating_sub(a.0)) as f64 / tck);
    }
    let samples = std::mem::take(&mut *samples.borrow_mut());
    Ok(PhaseRaw {
        mode,
        target: target.name,
        round,
        planned,
        dispatch_secs,
        samples,
        cpu_secs,
        ctx_switches: ctx_switches_n,
        rss_max_kb,
        conns_opened: target.opened_total.get() - opened_before,
    })
}

// ---------------------------------------------------------------------------------------
// Statistics and report

#[derive(Serialize, Clone, Default)]
struct Dist {
    n: usize,
    mean_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

fn dist(v: &mut [u64]) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_unstable();
    let pct = |p: f64| {
        let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[idx.clamp(1, v.len()) - 1] as f64 / 1000.0
    };
    Dist {
        n: v.len(),
        mean_us: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
        p50_us: pct(50.0),
        p90_us: pct(90.0),
        p99_us: pct(99.0),
        p999_us: pct(99.9),
        max_us: v[v.len() - 1] as f64 / 1000.0,
    }
}

#[derive(Serialize)]
struct PhaseReport {
    mode: Mode,
    target: &'static str,
    round: usize,
    planned: u64,
    ok: usize,
    errors: BTreeMap<String, u64>,
    offered_rps: f64,
    completed_rps: f64,
    latency: Dist,
    ttfb: Dist,
    dispatch_lag: Dist,
    cpu_secs: BTreeMap<&'static str, f64>,
    ctx_switches: BTreeMap<&'static str, u64>,
    rss_max_kb: BTreeMap<&'static str, u64>,
    conns_opened: usize,
}

#[derive(Serialize)]
struct TargetSummary {
    ok: usize,
    errors: u64,
    offered_rps: f64,
    latency: Dist,
    ttfb: Dist,
    dispatch_lag: Dist,
    /// CPU µs per completed request, by process.
    cpu_us_per_req: BTreeMap<&'static str, f64>,
    /// Context switches per completed request, by process (all threads).
    ctx_switches_per_req: BTreeMap<&'static str, f64>,
}

#[derive(Serialize)]
struct Added {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    mean_us: f64,
    /// p99 added in each round (gateway p99 − direct p99 of that round).
    p99_by_round_us: Vec<f64>,
}

#[derive(Serialize)]
struct ModeSummary {
    mode: Mode,
    direct: TargetSummary,
    gateway: TargetSummary,
    added: Added,
}

#[derive(Serialize)]
struct Report {
    rate: f64,
    duration_s: f64,
    warmup_s: f64,
    rounds: usize,
    modes: Vec<ModeSummary>,
    gateway_vm_hwm_kb: Option<u64>,
    gateway_vm_rss_end_kb: Option<u64>,
    gateway_rss_max_sampled_kb: u64,
    upstream_vm_hwm_kb: Option<u64>,
    target_p50_us: f64,
    target_p99_us: f64,
    target_rss_mb: f64,
    pass: bool,
    phases: Vec<PhaseReport>,
}

fn phase_report(mut raw: PhaseRaw) -> (PhaseReport, Samples) {
    let s = &mut raw.samples;
    let ok = s.lat_ns.len();
    let rep = PhaseReport {
        mode: raw.mode,
        target: raw.target,
        round: raw.round,
        planned: raw.planned,
        ok,
        errors: s.errors.clone(),
        offered_rps: raw.planned as f64 / raw.dispatch_secs,
        completed_rps: ok as f64 / raw.dispatch_secs,
        latency: dist(&mut s.lat_ns.clone()),
        ttfb: dist(&mut s.ttfb_ns.clone()),
        dispatch_lag: dist(&mut s.lag_ns.clone()),
        cpu_secs: raw.cpu_secs,
        ctx_switches: raw.ctx_switches,
        rss_max_kb: raw.rss_max_kb,
        conns_opened: raw.conns_opened,
    };
    (rep, raw.samples)
}

fn summarize(
    phases: &[PhaseReport],
    samples: &[Samples],
    mode: Mode,
    target: &str,
) -> TargetSummary {
    let mut lat = Vec::new();
    let mut ttfb = Vec::new();
    let mut lag = Vec::new();
    let (mut ok, mut errors, mut planned, mut secs) = (0, 0, 0u64, 0.0);
    let mut cpu: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut cs: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (p, s) in phases.iter().zip(samples) {
        if p.mode != mode || p.target != target {
            continue;
        }
        lat.extend_from_slice(&s.lat_ns);
        ttfb.extend_from_slice(&s.ttfb_ns);
        lag.extend_from_slice(&s.lag_ns);
        ok += p.ok;
        errors += p.errors.values().sum::<u64>();
        planned += p.planned;
        secs += p.planned as f64 / p.offered_rps;
        for (k, v) in &p.cpu_secs {
            *cpu.entry(k).or_default() += v;
        }
        for (k, v) in &p.ctx_switches {
            *cs.entry(k).or_default() += *v as f64;
        }
    }
    let cpu_us_per_req = cpu
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                if ok > 0 {
                    v * 1e6 / ok as f64
                } else {
                    f64::NAN
                },
            )
        })
        .collect();
    TargetSummary {
        ok,
        errors,
        offered_rps: planned as f64 / secs,
        latency: dist(&mut lat),
        ttfb: dist(&mut ttfb),
        dispatch_lag: dist(&mut lag),
        cpu_us_per_req,
        ctx_switches_per_req: cs
            .into_iter()
            .map(|(k, v)| (k, if ok > 0 { v / ok as f64 } else { f64::NAN }))
            .collect(),
    }
}

fn run(o: Opts) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run_all(&o)) {
        Ok(pass) => {
            if pass {
                0
            } else {
                3
            }
        }
        Err(e) => {
            eprintln!("bench-loadgen: {e}");
            1
        }
    }
}

async fn run_all(o: &Opts) -> Result<bool, String> {
    let direct = Rc::new(Target::new("direct", &o.direct, o.max_conns)?);
    let gateway = Rc::new(Target::new("gateway", &o.gateway, o.max_conns)?);
    let mut watch: Vec<(&'static str, u32)> = Vec::new();
    if let Some(p) = o.gateway_pid {
        watch.push(("sluice", p));
    }
    if let Some(p) = o.upstream_pid {
        watch.push(("upstream", p));
    }
    let mut reports = Vec::new();
    let mut samples = Vec::new();
    for &mode in &o.modes {
        let body = chat_body(&o.model, mode == Mode::Stream);
        if o.warmup > 0.0 {
            for t in [&direct, &gateway] {
                eprintln!(
                    "[{mode:?}] warm-up {} {:.0}/s for {} s",
                    t.name, o.rate, o.warmup
                );
                let raw = run_phase(
                    t.clone(),
                    mode,
                    0,
                    body.clone(),
                    o.rate,
                    o.warmup,
                    o.timeout,
                    &watch,
                )
                .await
                .map_err(|e| e.to_string())?;
                let (rep, _) = phase_report(raw);
                if rep.ok == 0 {
                    return Err(format!(
                        "warm-up against {} had no successful request: {:?}",
                        t.name, rep.errors
                    ));
                }
            }
        }
        for round in 1..=o.rounds {
            let order = if round % 2 == 1 {
                [&direct, &gateway]
            } else {
                [&gateway, &direct]
            };
            for t in order {
                let raw = run_phase(
                    t.clone(),
                    mode,
                    round,
                    body.clone(),
                    o.rate,
                    o.duration,
                    o.timeout,
                    &watch,
                )
                .await
                .map_err(|e| e.to_string())?;
                let (rep, s) = phase_report(raw);
                eprintln!(
                    "[{mode:?}] round {round} {:<7} ok {:>6} err {:>3}  p50 {:>7.1} µs  p99 {:>7.1} µs  lag p99 {:>6.1} µs  sluice CPU {:>5.2} s",
                    rep.target,
                    rep.ok,
                    rep.errors.values().sum::<u64>(),
                    rep.latency.p50_us,
                    rep.latency.p99_us,
                    rep.dispatch_lag.p99_us,
                    rep.cpu_secs.get("sluice").copied().unwrap_or(f64::NAN)
                );
                reports.push(rep);
                samples.push(s);
            }
        }
    }
    let mut modes = Vec::new();
    for &mode in &o.modes {
        let d = summarize(&reports, &samples, mode, "direct");
        let g = summarize(&reports, &samples, mode, "gateway");
        let by_round = (1..=o.rounds)
            .map(|r| {
                let p = |t: &str| {
                    reports
                        .iter()
                        .find(|p| p.mode == mode && p.round == r && p.target == t)
                        .map(|p| p.latency.p99_us)
                        .unwrap_or(f64::NAN)
                };
                p("gateway") - p("direct")
            })
            .collect();
        let added = Added {
            p50_us: g.latency.p50_us - d.latency.p50_us,
            p90_us: g.latency.p90_us - d.latency.p90_us,
            p99_us: g.latency.p99_us - d.latency.p99_us,
            p999_us: g.latency.p999_us - d.latency.p999_us,
            mean_us: g.latency.mean_us - d.latency.mean_us,
            p99_by_round_us: by_round,
        };
        modes.push(ModeSummary {
            mode,
            direct: d,
            gateway: g,
            added,
        });
    }
    let hwm = o.gateway_pid.and_then(|p| status_kb(p, "VmHWM:"));
    let rss_end = o.gateway_pid.and_then(|p| status_kb(p, "VmRSS:"));
    let up_hwm = o.upstream_pid.and_then(|p| status_kb(p, "VmHWM:"));
    let rss_sampled = reports
        .iter()
        .filter_map(|p| p.rss_max_kb.get("sluice"))
        .copied()
        .max()
        .unwrap_or(0);
    let errors: u64 = modes
        .iter()
        .map(|m| m.direct.errors + m.gateway.errors)
        .sum();
    // The added latency of every mode measured (streams timed to their last byte).
    let latency_ok = modes
        .iter()
        .all(|m| m.added.p50_us < o.target_p50_us && m.added.p99_us < o.target_p99_us);
    let rss_ok = hwm
        .map(|kb| (kb as f64) < o.target_rss_mb * 1024.0)
        .unwrap_or(false);
    let pass = latency_ok && rss_ok && errors == 0;
    let report = Report {
        rate: o.rate,
        duration_s: o.duration,
        warmup_s: o.warmup,
        rounds: o.rounds,
        modes,
        gateway_vm_hwm_kb: hwm,
        gateway_vm_rss_end_kb: rss_end,
        gateway_rss_max_sampled_kb: rss_sampled,
        upstream_vm_hwm_kb: up_hwm,
        target_p50_us: o.target_p50_us,
        target_p99_us: o.target_p99_us,
        target_rss_mb: o.target_rss_mb,
        pass,
        phases: reports,
    };
    print!("{}", render(&report));
    if let Some(path) = &o.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(pass)
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsluice latency benchmark: {:.0} req/s offered, {} round(s) of {} s per target (after {} s warm-up), loopback\n",
        r.rate, r.rounds, r.duration_s, r.warmup_s
    );
    let _ = writeln!(
        out,
        "| mode      | target  | req/s  | ok     | err | p50 µs  | p90 µs  | p99 µs  | p99.9 µs | max µs   | sluice CPU µs/req | upstream CPU µs/req | loadgen CPU µs/req |"
    );
    let _ = writeln!(
        out,
        "|-----------|---------|--------|--------|-----|---------|---------|---------|----------|----------|-------------------|---------------------|--------------------|"
    );
    for m in &r.modes {
        for (name, t) in [("direct", &m.direct), ("gateway", &m.gateway)] {
            let cpu = |k: &str| {
                t.cpu_us_per_req
                    .get(k)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                out,
                "| {:<9} | {:<7} | {:>6.0} | {:>6} | {:>3} | {:>7.1} | {:>7.1} | {:>7.1} | {:>8.1} | {:>8.1} | {:>17} | {:>19} | {:>18} |",
                format!("{:?}", m.mode).to_lowercase(),
                name,
                t.offered_rps,
                t.ok,
                t.errors,
                t.latency.p50_us,
                t.latency.p90_us,
                t.latency.p99_us,
                t.latency.p999_us,
                t.latency.max_us,
                cpu("sluice"),
                cpu("upstream"),
                cpu("loadgen")
            );
        }
        let a = &m.added;
        let _ = writeln!(
            out,
            "| {:<9} | added   |        |        |     | {:>+7.1} | {:>+7.1} | {:>+7.1} | {:>+8.1} |          |                   |                     |                    |",
            format!("{:?}", m.mode).to_lowercase(),
            a.p50_us,
            a.p90_us,
            a.p99_us,
            a.p999_us
        );
    }
    let _ = writeln!(out);
    for m in &r.modes {
        let rounds: Vec<String> = m
            .added
            .p99_by_round_us
            .iter()
            .map(|v| format!("{v:+.1}"))
            .collect();
        let _ = writeln!(
            out,
            "{:?}: added mean {:+.1} µs; added p99 by round: {} µs; generator dispatch lag p99: direct {:.1} µs, gateway {:.1} µs; sluice context switches per request: {:.2}",
            m.mode,
            m.added.mean_us,
            rounds.join(", "),
            m.direct.dispatch_lag.p99_us,
            m.gateway.dispatch_lag.p99_us,
            m.gateway.ctx_switches_per_req.get("sluice").copied().unwrap_or(f64::NAN)
        );
    }
    let mb = |kb: Option<u64>| {
        kb.map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let _ = writeln!(
        out,
        "sluice memory: peak RSS (VmHWM) {}, max sampled VmRSS during phases {}, VmRSS at end {}",
        mb(r.gateway_vm_hwm_kb),
        mb(Some(r.gateway_rss_max_sampled_kb)),
        mb(r.gateway_vm_rss_end_kb)
    );
    let added: Vec<String> = r
        .modes
        .iter()
        .map(|m| {
            format!(
                "{} {:+.1} / {:+.1} µs",
                m.mode.name(),
                m.added.p50_us,
                m.added.p99_us
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "target: added p50 < {:.0} µs and p99 < {:.0} µs in every mode ({}); peak RSS < {:.0} MB: {}  => {}",
        r.target_p50_us,
        r.target_p99_us,
        added.join(", "),
        r.target_rss_mb,
        mb(r.gateway_vm_hwm_kb),
        if r.pass { "PASS" } else { "FAIL" }
    );
    out
}

// ---------------------------------------------------------------------------------------
// wait-ready

fn wait_ready(args: &[String]) -> i32 {
    let Some(url) = args.first() else {
        eprintln!("usage: bench-loadgen wait-ready URL [--timeout S]");
        return 2;
    };
    let secs: f64 = match args.get(1).map(String::as_str) {
        Some("--timeout") => args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20.0),
        _ => 20.0,
    };
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("wait-ready: only http:// URLs");
        return 2;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get_status(authority, path) {
            Ok(200) => return 0,
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("wait-ready: {url} not ready after {secs} s ({last})");
    1
}

fn get_status(authority: &str, path: &str) -> std::io::Result<u16> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))
}
