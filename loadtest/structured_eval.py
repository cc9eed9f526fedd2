"""sluice-tiny's held-out evaluation through a running sluice, structured generation on
vs off.

training/evaluate.py scores the exported ONNX files directly (its own greedy decoder in
numpy). This script asks the same questions through sluice's OpenAI-compatible API
instead, so that what is scored is what a client gets: the chat template, the engine's
sampling, its tool-call parser and, for a model with structured generation on, the
llguidance constraint (calls only to offered tools, arguments valid against their
schemas). Each model named with --models gets every case; run it against two models over
the same backend and tier, one with `structured = false`, to see what the constraint
changes. loadtest/structured-eval.sh starts such a sluice and runs this.

Cases: every assistant turn of the held-out conversations (training/work/eval.jsonl, or,
when that file is absent, the same split regenerated in-process by training/data.py's
`split()` with its default seed and sizes: a few seconds, no training). They are
extracted by training/evaluate.py's own `cases()`, and scored by its rules:

- call_valid_right_tool: the first tool call names the expected tool and its arguments
  are a JSON object;
- calculator_correct: ... and its expression evaluates to the expected number
  (training's calculator evaluator `calc`, imported, both sides);
- sql_correct: ... and its query runs on examples/sales.db (read-only) and returns the
  expected rows (evaluate.py's `run_sql`, imported);
- time_call, answer_contains_result, direct_without_tool: as in evaluate.py.

Also, over all answers: calls that name a tool not offered or whose arguments are not a
JSON object with the tool's required keys, and tool-call tags in the text (a call the
parser could not read comes out as raw text; a stray closing tag stays in the text).

Requests: non-streaming, temperature 0, max_tokens 96 (evaluate.py's MAX_NEW), the
conversation's own tools (training's TOOLS, sometimes a subset) with tool_choice auto.
One at a time by default: the int8 tier quantizes activations per batch, so a
concurrent run's answers depend a little on which requests share a decode step.

    python3 loadtest/structured_eval.py --url http://127.0.0.1:8080/v1 \\
        --models sluice-tiny,sluice-tiny-free [--pair sluice-tiny:sluice-tiny-free] \\
        [--limit N] [--concurrency 1] [--json FILE]

Needs Jinja2 (training/common.py renders the chat template to split the data); numpy,
onnxruntime and tokenizers are not needed: evaluate.py imports them at the top, and when
they are missing they are replaced by empty placeholder modules for that import only,
since only its pure-Python helpers are used here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sqlite3
import sys
import time
import types
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))

MAX_TOKENS = 96
METRICS = {
    "call_valid_right_tool": "Valid tool call with the right tool",
    "calculator_correct": "Calculator arguments evaluate to the right number",
    "sql_correct": "SQL runs and returns the right result",
    "time_call": "current_time called when asked the time",
    "answer_contains_result": "Final answer contains the tool result",
    "direct_without_tool": "Small talk answered without a tool call",
}


def import_training():
    """training/evaluate.py (and through it data.calc), with placeholders for the ONNX
    stack when it is not installed (its functions used here do not touch it)."""
    placeholders = []
    for name in ("numpy", "onnxruntime", "tokenizers"):
        if importlib.util.find_spec(name) is None:
            mod = types.ModuleType(name)
            mod.__getattr__ = lambda attr, name=name: _unavailable(f"{name}.{attr}")
            sys.modules[name] = mod
            placeholders.append(name)
    try:
        import evaluate  # noqa: PLC0415  (training/evaluate.py)
        import data  # noqa: PLC0415  (training/data.py)
    finally:
        for name in placeholders:
            del sys.modules[name]
    return evaluate, data


def _unavailable(what):
    def fail(*_args, **_kwargs):
        raise RuntimeError(f"{what} is not installed (not needed by this script)")

    return fail


def load_conversations(data, common, path: Path | None):
    """The held-out conversations, and where they came from."""
    if path is not None and not path.exists():
        raise SystemExit(f"structured_eval: {path} does not exist")
    path = path or common.WORK_DIR / "eval.jsonl"
    if path.exists():
        lines = path.read_text().splitlines()
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        return [json.loads(line) for line in lines if line.strip()], str(where)
    _, held_out = data.split()  # the seed and sizes `make model` uses
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return held_out, (f"{where} absent: regenerated by training/data.py split(), seed {common.SEED}, "
                      f"{data.N_TRAIN} train / {data.N_EVAL} held-out conversations")


def request_messages(prefix: list[dict]) -> list[dict]:
    """The conversation so far as an OpenAI client sends it (tool-call arguments as a JSON
    string, written as training's template writes an object: json.dumps defaults)."""
    out = []
    for m in prefix:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                f = dict(c["function"])
                if not isinstance(f["arguments"], str):
                    f["arguments"] = json.dumps(f["arguments"], ensure_ascii=False)
                calls.append({**c, "function": f})
            m["tool_calls"] = calls
            m["content"] = m.get("content") or None
        out.append(m)
    return out


def post(url: str, body: dict, timeout: float) -> tuple[dict | None, str | None]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp), None
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read().decode(errors='replace')[:300]}"
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        return None, f"{type(e).__name__}: {e}"


