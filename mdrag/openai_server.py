"""A small OpenAI-compatible completions server over the local many-adapter generator.

`python -m mdrag serve [--port 8000]` answers POST /v1/completions ({"model": <variant>, "prompt": <text or
token ids>, "max_tokens": N}) greedily, and GET /v1/models with the registered variants whose adapters exist.
It mirrors what `vllm serve ... --enable-lora --lora-modules ...` offers, so the evaluation grid's bulk path
can be tried (and is tested) without a GPU. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mdrag.engine import Engine
from mdrag.errors import MdragError
from mdrag.generation.variants import available_variants

MAX_BODY = 1 << 20


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """The server over `engine`'s generator and adapters (its dtype and generator settings)."""
    loaded = engine.generator()
    lock = threading.Lock()  # one generation at a time on this CPU; requests queue

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, {"error": {"message": "not found"}})
            self._send(200, {"object": "list", "data": [{"id": v, "object": "model"} for v in available_variants()]})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": "only /v1/completions is served"}})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY:
                    raise ValueError("request too large")
                body = json.loads(self.rfile.read(length))
                prompt = body["prompt"]
                ids = prompt if isinstance(prompt, list) else loaded.tokenizer(prompt)["input_ids"]
                vocab = loaded.model.get_input_embeddings().num_embeddings
                if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise ValueError("prompt must be text or a non-empty list of token ids")
                if not all(0 <= i < vocab for i in ids):
                    raise ValueError(f"token ids must lie in [0, {vocab}) for this model")
                max_tokens = body.get("max_tokens", 16)
                if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 512:
                    raise ValueError(f"max_tokens must be an integer from 1 to 512 (got {max_tokens!r})")
                gen = engine.decoder(max_new_tokens=max_tokens)
                with lock:
                    out = gen.generate(ids, [str(body.get("model", "vanilla"))])[0]
            except (MdragError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
                return self._send(400, {"error": {"message": str(err)}})
            except Exception as err:  # never drop a request without a response
                return self._send(500, {"error": {"message": f"generation failed: {type(err).__name__}: {err}"}})
            self._send(200, {"object": "text_completion", "model": out.variant,
                             "choices": [{"index": 0, "text": out.text, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": len(ids), "completion_tokens": len(out.token_ids)}})

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)
