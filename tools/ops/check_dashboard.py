#!/usr/bin/env python3
"""Checks the Grafana files and the Prometheus rules against the metrics sluice exports.

Operations tooling, not part of the server (tools/ops/check.sh runs it; it needs PyYAML and
promql-parser from tools/ops/.venv, which `make ops-tools` installs). What it checks:

- the metric names and label sets come FROM THE CODE: every `"sluice_..."` string literal
  in src/metrics.rs (and src/metrics/*.rs), its kind (histogram or not) from the
  constructor around it, its labels from the `&[...]` (or `&name`) that follows it;
- every expression of every panel of grafana/dashboards/*.json, with Grafana's variables
  replaced ($__rate_interval, $__interval, $__range -> 5m; $model -> .*), parses with
  promql-parser; every metric it selects is exported (`_bucket`/`_sum`/`_count` only of a
  histogram), every label it matches or groups by exists on that metric, every metric
  with a `model` label is filtered by the multi-value `$model` variable with `=~`;
- the `model` variable lists label values of a sluice metric (no other exporter's labels);
- every panel and target uses the `${datasource}` variable (a Prometheus datasource
  variable) or the uid that grafana/provisioning/datasources provisions; ids are unique;
- the provisioning files agree with each other and, when they exist, with
  docker-compose.yml (mounts, the `prometheus` host) and prometheus/prometheus.yml
  (scrape interval vs the datasource's timeInterval);
- every `expr` in prometheus/rules/*.yml parses and selects exported metrics (or series
  Prometheus makes itself: up, ALERTS, ... or ones a recording rule defines).

Usage: check_dashboard.py [--root DIR]          check everything; exit 1 on any problem
       check_dashboard.py --exprs               print each dashboard expression, Grafana
                                                variables replaced, one per line
"""

import argparse
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

try:
    import promql_parser
    import yaml
except ImportError as e:  # pragma: no cover - environment problem, say how to fix it
    sys.exit(f"check_dashboard: {e}: run `make ops-tools` and use tools/ops/.venv/bin/python")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TARGET_LABELS = {"job", "instance"}  # Prometheus adds these to every scraped series
# Series Prometheus makes itself: fine in rules and panels although sluice does not export them.
SYNTHETIC = {
    "up": {"job", "instance"},
    "scrape_duration_seconds": {"job", "instance"},
    "scrape_samples_scraped": {"job", "instance"},
    "scrape_samples_post_metric_relabeling": {"job", "instance"},
    "scrape_series_added": {"job", "instance"},
    "ALERTS": None,
    "ALERTS_FOR_STATE": None,
}
GRAFANA_DURATIONS = {
    "__rate_interval": "5m",
    "__interval": "5m",
    "__range": "5m",
    "__interval_ms": "300000",
    "__range_ms": "300000",
    "__range_s": "300",
}
KINDS = ("histogram", "gauge", "counter")  # in this order: `HistogramOpts` in an `IntGauge...`
SENTINEL = "__grafana_var_{}__"
UNREGISTERED = set()  # declared in src/metrics.rs but never registered: not exported
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


@dataclass
class Metric:
    name: str
    kind: Optional[str]  # "histogram", "counter", "gauge" or None when the code does not say
    labels: Optional[set]  # None when the code does not say


@dataclass
class Report:
    problems: list = field(default_factory=list)
    fatal: list = field(default_factory=list)  # expressions that cannot even be printed
    missing: set = field(default_factory=set)

    def add(self, where, msg, fatal=False):
        self.problems.append(f"{where}: {msg}")
        if fatal:
            self.fatal.append(f"{where}: {msg}")


# ---------------------------------------------------------------- metrics from the code


def rust_strings(src):
    """Blanks comments and replaces each string literal by `__STRn__`; returns both."""
    out, strings, i, n = [], [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif (
            c == "r"
            and re.match(r'r(#*)"', src[i : i + 40])
            and not (i and (src[i - 1].isalnum() or src[i - 1] == "_"))
        ):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end
            strings.append(src[i + 2 + len(hashes) : end])
            out.append(f" __STR{len(strings) - 1}__ ")
            i = end + 1 + len(hashes)
        elif c == '"':
            j, buf = i + 1, []
            while j < n and src[j] != '"':
                if src[j] == "\\" and j + 1 < n:
                    buf.append(src[j : j + 2])
                    j += 2
                else:
                    buf.append(src[j])
                    j += 1
            strings.append("".join(buf))
            out.append(f" __STR{len(strings) - 1}__ ")
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i : i + 4]):
            j = src.index("'", i + 2 if src[i + 1] != "\\" else i + 3)
            out.append(" ")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), strings