def first_call(message: dict):
    """(name, arguments dict) of the first tool call, None when there is none or its
    arguments are not a JSON object (evaluate.py's parse_call, on the API's side)."""
    calls = message.get("tool_calls") or []
    if not calls:
        return None
    f = calls[0].get("function") or {}
    try:
        args = json.loads(f.get("arguments") or "")
    except json.JSONDecodeError:
        return None
    if not isinstance(args, dict) or not isinstance(f.get("name"), str):
        return None
    return f["name"], args


def bad_calls(message: dict, tools: list[dict] | None) -> int:
    """Calls naming a tool not offered, or whose arguments are not a JSON object with the
    tool's required keys."""
    offered = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or []}
    bad = 0
    for c in message.get("tool_calls") or []:
        f = c.get("function") or {}
        schema = offered.get(f.get("name"))
        try:
            args = json.loads(f.get("arguments") or "")
        except json.JSONDecodeError:
            args = None
        if schema is None or not isinstance(args, dict) or any(k not in args for k in schema.get("required", [])):
            bad += 1
    return bad


def score(evaluate, calc, db, case, message) -> dict[str, bool]:
    """evaluate.py's evaluate_tier rules for one case, on an API answer."""
    kind, _, _, expected, _ = case
    text = message.get("content") or ""
    if kind == "call":
        call = first_call(message)
        ok = call is not None and call[0] == expected["name"]
        out = {"call_valid_right_tool": ok}
        want = expected["arguments"] if isinstance(expected["arguments"], dict) else json.loads(expected["arguments"])
        if expected["name"] == "calculator":
            try:
                out["calculator_correct"] = ok and calc(call[1]["expression"]) == calc(want["expression"])
            except Exception:  # noqa: BLE001  (evaluate.py: any failure is a wrong answer)
                out["calculator_correct"] = False
        elif expected["name"] == "sql_query":
            query = call[1].get("query") if ok else None
            out["sql_correct"] = ok and isinstance(query, str) and evaluate.run_sql(db, query) == evaluate.run_sql(db, want["query"])
        elif expected["name"] == "current_time":
            out["time_call"] = ok
        return out
    if kind == "answer":
        return {"answer_contains_result": expected in text}
    return {"direct_without_tool": not message.get("tool_calls") and "<tool_call>" not in text}


