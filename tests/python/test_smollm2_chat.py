"""The official `openai` SDK against SmolLM2-135M-Instruct on the embedded engine
(converted from its GGUF by `make models`): chat, streaming, stop, seed, max_tokens,
the model's own end-of-turn token and context errors, and batched output equal to
output generated alone."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2
import openai
import pytest
from tokenizers import Tokenizer

MODEL = "smollm2-135m"
FP32 = "smollm2-135m-fp32"
FOLDER = Path(__file__).resolve().parents[2] / "models" / "smollm2-135m"


@pytest.fixture
def client(sluice_local_models):
    with sluice_local_models.client() as c:
        c.timeout = 120
        yield c


def ask(client, content, model=MODEL, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kwargs)


def prompt_ids(messages):
    """The prompt as the model's own chat template and tokenizer make it."""
    config = json.loads((FOLDER / "tokenizer_config.json").read_text())
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(config["chat_template"]).render(
        messages=messages, add_generation_prompt=True,
        bos_token=config.get("bos_token", ""), eos_token=config.get("eos_token", ""))
    return Tokenizer.from_file(str(FOLDER / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_models_lists_the_tiers_and_the_embedding_model(client):
    ids = {m.id for m in client.models.list()}
    assert {MODEL, "smollm2-135m-int4", FP32, "minilm-l6", "sluice-tiny"} <= ids


def test_a_greedy_answer_ends_on_the_models_own_end_of_turn(client):
    # fp32: the tier whose greedy text equals the reference (test_smollm2_reference.py).
    r = ask(client, "What is the capital of France?", model=FP32, temperature=0, max_tokens=64)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    assert "Paris" in choice.message.content
    assert "<|im_end|>" not in choice.message.content
    # Usage counts the prompt exactly as the GGUF's chat template and tokenizer render it
    # (with the default system prompt the template adds).
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert r.usage.prompt_tokens == len(prompt_ids(messages))
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_text_equals_the_non_streamed_text(client):
    question = "Name three colours of the rainbow."
    whole = ask(client, question, temperature=0, max_tokens=40).choices[0].message.content
    chunks = list(ask(client, question, temperature=0, max_tokens=40, stream=True,
                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client):
    r = ask(client, "Write a long story about a dragon.", temperature=0, max_tokens=7)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_a_stop_sequence_ends_the_answer_before_it(client):
    question = "Write a long story about a dragon."
    full = ask(client, question, temperature=0, max_tokens=48).choices[0].message.content
    words = full.split()
    assert len(words) > 6, full
    stop = " " + words[4]
    r = ask(client, question, temperature=0, max_tokens=48, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]


def test_the_same_seed_samples_the_same_text_and_another_seed_differs(client):
    question = "Tell me something about the sea."
    first = ask(client, question, temperature=1.0, seed=7, max_tokens=24).choices[0].message.content
    again = ask(client, question, temperature=1.0, seed=7, max_tokens=24).choices[0].message.content
    assert first == again
    others = {ask(client, question, temperature=1.0, seed=s, max_tokens=24).choices[0].message.content
              for s in (8, 9, 10)}
    assert others - {first}, "three other seeds all sampled the same text"


def test_a_prompt_longer_than_the_context_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "word " * 2100, max_tokens=8)
    assert err.value.code == "context_length_exceeded"
    assert "2048" in str(err.value)


def test_max_tokens_beyond_the_context_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "Hello", max_tokens=5000)
    assert err.value.code == "context_length_exceeded"


def test_batched_answers_equal_answers_generated_alone_at_fp32(client):
    questions = [
        "What is 2 + 3?", "Name a fruit that is yellow.", "What colour is the sky?",
        "Translate 'hello' to French.", "What is the opposite of hot?",
        "How many legs does a spider have?", "Give me a synonym for happy.",
        "What is the largest planet?",
    ]
    alone = [ask(client, q, model=FP32, temperature=0, max_tokens=24).choices[0].message.content
             for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(
            lambda q: ask(client, q, model=FP32, temperature=0, max_tokens=24).choices[0].message.content,
            questions))
    assert together == alone
