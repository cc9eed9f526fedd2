"""Structured generation on the embedded engine, through the official `openai` SDK's
own helpers: the streaming helper accumulating a tool call from OpenAI-shaped deltas,
`parse()` with a pydantic `response_format`, and no tool call when none may be made.

The shipped config with the response cache off, so every answer here is generated,
never a replay of an earlier one.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
from pydantic import BaseModel, Field

MODEL = "sluice-tiny"
QUESTION = [{"role": "user", "content": "What is 12 * 7?"}]

# A strict function tool: the SDK's helpers only parse the arguments of strict tools.
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression", "strict": True,
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"], "additionalProperties": False}}}
SQL_QUERY = {"type": "function", "function": {
    "name": "sql_query", "description": "Run a read-only SQL query on the sales database",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}


class CalculatorPick(BaseModel):
    """Nothing sluice-tiny writes by itself: every field, bound and key comes from the
    schema (the model, left alone, writes `<tool_call>` bodies or prose)."""

    tool: Literal["calculator", "sql_query", "current_time"]
    expression: str = Field(max_length=12)
    answer: int = Field(ge=0, le=1000)


class CalculatorArguments(BaseModel):
    expression: str


class CalculatorCall(BaseModel):
    name: Literal["calculator"]
    arguments: CalculatorArguments


@pytest.fixture
def client(sluice_default_uncached):
    with sluice_default_uncached.client() as c:
        yield c


def generated(raw):
    """The parsed answer of a `with_raw_response` call, which must not be a cache replay."""
    assert raw.headers["x-sluice-cache"] == "bypass"
    return raw.parse()


def test_stream_helper_accumulates_the_same_tool_call_as_the_non_streamed_answer(client):
    whole = generated(client.chat.completions.with_raw_response.create(
        model=MODEL, temperature=0, messages=QUESTION, tools=[CALCULATOR]))
    assert whole.choices[0].finish_reason == "tool_calls"
    [want] = whole.choices[0].message.tool_calls

    with client.chat.completions.stream(
            model=MODEL, temperature=0, messages=QUESTION, tools=[CALCULATOR],
            stream_options={"include_usage": True}) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    # OpenAI's delta shape: the first delta opens the call (index, id, type, name and
    # empty arguments); the arguments then follow piece by piece as they are generated.
    deltas = [d for e in events if e.type == "chunk"
              for choice in e.chunk.choices for d in choice.delta.tool_calls or []]
    first, rest = deltas[0], deltas[1:]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0, "function", "calculator", "")
    assert first.id.startswith("call_")
    assert len(rest) >= 2, f"arguments must stream in pieces, got {deltas}"
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest), rest
    pieces = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(pieces) == len(deltas)
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [(e.index, e.name) for e in done] == [(0, "calculator")]

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id == first.id
    assert call.function.parsed_arguments == json.loads(call.function.arguments)
    assert call.function.parsed_arguments["expression"].replace(" ", "") == "12*7"
    assert done[0].parsed_arguments == call.function.parsed_arguments
    # Generated twice (the ids differ), the same call both ways.
    assert call.id != want.id
    assert (call.function.name, call.function.arguments) == (want.function.name, want.function.arguments)
    assert final.usage == whole.usage


def test_parse_with_a_pydantic_model_returns_what_the_model_validates(client):
    raw = client.chat.completions.with_raw_response.parse(
        model=MODEL, temperature=0, messages=QUESTION, response_format=CalculatorPick)
    r = generated(raw)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert isinstance(choice.message.parsed, CalculatorPick)
    assert CalculatorPick.model_validate_json(choice.message.content) == choice.message.parsed


def test_stream_helper_parses_the_same_object_as_parse(client):
    whole = client.chat.completions.parse(
        model=MODEL, temperature=0, response_format=CalculatorPick,
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}])
    with client.chat.completions.stream(
            model=MODEL, temperature=0, response_format=CalculatorPick,
            messages=[{"role": "user", "content": "What time is it in Tokyo?"}]) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    done = [e for e in events if e.type == "content.done"]
    assert len(done) == 1 and isinstance(done[0].parsed, CalculatorPick)
    assert final.choices[0].message.parsed == whole.choices[0].message.parsed == done[0].parsed
    assert final.choices[0].message.content == whole.choices[0].message.content


def test_json_schema_response_format_as_a_plain_dict(client):
    fmt = {"type": "json_schema", "json_schema": {
        "name": "calculator_call", "strict": True,
        "schema": {"type": "object", "additionalProperties": False,
                   "required": ["name", "arguments"],
                   "properties": {
                       "name": {"type": "string", "enum": ["calculator"]},
                       "arguments": {"type": "object", "additionalProperties": False,
                                     "required": ["expression"],
                                     "properties": {"expression": {"type": "string"}}}}}}}
    r = generated(client.chat.completions.with_raw_response.create(
        model=MODEL, temperature=0, messages=QUESTION, response_format=fmt))
    assert r.choices[0].finish_reason == "stop"
    call = CalculatorCall.model_validate_json(r.choices[0].message.content)
    assert call.arguments.expression


def test_json_object_response_format_is_a_json_object(client):
    r = generated(client.chat.completions.with_raw_response.create(
        model=MODEL, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Hello! Who are you?"}]))
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


# Questions sluice-tiny was trained to answer with a tool call.
TOOL_QUESTIONS = ["What is 12 * 7?", "How many orders were placed in March 2024?",
                  "What time is it in Tokyo?"]


@pytest.mark.parametrize("offer", ["no tools", "tool_choice none"])
def test_sampled_answers_never_call_a_tool_when_none_may_be_called(client, offer):
    extra = {} if offer == "no tools" else {"tools": [CALCULATOR, SQL_QUERY], "tool_choice": "none"}

    def ask(seed):
        question = TOOL_QUESTIONS[seed % len(TOOL_QUESTIONS)]
        return client.chat.completions.create(
            model=MODEL, temperature=1.0, seed=seed,
            messages=[{"role": "user", "content": question}], **extra)

    # Concurrent, so the engine batches them: 50 sampled answers in a few seconds.
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(50)))
    for seed, r in enumerate(answers):
        choice = r.choices[0]
        assert not choice.message.tool_calls, (seed, choice)
        assert choice.finish_reason in ("stop", "length"), (seed, choice)
        assert "<tool_call>" not in (choice.message.content or ""), (seed, choice)
