//! The phases of the response-cache benchmark (see main.rs for what each measures):
//! warm-up, the hit/miss ratio one request at a time, closed loops of misses, the
//! connection pool's fill and the open-loop hit rates; plus the check every response
//! gets and the CPU readings around a phase.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{
    self, answer_part, chat_body, completion_tokens, find, CacheStatus, Conn, Pacer,
};
use crate::pool::Pool;
use crate::report::{dist, HitPhase, MissPhase, Ratio};
use crate::Opts;

// ---------------------------------------------------------------------------------------
// One exchange and its check

/// What a response must be: its `x-sluice-cache`, and for hits the reference answer.
#[derive(Clone)]
struct Expect {
    cache: CacheStatus,
    answer: Option<Rc<Vec<u8>>>,
}

/// A successful exchange: whether the cache status was the expected one, the tokens.
struct Checked {
    expected_cache: bool,
    cache: CacheStatus,
    tokens: Option<u64>,
}

async fn exchange(conn: &mut Conn, request: &[u8], expect: &Expect) -> Result<Checked, String> {
    let reply = conn.exchange(request).await.map_err(str::to_owned)?;
    if reply.status != 200 {
        return Err(format!("http_{}", reply.status));
    }
    let body = conn.body();
    if find(body, b"\"chat.completion\"").is_none() {
        return Err("bad_body".into());
    }
    if reply.cache == CacheStatus::Hit {
        if let Some(want) = &expect.answer {
            if answer_part(body) != Some(want.as_slice()) {
                return Err("answer_differs".into());
            }
        }
    }
    Ok(Checked {
        expected_cache: reply.cache == expect.cache,
        cache: reply.cache,
        tokens: if expect.cache == CacheStatus::Miss {
            completion_tokens(body)
        } else {
            None
        },
    })
}

#[derive(Default)]
struct Tally {
    lat_ns: Vec<u64>,
    lag_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
    wrong_cache: BTreeMap<String, u64>,
    tokens: Vec<u64>,
    in_flight: usize,
    last_end: Option<Instant>,
}

impl Tally {
    fn record(
        &mut self,
        t0: Instant,
        r: Result<Result<Checked, String>, tokio::time::error::Elapsed>,
    ) -> bool {
        let end = Instant::now();
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
        match r {
            Ok(Ok(c)) => {
                self.lat_ns.push((end - t0).as_nanos() as u64);
                if !c.expected_cache {
                    *self
                        .wrong_cache
                        .entry(c.cache.as_str().to_owned())
                        .or_default() += 1;
                }
                self.tokens.extend(c.tokens);
                true
            }
            Ok(Err(e)) => {
                *self.errors.entry(e).or_default() += 1;
                false
            }
            Err(_) => {
                *self.errors.entry("timeout".into()).or_default() += 1;
                false
            }
        }
    }
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

/// CPU seconds of sluice and of this process, read together.
struct CpuMark {
    at: Instant,
    sluice: Option<f64>,
    me: Option<f64>,
    sluice_cs: Option<u64>,
}

impl CpuMark {
    fn now(pid: Option<u32>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            sluice: pid.and_then(|p| client::cpu_secs(&p.to_string())),
            me: client::cpu_secs("self"),
            sluice_cs: pid.and_then(client::ctx_switches),
        }
    }
    /// (sluice cores, loadgen cores, sluice CPU seconds, loadgen CPU seconds) since `self`.
    fn since(&self, pid: Option<u32>) -> (f64, f64, f64, f64) {
        let end = CpuMark::now(pid);
        let wall = (end.at - self.at).as_secs_f64().max(1e-9);
        let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let (s, m) = (d(self.sluice, end.sluice), d(self.me, end.me));
        (s / wall, m / wall, s, m)
    }
}

// ---------------------------------------------------------------------------------------
// Phases

pub struct Ctx {
    pub o: Opts,
    /// The next N for a miss prompt.
    pub next_n: Cell<u64>,
    /// The hit workload's keep-alive connections.
    pub pool: Rc<Pool>,
}

impl Ctx {
    fn miss_request(&self) -> Vec<u8> {
        let n = self.next_n.get();
        self.next_n.set(n + 1);
        self.o
            .endpoint
            .request(&chat_body(&self.o.model, n, self.o.max_tokens))
    }

    fn hit_request(&self) -> Vec<u8> {
        self.o
            .endpoint
            .request(&chat_body(&self.o.model, 12, self.o.max_tokens))
    }
}

