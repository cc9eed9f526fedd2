"""The official `openai` SDK against sluice on its default config: the embedded ONNX
engine serving the bundled sluice-tiny model, exactly what `make run` starts."""

from __future__ import annotations

import json

import openai
import pytest

TOOLS = [
    {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}},
    {"type": "function", "function": {
        "name": "sql_query", "description": "Run a read-only SQL query on the sales database",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}},
]


@pytest.fixture
def client(sluice_default):
    with sluice_default.client() as c:
        yield c


def test_models_lists_the_bundled_model(client):
    ids = [m.id for m in client.models.list()]
    assert "sluice-tiny" in ids


def test_chat_completion_answers(client):
    r = client.chat.completions.create(
        model="sluice-tiny", temperature=0,
        messages=[{"role": "user", "content": "Hello! Who are you?"}])
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content and "<|im_end|>" not in choice.message.content
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_text_equals_the_non_streamed_text(client):
    messages = [{"role": "user", "content": "Hello! Who are you?"}]
    whole = client.chat.completions.create(model="sluice-tiny", temperature=0, messages=messages)
    stream = client.chat.completions.create(
        model="sluice-tiny", temperature=0, messages=messages, stream=True,
        stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == "stop"
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "What is 12 * 7?"}]
    r = client.chat.completions.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments)["expression"].replace(" ", "") == "12*7"

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "84"}]
    final = client.chat.completions.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    assert "84" in final.choices[0].message.content


def test_streamed_tool_call_has_no_raw_tags(client):
    stream = client.chat.completions.create(
        model="sluice-tiny", temperature=0, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": "How many orders were placed in March 2024?"}])
    names, content, finish = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
            finish = choice.finish_reason or finish
    assert names == ["sql_query"]
    assert "<tool_call>" not in content and "</tool_call>" not in content
    assert finish == "tool_calls"


def test_a_too_long_prompt_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="sluice-tiny",
            messages=[{"role": "user", "content": "Tell me about widgets. " * 300}])
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 512 tokens" in err.value.message


def test_a_repeated_deterministic_request_is_a_cache_hit_the_sdk_reads_both_ways(client):
    messages = [{"role": "user", "content": "What is 12 * 7? (cache test)"}]
    first = client.chat.completions.with_raw_response.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS)
    assert first.headers["x-sluice-cache"] == "miss"
    original = first.parse()
    again = client.chat.completions.with_raw_response.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS)
    assert again.headers["x-sluice-cache"] == "hit"
    hit = again.parse()
    assert hit.choices[0].message.tool_calls == original.choices[0].message.tool_calls
    assert hit.choices[0].finish_reason == original.choices[0].finish_reason
    assert hit.usage == original.usage

    # The same answer replayed as a stream, with the usage chunk.
    stream = client.chat.completions.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS, stream=True,
        stream_options={"include_usage": True})
    calls, finish, usage = {}, None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": call.id, "name": None, "arguments": ""})
                if call.function.name:
                    entry["name"] = call.function.name
                entry["arguments"] += call.function.arguments or ""
    want = original.choices[0].message.tool_calls[0]
    assert calls[0] == {"id": want.id, "name": want.function.name, "arguments": want.function.arguments}
    assert finish == "tool_calls"
    assert usage == original.usage

    # Cache-Control: no-cache asks for a fresh answer.
    fresh = client.chat.completions.with_raw_response.create(
        model="sluice-tiny", temperature=0, messages=messages, tools=TOOLS,
        extra_headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-sluice-cache"] == "bypass"
