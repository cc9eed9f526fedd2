#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (run from the repository root).

Seeds are small realistic inputs: OpenAI chat bodies in the shapes of the API reference,
SSE streams as OpenAI/vLLM send them (text, tool calls, errors), Ollama /api/chat NDJSON
as its docs show it, stop-string and tool-call texts, and the repository's configs plus
the TOML configs embedded in tests/. For the chunked targets, byte 0 is
`flags << 4 | cut count`, followed by that many u16 LE cut offsets (see fuzz/src/lib.rs).
"""
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def chunked(body: bytes, cuts=(), flags=0) -> bytes:
    return bytes([(flags << 4) | len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + body


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# ---- chat_request ------------------------------------------------------------------
weather_tool = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
chats = {
    "basic": {"model": "gpt-4o", "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"}]},
    "system_stream_usage": {"model": "sluice-small", "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    "image": {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What's in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]}],
        "max_tokens": 300},
    "image_url_remote": {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]}]},
    "tools": {"model": "gpt-4o", "messages": [{"role": "user", "content": "What's the weather like in Boston today?"}],
        "tools": [weather_tool], "tool_choice": "auto", "parallel_tool_calls": True},
    "tool_choice_named": {"model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [weather_tool], "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}}},
    "tool_history": {"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_abc123", "type": "function",
            "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris, FR\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22}"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 22 °C."}], "name": "bot"}]},
    "json_schema": {"model": "m", "messages": [{"role": "user", "content": "Give me a person"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": True,
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                       "additionalProperties": False}}}},
    "json_object": {"model": "m", "messages": [{"role": "user", "content": "json please"}],
        "response_format": {"type": "json_object"}},
    "sampling": {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7,
        "top_p": 0.9, "max_completion_tokens": 64, "max_tokens": 32, "seed": 42, "stop": ["\n\n", "END"],
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "n": 1, "user": "u-1", "top_k": 40},
    "stop_string": {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "###"},
    "too_many_stops": {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
    "logprobs": {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 2},
    "bad_role": {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
    "tool_without_id": {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
    "out_of_range": {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
    "empty_messages": {"model": "m", "messages": []},
    "metadata_store": {"model": "m", "messages": [{"role": "user", "content": "x"}], "store": False,
        "metadata": {"k": "v"}, "service_tier": "auto", "reasoning_effort": "low"},
}
for name, body in chats.items():
    write("chat_request", name + ".json", json.dumps(body, ensure_ascii=False))
write("chat_request", "malformed.json", '{"model": "m", "messages": [{"role": "user", "content": "x"}')
write("chat_request", "trailing.json", '{"model":"m","messages":[{"role":"user","content":"x"}]} {}')

# ---- openai_sse --------------------------------------------------------------------
def sse(*payloads, crlf=False):
    nl = "\r\n" if crlf else "\n"
    return "".join(f"data: {p if isinstance(p, str) else json.dumps(p, ensure_ascii=False)}{nl}{nl}" for p in payloads).encode()

def chunk(delta=None, finish=None, usage=None, choices=True):
    c = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
         "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb"}
    c["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}] if choices else []
    if usage is not None:
        c["usage"] = usage
    return c

text_stream = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
                  chunk({"content": " wörld ☕"}), chunk(finish="stop"),
                  chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}), "[DONE]")
tool_stream = sse(
    chunk({"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
          "type": "function", "function": {"name": "get_current_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": " \"Boston, MA\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
    chunk(finish="tool_calls"), "[DONE]")
write("openai_sse", "text", chunked(text_stream))
write("openai_sse", "text_cut", chunked(text_stream, cuts=(7, 100, 201, 333, 340)))
write("openai_sse", "tool_calls", chunked(tool_stream))
write("openai_sse", "tool_calls_cut", chunked(tool_stream, cuts=(1, 250, 251, 600)))
write("openai_sse", "crlf_comments", chunked(b": keep-alive\n\nevent: message\nid: 1\nretry: 10\n" + sse(
    {"choices": [{"index": 0, "delta": {"content": "a"}}]}, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": None},
    crlf=True)))
write("openai_sse", "error_mid_stream", chunked(sse({"choices": [{"index": 0, "delta": {"content": "a"}}]},
    {"error": {"message": "model crashed", "type": "server_error", "param": None, "code": None}})))
write("openai_sse", "no_done", chunked(sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]})))
write("openai_sse", "multiline_data", chunked(b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"y"}}]}\n\ndata: [DONE]\n\n'))
write("openai_sse", "bad_index", chunked(sse({"choices": [{"delta": {"tool_calls": [{"index": 128, "function": {"name": "f"}}]}}]})))

# ---- ollama_ndjson -----------------------------------------------------------------
def nd(*lines):
    return "".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines).encode()

msg = lambda content, **kw: {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
                             "message": {"role": "assistant", "content": content, **kw}, "done": False}
final = {"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z", "message": {"role": "assistant", "content": ""},
         "done": True, "done_reason": "stop", "total_duration": 4883583458, "load_duration": 1334875,
         "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000}
text_nd = nd(msg("The"), msg(" sky"), msg(" is blue ☀"), final)
tools_nd = nd(msg("", tool_calls=[{"function": {"name": "get_current_weather",
                                                 "arguments": {"format": "celsius", "location": "Paris, FR"}}},
                                   {"function": {"name": "noargs"}}]),
              {**final, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5})
write("ollama_ndjson", "text", chunked(text_nd))
write("ollama_ndjson", "text_cut", chunked(text_nd, cuts=(3, 120, 121, 300)))
write("ollama_ndjson", "tool_calls", chunked(tools_nd))
write("ollama_ndjson", "tool_calls_cut", chunked(tools_nd, cuts=(50, 180)))
write("ollama_ndjson", "error_line", chunked(nd(msg("a"), {"error": "an error was encountered while running the model"}, msg("b"))))
write("ollama_ndjson", "length_no_newline", chunked(nd(msg("x"))[:] + json.dumps({**final, "done_reason": "length"}).encode()))
write("ollama_ndjson", "string_args_crlf", chunked(b'{"message":{"content":"","tool_calls":[{"function":{"name":"f","arguments":"{\\"a\\":1}"}}]},"done":false}\r\n\r\n{"done":true}\r\n'))

# ---- onnx_stop ---------------------------------------------------------------------
for i, (text, stops, cuts) in enumerate([
    ("one\n\ntwo", ["\n\n"], ()),
    ("hello END and more", ["END"], (7, 8)),
    ("xabcde", ["cde", "bcdx", "ab"], (2,)),
    ("aaaab!", ["aab"], (1, 2, 3)),
    ("これは日本語です。", ["日本語です", "é!"], (4, 10)),
    ("no stop here", ["", "zz"], ()),
    ("abababbab", ["abb", "bab", "ba"], (3, 5)),
    ("User: hi\nAssistant:", ["\nUser:", "<|im_end|>"], ()),
]):
    write("onnx_stop", f"seed{i}", chunked("\0".join([text] + stops).encode(), cuts=cuts))

# ---- onnx_toolcall -----------------------------------------------------------------
call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
for i, (flags, body, cuts) in enumerate([
    (0, "The answer is 84.", ()),
    (0, call, (5, 30)),
    (0, f"Je vérifie 🌦\n{call}\n{call}\nVoilà ✓\n", (12, 40, 90)),
    (0, 'Hi \n<tool_call>{"name": "f", "arguments": {</tool_call>\n', ()),
    (0, '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call><tool_call>{"name": "g", "parameters": {"b": [true, null]}}', ()),
    (0, 'ok <tool_call>{"name": "f", "argu', ()),
    (1, call + "\n" + call, (20, 40, 60)),
    (1, '<tool_call>{"name": "f", "arguments": {"q": "a}\\"b", "n": [1, {"x": 2}]}}</tool_call>', (30, 45)),
    (2, '<|python_tag|>\0<|eom_id|>\0text <|python_tag|>{"name": "f", "parameters": {}}<|eom_id|>', ()),
    (3, '[TOOL_CALLS]\0[/TOOL_CALLS]\0[TOOL_CALLS]{"name": "f", "arguments": {"a": 1}}[/TOOL_CALLS]', (14,)),
    (2, '\0\0<tool_call>{"name": "f"}</tool_call>', ()),
]):
    write("onnx_toolcall", f"seed{i}", chunked(body.encode(), cuts=cuts, flags=flags))

# ---- config_load -------------------------------------------------------------------
for p in sorted((ROOT / "config").rglob("*.toml")):
    write("config_load", p.stem + ".toml", p.read_text())
seen = set()
for p in sorted((ROOT / "tests").glob("*.rs")):
    for m in re.finditer(r'r#"(.*?)"#', p.read_text(), re.S):
        text = m.group(1)
        if "[backends" not in text and "[[models]]" not in text:
            continue
        # format! strings: placeholders become a loopback address, `{{` a brace.
        text = re.sub(r"(?<!\{)\{[a-z_.0-9]*(:[^}]*)?\}(?!\})", "127.0.0.1:9", text)
        text = text.replace("{{", "{").replace("}}", "}")
        seen.add(text)
for i, text in enumerate(sorted(seen)[:40]):
    write("config_load", f"test{i}.toml", text)
write("config_load", "env.toml", '#env UP_KEY=sk-1\n#env SLUICE__SERVER__LISTEN=127.0.0.1:9999\n#env SLUICE__MODELS__0__UPSTREAM_MODEL=real\n'
      '[backends.up]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\napi_key = "${UP_KEY}"\n\n[[models]]\nname = "m"\nbackend = "up"\n')
write("config_load", "bad.toml", "[server\nlisten=1")
