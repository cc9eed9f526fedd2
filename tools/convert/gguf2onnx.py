"""Convert a Llama-family GGUF file into a model folder sluice's embedded engine serves.

    python tools/convert/gguf2onnx.py MODEL.gguf OUT_DIR [--tiers fp32,int8,int4]
        [--default-tier int8] [--name NAME] [--context N]

writes OUT_DIR/model.{fp32,int8,int4}.onnx, tokenizer.json, tokenizer_config.json and
sluice-model.json, in the layout of models/sluice-tiny (training/export.py):

    inputs : input_ids int64 [b, s], attention_mask int64 [b, past + s],
             position_ids int64 [b, s], last_token_index int64 [b],
             past_key_values.{i}.key|value float32 [b, kv_heads, past, head_dim]
    outputs: logits float32 [b, 1, vocab] (at last_token_index only),
             new_key_values.{i}.key|value float32 [b, kv_heads, s, head_dim] (new tokens only)

Key j is visible to new token i when attention_mask[b, j] == 1 and j <= past + i, so
right-padded caches and left-padded prompts both work. Weights are dequantized here with
numpy (Q4_0, Q4_1, Q8_0, F16, BF16, F32); the graph is fp32 and is quantized into the
int8/int4 tiers with onnxruntime's MatMulNBits quantizer (int4: the same call as
training/export.py; int8: 8-bit weights the same way, see quantize_int8).

RoPE: GGUF stores the Q/K rows of each head permuted for llama.cpp's interleaved rotary
layout. This converter undoes that permutation (back to the Hugging Face layout) and
rotates halves (HF's rotate_half), so the keys in the engine's cache are in HF layout.
The attention scale 1/sqrt(head_dim) is folded into the Q weights (a power of two for
head_dim 64, so exact), and Q/K/V and gate/up are each one MatMul.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

OPSET = 17
TIER_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}
SUPPORTED_ARCHS = ("llama",)
QK = 32  # elements per block in Q4_0 / Q4_1 / Q8_0
MASK_MIN = float(np.finfo(np.float32).min)
# Byte-level BPE pre-tokenizers, by GGUF `tokenizer.ggml.pre` (llama.cpp's names).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# llama.cpp's fallback when `pre` is "default" (or missing, in old files): four regexes
# applied one after another, each splitting the pieces the previous one produced.
LLAMA_CPP_DEFAULT_REGEXES = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
]
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


class ConvertError(Exception):
    """An expected refusal (unsupported file): printed without a traceback."""


def phase(name: str, timings: dict):
    class _Timer:
        def __enter__(self):
            self.t = time.perf_counter()
            print(f"[{name}] ...", flush=True)

        def __exit__(self, *exc):
            if exc[0] is None:
                timings[name] = time.perf_counter() - self.t
                print(f"[{name}] {timings[name]:.1f} s", flush=True)

    return _Timer()


# ---------------------------------------------------------------- GGUF reading

def field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.copy().view(np.float16).astype(np.float32)


def dequantize(tensor) -> np.ndarray:
    """A GGUF tensor as float32 in numpy order (reversed ggml dims: [out, in] for weights)."""
    from gguf import GGMLQuantizationType as Q

    kind = tensor.tensor_type
    shape = tuple(int(n) for n in reversed(tensor.shape))
    data = np.asarray(tensor.data)
    if kind == Q.F32:
        return data.astype(np.float32).reshape(shape)
    if kind == Q.F16:
        return data.astype(np.float32).reshape(shape)
    if kind == Q.BF16:
        bits = data.reshape(-1).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    raw = data.reshape(-1).view(np.uint8)
    if kind == Q.Q8_0:  # d: f16, qs: int8[32]
        blocks = raw.reshape(-1, 2 + QK)
        d = _f16(blocks[:, :2])
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(shape)
    if kind in (Q.Q4_0, Q.Q4_1):  # d: f16, [m: f16,] qs: 16 bytes, low nibbles first
        head = 2 if kind == Q.Q4_0 else 4
        blocks = raw.reshape(-1, head + QK // 2)
        d = _f16(blocks[:, :2])
        qs = blocks[:, head:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        if kind == Q.Q4_0:
            return ((q - 8.0) * d).reshape(shape)
        return (q * d + _f16(blocks[:, 2:4])).reshape(shape)
    raise AssertionError(kind)


SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")


def read_gguf(path: Path, context_cap: int) -> tuple[dict, dict]:
    """(hyper-parameters, float32 weights in HF layout: linear weights as [in, out])."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is "not a GGUF file"
        raise ConvertError(f"{path}: cannot read as GGUF ({e})") from None
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ConvertError(
            f"{path.name}: architecture {arch!r} is not supported; this converter handles "
            f"Llama-family models (general.architecture = {', '.join(SUPPORTED_ARCHS)})"
        )
    a = arch
    if field(reader, f"{a}.expert_count", 0):
        raise ConvertError(f"{path.name}: mixture-of-experts llama models are not supported")
    scaling = field(reader, f"{a}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ConvertError(f"{path.name}: RoPE scaling {scaling!r} is not supported")
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:
        raise ConvertError(f"{path.name}: per-dimension RoPE frequencies (Llama 3.1 rope_freqs) are not supported")
    bad = [t for t in reader.tensors if t.tensor_type.name not in SUPPORTED_TYPES]
    if bad:
        t = bad[0]
        raise ConvertError(
            f"{path.name}: tensor {t.name!r} has type {t.tensor_type.name}, which this converter "
            f"cannot dequantize ({len(bad)} such tensor(s)); supported types: {', '.join(SUPPORTED_TYPES)}"
        )
    n_head = int(field(reader, f"{a}.attention.head_count"))
    hidden = int(field(reader, f"{a}.embedding_length"))
    head_dim = int(field(reader, f"{a}.attention.key_length", hidden // n_head))
    rope_dim = int(field(reader, f"{a}.rope.dimension_count", head_dim))
    if rope_dim != head_dim or head_dim % 2:
        raise ConvertError(f"{path.name}: partial rotary embeddings (rope dims {rope_dim} of {head_dim}) are not supported")
    tokens = field(reader, "tokenizer.ggml.tokens")
    hp = {
        "arch": arch,
        "name": str(field(reader, "general.name", path.stem)),
        "n_layer": int(field(reader, f"{a}.block_count")),
        "hidden": hidden,
        "ffn": int(field(reader, f"{a}.feed_forward_length")),
        "n_head": n_head,
        "n_kv": int(field(reader, f"{a}.attention.head_count_kv", n_head)),
        "head_dim": head_dim,
        "eps": float(field(reader, f"{a}.attention.layer_norm_rms_epsilon")),
        "theta": float(field(reader, f"{a}.rope.freq_base", 10000.0)),
        "context": min(int(field(reader, f"{a}.context_length", context_cap)), context_cap),
        "vocab": len(tokens),
        "license": field(reader, "general.license"),
    }
    hp["tokenizer"] = read_tokenizer_fields(reader, path)

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise ConvertError(f"{path.name}: tensor {name!r} is missing")
        return dequantize(tensors[name])

    def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
        # llama.cpp's convert: rows [h, 2, d/2] -> [h, d/2, 2]; this is the inverse.
        out, inp = w.shape
        return w.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)

    H, KV, D = hp["n_head"], hp["n_kv"], hp["head_dim"]
    w = {"embed": get("token_embd.weight"), "norm": get("output_norm.weight")}
    if w["embed"].shape != (hp["vocab"], hidden):
        raise ConvertError(f"{path.name}: token_embd has shape {w['embed'].shape}, expected ({hp['vocab']}, {hidden})")
    w["lm_head"] = np.ascontiguousarray((get("output.weight") if "output.weight" in tensors else w["embed"]).T)
    hp["tied"] = "output.weight" not in tensors
    for i in range(hp["n_layer"]):
        p = f"blk.{i}."
        q = unpermute(get(p + "attn_q.weight"), H) / np.sqrt(D)  # scale folded in
        k = unpermute(get(p + "attn_k.weight"), KV)
        v = get(p + "attn_v.weight")
        w[f"{i}.qkv"] = np.ascontiguousarray(np.concatenate([q, k, v]).T.astype(np.float32))
        w[f"{i}.o"] = np.ascontiguousarray(get(p + "attn_output.weight").T)
        w[f"{i}.gate_up"] = np.ascontiguousarray(np.concatenate([get(p + "ffn_gate.weight"), get(p + "ffn_up.weight")]).T)
        w[f"{i}.down"] = np.ascontiguousarray(get(p + "ffn_down.weight").T)
        w[f"{i}.attn_norm"] = get(p + "attn_norm.weight")
        w[f"{i}.ffn_norm"] = get(p + "ffn_norm.weight")
        if any(p + f"attn_{x}.bias" in tensors for x in "qkv"):
            raise ConvertError(f"{path.name}: attention biases are not supported")
    return hp, w


# ---------------------------------------------------------------- tokenizer

def read_tokenizer_fields(reader, path: Path) -> dict:
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConvertError(
            f"{path.name}: tokenizer model {model!r} is not supported; only byte-level BPE "
            "(tokenizer.ggml.model = 'gpt2') is"
        )
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in ("smollm", "gpt-2", "default"):
        raise ConvertError(
            f"{path.name}: pre-tokenizer {pre!r} is not supported (known: smollm, gpt-2, default); "
            "its splitting rules would have to be added to gguf2onnx.py rather than guessed"
        )
    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    n = len(tokens)
    types = field(reader, "tokenizer.ggml.token_type") or [1] * n

    def token_id(key):
        v = field(reader, key)
        return None if v is None or not 0 <= int(v) < n else int(v)

    if token_id("tokenizer.ggml.eos_token_id") is None:
        raise ConvertError(f"{path.name}: no tokenizer.ggml.eos_token_id: sluice needs a token that ends a turn")
    return {
        "pre": pre,
        "tokens": tokens,
        "types": [int(t) for t in types],
        "merges": list(field(reader, "tokenizer.ggml.merges") or []),
        "bos": token_id("tokenizer.ggml.bos_token_id"),
        "eos": token_id("tokenizer.ggml.eos_token_id"),
        "eot": token_id("tokenizer.ggml.eot_token_id"),
        "unk": token_id("tokenizer.ggml.unknown_token_id"),
        "pad": token_id("tokenizer.ggml.padding_token_id"),
        "add_bos": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos": bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        "chat_template": field(reader, "tokenizer.chat_template"),
    }


def pre_tokenizer(pre: str) -> dict:
    if pre == "smollm":  # HF SmolLM/SmolLM2: every digit on its own, then GPT-2's splits
        return {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]}
    if pre == "gpt-2":
        return dict(BYTE_LEVEL)
    splits = [
        {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
        for r in LLAMA_CPP_DEFAULT_REGEXES
    ]
    return {"type": "Sequence", "pretokenizers": splits + [dict(BYTE_LEVEL, use_regex=False)]}


def write_tokenizer(tok: dict, out: Path, context: int) -> dict:
    tokens, types = tok["tokens"], tok["types"]
    # token_type 3 = control (special), 4 = user-defined (whole, but not special).
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": types[i] == 3}
        for i, t in enumerate(tokens) if types[i] in (3, 4)
    ]
    merges = [m.split(" ", 1) for m in tok["merges"]]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer(tok["pre"]),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    if len(data["model"]["vocab"]) != len(tokens):
        raise ConvertError("tokenizer.ggml.tokens holds duplicate tokens")
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))

    def text(i):
        return None if i is None else tokens[i]

    if not tok["chat_template"]:
        raise ConvertError("the GGUF has no tokenizer.chat_template; sluice needs one to serve chat")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": tok["chat_template"],
        "bos_token": text(tok["bos"]),
        "eos_token": text(tok["eos"]),
        "pad_token": text(tok["pad"]),
        "unk_token": text(tok["unk"]),
        "add_bos_token": tok["add_bos"],
        "add_eos_token": tok["add_eos"],
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in added
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return {a["content"]: a["id"] for a in added if a["special"]}


