"""The engine runs a model folder laid out like a Hugging Face / Optimum export, not only
the bundled one: the bundled fp32 graph is rewritten so its outputs are Optimum's
`present.{i}.key|value` (past + new keys/values, via Concat) and put in a folder with
`model.onnx`, `config.json`, `generation_config.json` and the tokenizer files but no
`sluice-model.json`. sluice must find the tier, context and stop tokens from those files
and answer exactly as it does with the bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
from onnx import helper

from conftest import REPO, Sluice, _finish

BUNDLED = REPO / "models" / "sluice-tiny"
PROMPTS = ["Hello! Who are you?", "Good morning!", "Thanks, that's all for today."]


def optimum_folder(dst: Path) -> Path:
    model = onnx.load(str(BUNDLED / "model.fp32.onnx"))
    graph = model.graph
    for out in list(graph.output):
        if not out.name.startswith("new_key_values."):
            continue
        layer_kind = out.name[len("new_key_values."):]
        past = f"past_key_values.{layer_kind}"
        present = f"present.{layer_kind}"
        graph.node.append(helper.make_node("Concat", [past, out.name], [present], axis=2))
        shape = ["batch_size", 4, "total_sequence_length", 64]
        graph.output.remove(out)
        graph.output.append(helper.make_tensor_value_info(present, onnx.TensorProto.FLOAT, shape))
    dst.mkdir()
    onnx.save(model, str(dst / "model.onnx"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BUNDLED / name, dst / name)
    (dst / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    (dst / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    return dst


def config(folder: Path) -> str:
    return f"""
[backends.bundled]
kind = "onnx"
model_dir = "{BUNDLED}"
tiers = ["fp32"]
threads = 1

[backends.optimum]
kind = "onnx"
model_dir = "{folder}"
threads = 1

[[models]]
name = "bundled"
backend = "bundled"

[[models]]
name = "optimum"
backend = "optimum"
"""


def test_an_optimum_style_folder_answers_like_the_bundled_model(sluice_bin, tmp_path):
    folder = optimum_folder(tmp_path / "optimum-export")
    path = tmp_path / "sluice.toml"
    path.write_text(config(folder))
    gateway = Sluice(sluice_bin, path, cwd=REPO)
    try:
        with gateway.client() as client:
            for prompt in PROMPTS:
                answers = []
                for model in ("bundled", "optimum"):
                    r = client.chat.completions.create(
                        model=model, temperature=0, max_tokens=40,
                        messages=[{"role": "user", "content": prompt}])
                    answers.append((r.choices[0].message.content, r.choices[0].finish_reason,
                                    r.usage.prompt_tokens, r.usage.completion_tokens))
                assert answers[0] == answers[1], prompt
                assert answers[0][1] == "stop"
        # The folder's tier is named after its file.
        assert any("tier=model" in line for line in gateway.log), gateway.log_text()
    finally:
        _finish(gateway)
