"""sluice-tiny's held-out tool-call tasks replayed through the gateway's agent loop.

tests/data/agent/sluice-tiny.tasks.jsonl (tools/agent/make_tasks.py) holds the 510
held-out turns where the model card's evaluation (training/evaluate.py) expects a tool
call. Each is sent, with its history, to `sluice-agent@int4`, `@int8` and `@fp32` on the
shipped config/sluice.toml (response cache off, so every answer is generated): official
`openai` SDK, 16 requests in flight, temperature 0, max_tokens 96 (evaluate.py's
MAX_NEW), `x-sluice-trace: 1`. The gateway runs the tools; the trace (`sluice_steps`)
says which call the model made, the answer is the finished text. Scored per tier with
the model card's definitions:

- right tool: the first step's tool is the expected one (card: "Valid tool call with the
  right tool"; through the gateway a call is always valid JSON, structured generation);
- calculator: ... and its `expression` evaluates (training/data_calc.calc) to the
  expected number;
- SQL: ... and its `query`, run by training/sales_db.run_query on a read-only connection
  to examples/sales.db, gives the expected (formatted) result;
- time: the first step calls current_time.

Each is asserted within 2 points of the model card's figure (read from
models/sluice-tiny/MODEL_CARD.md). The prompts are the card's own, with one difference:
~15% of the conversations offered only a subset of the tools, and sluice-agent always
offers all three server tools (same names and descriptions as in training), so those
prompts list more tools than the card's did.

Measured (debug binary, 2 cores; table in loadtest/results/agent-tasks.md): every one of
the four is within 2 points of the card on every tier, and all four are asserted so, in
both directions. (A first version of the loop offered the server tools sorted by name;
sluice-tiny was trained on the order calculator, sql_query, current_time, and the other
order moved SQL 2.9 points above the card and changed 24/370 answers at fp32. The loop
now offers tools in the order the model config lists them.)

"Final answer contains the tool result" is where the gateway honestly differs from the
card. The card scores it teacher-forced over all 510 tool turns: the *expected* call and
its result are put in the history and only the last turn is generated. End to end, the
model's *own* call is run, so a wrong expression or query gives another result and the
answer rightly does not contain the expected one: that rate is bounded by call accuracy.
Two figures are reported, over calculator and SQL tasks only (a current_time result is
the time of the run, not recomputable here):

- "answer contains the result of the call run": the result recomputed from the traced
  arguments, over tasks whose first call was the right tool and ran ok. The card's
  comparable figure is not published per tool; its calculator+SQL share is at least
  (answers right - time answers) / (answers - time answers), e.g. fp32 (479-120)/390 =
  92.1%. Measured 90.4% at fp32. Asserted >= that bound - 5 points: the model copies its
  own call's result (other numbers than the held-out ones), a harder copy than the card's
  teacher-forced one.
- "end to end: answer contains the expected result": asserted >= (share of calculator and
  SQL calls right) x the bound above - 5 points.

`SLUICE_WRITE_RESULTS=1` also writes the table to loadtest/results/agent-tasks.md.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))

from data_calc import calc  # noqa: E402
from sales_db import run_query  # noqa: E402

TASKS = REPO / "tests" / "data" / "agent" / "sluice-tiny.tasks.jsonl"
CARD = REPO / "models" / "sluice-tiny" / "MODEL_CARD.md"
RESULTS = REPO / "loadtest" / "results" / "agent-tasks.md"
# SLUICE_AGENT_TIERS=int8 replays one tier only (the full run is ~4.5 min on 2 cores with
# a debug binary, ~1.5 min per tier).
TIERS = tuple(os.environ.get("SLUICE_AGENT_TIERS", "int4,int8,fp32").split(","))
IN_FLIGHT = 16
TOLERANCE = 2.0  # points

# metric key → the model card's row label (None: no card row of that name)
LABELS = {
    "right_tool": "Valid tool call with the right tool",
    "calculator": "Calculator arguments evaluate to the right number",
    "sql": "SQL runs and returns the right result",
    "time": "current_time called when asked the time",
    "answer_own_result": "Final answer contains the tool result",
}


def card_figures() -> dict[str, dict[str, float]]:
    """{metric: {tier: percent}} from the model card's evaluation table."""
    text = CARD.read_text()
    header = re.search(r"^\| \| (fp32) \| (int8) \| (int4) \|$", text, re.M)
    assert header, "MODEL_CARD.md: evaluation table header not found"
    tiers = header.groups()
    out = {}
    for key, label in LABELS.items():
        row = re.search(r"^\| " + re.escape(label) + r" \|(.*)\|$", text, re.M)
        assert row, f"MODEL_CARD.md: row {label!r} not found"
        cells = [c.strip() for c in row.group(1).split("|")]
        out[key] = {t: float(c.split("%")[0]) for t, c in zip(tiers, cells)}
    return out