def exported_metrics(root):
    files = [os.path.join(root, "src", "metrics.rs")]
    files += sorted(glob.glob(os.path.join(root, "src", "metrics", "**", "*.rs"), recursive=True))
    files = [f for f in files if os.path.exists(f)]
    if not files:
        sys.exit(f"check_dashboard: no src/metrics.rs under {root}")
    metrics, unregistered = {}, set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            clean, strings = rust_strings(f.read())
        arrays = {}  # `let engine = ["backend", "tier"];` / `const L: &[&str] = &[...]`
        for m in re.finditer(
            r"\b(?:let|const|static)\s+(\w+)\s*(?::[^=;]*)?=\s*&?\s*\[([^\]]*)\]", clean
        ):
            arrays[m.group(1)] = [strings[int(k)] for k in re.findall(r"__STR(\d+)__", m.group(2))]
        for stmt in clean.split(";"):
            names = [
                strings[int(k)]
                for k in re.findall(r"__STR(\d+)__", stmt)
                if re.fullmatch(r"sluice_[a-zA-Z0-9_:]+", strings[int(k)])
            ]
            for name in names:
                kind = labels = None
                if len(names) == 1:
                    ctors = " ".join(re.findall(r"(\w+)\s*(?:::\s*\w+\s*)?[(!]", stmt)).lower()
                    kind = next((k for k in KINDS if k in ctors), None)
                    labels = set()
                    lists = re.findall(r"&\s*\[([^\]]*)\]|&\s*([A-Za-z_]\w*)\s*[,)]", stmt)
                    for literal, ident in lists:
                        if literal:
                            labels |= {
                                strings[int(k)] for k in re.findall(r"__STR(\d+)__", literal)
                            }
                        elif ident in arrays:
                            labels |= set(arrays[ident])
                        else:
                            labels = None
                            break
                    for k in re.findall(r"const_label\s*\(\s*__STR(\d+)__", stmt):
                        if labels is not None:
                            labels.add(strings[int(k)])
                    if "const_labels" in stmt:
                        labels = None
                # `let x = IntCounterVec::new(...)` is exported only once `x` is registered.
                var = re.match(r"\s*let\s+(?:mut\s+)?(\w+)\s*=", stmt)
                if (
                    var
                    and "register" in clean
                    and not re.search(
                        r"register\w*\s*\(\s*Box::new\(\s*" + var.group(1) + r"\b", clean
                    )
                ):
                    unregistered.add(name)
                    continue
                old = metrics.get(name)
                if old is None or (old.kind is None and old.labels is None):
                    metrics[name] = Metric(name, kind, labels)
    UNREGISTERED.update(unregistered - set(metrics))
    return metrics


# ---------------------------------------------------------------- grafana variables