# ---------------------------------------------------------------- ONNX graph

class Graph:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, array) -> str:
        self.inits.append(self.nh.from_array(np.asarray(array), name))
        return name

    def op(self, kind: str, inputs, n_out: int = 1, out=None, domain: str = "", **attrs):
        self.count += 1
        outs = out if out is not None else [f"{kind.lower()}_{self.count}_{k}" for k in range(n_out)]
        self.nodes.append(self.h.make_node(kind, list(inputs), outs, name=f"{kind}_{self.count}", domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs


def build_graph(hp: dict, w: dict):
    import onnx
    from onnx import TensorProto, helper

    g = Graph()
    L, H, KV, D, F = hp["n_layer"], hp["n_head"], hp["n_kv"], hp["head_dim"], hp["ffn"]
    G = H // KV
    def i64(*v):  # a 1-D int64 tensor
        return np.array(v, dtype=np.int64)

    c = {
        "eps": g.const("eps", np.float32(hp["eps"])),
        "two": g.const("two", np.float32(2.0)),
        "zero": g.const("zero_f", np.float32(0.0)),
        "min": g.const("mask_min", np.float32(MASK_MIN)),
        "i0": g.const("i0", np.int64(0)), "i1": g.const("i1", np.int64(1)),
        "ax_last": g.const("ax_last", i64(-1)), "ax1": g.const("ax1", i64(1)),
        "i0_1d": g.const("i0_1d", i64(0)), "ax3_1d": g.const("ax3_1d", i64(3)),
    }
    rms = lambda x, wname: g.op("Mul", [g.op("Div", [x, g.op("Sqrt", [g.op("Add", [  # noqa: E731
        g.op("ReduceMean", [g.op("Pow", [x, c["two"]])], axes=[-1], keepdims=1), c["eps"]])])]), wname])

    # Shapes: S new tokens, T = past + S mask columns, P = past.
    S = g.op("Gather", [g.op("Shape", ["input_ids"]), c["i1"]], axis=0)
    T = g.op("Gather", [g.op("Shape", ["attention_mask"]), c["i1"]], axis=0)
    P = g.op("Sub", [T, S])
    P1, T1 = g.op("Unsqueeze", [P, g.const("ax0", i64(0))]), g.op("Unsqueeze", [T, "ax0"])

    # Bias [b, 1, G*S, T]: 0 where key j is visible to query i, else a large negative.
    kpos = g.op("Range", [c["i0"], T, c["i1"]])
    qpos = g.op("Unsqueeze", [g.op("Range", [P, T, c["i1"]]), c["ax_last"]])
    keep = g.op("And", [g.op("LessOrEqual", [kpos, qpos]),
                        g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), c["ax1"]])])
    bias = g.op("Where", [keep, c["zero"], c["min"]])
    bias = g.op("Tile", [g.op("Unsqueeze", [bias, c["ax1"]]), g.const("tile_groups", i64(1, 1, G, 1))])

    # RoPE tables [b, 1, S, D]; rotate_half(x) = x[swap] * sign, folded into sin.
    inv = (1.0 / hp["theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D)).astype(np.float32)
    freqs = g.op("Mul", [g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), c["ax_last"]]),
                         g.const("inv_freq", inv)])
    emb = g.op("Unsqueeze", [g.op("Concat", [freqs, freqs], axis=-1), c["ax1"]])
    cos = g.op("Cos", [emb])
    sign = np.concatenate([-np.ones(D // 2), np.ones(D // 2)]).astype(np.float32)
    sin = g.op("Mul", [g.op("Sin", [emb]), g.const("rot_sign", sign)])
    swap = g.const("rot_swap", np.concatenate([np.arange(D // 2, D), np.arange(D // 2)]).astype(np.int64))

    x = g.op("Gather", [g.const("embed", w["embed"]), "input_ids"], axis=0)
    for i in range(L):
        qkv = g.op("MatMul", [rms(x, g.const(f"l{i}.attn_norm", w[f"{i}.attn_norm"])), g.const(f"l{i}.qkv", w[f"{i}.qkv"])])
        heads = g.op("Reshape", [qkv, g.const(f"shape_heads{i}", i64(0, 0, H + 2 * KV, D))])
        heads = g.op("Transpose", [heads], perm=[0, 2, 1, 3])  # [b, H + 2KV, S, D]
        k, v = f"new_key_values.{i}.key", f"new_key_values.{i}.value"  # graph outputs, used here too
        qk = g.op("Split", [heads, g.const(f"split_qk_v{i}", i64(H + KV, KV))], out=[f"l{i}.qk", v], axis=1)[0]
        qk = g.op("Add", [g.op("Mul", [qk, cos]), g.op("Mul", [g.op("Gather", [qk, swap], axis=3), sin])])
        q = g.op("Split", [qk, g.const(f"split_q_k{i}", i64(H, KV))], out=[f"l{i}.q", k], axis=1)[0]
        q = g.op("Reshape", [q, g.const(f"shape_q{i}", i64(0, KV, -1, D))])  # [b, KV, G*S, D]
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        scores = g.op("Concat", [g.op("MatMul", [q, g.op("Transpose", [past_k], perm=[0, 1, 3, 2])]),
                                 g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])], axis=3)
        attn = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        a_past = g.op("Slice", [attn, c["i0_1d"], P1, c["ax3_1d"]])
        a_new = g.op("Slice", [attn, P1, T1, c["ax3_1d"]])
        o = g.op("Add", [g.op("MatMul", [a_past, past_v]), g.op("MatMul", [a_new, v])])  # [b, KV, G*S, D]
        o = g.op("Reshape", [o, g.const(f"shape_o5_{i}", i64(0, KV, G, -1, D))])
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 3, 1, 2, 4]), g.const(f"shape_o3_{i}", i64(0, 0, H * D))])
        x = g.op("Add", [x, g.op("MatMul", [o, g.const(f"l{i}.o", w[f"{i}.o"])])])
        if i == L - 1:  # only the rows whose logits are wanted go through the last MLP
            idx = g.op("Unsqueeze", ["last_token_index", c["ax_last"]])
            x = g.op("Unsqueeze", [g.op("GatherND", [x, idx], batch_dims=1), c["ax1"]])
        gu = g.op("MatMul", [rms(x, g.const(f"l{i}.ffn_norm", w[f"{i}.ffn_norm"])), g.const(f"l{i}.gate_up", w[f"{i}.gate_up"])])
        gate, up = g.op("Split", [gu, g.const(f"split_gu{i}", i64(F, F))], n_out=2, axis=-1)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        x = g.op("Add", [x, g.op("MatMul", [act, g.const(f"l{i}.down", w[f"{i}.down"])])])
    g.op("MatMul", [rms(x, g.const("final_norm", w["norm"])), g.const("lm_head", w["lm_head"])], out=["logits"])

    f32, i64t = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64t, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64t, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", i64t, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("last_token_index", i64t, ["batch_size"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", 1, hp["vocab"]])]
    for i in range(L):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", f32, ["batch_size", KV, "past_sequence_length", D]))
            outputs.append(helper.make_tensor_value_info(
                f"new_key_values.{i}.{kind}", f32, ["batch_size", KV, "sequence_length", D]))
    graph = helper.make_graph(g.nodes, hp["name"], inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sluice gguf2onnx")
    model.ir_version = 8
    return model


def save(model, path: Path) -> None:
    import onnx

    big = model.ByteSize() > 1_900_000_000
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + ".data" if big else None)
    onnx.checker.check_model(str(path))