def run_model(args, evaluate, calc, db, items, model):
    url = args.url.rstrip("/") + "/chat/completions"

    def one(i):
        _, prefix, tools, _, _ = items[i]
        body = {"model": model, "messages": request_messages(prefix), "temperature": 0,
                "max_tokens": args.max_tokens}
        if tools:
            body["tools"] = tools
            # --required: the client knows a call is due (the expected answer is a call).
            body["tool_choice"] = "required" if args.required and items[i][0] == "call" else "auto"
        return post(url, body, args.timeout)

    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(pool.map(one, range(len(items))))
    seconds = time.monotonic() - started

    stats = {k: [0, 0] for k in METRICS}
    extra = {"answers": 0, "http_errors": 0, "answers_with_calls": 0, "calls_not_offered_or_invalid": 0,
             "tool_call_text_in_content": 0, "finish_length": 0, "completion_tokens": 0}
    by_group: dict[str, list[int]] = {}
    per_case = []
    for i, (case, (resp, error)) in enumerate(zip(items, answers)):
        group = case[4]
        if resp is None:
            # Scored as wrong, like an unparsable answer.
            extra["http_errors"] += 1
            message, finish = {}, None
            result = {k: False for k in score(evaluate, calc, db, case, {})}
        else:
            choice = resp["choices"][0]
            message, finish = choice["message"], choice.get("finish_reason")
            result = score(evaluate, calc, db, case, message)
            extra["answers"] += 1
            extra["answers_with_calls"] += bool(message.get("tool_calls"))
            extra["calls_not_offered_or_invalid"] += bad_calls(message, case[2])
            text = message.get("content") or ""
            extra["tool_call_text_in_content"] += "<tool_call>" in text or "</tool_call>" in text
            extra["finish_length"] += finish == "length"
            extra["completion_tokens"] += resp.get("usage", {}).get("completion_tokens", 0)
        for metric, good in result.items():
            stats[metric][0] += bool(good)
            stats[metric][1] += 1
            key = f"{metric}/{group}"
            by_group.setdefault(key, [0, 0])
            by_group[key][0] += bool(good)
            by_group[key][1] += 1
        per_case.append({"case": i, "kind": case[0], "result": result, "error": error,
                         "content": message.get("content"),
                         "tool_calls": [(c["function"]["name"], c["function"]["arguments"])
                                        for c in message.get("tool_calls") or []],
                         "finish_reason": finish})
    rate = lambda c, n: {"correct": c, "total": n, "rate": round(c / n, 4) if n else None}  # noqa: E731
    return {
        "model": model,
        "seconds": round(seconds, 1),
        "accuracy": {k: rate(c, n) for k, (c, n) in stats.items()},
        "by_held_out_group": {k: rate(c, n) for k, (c, n) in sorted(by_group.items())},
        "answers": extra,
        "cases": per_case,
    }


