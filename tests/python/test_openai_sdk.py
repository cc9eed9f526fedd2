"""The official Python `openai` SDK against a running sluice in front of a fake
OpenAI-compatible upstream: what a user of the SDK would see, end to end.

Each test puts a unique marker in its prompt so it can find the exact request sluice
forwarded upstream, whatever else ran before it.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid

import openai
import pytest

import fake_upstream
from conftest import API_KEY, MODELS

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def forwarded(upstream, mark: str) -> list[dict]:
    return upstream.chat_request_containing(mark)


# --- chat completions -----------------------------------------------------------------


def test_plain_completion_has_content_finish_reason_and_usage(client, upstream):
    mark = marker()
    prompt = f"say hello {mark}"
    resp = client.chat.completions.create(
        model="chat-model",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": prompt},
        ],
        temperature=0.2,
        max_tokens=50,
    )
    assert resp.object == "chat.completion"
    assert resp.model == "chat-model"
    assert resp.id.startswith("chatcmpl-")
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == f"echo: {prompt}"
    assert choice.message.tool_calls in (None, [])
    assert choice.finish_reason == "stop"
    # The fake counts words: 3 (system) + 3 (user) prompt, 4 words answered.
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (6, 4, 10)

    [sent] = forwarded(upstream, mark)
    assert sent["model"] == fake_upstream.ECHO
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": prompt},
    ]
    assert sent["temperature"] == pytest.approx(0.2)
    assert sent["max_tokens"] == 50


def test_stream_with_usage_concatenates_to_the_text_and_ends_with_usage(client):
    mark = marker()
    prompt = f"stream these five words {mark}"
    stream = client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"chat-model"}
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion shares its id"

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"echo: {prompt}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 6, 11)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client):
    mark = marker()
    stream = client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": f"no usage please {mark}"}],
        stream=True,
    )
    chunks = list(stream)
    assert all(c.choices for c in chunks), "no empty-choices usage chunk was asked for"
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"echo: no usage please {mark}"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_round_trip_uses_the_tool_result(client, upstream):
    mark = marker()
    messages = [{"role": "user", "content": f"What is the weather in Paris? {mark}"}]

    first = client.chat.completions.create(
        model="tool-model", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id == fake_upstream.TOOL_CALL_ID
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}

    [sent_first] = forwarded(upstream, mark)
    assert sent_first["tools"] == [WEATHER_TOOL]
    assert sent_first["tool_choice"] == "auto"

    tool_output = f"18 degrees and raining ({mark})"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": tool_output},
    ]
    second = client.chat.completions.create(model="tool-model", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"The weather tool says: {tool_output}"

    sent = forwarded(upstream, mark)
    assert len(sent) == 2
    history = sent[1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[0]["content"] == messages[0]["content"]
    assistant = history[1]
    assert not assistant.get("content")
    [forwarded_call] = assistant["tool_calls"]
    assert forwarded_call["id"] == fake_upstream.TOOL_CALL_ID
    assert forwarded_call["type"] == "function"
    assert forwarded_call["function"]["name"] == "get_weather"
    assert json.loads(forwarded_call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert history[2]["tool_call_id"] == fake_upstream.TOOL_CALL_ID
    assert history[2]["content"] == tool_output


def test_streamed_tool_call_assembles_from_deltas(client):
    mark = marker()
    stream = client.chat.completions.create(
        model="tool-model",
        messages=[{"role": "user", "content": f"Weather in Paris? {mark}"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] == fake_upstream.TOOL_CALL_ID
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}


# --- errors ---------------------------------------------------------------------------


def test_unknown_model_is_not_found_with_model_not_found_code(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    err = info.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert "no-such-model" in err.message


def test_invalid_temperature_is_bad_request_naming_the_param(client, upstream):
    mark = marker()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="chat-model",
            messages=[{"role": "user", "content": f"too hot {mark}"}],
            temperature=7,
        )
    err = info.value
    assert err.status_code == 400
    assert err.body["param"] == "temperature"
    assert err.param == "temperature"
    assert err.type == "invalid_request_error"
    assert forwarded(upstream, mark) == [], "an invalid request must not reach the upstream"


def test_upstream_failure_is_a_502(client, upstream):
    mark = marker()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="broken-model", messages=[{"role": "user", "content": f"fail {mark}"}]
        )
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == 502
    assert err.code == "upstream_error"
    assert len(forwarded(upstream, mark)) == 1


def test_upstream_failure_when_streaming_is_a_502_before_any_chunk(client):
    with pytest.raises(openai.APIStatusError) as info:
        stream = client.chat.completions.create(
            model="broken-model",
            messages=[{"role": "user", "content": "fail while streaming"}],
            stream=True,
        )
        list(stream)
    assert info.value.status_code == 502


# --- embeddings and models -----------------------------------------------------------


def test_embeddings_default_base64_decode_to_the_upstream_vectors(client, upstream):
    inputs = [f"hello world {marker()}", "sluice"]
    raw = client.embeddings.with_raw_response.create(model="embed-model", input=inputs)
    # The SDK asks for base64 unless told otherwise; sluice must honour it.
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    wire = raw.http_response.json()
    for i, item in enumerate(wire["data"]):
        assert isinstance(item["embedding"], str)
        packed = base64.b64decode(item["embedding"])
        floats = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        assert floats == fake_upstream.embedding_for(inputs[i], i)

    resp = raw.parse()
    assert resp.model == "embed-model"
    assert [d.index for d in resp.data] == [0, 1]
    for i, item in enumerate(resp.data):
        assert item.embedding == fake_upstream.embedding_for(inputs[i], i)
    assert resp.usage.prompt_tokens == 4

    sent = [b for b in upstream.requests("/v1/embeddings") if b["input"] == inputs]
    assert len(sent) == 1
    assert sent[0]["model"] == fake_upstream.EMBED


def test_embeddings_as_floats(client):
    resp = client.embeddings.create(model="embed-model", input="just one", encoding_format="float")
    [item] = resp.data
    assert item.embedding == fake_upstream.embedding_for("just one", 0)


def test_models_list_returns_the_configured_names(client):
    models = list(client.models.list())
    assert sorted(m.id for m in models) == sorted(MODELS)
    assert all(m.object == "model" for m in models)
    one = client.models.retrieve("tool-model")
    assert one.id == "tool-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# --- API keys -------------------------------------------------------------------------


def test_api_keys_wrong_key_is_refused_right_key_works(sluice_with_keys, upstream):
    mark = marker()
    with sluice_with_keys.client("sk-wrong-key") as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.chat.completions.create(
                model="chat-model", messages=[{"role": "user", "content": f"let me in {mark}"}]
            )
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    assert forwarded(upstream, mark) == []

    with sluice_with_keys.client(API_KEY) as right:
        resp = right.chat.completions.create(
            model="chat-model", messages=[{"role": "user", "content": f"let me in {mark}"}]
        )
        assert resp.choices[0].message.content == f"echo: let me in {mark}"
        assert sorted(m.id for m in right.models.list()) == sorted(MODELS)
    assert len(forwarded(upstream, mark)) == 1
