"""Agent task replay set for sluice-tiny: tests/data/agent/sluice-tiny.tasks.jsonl.

One line per held-out assistant turn where sluice-tiny's model card evaluation
(training/evaluate.py `cases()`) expects a tool call: the held-out conversations of
training/data.py `split()` (default seed and sizes, as `make model` used: 600
conversations, 510 such turns: 180 calculator, 210 sql_query, 120 current_time).

Each line:
  id              "heldout-NNN" (the conversation's index in the held-out list)
  kind            calculator | sql | time (the conversation's kind)
  intent          the question's intent in training/data_*.py
  heldout         phrasing | combination (how the prompt is held out of training)
  messages        the conversation up to and including the user question, as an OpenAI
                  client sends it (earlier turns kept: system prompt, greeting exchange;
                  tool-call arguments would be JSON strings)
  tools           names of the tools the conversation offered (a subset in ~15% of them;
                  the gateway's sluice-agent always offers all three server tools)
  expected_tool   the tool the conversation calls
  expected_arguments  its arguments (object)
  expected_result the conversation's tool result (the calculator's printed number, the
                  formatted SQL result from training/sales_db.py; for current_time a
                  random timestamp, which only says a time call was expected)
  expected_answer the conversation's final assistant answer

Deterministic: the same repository gives the same file, byte for byte.

    .venv/bin/python tools/agent/make_tasks.py [--out tests/data/agent/sluice-tiny.tasks.jsonl]

Needs Jinja2 (training/common.py); numpy/onnxruntime/tokenizers are not imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "training"))

import data  # noqa: E402  (training/data.py: pure Python + Jinja2)

DEFAULT_OUT = ROOT / "tests" / "data" / "agent" / "sluice-tiny.tasks.jsonl"


def request_messages(prefix: list[dict]) -> list[dict]:
    """Messages as an OpenAI client sends them (tool-call arguments as JSON strings)."""
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


def tasks(held_out: list[dict]) -> list[dict]:
    """The tool-call turns, exactly the "call" cases of training/evaluate.py `cases()`."""
    out = []
    for n, conv in enumerate(held_out):
        msgs = conv["messages"]
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or not m.get("tool_calls"):
                continue
            call = m["tool_calls"][0]
            args = call["function"]["arguments"]
            result = msgs[i + 1]["content"] if i + 1 < len(msgs) and msgs[i + 1]["role"] == "tool" else None
            answer = msgs[i + 2]["content"] if i + 2 < len(msgs) and msgs[i + 2]["role"] == "assistant" else None
            out.append({
                "id": f"heldout-{n:03d}",
                "kind": conv["kind"],
                "intent": conv["intent"],
                "heldout": conv.get("heldout", "unknown"),
                "messages": request_messages(msgs[:i]),
                "tools": [t["function"]["name"] for t in (conv.get("tools") or [])],
                "expected_tool": call["function"]["name"],
                "expected_arguments": args if isinstance(args, dict) else json.loads(args),
                "expected_result": result,
                "expected_answer": answer,
            })
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    _, held_out = data.split()  # the seed and sizes `make model` used
    rows = tasks(held_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    by_tool: dict[str, int] = {}
    for row in rows:
        by_tool[row["expected_tool"]] = by_tool.get(row["expected_tool"], 0) + 1
    print(f"wrote {len(rows)} tasks from {len(held_out)} held-out conversations to {args.out}: {by_tool}")


if __name__ == "__main__":
    main()
