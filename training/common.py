"""Shared definitions of the sluice-tiny pipeline: special tokens, the ChatML chat
template (the same string goes into tokenizer_config.json, so sluice's engine renders
prompts exactly as training did), the demo tools, and paths.

Tool calls are written the way Qwen/Hermes-style models write them:
    <tool_call>{"name": "calculator", "arguments": {"expression": "2 + 2"}}</tool_call>
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "sluice-tiny"
EXAMPLES_DIR = ROOT / "examples"
WORK_DIR = ROOT / "training" / "work"  # intermediate files (gitignored)

SEED = 1234
MODEL_NAME = "sluice-tiny"
CONTEXT_LENGTH = 512

EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
# Order fixes the ids: <|endoftext|> = 0 (also padding), <|im_start|> = 1, ...
SPECIAL_TOKENS = [EOS, IM_START, IM_END, TOOL_CALL_START, TOOL_CALL_END]

DEFAULT_SYSTEM = "You are sluice-tiny, a small demo assistant."

# HF-style chat template (Jinja), written without layout whitespace so that every
# character it emits is deliberate. Tools are listed compactly by name and description;
# assistant tool calls in history are rendered back into <tool_call> tags (arguments may
# be a JSON string, as OpenAI clients send them, or an object); tool results use the
# `tool` role.
CHAT_TEMPLATE = (
    "{% set has_system = messages and messages[0]['role'] == 'system' %}"
    "{% if has_system or tools %}"
    "<|im_start|>system\n"
    "{% if has_system %}{{ messages[0]['content'] }}{% else %}" + DEFAULT_SYSTEM + "{% endif %}"
    # The newline is an expression so the template renders the same with Hugging Face's
    # trim_blocks/lstrip_blocks settings as with plain Jinja.
    "{% if tools %}{{ '\\n' }}# Tools\n"
    "{% for tool in tools %}- {{ tool['function']['name'] }}: {{ tool['function']['description'] }}\n{% endfor %}"
    "Call a tool with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>"
    "{% endif %}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "<tool_call>{\"name\": \"{{ call['function']['name'] }}\", \"arguments\": "
    "{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}"
    "{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}}</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "evaluate an arithmetic expression",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "sql_query",
            "description": "run a read-only SQL query on the sales database",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "current_time",
            "description": "get the current date and time",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
            },
        },
    },
]


def _tojson(value) -> str:
    # Matches json.dumps defaults (", " and ": "), which is also what tool calls in the
    # training data use.
    return json.dumps(value, ensure_ascii=False)


_env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
_env.filters["tojson"] = _tojson
_template = _env.from_string(CHAT_TEMPLATE)


def render(messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
    """Render OpenAI-style messages with the chat template."""
    msgs = []
    for m in messages:
        m = dict(m)
        m.setdefault("content", "")
        m.setdefault("tool_calls", None)
        msgs.append(m)
    return _template.render(messages=msgs, tools=tools or [], add_generation_prompt=add_generation_prompt)


def tool_call_text(name: str, arguments: dict) -> str:
    """How the model writes one call."""
    return f"{TOOL_CALL_START}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{TOOL_CALL_END}"


if __name__ == "__main__":
    demo = [
        {"role": "user", "content": "What is 12 * 7?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"12 * 7\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "84"},
        {"role": "assistant", "content": "12 * 7 = 84."},
    ]
    print(render(demo, TOOLS))
    print("----")
    print(render([{"role": "user", "content": "Hi"}], None, add_generation_prompt=True))