def card_calc_sql_answer_bound(tier: str) -> float:
    """A lower bound of the card's "final answer contains the tool result" over calculator
    and SQL turns alone: all current_time answers counted right."""
    text = CARD.read_text()
    header = re.search(r"^\| \| (fp32) \| (int8) \| (int4) \|$", text, re.M).groups()
    answers = re.search(r"^\| " + re.escape(LABELS["answer_own_result"]) + r" \|(.*)\|$", text, re.M)
    times = re.search(r"^\| " + re.escape(LABELS["time"]) + r" \|(.*)\|$", text, re.M)
    cell = lambda row: dict(zip(header, re.findall(r"\((\d+)/(\d+)\)", row.group(1))))[tier]  # noqa: E731
    good, total = map(int, cell(answers))
    _, time_total = map(int, cell(times))
    return 100.0 * (good - time_total) / (total - time_total)


def load_tasks() -> list[dict]:
    return [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]


class Rate:
    def __init__(self) -> None:
        self.good = 0
        self.total = 0

    def add(self, ok: bool) -> None:
        self.good += bool(ok)
        self.total += 1

    @property
    def pct(self) -> float:
        return 100.0 * self.good / self.total if self.total else float("nan")

    def __str__(self) -> str:
        return f"{self.pct:.1f}% ({self.good}/{self.total})"


def ask(client, tier: str, task: dict) -> dict:
    resp = client.chat.completions.create(
        model=f"sluice-agent@{tier}",
        messages=task["messages"],
        temperature=0,
        max_tokens=96,
        extra_headers={"x-sluice-trace": "1"},
    )
    return {
        "model": resp.model,
        "content": resp.choices[0].message.content or "",
        "finish_reason": resp.choices[0].finish_reason,
        "steps": (resp.model_extra or {}).get("sluice_steps") or [],
    }


def first_args(step: dict) -> dict:
    try:
        args = json.loads(step.get("arguments") or "")
    except json.JSONDecodeError:
        return {}
    return args if isinstance(args, dict) else {}


def sql_result(db: sqlite3.Connection, query) -> str | None:
    if not isinstance(query, str):
        return None
    try:
        return run_query(query, db)
    except sqlite3.Error:
        return None


def calc_result(expression) -> str | None:
    try:
        return calc(expression)
    except Exception:  # noqa: BLE001  (what the model wrote may not parse at all)
        return None


def score(tasks: list[dict], answers: list[dict], db: sqlite3.Connection) -> dict[str, Rate]:
    m = {k: Rate() for k in ("right_tool", "calculator", "sql", "time", "answer_expected",
                             "answer_own_result")}
    groups: dict[str, Rate] = {}

    def count(key: str, group: str, ok: bool) -> None:
        m[key].add(ok)
        groups.setdefault(f"{key} / {group}", Rate()).add(ok)

    for task, ans in zip(tasks, answers):
        group = task["heldout"]
        step = ans["steps"][0] if ans["steps"] else None
        right = step is not None and step.get("tool") == task["expected_tool"]
        count("right_tool", group, right)
        args = first_args(step) if step else {}
        own = None
        if task["expected_tool"] == "calculator":
            own = calc_result(args.get("expression")) if right else None
            count("calculator", group, own is not None and own == calc(task["expected_arguments"]["expression"]))
        elif task["expected_tool"] == "sql_query":
            own = sql_result(db, args.get("query")) if right else None
            count("sql", group, own is not None and own == task["expected_result"])
        else:
            count("time", group, right)
            continue
        count("answer_expected", group, task["expected_result"] in ans["content"])
        if own is not None and step.get("outcome") == "ok":
            count("answer_own_result", group, own in ans["content"])
    m.update(groups)
    return m