def markdown(results: list[dict], pairs: list[tuple[str, str]]) -> str:
    names = [r["model"] for r in results]
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for key, label in METRICS.items():
        cells = []
        for r in results:
            a = r["accuracy"][key]
            cells.append(f"{a['rate']:.1%} ({a['correct']}/{a['total']})" if a["total"] else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    extra_labels = [
        ("answers_with_calls", "Answers with tool calls"),
        ("calls_not_offered_or_invalid", "Calls to a tool not offered, or arguments not an object with its required keys"),
        ("tool_call_text_in_content", "Tool-call tags in the text (a call the parser could not read, or a stray tag)"),
        ("finish_length", "Answers cut at max_tokens"),
        ("http_errors", "HTTP errors"),
    ]
    for key, label in extra_labels:
        lines.append(f"| {label} | " + " | ".join(str(r["answers"][key]) for r in results) + " |")
    lines.append("| Mean completion tokens | " + " | ".join(
        f"{r['answers']['completion_tokens'] / max(r['answers']['answers'], 1):.1f}" for r in results) + " |")
    lines.append("| Seconds (one request at a time unless --concurrency) | " + " | ".join(
        f"{r['seconds']:.0f}" for r in results) + " |")
    by_name = {r["model"]: r for r in results}
    for on, off in pairs:
        if on not in by_name or off not in by_name:
            continue
        lines.append("")
        lines.append(f"`{on}` against `{off}`, case by case:")
        lines.append("")
        lines.append("| metric | right only with the constraint | right only without | changed answers |")
        lines.append("|---|---:|---:|---:|")
        a_cases, b_cases = by_name[on]["cases"], by_name[off]["cases"]
        for key in METRICS:
            gained = lost = 0
            for a, b in zip(a_cases, b_cases):
                if key in a["result"]:
                    gained += a["result"][key] and not b["result"][key]
                    lost += b["result"][key] and not a["result"][key]
            changed = sum(1 for a, b in zip(a_cases, b_cases) if key in a["result"] and _norm(a) != _norm(b))
            lines.append(f"| {key} | {gained} | {lost} | {changed} |")
    return "\n".join(lines)


def _norm(case: dict):
    """An answer up to the JSON layout of its calls' arguments (the constrained answer
    keeps the model's spacing, the parser re-serialises an unconstrained one)."""
    calls = []
    for name, arguments in case["tool_calls"]:
        try:
            calls.append((name, json.loads(arguments)))
        except json.JSONDecodeError:
            calls.append((name, arguments))
    return case["content"] or "", calls, case["error"] is None


def engine_counters(url: str) -> list[str]:
    """`sluice_engine_constrained_total` and the mask count/mean per backend and tier from
    sluice's /metrics: the evidence that the constraint ran (empty when unavailable)."""
    base = url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return []
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith(("sluice_engine_constrained_total{", "sluice_engine_mask_seconds_sum{",
                                "sluice_engine_mask_seconds_count{")):
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        fields = dict(kv.split("=", 1) for kv in labels.rstrip("}").split(","))
        where = f"{fields.get('backend', '?').strip(chr(34))}/{fields.get('tier', '?').strip(chr(34))}"
        key = fields["kind"].strip('"') if "kind" in fields else name.rsplit("_", 1)[1]
        found.setdefault(where, {})[key] = float(value)
    out = []
    for where, v in sorted(found.items()):
        kinds = ", ".join(f"{k} {v[k]:.0f}" for k in ("tools", "json", "ban") if k in v)
        mean = v.get("sum", 0.0) / v["count"] * 1e6 if v.get("count") else float("nan")
        out.append(f"{where}: constrained sequences {kinds or 'none'}; {v.get('count', 0):.0f} masks, "
                   f"mean {mean:.1f} µs")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="sluice's API base, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--models", required=True, help="comma-separated model names, each gets every case")
    ap.add_argument("--pair", action="append", default=[], metavar="ON:OFF",
                    help="compare two of the models case by case (repeatable)")
    ap.add_argument("--eval", type=Path, default=None, help="held-out conversations (default training/work/eval.jsonl)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N conversations")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    ap.add_argument("--json", type=Path, default=None, help="write every answer and score here")
    ap.add_argument("--required", action="store_true",
                    help="tool_choice \"required\" (not \"auto\") on the cases whose expected answer is a call")
    args = ap.parse_args()
    if not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        ap.error("--url must be a loopback address")

    evaluate, data = import_training()
    import common  # noqa: PLC0415  (training/common.py, already imported by data)
    conversations, source = load_conversations(data, common, args.eval)
    if args.limit:
        conversations = conversations[: args.limit]
    items = evaluate.cases(conversations)
    db = sqlite3.connect(f"file:{common.EXAMPLES_DIR / 'sales.db'}?mode=ro", uri=True)
    models = [m for m in args.models.split(",") if m]
    pairs = [tuple(p.split(":", 1)) for p in args.pair]
    print(f"[structured_eval] {len(conversations)} held-out conversations ({source}), {len(items)} cases, "
          f"models {', '.join(models)}", file=sys.stderr, flush=True)
    results = []
    for model in models:
        r = run_model(args, evaluate, data.calc, db, items, model)
        acc = r["accuracy"]
        print(f"[structured_eval] {model}: " + ", ".join(
            f"{k} {acc[k]['rate']:.1%}" for k in ("call_valid_right_tool", "calculator_correct", "sql_correct"))
            + f" ({r['seconds']:.0f} s, {r['answers']['http_errors']} HTTP errors)", file=sys.stderr, flush=True)
        results.append(r)
    choice = "\"required\" on call cases, else \"auto\"" if args.required else "\"auto\""
    print(f"sluice-tiny held-out evaluation through sluice: {len(conversations)} conversations ({source}), "
          f"{len(items)} assistant turns; temperature 0, max_tokens {args.max_tokens}, tool_choice {choice}, "
          f"concurrency {args.concurrency}, non-streaming\n")
    print(markdown(results, pairs))
    constrained = engine_counters(args.url)
    if constrained:
        print("\nsluice's /metrics after the run (sequences generated under a constraint, masks):\n")
        print("\n".join(f"- {line}" for line in constrained))
    if args.json:
        args.json.write_text(json.dumps({"source": source, "conversations": len(conversations),
                                         "cases": len(items), "max_tokens": args.max_tokens,
                                         "concurrency": args.concurrency, "models": results}, indent=1) + "\n")
    return 1 if any(r["answers"]["http_errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