def substitute(expr, variables, sentinel=False):
    """Replaces Grafana variables; returns (text, [unknown variable names])."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in GRAFANA_DURATIONS:
            return GRAFANA_DURATIONS[name]
        if name in ("__from", "__to"):
            return "0"
        if name in variables and variables[name].get("type") != "datasource":
            return SENTINEL.format(name) if sentinel else ".*"
        unknown.append(name)
        return m.group(0)

    return VAR_RE.sub(repl, expr), unknown


# ---------------------------------------------------------------- PromQL walking


def parse(text):
    try:
        return promql_parser.parse(text), None
    except Exception as e:  # promql-parser raises ValueError with the parser's message
        return None, str(e) or type(e).__name__


def lookup(name, metrics, recorded):
    """(Metric or None, labels available on the series or None if unknown, problem)."""
    if name in metrics:
        m = metrics[name]
        return m, m.labels, None
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in metrics:
            m = metrics[base]
            if m.kind not in (None, "histogram"):
                return m, None, f"{name}: {base} is a {m.kind}, not a histogram"
            labels = (
                None if m.labels is None else m.labels | ({"le"} if suffix == "_bucket" else set())
            )
            return m, labels, None
    if name in recorded:
        return Metric(name, None, None), None, None
    if name in SYNTHETIC:
        return Metric(name, "gauge", SYNTHETIC[name]), SYNTHETIC[name], None
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    if name in UNREGISTERED or base in UNREGISTERED:
        return (
            None,
            None,
            f"{name}: declared in src/metrics.rs but never registered, so not exported",
        )
    return None, None, f"{name} is not exported by src/metrics.rs"


class Walker:
    def __init__(self, metrics, recorded, where, report):
        self.metrics, self.recorded, self.where, self.report = metrics, recorded, where, report
        self.selectors = []  # (metric name, labels or None, [(op, label, value)])

    def problem(self, msg):
        self.report.add(self.where, msg)

    def labels(self, e):
        """Walks e; returns the label names its result carries, or None when unknown."""
        kind = type(e).__name__
        if kind == "MatrixSelector":
            return self.labels(e.vector_selector)
        if kind == "VectorSelector":
            matchers = [(str(m.op).split(".")[-1], m.name, m.value) for m in e.matchers.matchers]
            name = e.name or next(
                (v for op, n, v in matchers if n == "__name__" and op == "Equal"), None
            )
            if name is None:
                self.problem("a selector without a metric name")
                return None
            metric, labels, err = lookup(name, self.metrics, self.recorded)
            if err:
                self.problem(err)
                if metric is None:
                    self.report.missing.add(name)
            self.selectors.append((name, labels, matchers))
            if labels is not None:
                have = labels | TARGET_LABELS
                for _, label, _ in matchers:
                    if label != "__name__" and label not in have:
                        known = ", ".join(sorted(labels)) or "none"
                        self.problem(f"{name} has no label {label!r} (it has: {known})")
                return have
            return None
        if kind in ("ParenExpr", "UnaryExpr", "SubqueryExpr"):
            return self.labels(e.expr)
        if kind in ("NumberLiteral", "StringLiteral"):
            return set()
        if kind == "Call":
            got = [self.labels(a) for a in e.args]
            fn = e.func.name
            if fn in ("label_replace", "label_join", "absent", "absent_over_time"):
                return None
            if fn in ("vector", "time", "scalar", "pi"):
                return set()
            vec = [
                g
                for a, g in zip(e.args, got, strict=True)
                if type(a).__name__ not in ("NumberLiteral", "StringLiteral")
            ]
            if any(g is None for g in vec):
                return None
            out = set().union(*vec) if vec else set()
            return out - {"le"} if fn == "histogram_quantile" else out
        if kind == "AggregateExpr":
            inner = self.labels(e.expr)
            if e.param is not None:
                self.labels(e.param)
            mod = e.modifier
            if mod is None:
                return set()
            grouping = set(mod.labels)
            op = str(e.op)
            if str(mod.type).endswith("By"):
                if inner is not None:
                    for label in sorted(grouping - inner):
                        self.problem(f"{op} by ({label}): no metric under it has that label")
                if op in ("topk", "bottomk", "limitk", "limit_ratio"):
                    return inner  # these keep their series' labels
                return None if op == "count_values" else grouping
            return None if inner is None else inner - grouping
        if kind == "BinaryExpr":
            lhs, rhs = self.labels(e.lhs), self.labels(e.rhs)
            if lhs is None or rhs is None:
                return None
            return lhs | rhs
        self.problem(f"unexpected PromQL node {kind}")
        return None


def check_expr(text, where, metrics, recorded, report):
    """Parses text and checks its metric names and labels; returns the Walker or None."""
    tree, err = parse(text)
    if tree is None:
        report.add(where, f"does not parse ({err}): {text}", fatal=True)
        return None
    w = Walker(metrics, recorded, where, report)
    w.labels(tree)
    return w


# ---------------------------------------------------------------- grafana


def load_yaml(path, report):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        report.add(rel(path), f"cannot read: {e}")
        return None


def rel(path):
    return os.path.relpath(path, ROOT)


def provisioning(root, report):
    """Returns (Prometheus uids, names, the datasource, dashboard paths in the container)."""
    uids, names, prom, paths = set(), set(), None, []
    ds_dir = os.path.join(root, "grafana", "provisioning", "datasources")
    files = sorted(glob.glob(os.path.join(ds_dir, "*.y*ml")))
    if not files:
        report.add(rel(ds_dir), "no datasource provisioning file")
    defaults = 0
    for path in files:
        doc = load_yaml(path, report)
        for i, ds in enumerate((doc or {}).get("datasources") or []):
            where = f"{rel(path)}: datasources[{i}]"
            defaults += bool(ds.get("isDefault"))
            if ds.get("type") != "prometheus":
                continue
            if not ds.get("uid"):
                report.add(
                    where, "a Prometheus datasource needs a fixed uid (dashboards refer to it)"
                )
                continue
            if not ds.get("url"):
                report.add(where, "no url")
            uids.add(ds["uid"])
            names.add(ds.get("name"))
            prom = prom or ds
    if files and not uids:
        report.add(rel(ds_dir), "no Prometheus datasource provisioned")
    if defaults > 1:
        report.add(rel(ds_dir), f"{defaults} datasources say isDefault: true")
    db_dir = os.path.join(root, "grafana", "provisioning", "dashboards")
    for path in sorted(glob.glob(os.path.join(db_dir, "*.y*ml"))):
        doc = load_yaml(path, report)
        for i, p in enumerate((doc or {}).get("providers") or []):
            path_in = (p.get("options") or {}).get("path")
            if p.get("type", "file") != "file" or not path_in:
                report.add(f"{rel(path)}: providers[{i}]", "needs type: file and options.path")
            else:
                paths.append(path_in)
    if not paths:
        report.add(rel(db_dir), "no dashboard provider with options.path")
    return uids, names, prom, paths


def panels_of(dash):
    for p in dash.get("panels") or []:
        yield p
        for child in p.get("panels") or []:  # a collapsed row keeps its panels inside
            yield child


def check_datasource(ds, where, variables, uids, report, required=True):
    if ds is None:
        if required:
            report.add(where, "no datasource (set it to ${datasource})")
        return
    uid = ds.get("uid") if isinstance(ds, dict) else ds
    if isinstance(ds, dict) and ds.get("type") not in (None, "prometheus"):
        report.add(where, f"datasource type {ds.get('type')!r}, expected prometheus")
    m = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid or "")
    if m:
        var = variables.get(m.group(1) or m.group(2))
        if not var or var.get("type") != "datasource" or var.get("query") != "prometheus":
            report.add(where, f"datasource {uid} is not a Prometheus datasource variable")
    elif uid not in uids:
        report.add(
            where,
            f"datasource uid {uid!r} is neither ${{datasource}} nor a provisioned "
            f"Prometheus uid ({', '.join(sorted(uids)) or 'none'})",
        )


def check_dashboard(path, metrics, recorded, uids, names, report, exprs_out):
    where0 = rel(path)
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        report.add(where0, f"cannot read: {e}", fatal=True)
        return None
    if not dash.get("uid"):
        report.add(where0, "no fixed uid (links and provisioning need one)")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    ds_var = variables.get("datasource")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        report.add(where0, "needs a `datasource` variable of type datasource, query prometheus")
    elif (ds_var.get("current") or {}).get("value") not in (None, "", *uids, *names):
        report.add(
            where0,
            f"the datasource variable defaults to {ds_var['current']['value']!r}, "
            f"not the provisioned uid ({', '.join(sorted(uids))})",
        )
    for name, var in variables.items():
        if var.get("type") == "query":
            check_datasource(
                var.get("datasource"), f"{where0}: variable {name}", variables, uids, report
            )
    model = variables.get("model")
    if not model:
        report.add(where0, "no `model` variable")
    else:
        q = model.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", q or "")
        w = f"{where0}: variable model"
        if model.get("type") != "query" or not m:
            report.add(w, f"must be a query `label_values(<sluice metric>, model)`, not {q!r}")
        else:
            walker = check_expr(m.group(1), w, metrics, recorded, report)
            if m.group(2) != "model":
                report.add(w, f"lists label {m.group(2)!r}, expected model")
            for name, labels, _ in (walker.selectors if walker else []):
                if not name.startswith("sluice_"):
                    report.add(w, f"queries {name}: other exporters' model labels would leak in")
                elif labels is not None and "model" not in labels:
                    report.add(w, f"{name} has no model label")
        if not (model.get("multi") and model.get("includeAll")):
            report.add(w if m else where0, "model variable should be multi-value with All")
    multi = {n for n, v in variables.items() if v.get("multi") or v.get("includeAll")}

    ids, count = {}, 0
    for p in panels_of(dash):
        pid, title = p.get("id"), p.get("title", "")
        where = f"{where0}: panel {pid} {title!r}"
        if pid is None:
            report.add(where, "no id")
        elif pid in ids:
            report.add(where, f"id {pid} also used by panel {ids[pid]!r}")
        ids[pid] = title
        gp = p.get("gridPos") or {}
        if not gp or gp.get("x", 0) + gp.get("w", 0) > 24:
            report.add(where, f"gridPos {gp} is missing or wider than 24 columns")
        if p.get("type") == "row":
            continue
        check_datasource(p.get("datasource"), where, variables, uids, report)
        targets = p.get("targets") or []
        if not targets:
            report.add(where, "no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            report.add(where, f"duplicate refIds {refs}")
        for t in targets:
            tw = f"{where} target {t.get('refId')}"
            check_datasource(t.get("datasource"), tw, variables, uids, report, required=False)
            expr = t.get("expr")
            if not expr or not expr.strip():
                report.add(tw, "no expr")
                continue
            text, unknown = substitute(expr, variables)
            for name in unknown:
                msg = f"uses ${name}, which is no (non-datasource) variable of this dashboard"
                report.add(tw, msg, fatal=True)
            exprs_out.append(" ".join(text.split()))
            count += 1
            walker = check_expr(text, tw, metrics, recorded, report)
            if walker is None or unknown:
                continue
            # The same expression with sentinels shows which matcher each variable feeds.
            tree, _ = parse(substitute(expr, variables, sentinel=True)[0])
            sentinel_walk = Walker(metrics, recorded, tw, Report())
            if tree is not None:
                sentinel_walk.labels(tree)
            for name, labels, matchers in sentinel_walk.selectors:
                for op, label, value in matchers:
                    for var in re.findall(SENTINEL.format(r"(\w+)"), value):
                        if var in multi and op not in ("Re", "NotRe"):
                            report.add(
                                tw,
                                f"{label}{'=' if op == 'Equal' else '!='}\"${var}\": a "
                                f"multi-value variable needs =~",
                            )
                if (
                    labels is not None
                    and "model" in labels
                    and not any(
                        label == "model" and SENTINEL.format("model") in value
                        for _, label, value in matchers
                    )
                ):
                    report.add(tw, f'{name} has a model label: filter it with model=~"$model"')
    return dash.get("uid"), count


def check_compose(root, prov_paths, prom, report):
    names = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
    path = next((p for p in (os.path.join(root, n) for n in names) if os.path.exists(p)), None)
    if not path:
        return
    doc = load_yaml(path, report) or {}
    services = doc.get("services") or {}
    graf = next(
        (s or {} for n, s in services.items() if "grafana" in f"{n} {(s or {}).get('image')}"),
        None,
    )
    if graf is None:
        report.add(rel(path), "no grafana service")
        return
    mounts = []
    for v in graf.get("volumes") or []:
        if isinstance(v, str) and ":" in v:
            src, dst = v.split(":")[:2]
        elif isinstance(v, dict) and v.get("type", "bind") == "bind":
            src, dst = v.get("source", ""), v.get("target", "")
        else:
            continue
        if src.startswith((".", "/")):
            mounts.append(
                (os.path.normpath(os.path.join(os.path.dirname(path), src)), dst.rstrip("/"))
            )

    def host_of(container):
        best = max(
            (m for m in mounts if container == m[1] or container.startswith(m[1] + "/")),
            key=lambda m: len(m[1]),
            default=None,
        )
        return None if best is None else os.path.normpath(best[0] + container[len(best[1]) :])

    want = {
        "/etc/grafana/provisioning/datasources": "grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards": "grafana/provisioning/dashboards",
    }
    for p in prov_paths:
        want[p.rstrip("/")] = "grafana/dashboards"
    for container, host in want.items():
        got = host_of(container)
        if got != os.path.normpath(os.path.join(root, host)):
            report.add(
                rel(path),
                f"grafana should mount ./{host} at {container} "
                f"(there: {rel(got) if got else 'nothing'})",
            )
    if prom and prom.get("url"):
        host = re.sub(r"^\w+://([^:/]+).*$", r"\1", prom["url"])
        known = set(services)
        for s in services.values():
            s = s or {}
            known |= {s.get("container_name"), s.get("hostname")}
            nets = s.get("networks")
            for net in nets.values() if isinstance(nets, dict) else []:
                known |= set((net or {}).get("aliases") or [])
        if host not in known and host not in ("localhost", "127.0.0.1"):
            report.add(
                rel(path),
                f"the datasource url {prom['url']} names host {host!r}, which no service is",
            )


def check_scrape_interval(root, prom, report):
    path = os.path.join(root, "prometheus", "prometheus.yml")
    if not prom or not os.path.exists(path):
        return
    doc = load_yaml(path, report) or {}
    interval = (doc.get("global") or {}).get("scrape_interval", "1m")
    for job in doc.get("scrape_configs") or []:
        if "sluice" in str(job.get("job_name", "")):
            interval = job.get("scrape_interval", interval)
    ti = (prom.get("jsonData") or {}).get("timeInterval")
    if not ti:
        report.add(
            "grafana/provisioning/datasources",
            f"set jsonData.timeInterval to the scrape interval ({interval})",
        )
        return
    try:
        if promql_parser.parse_duration(ti) < promql_parser.parse_duration(str(interval)):
            report.add(
                "grafana/provisioning/datasources",
                f"timeInterval {ti} is shorter than the sluice scrape interval {interval} in "
                f"{rel(path)}: $__rate_interval windows may hold one sample (No data)",
            )
    except Exception as e:
        report.add(
            "grafana/provisioning/datasources", f"cannot compare intervals {ti}/{interval}: {e}"
        )


# ---------------------------------------------------------------- prometheus rules


def rule_files(root):
    return sorted(glob.glob(os.path.join(root, "prometheus", "rules", "*.y*ml")))


def recorded_names(files, report):
    names, docs = set(), {}
    for path in files:
        doc = load_yaml(path, report)
        docs[path] = doc
        for g in (doc or {}).get("groups") or []:
            for r in g.get("rules") or []:
                if r.get("record"):
                    names.add(r["record"])
    return names, docs


def check_rules(docs, metrics, recorded, report):
    count = 0
    for path, doc in docs.items():
        if doc is None:
            continue
        groups = doc.get("groups")
        if not groups:
            report.add(rel(path), "no groups")
        for g in groups or []:
            for i, r in enumerate(g.get("rules") or []):
                name = r.get("alert") or r.get("record") or f"rules[{i}]"
                where = f"{rel(path)}: {g.get('name')}/{name}"
                if not r.get("expr"):
                    report.add(where, "no expr")
                    continue
                count += 1
                check_expr(str(r["expr"]), where, metrics, recorded, report)
    return count


# ---------------------------------------------------------------- main

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main():
    global ROOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=ROOT, help="repository root (default: %(default)s)")
    ap.add_argument(
        "--exprs",
        action="store_true",
        help="print every dashboard expression (variables replaced), one per line",
    )
    args = ap.parse_args()
    ROOT = root = os.path.abspath(args.root)

    report = Report()
    metrics = exported_metrics(root)
    files = rule_files(root)
    recorded, docs = recorded_names(files, report)
    uids, names, prom, prov_paths = provisioning(root, report)
    dashboards = sorted(glob.glob(os.path.join(root, "grafana", "dashboards", "*.json")))
    if not dashboards:
        report.add("grafana/dashboards", "no dashboard JSON")
    exprs, seen_uids, n_exprs = [], {}, 0
    for path in dashboards:
        got = check_dashboard(path, metrics, recorded, uids, names, report, exprs)
        if got:
            uid, count = got
            n_exprs += count
            if uid in seen_uids:
                report.add(rel(path), f"uid {uid!r} also used by {seen_uids[uid]}")
            seen_uids[uid] = rel(path)

    if args.exprs:
        for p in report.fatal:
            print(f"check_dashboard: {p}", file=sys.stderr)
        print("\n".join(exprs))
        return 1 if report.fatal or not exprs else 0

    n_rules = check_rules(docs, metrics, recorded, report)
    check_compose(root, prov_paths, prom, report)
    check_scrape_interval(root, prom, report)

    for p in report.problems:
        print(f"check_dashboard: {p}", file=sys.stderr)
    summary = (
        f"{len(dashboards)} dashboard(s), {n_exprs} panel expressions, "
        f"{len(files)} rule file(s), {n_rules} rule expressions, "
        f"{len(metrics)} metrics in src/metrics.rs"
    )
    if report.problems:
        if report.missing:
            print(
                f"check_dashboard: used but not exported by src/metrics.rs: "
                f"{', '.join(sorted(report.missing))}",
                file=sys.stderr,
            )
        print(
            f"check_dashboard: FAILED, {len(report.problems)} problem(s); {summary}",
            file=sys.stderr,
        )
        return 1
    print(f"check_dashboard: ok; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