ROWS = [
    ("right_tool", "Valid tool call with the right tool"),
    ("calculator", "Calculator arguments evaluate to the right number"),
    ("sql", "SQL runs and returns the right result"),
    ("time", "current_time called when asked the time"),
    ("answer_own_result", "Final answer contains the result of the call run (calculator, SQL)"),
    ("answer_expected", "End to end: final answer contains the expected result (calculator, SQL)"),
]


def table(results: dict[str, dict[str, Rate]], card: dict, seconds: dict[str, float]) -> str:
    lines = ["| metric | " + " | ".join(f"{t} gateway | {t} card" for t in TIERS) + " |",
             "|---|" + "---|---|" * len(TIERS)]
    for key, label in ROWS:
        cells = []
        for t in TIERS:
            ref = card.get(key, {}).get(t)
            if key == "answer_own_result":
                ref_txt = f"{ref:.1f}% (all tools, teacher-forced)"
            else:
                ref_txt = "—" if ref is None else f"{ref:.1f}%"
            cells += [str(results[t][key]), ref_txt]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "By how the prompt is held out (gateway):", "",
              "| metric / held out by | " + " | ".join(TIERS) + " |", "|---|" + "---|" * len(TIERS)]
    for key in sorted(k for k in results[TIERS[0]] if " / " in k):
        lines.append(f"| {key} | " + " | ".join(str(results[t][key]) for t in TIERS) + " |")
    lines += ["", "Seconds per tier (510 agent runs, 16 in flight): "
              + ", ".join(f"{t} {seconds[t]:.1f}" for t in TIERS)]
    return "\n".join(lines)


def test_held_out_tool_tasks_match_the_model_card(sluice_default_uncached):
    tasks = load_tasks()
    assert len(tasks) == 510, "regenerate with tools/agent/make_tasks.py"
    card = card_figures()
    db = sqlite3.connect(f"file:{REPO / 'examples' / 'sales.db'}?mode=ro", uri=True)
    results: dict[str, dict[str, Rate]] = {}
    seconds: dict[str, float] = {}
    with sluice_default_uncached.client() as client, ThreadPoolExecutor(IN_FLIGHT) as pool:
        client = client.with_options(timeout=120)
        for tier in TIERS:
            began = time.monotonic()
            answers = list(pool.map(lambda task, tier=tier: ask(client, tier, task), tasks))
            seconds[tier] = time.monotonic() - began
            # The tier really was forced, and every run ended with an answer.
            assert {a["model"] for a in answers} == {f"sluice-agent@{tier}"}
            assert {a["finish_reason"] for a in answers} <= {"stop", "length"}
            results[tier] = score(tasks, answers, db)
    report = table(results, card, seconds)
    print("\n" + report)
    if os.environ.get("SLUICE_WRITE_RESULTS") == "1":
        RESULTS.write_text(
            "# sluice-tiny held-out tool tasks through the gateway's agent loop\n\n"
            "`SLUICE_WRITE_RESULTS=1 SLUICE_BIN=target/debug/sluice .venv/bin/python -m pytest -q "
            "tests/python/test_agent_tasks.py` (tasks: tests/data/agent/sluice-tiny.tasks.jsonl; "
            "card: models/sluice-tiny/MODEL_CARD.md, training/evaluate.py offline)\n\n" + report + "\n")

    failures = []
    for tier in TIERS:
        r = results[tier]
        for key in ("right_tool", "calculator", "sql", "time"):
            diff = r[key].pct - card[key][tier]
            if abs(diff) > TOLERANCE:
                failures.append(f"{tier} {key}: gateway {r[key]} vs card {card[key][tier]:.1f}%")
        lower = card_calc_sql_answer_bound(tier)
        if r["answer_own_result"].pct < lower - 5.0:
            failures.append(f"{tier} answer contains the result of the call run: "
                            f"{r['answer_own_result']} < {lower:.1f}% - 5")
        # End to end is bounded by call accuracy: calls right x answers right.
        calls_right = (r["calculator"].good + r["sql"].good) / (r["calculator"].total + r["sql"].total)
        bound = calls_right * lower - 5.0
        if r["answer_expected"].pct < bound:
            failures.append(f"{tier} end-to-end answer contains the expected result: "
                            f"{r['answer_expected']} < {bound:.1f}% (calls right x {lower:.1f}% - 5)")
    assert not failures, "\n".join(failures) + "\n\n" + report
