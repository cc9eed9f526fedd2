"""Write MODEL_DIR/QUALITY.md for a converted all-MiniLM-L6-v2 folder: how close its
embeddings are to sentence-transformers' own, for the 100 sentences of the committed
reference (tests/fixtures/minilm_reference.json, made by loadtest/embed/reference.py).

    tools/.venv/bin/python tools/convert/report_minilm.py models/minilm-l6

The folder's model.onnx runs through onnxruntime with its tokenizer.json, then the
pooling the folder's sluice-model.json names (mean over the attention mask, or the CLS
token) and L2 normalisation when it says so: the same steps as sluice's engine. Each
sentence is embedded twice, alone and inside one padded batch of all 100, so the report
also shows that padding does not change a vector.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "minilm_reference.json"


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    if pooling == "cls":
        vectors = hidden[:, 0, :]
    else:
        weights = mask[:, :, None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def embed(session, tokenizer, texts, pooling, normalize) -> np.ndarray:
    encodings = [tokenizer.encode(t) for t in texts]
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), longest), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )
    return pool(hidden, mask, pooling, normalize)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--reference", type=Path, default=FIXTURE)
    args = parser.parse_args()

    manifest = json.loads((args.model_dir / "sluice-model.json").read_text())
    reference = json.loads(args.reference.read_text())
    texts = [item["text"] for item in reference["items"]]
    expected = np.stack(
        [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in reference["items"]]
    )

    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(args.model_dir / manifest["model"]), options)
    pooling, normalize = manifest["pooling"], manifest["normalize"]

    batched = embed(session, tokenizer, texts, pooling, normalize)
    alone = np.concatenate([embed(session, tokenizer, [t], pooling, normalize) for t in texts])

    def cosine(a, b):
        return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    cos_batched = cosine(batched, expected)
    cos_alone = cosine(alone, expected)
    padding_diff = float(np.abs(batched - alone).max())
    worst = int(np.argmin(cos_alone))
    gen = reference["generator"]
    report = f"""# {manifest['name']}: embedding quality

Cosine similarity of this folder's embeddings (model.onnx through onnxruntime
{ort.__version__}, {pooling} pooling, normalize = {str(normalize).lower()}) to
sentence-transformers {gen['sentence-transformers']} (torch {gen['torch']}) on the same
weights, for the {len(texts)} sentences of `tests/fixtures/minilm_reference.json`
({min(i['tokens'] for i in reference['items'])} to {max(i['tokens'] for i in reference['items'])} tokens).

| embedded | min cosine | mean cosine |
| --- | --- | --- |
| one sentence per run | {cos_alone.min():.7f} | {cos_alone.mean():.7f} |
| all {len(texts)} in one padded batch | {cos_batched.min():.7f} | {cos_batched.mean():.7f} |

Largest difference between a vector embedded alone and inside the padded batch:
{padding_diff:.2e} (any component). Lowest cosine: "{texts[worst]}".

Written by `tools/convert/report_minilm.py models/{manifest['name']}`.
"""
    (args.model_dir / "QUALITY.md").write_text(report)
    print(report)
    if cos_alone.min() < 0.999 or cos_batched.min() < 0.999:
        print("report_minilm: a cosine is below 0.999", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
