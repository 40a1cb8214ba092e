"""The one client for OpenAI-compatible chat endpoints (e.g. a vLLM server): teachers and judges share it."""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field

from mdrag.errors import MdragError


class EndpointError(MdragError):
    """The endpoint could not be reached or answered something that is not a chat completion."""


@dataclass
class ChatEndpoint:
    model: str
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    api_key: str = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY", "EMPTY"))
    timeout: float = 120.0

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def complete(self, messages: list[dict[str, str]], **options) -> dict:
        """POST /chat/completions, greedy unless `options` say otherwise; returns the first choice."""
        return self.post("/chat/completions", {"model": self.model, "messages": messages, "temperature": 0,
                                               **options})

    def post(self, path: str, body: dict) -> dict:
        """POST a JSON body to base_url + path; returns the first choice of the reply."""
        req = urllib.request.Request(self.base_url.rstrip("/") + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())["choices"][0]
        except (OSError, KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
            raise EndpointError(f"endpoint {self.base_url} failed: {err}") from err
