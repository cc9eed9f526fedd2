"""The server-side agent loop through the official `openai` SDK and LangChain.

sluice on the shipped config/sluice.toml (response cache off, so a streamed answer and a
non-streamed one are both generated, never a replay): `sluice-agent` is sluice-tiny with
the server tools calculator, sql_query (examples/sales.db) and current_time. The client
sends a plain question and gets the finished answer; the tool calls happen in the
gateway and show only in the trace (`x-sluice-trace: 1`: `sluice_steps` in the JSON
answer, `sluice_step` chunks in a stream). Temperature 0 throughout.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

REPO = Path(__file__).resolve().parents[2]
TRACE = {"x-sluice-trace": "1"}
ARITHMETIC = "What is 17 * 23?"
# A sales question sluice-tiny answers right greedily, and the SQL it stands for.
SALES = "How many orders are there?"
SALES_SQL = "SELECT COUNT(*) FROM orders"


def sales_figure() -> str:
    """The answer straight from the database, read-only."""
    db = sqlite3.connect(f"file:{REPO / 'examples' / 'sales.db'}?mode=ro", uri=True)
    try:
        (count,) = db.execute(SALES_SQL).fetchone()
    finally:
        db.close()
    return str(count)


def ask(client, question: str):
    return client.chat.completions.create(
        model="sluice-agent",
        messages=[{"role": "user", "content": question}],
        temperature=0,
        extra_headers=TRACE,
    )


def steps_of(resp) -> list[dict]:
    return (resp.model_extra or {}).get("sluice_steps") or []


@pytest.fixture(scope="module")
def agent(sluice_default_uncached):
    with sluice_default_uncached.client() as c:
        yield c


@pytest.fixture(scope="module")
def answers(agent) -> dict[str, str]:
    """The non-streamed answers (SDK), the reference the other clients must reproduce."""
    return {q: ask(agent, q).choices[0].message.content for q in (ARITHMETIC, SALES)}


def test_arithmetic_is_answered_with_one_server_calculator_call(agent):
    resp = ask(agent, ARITHMETIC)
    choice = resp.choices[0]
    assert "391" in choice.message.content
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls  # the call was the server's, not the client's
    assert resp.model.startswith("sluice-agent@")
    steps = steps_of(resp)
    assert [s["tool"] for s in steps] == ["calculator"], steps
    assert steps[0]["outcome"] == "ok"
    assert json.loads(steps[0]["arguments"]) == {"expression": "17 * 23"}
    assert "output" not in steps[0] and "result" not in steps[0]  # the trace carries no tool output
    # usage sums both turns (the call and the answer): more than one short answer's worth.
    assert resp.usage.completion_tokens > len(choice.message.content.split())


def test_sales_question_is_answered_from_the_database(agent):
    resp = ask(agent, SALES)
    figure = sales_figure()
    assert figure in resp.choices[0].message.content, (figure, resp.choices[0].message.content)
    steps = steps_of(resp)
    assert [s["tool"] for s in steps] == ["sql_query"], steps
    assert steps[0]["outcome"] == "ok"
    # The query the model wrote gives the same figure on a read-only connection.
    query = json.loads(steps[0]["arguments"])["query"]
    db = sqlite3.connect(f"file:{REPO / 'examples' / 'sales.db'}?mode=ro", uri=True)
    try:
        assert [str(v) for (v,) in db.execute(query).fetchall()] == [figure]
    finally:
        db.close()


def test_untraced_answer_has_no_steps(agent):
    resp = agent.chat.completions.create(
        model="sluice-agent", messages=[{"role": "user", "content": ARITHMETIC}], temperature=0)
    assert "391" in resp.choices[0].message.content
    assert "sluice_steps" not in (resp.model_extra or {})


@pytest.mark.parametrize("question", [ARITHMETIC, SALES])
def test_stream_gives_the_same_answer_without_tool_call_finish(agent, answers, question):
    stream = agent.chat.completions.create(
        model="sluice-agent",
        messages=[{"role": "user", "content": question}],
        temperature=0,
        stream=True,
        extra_headers=TRACE,
    )
    text, finishes, steps = [], [], []
    for chunk in stream:
        if (chunk.model_extra or {}).get("sluice_step"):
            steps.append(chunk.model_extra["sluice_step"])
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
    assert finishes == ["stop"]  # one finish, never "tool_calls"
    assert "".join(text) == answers[question]
    assert [s["tool"] for s in steps] == ["calculator" if question == ARITHMETIC else "sql_query"]


@pytest.fixture(scope="module")
def langchain_model(sluice_default_uncached):
    return ChatOpenAI(model="sluice-agent", base_url=sluice_default_uncached.url + "/v1",
                      api_key="unused", temperature=0, max_retries=0, timeout=30)


@pytest.mark.parametrize("question", [ARITHMETIC, SALES])
def test_langchain_invoke_gets_the_same_answer(langchain_model, answers, question):
    msg = langchain_model.invoke(question)
    assert msg.content == answers[question]
    assert not msg.tool_calls
    assert ("391" if question == ARITHMETIC else sales_figure()) in msg.content


@pytest.mark.parametrize("question", [ARITHMETIC, SALES])
def test_langchain_stream_gets_the_same_answer(langchain_model, answers, question):
    chunks = list(langchain_model.stream(question))
    assert "".join(c.content for c in chunks) == answers[question]
    assert not any(c.tool_call_chunks for c in chunks)
    finish = [c.response_metadata.get("finish_reason") for c in chunks if c.response_metadata.get("finish_reason")]
    assert finish == ["stop"]
