"""Export the trained sluice-tiny to ONNX with a KV cache, quantize it into the int8 and
int4 tiers, and write models/sluice-tiny/sluice-model.json.

The inputs are those of Optimum's Llama/Qwen exports (`input_ids`, `attention_mask`,
`position_ids`, `past_key_values.{i}.key|value`). The outputs are `logits` and
`new_key_values.{i}.key|value`: the keys/values of the new tokens only, not past + new
(Optimum's `present.*`), so the graph never copies the cache: the engine keeps it in
place and appends the new entries itself, which is what makes batched decoding cheap.

    python training/export.py            # after train.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONTEXT_LENGTH, MODEL_DIR, MODEL_NAME, SPECIAL_TOKENS, WORK_DIR  # noqa: E402
from model import Config, TinyGPT  # noqa: E402

OPSET = 17
TIERS = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}


class Flat(torch.nn.Module):
    """The model with flat positional inputs/outputs, as the ONNX graph has them."""

    def __init__(self, model: TinyGPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past, new_only=True)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


def io_names(n_layer: int):
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for i in range(n_layer):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"new_key_values.{i}.key", f"new_key_values.{i}.value"]
    return inputs, outputs


def load_trained() -> TinyGPT:
    ckpt = torch.load(WORK_DIR / "model.pt", map_location="cpu")
    model = TinyGPT(Config(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model


def export_fp32(model: TinyGPT, path: Path) -> None:
    cfg = model.cfg
    b, s, past = 2, 3, 4
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    mask = torch.ones(b, past + s, dtype=torch.int64)
    pos = torch.arange(past, past + s).expand(b, s).contiguous()
    past_flat = [torch.randn(b, cfg.n_head, past, cfg.head_dim) for _ in range(2 * cfg.n_layer)]
    inputs, outputs = io_names(cfg.n_layer)
    dynamic = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for name in inputs[3:]:
        dynamic[name] = {0: "batch_size", 2: "past_sequence_length"}
    for name in outputs[1:]:
        dynamic[name] = {0: "batch_size", 2: "sequence_length"}
    torch.onnx.export(
        Flat(model),
        (ids, mask, pos, *past_flat),
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    onnx.checker.check_model(str(path))


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def quantize_int4(src: Path, dst: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)


def check_against_torch(model: TinyGPT, path: Path, tol: float) -> float:
    """Max |logit difference| between the ONNX file and PyTorch on a prompt + one cached step."""
    cfg = model.cfg
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (1, 7))
    mask = torch.ones(1, 7, dtype=torch.int64)
    pos = torch.arange(7).unsqueeze(0)
    with torch.no_grad():
        want, _ = model(ids, mask, pos, model.empty_past(1))
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": pos.numpy()}
    for i in range(cfg.n_layer):
        empty = np.zeros((1, cfg.n_head, 0, cfg.head_dim), dtype=np.float32)
        feed[f"past_key_values.{i}.key"] = empty
        feed[f"past_key_values.{i}.value"] = empty
    got = sess.run(["logits"], feed)[0]
    diff = float(np.abs(got - want.numpy()).max())
    if diff > tol:
        raise SystemExit(f"{path.name}: logits differ from PyTorch by {diff} (> {tol})")
    return diff


def write_manifest(cfg: Config) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    special = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    manifest = {
        "name": MODEL_NAME,
        "architecture": "decoder-only transformer (pre-norm RMSNorm, RoPE, SwiGLU, untied LM head)",
        "num_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.head_dim,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.context_length,
        "rope_theta": cfg.rope_theta,
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "special_tokens": {
            "eos": "<|im_end|>",
            "pad": "<|endoftext|>",
            "im_start": "<|im_start|>",
            "im_end": "<|im_end|>",
            "tool_call_start": "<tool_call>",
            "tool_call_end": "</tool_call>",
            "ids": special,
        },
        "stop_token_ids": [special["<|im_end|>"], special["<|endoftext|>"]],
        "inputs": {
            "input_ids": "int64 [batch, seq]",
            "attention_mask": "int64 [batch, past + seq]",
            "position_ids": "int64 [batch, seq]",
            "past_key_values.{i}.key|value": f"float32 [batch, {cfg.n_head}, past, {cfg.head_dim}]",
        },
        "outputs": {
            "logits": f"float32 [batch, seq, {cfg.vocab_size}]",
            "new_key_values.{i}.key|value": f"float32 [batch, {cfg.n_head}, seq, {cfg.head_dim}]",
        },
        "tiers": {
            tier: {"file": file, "bytes": (MODEL_DIR / file).stat().st_size}
            for tier, file in TIERS.items()
        },
        "default_tier": "int4",
    }
    (MODEL_DIR / "sluice-model.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    torch.manual_seed(0)
    model = load_trained()
    assert model.cfg.context_length == CONTEXT_LENGTH
    fp32 = MODEL_DIR / TIERS["fp32"]
    export_fp32(model, fp32)
    quantize_int8(fp32, MODEL_DIR / TIERS["int8"])
    quantize_int4(fp32, MODEL_DIR / TIERS["int4"])
    for tier, tol in (("fp32", 1e-3), ("int8", 5.0), ("int4", 5.0)):
        diff = check_against_torch(model, MODEL_DIR / TIERS[tier], tol)
        size = (MODEL_DIR / TIERS[tier]).stat().st_size / 1e6
        print(f"{tier}: {size:.2f} MB, max |logit diff| vs PyTorch {diff:.4f}")
    write_manifest(model.cfg)


if __name__ == "__main__":
    main()