/// Sends the hit request until it is answered from the cache; returns the first
/// request's cache status and the reference answer.
pub async fn warm_up(ctx: &Ctx) -> Result<(CacheStatus, Vec<u8>), String> {
    let req = ctx.hit_request();
    let mut conn = Conn::connect(ctx.o.endpoint.addr).await?;
    let any = Expect {
        cache: CacheStatus::Hit,
        answer: None,
    };
    let first = tokio::time::timeout(ctx.o.miss_timeout, exchange(&mut conn, &req, &any))
        .await
        .map_err(|_| "the first request timed out".to_owned())??;
    for _ in 0..200 {
        if !conn.reusable() {
            conn = Conn::connect(ctx.o.endpoint.addr).await?;
        }
        let c = tokio::time::timeout(ctx.o.timeout, exchange(&mut conn, &req, &any))
            .await
            .map_err(|_| "a warm-up request timed out".to_owned())??;
        if c.cache == CacheStatus::Hit {
            let answer = answer_part(conn.body()).ok_or("a hit without choices")?;
            return Ok((first.cache, answer.to_vec()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(
        "the repeated request was never answered with x-sluice-cache: hit (is the cache on?)"
            .into(),
    )
}

/// One connection, one request at a time: hits with misses spread evenly among them.
pub async fn ratio(ctx: &Ctx, reference: &Rc<Vec<u8>>) -> Ratio {
    let (nh, nm) = (ctx.o.ratio_hits, ctx.o.ratio_misses);
    let hit_req = ctx.hit_request();
    let hit = Expect {
        cache: CacheStatus::Hit,
        answer: Some(reference.clone()),
    };
    let miss = Expect {
        cache: CacheStatus::Miss,
        answer: None,
    };
    let (mut hits, mut misses) = (Tally::default(), Tally::default());
    let mut conn: Option<Conn> = None;
    let total = nh + nm;
    for i in 0..total {
        let is_miss = (i + 1) * nm / total > i * nm / total;
        let (req, expect, timeout, tally) = if is_miss {
            (ctx.miss_request(), &miss, ctx.o.miss_timeout, &mut misses)
        } else {
            (hit_req.clone(), &hit, ctx.o.timeout, &mut hits)
        };
        let t0 = Instant::now();
        let r = tokio::time::timeout(timeout, async {
            if conn.is_none() {
                conn = Some(Conn::connect(ctx.o.endpoint.addr).await?);
            }
            let c = conn.as_mut().ok_or("connect")?;
            exchange(c, &req, expect).await
        })
        .await;
        let ok = tally.record(t0, r);
        if !ok || !conn.as_ref().is_some_and(Conn::reusable) {
            conn = None;
        }
    }
    let wrong = hits
        .wrong_cache
        .values()
        .chain(misses.wrong_cache.values())
        .sum();
    let mut errors = hits.errors.clone();
    for (k, v) in &misses.errors {
        *errors.entry(k.clone()).or_default() += v;
    }
    let (h, m) = (dist(&mut hits.lat_ns), dist(&mut misses.lat_ns));
    let p50_ratio = m.p50_us / h.p50_us;
    Ratio {
        pass: p50_ratio >= ctx.o.target_ratio && errors.is_empty() && wrong == 0,
        p50_ratio,
        miss_completion_tokens_mean: mean(&misses.tokens),
        hits: h,
        misses: m,
        errors,
        wrong_status: wrong,
    }
}

/// A closed loop of misses: `c` workers, each on its own connection, for the duration.
pub async fn misses(ctx: Rc<Ctx>, c: usize) -> MissPhase {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let expect = Expect {
        cache: CacheStatus::Miss,
        answer: None,
    };
    let cpu = CpuMark::now(ctx.o.sluice_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(ctx.o.miss_duration);
    let mut workers = Vec::new();
    for _ in 0..c {
        let (ctx, tally, expect) = (ctx.clone(), tally.clone(), expect.clone());
        workers.push(tokio::task::spawn_local(async move {
            let mut conn: Option<Conn> = None;
            while Instant::now() < deadline {
                let req = ctx.miss_request();
                let t0 = Instant::now();
                let r = tokio::time::timeout(ctx.o.miss_timeout, async {
                    if conn.is_none() {
                        conn = Some(Conn::connect(ctx.o.endpoint.addr).await?);
                    }
                    let c = conn.as_mut().ok_or("connect")?;
                    exchange(c, &req, &expect).await
                })
                .await;
                let ok = tally.borrow_mut().record(t0, r);
                if !ok || !conn.as_ref().is_some_and(Conn::reusable) {
                    conn = None;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let (sluice_cores, _, _, _) = cpu.since(ctx.o.sluice_pid);
    let wall = (Instant::now() - cpu.at).as_secs_f64();
    let mut t = std::mem::take(&mut *tally.borrow_mut());
    MissPhase {
        concurrency: c,
        ok: t.lat_ns.len(),
        rps: t.lat_ns.len() as f64 / wall,
        completion_tokens_mean: mean(&t.tokens),
        latency: dist(&mut t.lat_ns),
        errors: t.errors,
        not_miss: t.wrong_cache,
        sluice_cores,
    }
}

/// Open loop: `rate * secs` identical requests, request i due at start + i/rate.
async fn open_loop(
    ctx: Rc<Ctx>,
    request: Rc<Vec<u8>>,
    expect: Expect,
    rate: f64,
    secs: f64,
) -> std::io::Result<(Tally, f64, Instant)> {
    let planned = (rate * secs).round().max(1.0) as u64;
    let period = Duration::from_nanos((1e9 / rate).round() as u64);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let pacer = Pacer::new(period)?;
    let start = Instant::now();
    let mut i: u64 = 0;
    while i < planned {
        let n = pacer.tick().await?;
        for _ in 0..n.min(planned - i) {
            i += 1;
            let due = start + period.mul_f64(i as f64);
            let (ctx, request, expect, tally) =
                (ctx.clone(), request.clone(), expect.clone(), tally.clone());
            tally.borrow_mut().in_flight += 1;
            tokio::task::spawn_local(async move {
                let t0 = Instant::now();
                let r = tokio::time::timeout(ctx.o.timeout, async {
                    let mut lease = ctx.pool.checkout().await?;
                    let r = exchange(lease.conn(), &request, &expect).await;
                    if r.is_ok() && lease.conn().reusable() {
                        lease.release();
                    }
                    r
                })
                .await;
                let mut t = tally.borrow_mut();
                t.in_flight -= 1;
                t.lag_ns
                    .push(t0.saturating_duration_since(due).as_nanos() as u64);
                t.record(t0, r);
            });
        }
    }
    let dispatch_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + ctx.o.timeout + Duration::from_secs(1);
    while tally.borrow().in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t = std::mem::take(&mut *tally.borrow_mut());
    Ok((t, dispatch_secs, start))
}

/// Opens the hit workload's connections one by one and sends a hit on each, so that
/// sluice has accepted them all before the first phase.
pub async fn fill(ctx: &Ctx, reference: &Rc<Vec<u8>>) -> Result<(), String> {
    let req = ctx.hit_request();
    let expect = Expect {
        cache: CacheStatus::Hit,
        answer: Some(reference.clone()),
    };
    for _ in 0..ctx.pool.size() {
        let mut conn = Conn::connect(ctx.o.endpoint.addr).await?;
        let c = tokio::time::timeout(ctx.o.timeout, exchange(&mut conn, &req, &expect))
            .await
            .map_err(|_| "opening the pool: a request timed out".to_owned())??;
        if !c.expected_cache || !conn.reusable() {
            return Err("opening the pool: a response was not a keep-alive hit".into());
        }
        ctx.pool.add(conn);
    }
    Ok(())
}

pub async fn hit_rate(
    ctx: Rc<Ctx>,
    reference: &Rc<Vec<u8>>,
    rate: f64,
) -> Result<HitPhase, String> {
    let request = Rc::new(ctx.hit_request());
    let expect = Expect {
        cache: CacheStatus::Hit,
        answer: Some(reference.clone()),
    };
    if ctx.o.warmup > 0.0 {
        open_loop(
            ctx.clone(),
            request.clone(),
            expect.clone(),
            rate,
            ctx.o.warmup,
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let (opened, waited) = (ctx.pool.opened.get(), ctx.pool.waited.get());
    let cpu = CpuMark::now(ctx.o.sluice_pid);
    let (mut t, dispatch_secs, start) =
        open_loop(ctx.clone(), request, expect, rate, ctx.o.duration)
            .await
            .map_err(|e| e.to_string())?;
    let (sluice_cores, loadgen_cores, sluice_s, me_s) = cpu.since(ctx.o.sluice_pid);
    let cs = match (
        cpu.sluice_cs,
        ctx.o.sluice_pid.and_then(client::ctx_switches),
    ) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64,
        _ => f64::NAN,
    };
    let ok = t.lat_ns.len();
    let span = t.last_end.map_or(dispatch_secs, |e| {
        (e - start).as_secs_f64().max(dispatch_secs)
    });
    let achieved_rps = ok as f64 / span;
    let latency = dist(&mut t.lat_ns);
    let per_req = |s: f64| {
        if ok > 0 {
            s * 1e6 / ok as f64
        } else {
            f64::NAN
        }
    };
    let pass = t.errors.is_empty()
        && t.wrong_cache.is_empty()
        && achieved_rps >= 0.98 * rate
        && latency.p99_us < ctx.o.target_p99_us;
    Ok(HitPhase {
        offered_rps: rate,
        planned: (rate * ctx.o.duration).round().max(1.0) as u64,
        ok,
        achieved_rps,
        latency,
        dispatch_lag: dist(&mut t.lag_ns),
        errors: t.errors,
        not_hit: t.wrong_cache,
        sluice_cores,
        sluice_cpu_us_per_req: per_req(sluice_s),
        loadgen_cores,
        loadgen_cpu_us_per_req: per_req(me_s),
        sluice_ctx_switches_per_req: per_req(cs) / 1e6,
        reconnects: ctx.pool.opened.get() - opened,
        queued: ctx.pool.waited.get() - waited,
        pass,
    })
}
