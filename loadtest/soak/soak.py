"""The soak driver (loadtest/soak.sh runs it): capacity, then hours-long mixed load, sampled.

Phases, against a sluice already started on loopback:

1. capacity: `--capacity-concurrency` closed-loop clients send the mix (traffic.MIX) for
   `--capacity-seconds`; requests/s over its last 80% is the capacity (skipped when
   `--rate` is given);
2. soak: open-loop Poisson arrivals of the mix at `--load-fraction` x capacity for
   `--minutes`, plus a burst of `--burst-size` requests from the `soak-burst` tenant every
   `--burst-every` s (above its rate limit), and a failure of the test upstream for
   `--fail-for` s every `--fail-every` s (503, then connection refused, alternately);
3. drain: wait for the last answers, then a quiet point.

Quiet points (after warm-up, and at the end): the load pauses, the last answers come in,
the clients close their connections and the test upstream closes its idle ones; a few
seconds later sluice's open fds and tokio tasks are its own, exact counts, while under load
they follow the number of open connections (they halve or double from one sample to the
next). report.py judges fds and tasks at the quiet points, RSS on the samples under load.

Every `--sample-every` s it samples sluice's RSS (VmRSS), open fds, threads, and from
/metrics tokio's alive tasks, requests in flight and the cache's size, into samples.csv;
every request is judged (traffic.py) and counted. report.py writes summary.json and the
plot and decides. Exit status: 0 passed, 3 failed (unexpected status or growth), other
values are errors.
"""

import argparse
import asyncio
import csv
import json
import os
import random
import sys
import time

import aiohttp

import report
from traffic import BURST, MIX, Traffic


