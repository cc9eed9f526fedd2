"""Embeddings from sluice's embedded engine (all-MiniLM-L6-v2, models/minilm-l6) through
the clients people use: the official `openai` SDK on its default path (it asks for base64
and decodes it) and LangChain's `OpenAIEmbeddings`. The vectors are checked against
sentence-transformers' own for the same sentences (tests/fixtures/minilm_reference.json).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path

import openai
import pytest
from langchain_openai import OpenAIEmbeddings

MODEL = "minilm-l6"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json"


def reference() -> list[tuple[str, list[float], int]]:
    items = json.loads(FIXTURE.read_text())["items"]
    out = []
    for item in items:
        raw = base64.b64decode(item["embedding"])
        out.append((item["text"], list(struct.unpack(f"<{len(raw) // 4}f", raw)), item["tokens"]))
    return out


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture
def client(sluice_local_models):
    with sluice_local_models.client() as c:
        yield c


def test_sdk_default_base64_matches_sentence_transformers(client):
    ref = reference()[:40]
    texts = [t for t, _, _ in ref]
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=texts)
    body = json.loads(raw.text)
    # The SDK asked for base64 (its default) and got it.
    assert all(isinstance(item["embedding"], str) for item in body["data"])
    resp = raw.parse()
    assert resp.model == MODEL
    assert [d.index for d in resp.data] == list(range(len(texts)))
    for d, (text, want, _) in zip(resp.data, ref):
        assert len(d.embedding) == 384
        assert cosine(d.embedding, want) >= 0.999, text
    tokens = sum(n for _, _, n in ref)
    assert resp.usage.prompt_tokens == tokens
    assert resp.usage.total_tokens == tokens


def test_float_format_and_dimensions(client):
    text = "Embeddings map text to vectors so that similar meanings are close together."
    as_base64 = client.embeddings.create(model=MODEL, input=text).data[0].embedding
    as_float = client.embeddings.create(model=MODEL, input=text, encoding_format="float")
    assert as_float.data[0].embedding == as_base64
    short = client.embeddings.create(model=MODEL, input=text, dimensions=128).data[0].embedding
    assert len(short) == 128
    assert abs(math.sqrt(sum(x * x for x in short)) - 1.0) < 1e-5
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=text, dimensions=1024)
    assert "384" in e.value.message


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=["fine", "word " * 300])
    assert e.value.code == "context_length_exceeded"
    assert "input[1]" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in e.value.message


def test_langchain_openai_embeddings(sluice_local_models):
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=sluice_local_models.url + "/v1",
        api_key="unused",
        max_retries=0,
        # With the default (True) LangChain first tokenises every text with tiktoken's
        # cl100k_base to split long texts, and tiktoken downloads that vocabulary at run
        # time (no network here). Those ids are OpenAI's, not this model's: sluice would
        # read them as MiniLM ids. Sending the text is right for a non-OpenAI model.
        check_embedding_ctx_length=False,
    )
    ref = reference()
    docs = [t for t, _, _ in ref[40:70]]
    vectors = embeddings.embed_documents(docs)
    assert len(vectors) == len(docs)
    for v, (text, want, _) in zip(vectors, ref[40:70]):
        assert cosine(v, want) >= 0.999, text
    query_text, query_want, _ = ref[70]
    query = embeddings.embed_query(query_text)
    assert cosine(query, query_want) >= 0.999
