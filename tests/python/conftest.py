"""Fixtures for the official Python `openai` SDK against a real sluice process.

A fake OpenAI-compatible upstream (fake_upstream.py) runs in this process on port 0;
sluice is started from $SLUICE_BIN with a temp config pointing at it and
`--listen 127.0.0.1:0`; the port is read from its "listening on" log line.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fake_upstream  # noqa: E402

# Logical model names clients use → upstream model names on the fake.
MODELS = {
    "chat-model": fake_upstream.ECHO,
    "tool-model": fake_upstream.TOOLS,
    "broken-model": fake_upstream.BROKEN,
    "embed-model": fake_upstream.EMBED,
}
STARTUP_TIMEOUT = 60.0
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The key the authenticated gateway accepts (config holds only its SHA-256).
API_KEY = "sk-sluice-python-test-key"
TENANT = "python-tests"


def sluice_config(upstream_url: str, extra: str = "") -> str:
    lines = [
        "[backends.fake]",
        'kind = "openai"',
        f'url = "{upstream_url}"',
        'request_timeout = "10s"',
        'read_timeout = "10s"',
        "",
    ]
    for name, upstream_model in MODELS.items():
        lines += [
            "[[models]]",
            f'name = "{name}"',
            'backend = "fake"',
            f'upstream_model = "{upstream_model}"',
            "",
        ]
    return "\n".join(lines) + extra


class Sluice:
    """A running `sluice serve` process and its log."""

    def __init__(
        self, binary: str, config_path: Path, cwd: Path | None = None, env: dict | None = None
    ) -> None:
        env = {**os.environ, "NO_COLOR": "1", "RUST_LOG": "info", **(env or {})}
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(config_path), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
        )
        lines: queue.Queue[str | None] = queue.Queue()
        # Keep draining stderr for the process's whole life so it never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_stderr, args=(lines,), daemon=True)
        self._drain.start()
        self.url = self._wait_for_listening(lines)

    def _read_stderr(self, lines: queue.Queue) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    def _wait_for_listening(self, lines: queue.Queue) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError("sluice did not log 'listening on' in time:\n" + self.log_text())
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                raise RuntimeError(
                    f"sluice exited ({self.proc.returncode}) before listening:\n" + self.log_text()
                )
            match = LISTENING.search(line)
            if match:
                return match.group(1)

    def log_text(self) -> str:
        return "\n".join(self.log)

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        # No retries: every error the tests provoke must surface as the first answer.
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=30)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=5)
        return self.proc.returncode


@pytest.fixture(scope="session")
def sluice_bin() -> str:
    binary = os.environ.get("SLUICE_BIN")
    if not binary:
        pytest.fail("SLUICE_BIN is not set; run `make test-python`")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"SLUICE_BIN={binary} is not an executable")
    return binary


@pytest.fixture(scope="session")
def upstream():
    fake = fake_upstream.FakeUpstream().start()
    yield fake
    fake.stop()


def _start(sluice_bin: str, tmp_dir: Path, config: str):
    path = tmp_dir / "sluice.toml"
    path.write_text(config)
    return Sluice(sluice_bin, path)


def _finish(gateway: Sluice) -> None:
    code = gateway.stop()
    # A clean SIGTERM shutdown exits 0; anything else is a bug worth seeing.
    assert code == 0, f"sluice exited with {code} on SIGTERM:\n{gateway.log_text()}"


@pytest.fixture(scope="session")
def sluice(sluice_bin, upstream, tmp_path_factory):
    """An open gateway (no API keys configured)."""
    gateway = _start(sluice_bin, tmp_path_factory.mktemp("open"), sluice_config(upstream.url))
    yield gateway
    _finish(gateway)


@pytest.fixture(scope="session")
def sluice_with_keys(sluice_bin, upstream, tmp_path_factory):
    """A gateway that requires API_KEY (configured as its SHA-256 hex)."""
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    extra = f'\n[[auth.keys]]\ntenant = "{TENANT}"\nsha256 = "{digest}"\n'
    gateway = _start(sluice_bin, tmp_path_factory.mktemp("keys"), sluice_config(upstream.url, extra))
    yield gateway
    _finish(gateway)


@pytest.fixture
def client(sluice) -> openai.OpenAI:
    with sluice.client() as c:
        yield c


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sluice_default(sluice_bin):
    """sluice on the shipped config/sluice.toml, as `make run` starts it: the embedded
    engine serving models/sluice-tiny (only the listen address differs)."""
    gateway = Sluice(sluice_bin, REPO / "config" / "sluice.toml", cwd=REPO)
    yield gateway
    _finish(gateway)


@pytest.fixture(scope="session")
def sluice_default_uncached(sluice_bin):
    """The shipped config/sluice.toml with the response cache off (SLUICE__CACHE__MODE),
    so two identical deterministic requests are both generated, never a replay."""
    gateway = Sluice(sluice_bin, REPO / "config" / "sluice.toml", cwd=REPO,
                     env={"SLUICE__CACHE__MODE": "off"})
    yield gateway
    _finish(gateway)


LOCAL_MODELS = ("smollm2-135m", "minilm-l6")


@pytest.fixture(scope="session")
def sluice_local_models(sluice_bin):
    """sluice on config/examples/local-models.toml (SmolLM2-135M, all-MiniLM-L6-v2 and
    sluice-tiny on the embedded engine), response cache off so every request is
    generated. The converted models come from `make models`."""
    missing = [m for m in LOCAL_MODELS if not (REPO / "models" / m / "source.json").exists()]
    if missing:
        pytest.fail(f"models/{', models/'.join(missing)} missing: run `make models`")
    gateway = Sluice(sluice_bin, REPO / "config" / "examples" / "local-models.toml", cwd=REPO,
                     env={"SLUICE__CACHE__MODE": "off"})
    yield gateway
    _finish(gateway)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """models/smollm2-135m, converted from the SmolLM2 GGUF by `make models`
    (tools/convert/gguf2onnx.py). Missing means the build step was skipped: fail, don't skip."""
    folder = REPO / "models" / "smollm2-135m"
    for name in ("model.fp32.onnx", "tokenizer.json", "tokenizer_config.json", "sluice-model.json"):
        if not (folder / name).is_file():
            pytest.fail(f"{(folder / name).relative_to(REPO)} is missing: run `make models`")
    return folder
