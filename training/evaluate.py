"""Evaluate the exported sluice-tiny tiers with ONNX Runtime, the way an engine runs them:

1. KV-cache decode equals full recomputation (max |logit difference|);
2. a left-padded batch of prompts of different lengths equals each prompt run alone;
3. on held-out prompts (training/work/eval.jsonl, never seen in training), greedy
   decoding: valid tool calls with the right tool, calculator arguments that evaluate
   to the right number, SQL that runs on examples/sales.db and returns the right
   result, final answers after a tool result that contain that result;
4. decode speed at batch 1 and batch 8.

Writes training/work/eval.json and the Markdown tables for MODEL_CARD.md.

    python training/evaluate.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLES_DIR, IM_END, MODEL_DIR, WORK_DIR, render  # noqa: E402
from data import calc  # noqa: E402

TIERS = ["fp32", "int8", "int4"]
MAX_NEW = 96
# The held-out accuracy metrics, as the tables name them (also used by
# loadtest/structured_eval.py, which scores the same cases through the gateway).
ACCURACY_LABELS = {
    "call_valid_right_tool": "Valid tool call with the right tool",
    "calculator_correct": "Calculator arguments evaluate to the right number",
    "sql_correct": "SQL runs and returns the right result",
    "time_call": "current_time called when asked the time",
    "answer_contains_result": "Final answer contains the tool result",
    "direct_without_tool": "Small talk answered without a tool call",
}


class Engine:
    """Greedy decoding over one ONNX tier with a KV cache and left-padded batches."""

    def __init__(self, path: Path, manifest: dict):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.layers = manifest["num_layers"]
        self.heads = manifest["num_attention_heads"]
        self.head_dim = manifest["head_dim"]
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def run(self, ids, mask, pos, past):
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        for i, (k, v) in enumerate(past):
            feed[f"past_key_values.{i}.key"] = k
            feed[f"past_key_values.{i}.value"] = v
        out = self.sess.run(self.out_names, feed)
        # The graph returns the new tokens' keys/values; the cache grows here.
        presents = [
            (np.concatenate([k, out[1 + 2 * i]], axis=2), np.concatenate([v, out[2 + 2 * i]], axis=2))
            for i, (k, v) in enumerate(past)
        ]
        return out[0], presents

    def empty(self, batch):
        z = np.zeros((batch, self.heads, 0, self.head_dim), dtype=np.float32)
        return [(z, z) for _ in range(self.layers)]

    def prefill(self, prompts: list[list[int]]):
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
        pos = np.clip(mask.cumsum(-1) - 1, 0, None)
        logits, past = self.run(ids, mask, pos, self.empty(len(prompts)))
        return logits, past, mask

    def generate(self, prompts: list[list[int]], stop_ids: set[int], max_new: int = MAX_NEW) -> list[list[int]]:
        logits, past, mask = self.prefill(prompts)
        next_pos = mask.sum(-1)
        out = [[] for _ in prompts]
        done = [False] * len(prompts)
        for _ in range(max_new):
            tokens = logits[:, -1].argmax(-1)
            for row, t in enumerate(tokens):
                if not done[row]:
                    if int(t) in stop_ids:
                        done[row] = True
                    else:
                        out[row].append(int(t))
            if all(done):
                break
            mask = np.concatenate([mask, np.ones((len(prompts), 1), dtype=np.int64)], axis=1)
            pos = next_pos[:, None].astype(np.int64)
            next_pos = next_pos + 1
            logits, past = self.run(tokens[:, None].astype(np.int64), mask, pos, past)
        return out


def kv_equivalence(engine: Engine, prompt: list[int], steps: int = 16) -> float:
    """Decode `steps` tokens with the cache, then recompute everything at once."""
    logits, past, mask = engine.prefill([prompt])
    seq = list(prompt)
    cached = []
    for _ in range(steps):
        t = int(logits[0, -1].argmax())
        seq.append(t)
        mask = np.ones((1, len(seq)), dtype=np.int64)
        logits, past = engine.run(np.array([[t]], dtype=np.int64), mask, np.array([[len(seq) - 1]], dtype=np.int64), past)
        cached.append(logits[0, -1])
    full, _ = engine.run(
        np.array([seq], dtype=np.int64), np.ones((1, len(seq)), dtype=np.int64), np.arange(len(seq))[None].astype(np.int64), engine.empty(1)
    )
    recomputed = full[0, len(prompt):]
    return float(np.abs(np.stack(cached) - recomputed).max())


def batch_equivalence(engine: Engine, prompts: list[list[int]]) -> float:
    logits, _, _ = engine.prefill(prompts)
    worst = 0.0
    for row, p in enumerate(prompts):
        alone, _, _ = engine.prefill([p])
        worst = max(worst, float(np.abs(logits[row, -1] - alone[0, -1]).max()))
    return worst


TOOL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def parse_call(text: str):
    m = TOOL_RE.search(text)
    if not m:
        return None
    try:
        call = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("arguments", {}), dict) or "name" not in call:
        return None
    return call


def run_sql(db, query):
    try:
        return db.execute(query).fetchall()
    except sqlite3.Error:
        return None


def cases(conversations):
    """(kind, prompt messages, tools, expected, held-out group) for each assistant turn."""
    out = []
    for conv in conversations:
        group = conv.get("heldout", "unknown")
        msgs, tools = conv["messages"], conv.get("tools")
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            prefix = msgs[:i]
            if m.get("tool_calls"):
                out.append(("call", prefix, tools, m["tool_calls"][0]["function"], group))
            elif i > 0 and msgs[i - 1]["role"] == "tool":
                out.append(("answer", prefix, tools, msgs[i - 1]["content"], group))
            else:
                out.append(("direct", prefix, tools, m["content"], group))
    return out


def evaluate_tier(engine: Engine, tok: Tokenizer, items, db) -> dict:
    stop = {tok.token_to_id(IM_END), tok.token_to_id("<|endoftext|>")}
    prompts = [tok.encode(render(p, t, add_generation_prompt=True)).ids for _, p, t, _, _ in items]
    outputs = []
    for start in range(0, len(prompts), 16):
        outputs += engine.generate(prompts[start:start + 16], stop)
    stats = {k: [0, 0] for k in ["call_valid_right_tool", "calculator_correct", "sql_correct", "time_call", "answer_contains_result", "direct_without_tool"]}
    by_group: dict[str, list[int]] = {}

    def count(metric, group, good):
        stats[metric][0] += bool(good)
        stats[metric][1] += 1
        key = f"{metric}/{group}"
        by_group.setdefault(key, [0, 0])
        by_group[key][0] += bool(good)
        by_group[key][1] += 1

    for (kind, _, _, expected, group), ids in zip(items, outputs):
        text = tok.decode(ids, skip_special_tokens=False)
        if kind == "call":
            call = parse_call(text)
            ok = call is not None and call["name"] == expected["name"]
            count("call_valid_right_tool", group, ok)
            want = expected["arguments"] if isinstance(expected["arguments"], dict) else json.loads(expected["arguments"])
            if expected["name"] == "calculator":
                # The same evaluator the calculator tool uses: equal printed results.
                try:
                    good = ok and calc(call["arguments"]["expression"]) == calc(want["expression"])
                except Exception:
                    good = False
                count("calculator_correct", group, good)
            elif expected["name"] == "sql_query":
                good = ok and isinstance(call["arguments"].get("query"), str) and run_sql(db, call["arguments"]["query"]) == run_sql(db, want["query"])
                count("sql_correct", group, good)
            elif expected["name"] == "current_time":
                count("time_call", group, ok)
        elif kind == "answer":
            count("answer_contains_result", group, expected in text)
        else:
            count("direct_without_tool", group, "<tool_call>" not in text)
    rate = lambda c, n: {"correct": c, "total": n, "rate": round(c / n, 4) if n else None}  # noqa: E731
    out = {k: rate(c, n) for k, (c, n) in stats.items()}
    out["by_held_out_group"] = {k: rate(c, n) for k, (c, n) in sorted(by_group.items())}
    return out


def decode_speed(engine: Engine, prompt: list[int], batch: int, steps: int = 64) -> float:
    logits, past, mask = engine.prefill([prompt] * batch)
    t0 = time.perf_counter()
    n = len(prompt)
    for _ in range(steps):
        tokens = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        n += 1
        mask = np.ones((batch, n), dtype=np.int64)
        logits, past = engine.run(tokens, mask, np.full((batch, 1), n - 1, dtype=np.int64), past)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out conversations")
    args = ap.parse_args()
    manifest = json.loads((MODEL_DIR / "sluice-model.json").read_text())
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    conversations = [json.loads(l) for l in (WORK_DIR / "eval.jsonl").read_text().splitlines() if l.strip()]
    if args.limit:
        conversations = conversations[: args.limit]
    items = cases(conversations)
    db = sqlite3.connect(f"file:{EXAMPLES_DIR / 'sales.db'}?mode=ro", uri=True)
    sample_prompts = [tok.encode(render(p, t, add_generation_prompt=True)).ids for _, p, t, _, _ in items[:8]]
    results = {"held_out_conversations": len(conversations), "cases": len(items), "tiers": {}}
    for tier in TIERS:
        engine = Engine(MODEL_DIR / manifest["tiers"][tier]["file"], manifest)
        t0 = time.time()
        r = {
            "kv_cache_vs_recompute_max_abs_logit_diff": max(kv_equivalence(engine, p) for p in sample_prompts[:3]),
            "left_padded_batch_vs_alone_max_abs_logit_diff": batch_equivalence(engine, sample_prompts),
            "accuracy": evaluate_tier(engine, tok, items, db),
            "decode_tokens_per_s_batch1": round(decode_speed(engine, sample_prompts[0], 1), 1),
            "decode_tokens_per_s_batch8": round(decode_speed(engine, sample_prompts[0], 8), 1),
        }
        r["seconds"] = round(time.time() - t0, 1)
        results["tiers"][tier] = r
        print(tier, json.dumps(r), flush=True)
    (WORK_DIR / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


def markdown(results: dict) -> str:
    tiers = results["tiers"]
    rows = [
        ("KV-cache decode vs full recomputation, max abs logit diff", lambda r: f"{r['kv_cache_vs_recompute_max_abs_logit_diff']:.2e}"),
        ("Left-padded batch vs each alone, max abs logit diff", lambda r: f"{r['left_padded_batch_vs_alone_max_abs_logit_diff']:.2e}"),
    ]
    for key, label in ACCURACY_LABELS.items():
        rows.append((label, lambda r, k=key: f"{r['accuracy'][k]['rate']:.1%} ({r['accuracy'][k]['correct']}/{r['accuracy'][k]['total']})"))
    rows.append(("Decode tokens/s, batch 1", lambda r: f"{r['decode_tokens_per_s_batch1']:.0f}"))
    rows.append(("Decode tokens/s, batch 8", lambda r: f"{r['decode_tokens_per_s_batch8']:.0f}"))
    lines = ["| | " + " | ".join(tiers) + " |", "|---|" + "---|" * len(tiers)]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(fn(tiers[t]) for t in tiers) + " |")
    return "\n".join(lines)


def markdown_groups(results: dict) -> str:
    """Accuracy split by how a prompt is held out: unseen wording or unseen slot values."""
    tiers = results["tiers"]
    first = next(iter(tiers.values()))["accuracy"]["by_held_out_group"]
    lines = ["| metric / held out by | " + " | ".join(tiers) + " |", "|---|" + "---|" * len(tiers)]
    for key in first:
        cells = []
        for t in tiers:
            r = tiers[t]["accuracy"]["by_held_out_group"][key]
            cells.append(f"{r['rate']:.1%} ({r['correct']}/{r['total']})")
        lines.append(f"| {key.replace('/', ' / ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
