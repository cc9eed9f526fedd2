"""The bundled demo model models/sluice-tiny: the shipped files load, agree with each
other, the tokenizer round-trips ChatML and tool-call tokens, and every tier runs a
KV-cached step and answers an arithmetic question with a tool call. (The full
evaluation is training/evaluate.py; its results are in the model card.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "sluice-tiny"
MANIFEST = json.loads((MODEL_DIR / "sluice-model.json").read_text())
TOKENIZER = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
TOKENIZER_CONFIG = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "evaluate an arithmetic expression",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


def render(messages, tools=None, add_generation_prompt=True):
    env = jinja2.Environment(keep_trailing_newline=True)
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
    template = env.from_string(TOKENIZER_CONFIG["chat_template"])
    msgs = [{"content": "", "tool_calls": None, **m} for m in messages]
    return template.render(messages=msgs, tools=tools or [], add_generation_prompt=add_generation_prompt)


def test_special_tokens_are_single_ids_and_round_trip():
    ids = MANIFEST["special_tokens"]["ids"]
    for token in SPECIALS:
        enc = TOKENIZER.encode(token)
        assert enc.ids == [ids[token]], token
        assert TOKENIZER.decode(enc.ids, skip_special_tokens=False) == token
    text = '<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7"}}</tool_call><|im_end|>\n'
    enc = TOKENIZER.encode(text)
    assert TOKENIZER.decode(enc.ids, skip_special_tokens=False) == text
    assert ids["<tool_call>"] in enc.ids and ids["</tool_call>"] in enc.ids


def test_digits_are_single_tokens_so_numbers_copy_exactly():
    enc = TOKENIZER.encode("1234567890")
    assert [TOKENIZER.decode([i]) for i in enc.ids] == list("1234567890")


def test_chat_template_renders_chatml_with_tool_calls():
    text = render(
        [
            {"role": "user", "content": "What is 12 * 7?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"12 * 7\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "84"},
        ],
        [CALCULATOR],
    )
    assert text.startswith("<|im_start|>system\n")
    assert "- calculator: evaluate an arithmetic expression\n" in text
    assert '<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7"}}</tool_call><|im_end|>\n' in text
    assert text.endswith("<|im_start|>tool\n84<|im_end|>\n<|im_start|>assistant\n")


def test_manifest_matches_the_files():
    assert MANIFEST["vocab_size"] == TOKENIZER.get_vocab_size()
    assert MANIFEST["head_dim"] * MANIFEST["num_attention_heads"] == MANIFEST["hidden_size"]
    for tier in ("fp32", "int8", "int4"):
        info = MANIFEST["tiers"][tier]
        assert (MODEL_DIR / info["file"]).stat().st_size == info["bytes"]
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert total < 40_000_000, f"models/sluice-tiny is {total / 1e6:.1f} MB"


def session(tier):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(MODEL_DIR / MANIFEST["tiers"][tier]["file"]), opts, providers=["CPUExecutionProvider"])


def feed(ids, past_len, past):
    n = len(ids)
    f = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, past_len + n), dtype=np.int64),
        "position_ids": np.arange(past_len, past_len + n, dtype=np.int64)[None],
    }
    for i, (k, v) in enumerate(past):
        f[f"past_key_values.{i}.key"] = k
        f[f"past_key_values.{i}.value"] = v
    return f


def greedy(sess, prompt_ids, max_new=48):
    layers, heads, hd = MANIFEST["num_layers"], MANIFEST["num_attention_heads"], MANIFEST["head_dim"]
    names = [o.name for o in sess.get_outputs()]
    empty = np.zeros((1, heads, 0, hd), dtype=np.float32)
    past = [(empty, empty)] * layers
    out = sess.run(names, feed(prompt_ids, 0, past))
    assert out[0].shape == (1, len(prompt_ids), MANIFEST["vocab_size"])
    assert out[1].shape == (1, heads, len(prompt_ids), hd)
    total, generated = len(prompt_ids), []
    stop = set(MANIFEST["stop_token_ids"])
    for _ in range(max_new):
        token = int(out[0][0, -1].argmax())
        if token in stop:
            break
        generated.append(token)
        # The graph returns only the new keys/values: the cache is appended here.
        past = [
            (np.concatenate([k, out[1 + 2 * i]], axis=2), np.concatenate([v, out[2 + 2 * i]], axis=2))
            for i, (k, v) in enumerate(past)
        ]
        out = sess.run(names, feed([token], total, past))
        total += 1
    return TOKENIZER.decode(generated, skip_special_tokens=False)


@pytest.mark.parametrize("tier", ["fp32", "int8", "int4"])
def test_every_tier_answers_arithmetic_with_a_calculator_call(tier):
    prompt = render([{"role": "user", "content": "What is 12 * 7?"}], [CALCULATOR])
    text = greedy(session(tier), TOKENIZER.encode(prompt).ids)
    m = re.search(r"<tool_call>(.*?)</tool_call>", text, re.S)
    assert m, text
    call = json.loads(m.group(1))
    assert call["name"] == "calculator"
    expression = call["arguments"]["expression"]
    assert re.fullmatch(r"[0-9\s.+\-*/()]+", expression), expression
    assert eval(expression, {"__builtins__": {}}) == 84  # noqa: S307 - digits and operators only