def log(msg):
    print(f"[soak.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_sample(pid):
    out = {"rss_mb": None, "fds": None, "threads": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) / 1024
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


METRICS = {
    "sluice_runtime_alive_tasks": "tasks",
    "sluice_http_requests_in_flight": "in_flight",
    "sluice_cache_bytes": "cache_bytes",
    "sluice_cache_entries": "cache_entries",
}


async def metrics_sample(session, base):
    out = {v: None for v in METRICS.values()}
    try:
        async with session.get(base + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return out
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            out[METRICS[name]] = float(value)
    return out


class Soak:
    def __init__(self, a):
        self.a = a
        self.base = a.gateway.rstrip("/")
        self.traffic = Traffic(
            self.base + "/v1", {"engine": a.engine_model, "upstream": a.upstream_model},
            a.limits == 1, engine_tokens=a.max_tokens,
        )
        self.rng = random.Random(a.seed)
        self.recs = []
        self.tasks = set()
        self.dropped = 0
        self.unexpected = 0
        self.soak_done = 0
        self.mode = "ok"
        self.paused = False
        self.quiet_points = {}
        self.start = time.monotonic()
        self.sessions = {}

    def session(self, key, keep_alive=True):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if keep_alive:
            conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        else:
            conn = aiohttp.TCPConnector(limit=0, force_close=True)
        return aiohttp.ClientSession(headers=headers, connector=conn)

    def pick(self):
        return self.rng.choices(MIX, weights=[k.weight for k in MIX])[0]

    async def one(self, session, kind, phase):
        rec = await self.traffic.send(session, kind, phase, self.a.request_timeout)
        self.recs.append(rec)
        self.soak_done += phase == "soak"
        if not rec.expected:
            self.unexpected += 1
            if self.unexpected <= 20:
                log(f"unexpected: {rec.kind} {rec.status} {rec.outcome} ({rec.why})")
        return rec

    def spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def capacity(self):
        a, main = self.a, self.sessions["main"]
        start = time.monotonic()
        deadline, counted_from = start + a.capacity_seconds, start + 0.2 * a.capacity_seconds

        async def client():
            done = 0
            while time.monotonic() < deadline:
                rec = await self.one(main, self.pick(), "capacity")
                done += counted_from <= rec.t1 <= deadline
            return done

        log(f"capacity: {a.capacity_concurrency} closed-loop clients for {a.capacity_seconds} s")
        done = sum(await asyncio.gather(*(client() for _ in range(a.capacity_concurrency))))
        cap = done / (0.8 * a.capacity_seconds)
        log(f"capacity: {cap:.1f} requests/s ({done} answers in the last 80%)")
        return cap

    async def arrivals(self, rate, start, end):
        t = start
        while True:
            t += self.rng.expovariate(rate)
            if t >= end:
                return
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            if self.paused:
                continue
            if len(self.tasks) >= self.a.max_in_flight:
                self.dropped += 1
                continue
            self.spawn(self.one(self.sessions["main"], self.pick(), "soak"))

    async def bursts(self, start, end):
        a, k = self.a, 0
        while True:
            # Half-way between two samples, so a burst's connections are not what is sampled.
            at = start + a.sample_every / 2 + k * a.burst_every
            if at >= end:
                return
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            for _ in range(0 if self.paused else a.burst_size):
                self.spawn(self.one(self.sessions["burst"], BURST, "soak"))
            k += 1

    async def failures(self, start, end):
        a, k = self.a, 0
        async with aiohttp.ClientSession() as s:
            while True:
                at = start + a.fail_first + k * a.fail_every
                if at + a.fail_for >= end:
                    return
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                while self.paused:
                    await asyncio.sleep(0.1)
                mode = ("503", "refuse")[k % 2]
                # Recorded before the order goes out: no request can fail before its start.
                t0 = time.monotonic()
                window = [t0, t0 + a.fail_for]
                self.traffic.windows.append(window)
                self.mode = mode
                async with s.post(f"{a.upstream_control}/fail?mode={mode}&seconds={a.fail_for}") as r:
                    if r.status != 200:
                        raise RuntimeError(f"the upstream refused to fail: {r.status}")
                await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
                # Ends when the upstream says it has recovered (it rebinds after `refuse`).
                while True:
                    async with s.get(f"{a.upstream_control}/state") as r:
                        if (await r.json())["mode"] == "ok":
                            break
                    await asyncio.sleep(0.05)
                window[1] = time.monotonic()
                self.mode = "ok"
                log(f"upstream failure {k + 1} ({mode}) over")
                k += 1

    async def sampler(self, start, end, writer, fh):
        a, k, last_done = self.a, 0, 0
        plain = self.sessions["plain"]
        while True:
            at = start + k * a.sample_every
            if at > end:
                return
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            row = {"t_s": round(time.monotonic() - start, 1)}
            row.update(proc_sample(a.pid))
            row.update(await metrics_sample(plain, self.base))
            row["done"] = self.soak_done - last_done
            last_done = self.soak_done
            row["unexpected"] = self.unexpected
            row["state"] = "quiet" if self.paused else self.mode
            writer.writerow(row)
            fh.flush()
            if k % 6 == 0:
                log(f"t={row['t_s']:.0f}s rss={row['rss_mb']:.1f}MB fds={row['fds']} "
                    f"tasks={row['tasks']} in_flight={len(self.tasks)} "
                    f"unexpected={row['unexpected']}")
            k += 1

    async def quiet(self, label, at=None):
        """A quiet point: no load, no client connections, no idle upstream connections; then
        sluice's fds and tasks are its own, not the load's (taken as the least of 3 reads)."""
        if at is not None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
        while self.mode != "ok":
            await asyncio.sleep(0.1)
        self.paused = True
        t0 = time.monotonic()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.a.request_timeout + 5)
        for name in ("main", "burst"):
            await self.sessions[name].close()
        self.sessions["main"] = self.session(os.environ.get("SOAK_MAIN_KEY"))
        self.sessions["burst"] = self.session(os.environ.get("SOAK_BURST_KEY"), keep_alive=False)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{self.a.upstream_control}/drop") as r:
                await r.read()
        reads = []
        for _ in range(3):
            await asyncio.sleep(1)
            reads.append({**proc_sample(self.a.pid),
                          **await metrics_sample(self.sessions["plain"], self.base)})
        point = {k: min(r[k] for r in reads if r[k] is not None) for k in reads[0]
                 if any(r[k] is not None for r in reads)}
        point["paused_s"] = round(time.monotonic() - t0, 1)
        point["t_s"] = round(time.monotonic() - self.start, 1)
        self.quiet_points[label] = point
        log(f"quiet point {label}: fds={point.get('fds')} tasks={point.get('tasks')} "
            f"rss={point.get('rss_mb', 0):.1f}MB (load paused {point['paused_s']} s)")
        self.paused = False

    async def run(self):
        a = self.a
        self.sessions = {
            "main": self.session(os.environ.get("SOAK_MAIN_KEY")),
            # A burst's connections close after their answer: no idle pool of 40 lingers.
            "burst": self.session(os.environ.get("SOAK_BURST_KEY"), keep_alive=False),
            "plain": self.session(None),
        }
        try:
            idle_before = {**proc_sample(a.pid),
                           **await metrics_sample(self.sessions["plain"], self.base)}
            cap = a.rate if a.rate else await self.capacity()
            rate = a.rate if a.rate else a.load_fraction * cap
            duration = a.minutes * 60
            log(f"soak: {rate:.1f} requests/s for {a.minutes} min")
            fields = ["t_s", "rss_mb", "fds", "threads", "tasks", "in_flight", "cache_bytes",
                      "cache_entries", "done", "unexpected", "state"]
            with open(os.path.join(a.out, "samples.csv"), "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                start = self.start = time.monotonic()
                end = start + duration
                await asyncio.gather(
                    self.arrivals(rate, start, end), self.bursts(start, end),
                    self.failures(start, end), self.sampler(start, end, writer, fh),
                    self.quiet("after_warmup", start + a.warmup_fraction * duration),
                )
                log(f"load over; waiting for {len(self.tasks)} answers")
                soak_end = time.monotonic()
                await self.quiet("end")
            try:
                async with self.sessions["plain"].get(self.base + "/readyz") as r:
                    ready_after = r.status
            except aiohttp.ClientError:
                ready_after = 0
        finally:
            for s in self.sessions.values():
                await s.close()
        facts = {
            "capacity_rps": None if a.rate else cap, "rate_rps": rate,
            "soak_seconds": soak_end - start, "dropped": self.dropped,
            "idle_before": idle_before, "quiet": self.quiet_points,
            "ready_after": ready_after, "sluice_alive": os.path.exists(f"/proc/{a.pid}"),
            "windows": [[round(s - start, 1), round(e - start, 1)] for s, e in self.traffic.windows],
        }
        return report.finish(a, self.recs, facts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--pid", type=int, required=True, help="sluice's process id")
    ap.add_argument("--upstream-control", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--engine-model", default="sluice-tiny")
    ap.add_argument("--upstream-model", default="soak-upstream")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=0, help="fixed rate (skips capacity)")
    ap.add_argument("--capacity-seconds", type=float, default=20)
    ap.add_argument("--capacity-concurrency", type=int, default=32)
    ap.add_argument("--load-fraction", type=float, default=0.7)
    ap.add_argument("--limits", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--burst-every", type=float, default=30)
    ap.add_argument("--burst-size", type=int, default=40)
    ap.add_argument("--fail-first", type=float, default=60)
    ap.add_argument("--fail-every", type=float, default=180)
    ap.add_argument("--fail-for", type=float, default=20)
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--warmup-fraction", type=float, default=0.2)
    ap.add_argument("--window-seconds", type=float, default=0,
                    help="growth window (default: 10%% of the run, at least 60 s)")
    ap.add_argument("--max-growth", type=float, default=0.10)
    ap.add_argument("--quiet-slack", type=float, default=2,
                    help="fds/tasks at the quiet points may grow this many whatever the %%")
    ap.add_argument("--max-in-flight", type=int, default=2000)
    ap.add_argument("--request-timeout", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not a.window_seconds:
        a.window_seconds = max(60.0, 0.1 * a.minutes * 60)
    sys.exit(asyncio.run(Soak(a).run()))


if __name__ == "__main__":
    main()