def quantize_int8(src: Path, dst: Path) -> None:
    """8-bit weights (MatMulNBits, block 32, symmetric), activations left to each row.

    Not training/export.py's `quantize_dynamic`: that one quantizes a step's activations
    with one scale for the whole batch, and SmolLM2's MLP inputs have outliers ~220x
    their RMS, so one request's outlier coarsens every other request's inputs (its
    logits moved by up to 23 when batched with 15 others; greedy answers changed with
    the company they were batched with). MatMulNBits quantizes per row: a row's logits
    are bit-identical alone or batched, and decoding one sequence costs the same.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
    quant = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=quant.model.model.ByteSize() > 1_900_000_000)


def quantize_int4(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=quant.model.model.ByteSize() > 1_900_000_000)


# ---------------------------------------------------------------- verification

def numpy_forward(hp: dict, w: dict, ids: np.ndarray) -> tuple[np.ndarray, list]:
    """Logits [s, vocab] and per-layer keys [kv, s, d] of one unpadded prompt (HF layout)."""
    H, KV, D = hp["n_head"], hp["n_kv"], hp["head_dim"]
    s = len(ids)
    norm = lambda x, g: x / np.sqrt((x * x).mean(-1, keepdims=True) + hp["eps"]) * g  # noqa: E731
    inv = 1.0 / hp["theta"] ** (np.arange(0, D, 2) / D)
    ang = np.arange(s)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rope = lambda t: t * cos + np.concatenate([-t[..., D // 2:], t[..., : D // 2]], -1) * sin  # noqa: E731
    causal = np.triu(np.full((s, s), -np.inf), 1)
    x = w["embed"][ids].astype(np.float64)
    keys = []
    for i in range(hp["n_layer"]):
        qkv = norm(x, w[f"{i}.attn_norm"]) @ w[f"{i}.qkv"]
        q = rope(qkv[:, : H * D].reshape(s, H, D).transpose(1, 0, 2))
        k = rope(qkv[:, H * D: (H + KV) * D].reshape(s, KV, D).transpose(1, 0, 2))
        v = qkv[:, (H + KV) * D:].reshape(s, KV, D).transpose(1, 0, 2)
        keys.append(k)
        rep = H // KV
        scores = q @ np.repeat(k, rep, 0).transpose(0, 2, 1) + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        o = (p / p.sum(-1, keepdims=True)) @ np.repeat(v, rep, 0)
        x = x + o.transpose(1, 0, 2).reshape(s, H * D) @ w[f"{i}.o"]
        gate, up = np.split(norm(x, w[f"{i}.ffn_norm"]) @ w[f"{i}.gate_up"], 2, axis=-1)
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{i}.down"]
    return norm(x, w["norm"]) @ w["lm_head"], keys


def run_onnx(path: Path, hp: dict, ids: np.ndarray, last: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    s = len(ids)
    feed = {"input_ids": ids[None], "attention_mask": np.ones((1, s), np.int64),
            "position_ids": np.arange(s, dtype=np.int64)[None], "last_token_index": np.array([last], np.int64)}
    for i in range(hp["n_layer"]):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = np.zeros((1, hp["n_kv"], 0, hp["head_dim"]), np.float32)
    out = sess.run(None, feed)
    return out[0][0, 0], out[1::2]


def verify_fp32(out: Path, hp: dict, w: dict, ids: np.ndarray) -> np.ndarray:
    """Fail loudly unless the fp32 graph matches numpy_forward; return the numpy logits."""
    want, keys = numpy_forward(hp, w, ids)
    got, onnx_keys = run_onnx(out / TIER_FILES["fp32"], hp, ids, len(ids) - 1)
    d_logit = float(np.abs(got - want[-1]).max())
    d_key = max(float(np.abs(a[0] - b).max()) for a, b in zip(onnx_keys, keys))
    print(f"  fp32 vs numpy: max |d logit| {d_logit:.2e}, max |d key| {d_key:.2e}")
    if not (d_logit < 2e-3 and d_key < 2e-3):
        raise SystemExit(f"VERIFICATION FAILED: fp32 ONNX differs from the numpy forward "
                         f"(logits by {d_logit:.3g}, keys by {d_key:.3g}; limit 2e-3)")
    # mid-prompt last_token_index selects that position's logits
    mid, _ = run_onnx(out / TIER_FILES["fp32"], hp, ids, len(ids) // 2)
    if np.abs(mid - want[len(ids) // 2]).max() > 2e-3:
        raise SystemExit("VERIFICATION FAILED: last_token_index does not select the right position")
    return want[-1]


def describe_tier(out: Path, tier: str, hp: dict, ids: np.ndarray, want: np.ndarray) -> None:
    """A quantized tier is lossy: report its drift on the check prompt, fail only if broken."""
    got, _ = run_onnx(out / TIER_FILES[tier], hp, ids, len(ids) - 1)
    if not np.isfinite(got).all():
        raise SystemExit(f"VERIFICATION FAILED: {TIER_FILES[tier]} returns non-finite logits")
    print(f"  {tier} vs numpy: max |d logit| {np.abs(got - want).max():.2f}, "
          f"same top-1 token: {int(got.argmax()) == int(want.argmax())}")


# ---------------------------------------------------------------- main

def write_manifest(out: Path, hp: dict, name: str, specials: dict, tiers: list[str], default: str) -> None:
    tok = hp["tokenizer"]
    tokens = tok["tokens"]
    eos = tokens[tok["eos"]]
    stop = [tok["eos"]] + ([tok["eot"]] if tok["eot"] is not None and tok["eot"] != tok["eos"] else [])
    special = {"eos": eos, "pad": tokens[tok["pad"]] if tok["pad"] is not None else eos}
    for key, text in (("im_start", "<|im_start|>"), ("im_end", "<|im_end|>")):
        if text in specials:
            special[key] = text
    special.update({"tool_call_start": "<tool_call>", "tool_call_end": "</tool_call>", "ids": specials})
    H, KV, D = hp["n_head"], hp["n_kv"], hp["head_dim"]
    manifest = {
        "name": name,
        "architecture": f"{hp['arch']} decoder converted from GGUF ({hp['name']}): RMSNorm, RoPE, "
                        f"grouped-query attention ({H} query / {KV} KV heads), SwiGLU, "
                        f"{'tied' if hp['tied'] else 'untied'} LM head",
        "num_layers": hp["n_layer"],
        "num_attention_heads": H,
        "num_key_value_heads": KV,
        "head_dim": D,
        "hidden_size": hp["hidden"],
        "intermediate_size": hp["ffn"],
        "vocab_size": hp["vocab"],
        "context_length": hp["context"],
        "rope_theta": hp["theta"],
        "rms_norm_eps": hp["eps"],
        "license": hp["license"],
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "special_tokens": special,
        "stop_token_ids": stop,
        "inputs": {
            "input_ids": "int64 [batch, seq]",
            "attention_mask": "int64 [batch, past + seq]",
            "position_ids": "int64 [batch, seq]",
            "last_token_index": "int64 [batch]",
            "past_key_values.{i}.key|value": f"float32 [batch, {KV}, past, {D}]",
        },
        "outputs": {
            "logits": f"float32 [batch, 1, {hp['vocab']}]",
            "new_key_values.{i}.key|value": f"float32 [batch, {KV}, seq, {D}]",
        },
        "tiers": {t: {"file": TIER_FILES[t], "bytes": (out / TIER_FILES[t]).stat().st_size} for t in tiers},
        "default_tier": default,
    }
    (out / "sluice-model.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiers", default="fp32,int8,int4", help="comma-separated subset of fp32,int8,int4")
    ap.add_argument("--default-tier", default="int8")
    ap.add_argument("--name", help="model name in sluice-model.json (default: the GGUF file's stem)")
    ap.add_argument("--context", type=int, default=2048, help="cap on the context length (default 2048)")
    args = ap.parse_args(argv)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    try:
        if unknown := [t for t in tiers if t not in TIER_FILES]:
            raise ConvertError(f"unknown tier(s) {unknown}; choose from {list(TIER_FILES)}")
        if args.context < 1:
            raise ConvertError("--context must be a positive number of tokens")
        if args.default_tier not in tiers:
            raise ConvertError(f"--default-tier {args.default_tier} is not among --tiers {tiers}")
        if not args.gguf.is_file():
            raise ConvertError(f"{args.gguf} does not exist")
        return convert(args, tiers)
    except ConvertError as e:
        print(f"gguf2onnx: error: {e}", file=sys.stderr)
        return 2


def convert(args, tiers: list[str]) -> int:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with phase("read + dequantize GGUF", timings):
        hp, w = read_gguf(args.gguf, args.context)
        print(f"  {hp['name']}: {hp['n_layer']} layers, hidden {hp['hidden']}, heads {hp['n_head']}/{hp['n_kv']}, "
              f"vocab {hp['vocab']}, context {hp['context']}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or args.gguf.stem
    with phase("tokenizer", timings):
        specials = write_tokenizer(hp["tokenizer"], args.out, hp["context"])
        ids = check_tokenizer(args.out, hp["tokenizer"])
    with phase("build + save fp32 graph", timings):
        save(build_graph(hp, w), args.out / TIER_FILES["fp32"])
    with phase("verify fp32 against numpy", timings):
        want = verify_fp32(args.out, hp, w, ids)
    del w
    for tier, quantize in (("int8", quantize_int8), ("int4", quantize_int4)):
        if tier in tiers:
            with phase(f"quantize {tier}", timings):
                quantize(args.out / TIER_FILES["fp32"], args.out / TIER_FILES[tier])
                describe_tier(args.out, tier, hp, ids, want)
    if "fp32" not in tiers:
        (args.out / TIER_FILES["fp32"]).unlink()
    write_manifest(args.out, hp, name, specials, tiers, args.default_tier)
    for t in tiers:
        print(f"  {TIER_FILES[t]}: {(args.out / TIER_FILES[t]).stat().st_size / 1e6:.1f} MB")
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"done in {time.perf_counter() - start:.1f} s: {args.out}")
    return 0


def check_tokenizer(out: Path, tok: dict) -> np.ndarray:
    """Round-trip text through tokenizer.json, render the chat template; return prompt ids."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(out / "tokenizer.json"))
    sample = "Hello, world! 12345 naïve café — 東京 \n\tcode: x+=1 ✓"
    ids = t.encode(sample, add_special_tokens=False).ids
    if t.decode(ids, skip_special_tokens=False) != sample:
        raise SystemExit(f"VERIFICATION FAILED: tokenizer round trip: {t.decode(ids)!r}")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(tok["chat_template"]).render(
        messages=[{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True,
        bos_token=tok["tokens"][tok["bos"]] if tok["bos"] is not None else "", eos_token=tok["tokens"][tok["eos"]])
    ids = t.encode(prompt, add_special_tokens=False).ids
    if t.decode(ids, skip_special_tokens=False) != prompt:
        raise SystemExit("VERIFICATION FAILED: the rendered chat prompt does not round-trip")
    print(f"  tokenizer round-trips; chat prompt = {len(ids)} tokens")
    return np.array(ids, dtype=np.int64)


if __name__ == "__main__":
    sys.exit(main())
