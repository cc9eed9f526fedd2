"""The soak's verdict: counts per kind, growth after warm-up, summary.json, the plot.

Growth under load: the median of the last window (the run's last `--window-seconds`)
against the median of the first window after warm-up (from `--warmup-fraction` x the run
on), for RSS, open fds and tokio tasks; medians, so that one sample taken during a burst
does not decide, and without the samples taken while the upstream was failing (fewer
requests in flight then: they fail fast) or at a quiet point. It decides for RSS. Open fds
and tokio tasks follow the number of open connections under load (from one 10 s sample to
the next they halve or double), so they are judged at the quiet points (soak.py): the end
against after warm-up; growth over `--max-growth` and over `--quiet-slack` (an absolute
count: the quiet counts are small) fails. The run passes when no request got an unexpected answer,
the generator never fell behind, none of the three grew more than `--max-growth`, sluice
is still up and ready, and, with the limits on, the bursts did get 429s.

`python report.py OUT_DIR` redraws the plot from OUT_DIR/samples.csv and summary.json.
"""

import csv
import dataclasses
import json
import os
import statistics
import sys
from collections import Counter, defaultdict

GROWTH = [("rss_mb", "RSS (MB)"), ("fds", "open fds"), ("tasks", "tokio alive tasks")]


def read_samples(out):
    with open(os.path.join(out, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "state":
                r[k] = float(v) if v not in ("", None) else None
    return rows


def growth(rows, quiet, a, duration_s):
    """Per metric: window medians under load (first window after warm-up, last window) and,
    for fds and tasks, the quiet points; `ok` by the quiet points for fds and tasks (under
    load they follow the open connections), by the window medians for RSS."""
    out = {}
    warmup_s, window_s = a.warmup_fraction * duration_s, a.window_seconds
    steady = [r for r in rows if r["state"] == "ok"]
    first = [r for r in steady if warmup_s <= r["t_s"] < warmup_s + window_s]
    last = [r for r in steady if r["t_s"] >= duration_s - window_s]
    for key, _ in GROWTH:
        g = {}
        xs = [r[key] for r in first if r[key] is not None]
        ys = [r[key] for r in last if r[key] is not None]
        if xs and ys:
            m0, m1 = statistics.median(xs), statistics.median(ys)
            g.update(first_median=m0, last_median=m1, growth=(m1 - m0) / m0 if m0 else None,
                     max=max(xs + ys), samples=[len(xs), len(ys)])
        if key == "rss_mb":
            g["judged_on"] = "window medians under load"
            g["ok"] = g.get("growth") is not None and g["growth"] <= a.max_growth
        else:
            q0 = quiet.get("after_warmup", {}).get(key)
            q1 = quiet.get("end", {}).get(key)
            g["judged_on"] = "quiet points"
            if q0 is None or q1 is None:
                g["ok"] = False
            else:
                g.update(quiet_after_warmup=q0, quiet_end=q1,
                         quiet_growth=(q1 - q0) / q0 if q0 else None)
                g["ok"] = q1 - q0 <= max(a.max_growth * q0, a.quiet_slack)
        out[key] = g
    return out


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def per_kind(recs):
    kinds = defaultdict(list)
    for r in recs:
        kinds[r.kind].append(r)
    table = {}
    for name, rs in sorted(kinds.items()):
        lat = [1000 * (r.t1 - r.t0) for r in rs if r.status == 200 and r.outcome == "ok"]
        table[name] = {
            "requests": len(rs),
            "status": dict(Counter(str(r.status) for r in rs)),
            "outcome": dict(Counter(r.outcome for r in rs)),
            "cache_hits": sum(r.cache == "hit" for r in rs),
            "unexpected": sum(not r.expected for r in rs),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        }
    return table


def finish(a, recs, facts):
    rows = read_samples(a.out)
    duration = a.minutes * 60
    warmup = a.warmup_fraction * duration
    grown = growth(rows, facts["quiet"], a, duration)
    soak = [r for r in recs if r.phase == "soak"]
    bursts = [r for r in soak if r.kind == "burst"]
    unexpected = [r for r in recs if not r.expected]
    checks = {
        "no unexpected answers": not unexpected,
        "generator kept up (no arrival dropped)": facts["dropped"] == 0,
        "sluice alive and ready after the run": facts["sluice_alive"] and facts["ready_after"] == 200,
        **{f"{label} growth <= {a.max_growth:.0%}": grown[key]["ok"] for key, label in GROWTH},
    }
    if a.limits:
        checks["bursts got 429 (limits on)"] = any(r.status == 429 for r in bursts)
    summary = {
        "passed": all(checks.values()), "checks": checks,
        "settings": {k: v for k, v in vars(a).items() if k not in ("pid",)},
        **facts,
        "requests": len(recs), "soak_requests": len(soak),
        "achieved_rps": (len(soak) - len(bursts)) / facts["soak_seconds"],
        "cache_hits": sum(r.cache == "hit" for r in soak),
        "cancelled": sum(r.outcome == "cancelled" for r in soak),
        "bursts": {"requests": len(bursts), "status": dict(Counter(str(r.status) for r in bursts))},
        "upstream_errors_in_windows": sum(r.expected and r.status in (502, 503, 504) for r in soak),
        "unexpected": len(unexpected),
        "unexpected_examples": [dataclasses.asdict(r) for r in unexpected[:20]],
        "growth": grown, "warmup_s": warmup, "window_s": a.window_seconds,
        "kinds": per_kind(soak),
    }
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot(a.out, rows, summary)
    print(markdown(summary))
    return 0 if summary["passed"] else 3


def fmt(v):
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def markdown(s):
    cap = s["capacity_rps"]
    lines = [
        f"## Soak: {'PASS' if s['passed'] else 'FAIL'}",
        "",
        f"- capacity {cap:.1f} req/s (closed loop) -> offered {s['rate_rps']:.1f} req/s"
        if cap else f"- offered {s['rate_rps']:.1f} req/s (fixed)",
        f"- {s['soak_seconds'] / 60:.1f} min, {s['soak_requests']} requests "
        f"({s['achieved_rps']:.1f} req/s + bursts), {s['cache_hits']} cache hits, "
        f"{s['cancelled']} cancelled mid-stream",
        f"- bursts: {s['bursts']['requests']} requests, status {s['bursts']['status']}",
        f"- upstream failure windows (s): {s['windows']}; "
        f"{s['upstream_errors_in_windows']} expected 502/503/504 in them",
        f"- unexpected answers: {s['unexpected']}; arrivals dropped: {s['dropped']}",
        "- idle before the capacity phase / quiet point at the end: "
        + ", ".join(f"{label} {fmt(s['idle_before'].get(key))} / "
                    f"{fmt(s['quiet'].get('end', {}).get(key))}" for key, label in GROWTH),
        "",
        "| | under load: first window after warm-up (median) | last window (median) | growth "
        "| quiet point after warm-up | quiet point at the end | growth | judged on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in GROWTH:
        g = s["growth"][key]
        q = ("-", "-", "-")
        if "quiet_end" in g:
            qg = f"{g['quiet_growth']:+.1%}" if g["quiet_growth"] is not None else "-"
            q = (fmt(g["quiet_after_warmup"]), fmt(g["quiet_end"]), qg)
        w = ("-", "-", "-")
        if g.get("growth") is not None:
            w = (fmt(g["first_median"]), fmt(g["last_median"]), f"{g['growth']:+.1%}")
        lines.append(f"| {label} | {' | '.join(w)} | {' | '.join(q)} | {g['judged_on']} |")
    lines += ["", "| kind | requests | status | outcome | cache hits | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|"]
    for name, k in s["kinds"].items():
        p50 = f"{k['p50_ms']:.0f}" if k["p50_ms"] is not None else "-"
        p99 = f"{k['p99_ms']:.0f}" if k["p99_ms"] is not None else "-"
        lines.append(f"| {name} | {k['requests']} | {k['status']} | {k['outcome']} | "
                     f"{k['cache_hits']} | {p50} | {p99} |")
    lines += ["", "| check | |", "|---|---|"]
    lines += [f"| {c} | {'ok' if v else 'FAILED'} |" for c, v in s["checks"].items()]
    return "\n".join(lines)


def plot(out, rows, s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    series = GROWTH + [("done", "answers / s")]
    for ax, (key, label) in zip(axes, series):
        ys = [(r[key] / s["settings"]["sample_every"] if key == "done" else r[key])
              if r[key] is not None else float("nan") for r in rows]
        ax.plot(t, ys, lw=1.2)
        ax.set_ylabel(label)
        ax.axvspan(0, s["warmup_s"] / 60, color="0.85", lw=0)
        for a, b in s["windows"]:
            ax.axvspan(a / 60, b / 60, color="tab:red", alpha=0.15, lw=0)
        g = s["growth"].get(key)
        if g and g.get("growth") is not None:
            w0, d = s["warmup_s"] / 60, s["settings"]["minutes"]
            ax.hlines(g["first_median"], w0, w0 + s["window_s"] / 60, colors="tab:green")
            ax.hlines(g["last_median"], d - s["window_s"] / 60, d, colors="tab:orange")
            title = f"{label}: {g['growth']:+.1%} under load"
            if g.get("quiet_growth") is not None:
                title += f", {g['quiet_growth']:+.1%} at the quiet points (judged)"
            ax.set_title(title, fontsize=9, loc="right")
        for q in s.get("quiet", {}).values():
            if key in q and "t_s" in q:
                ax.plot([q["t_s"] / 60], [q[key]], "kv", ms=5)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (grey: warm-up; red: upstream failing; green/orange: window medians; "
                       "triangles: quiet points)")
    fig.suptitle(f"sluice soak: {s['rate_rps']:.1f} req/s + bursts, "
                 f"{'PASS' if s['passed'] else 'FAIL'}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "soak.svg"))
    plt.close(fig)


if __name__ == "__main__":
    d = sys.argv[1]
    with open(os.path.join(d, "summary.json")) as f:
        plot(d, read_samples(d), json.load(f))
