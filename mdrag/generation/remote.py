"""Bulk generation on an OpenAI-compatible server (e.g. vLLM with multi-LoRA serving our adapters).

The evaluation grid can send generation to a GPU server instead of the local CPU. Each variant is a served
model name: the base model for "vanilla" and one LoRA module per adapter, e.g.

    vllm serve <base model dir> --served-model-name vanilla --dtype bfloat16 --enable-lora \\
        --max-lora-rank 128 --max-loras 6 --lora-modules full=assets/adapters/full \\
        qk_att=assets/adapters/qk_att att=assets/adapters/att mlp=assets/adapters/mlp \\
        full_skd=assets/adapters/full_skd

The prompt is sent as token ids (`/v1/completions` accepts a list of ints), so the server sees exactly the
prompt the local path would, chat template included. All variants of one prompt are sent at once so the
server can batch them. `python -m mdrag serve` is a small server with the same interface over the local
generator (used by the tests, and handy to try the path without a GPU).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from mdrag.config import LIMITS
from mdrag.generation.generator import Generation
from mdrag.openai_compat import ChatEndpoint, EndpointError


class RemoteGenerator:
    """Same `generate(prompt_ids, variants)` as the local Generator, answered by an endpoint."""

    def __init__(self, base_url: str, tokenizer, max_new_tokens: int = LIMITS.max_new_tokens,
                 timeout: float = 600.0):
        self.endpoint = ChatEndpoint("vanilla", base_url, timeout=timeout)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    @property
    def name(self) -> str:
        return f"endpoint:{self.endpoint.base_url}"

    def _one(self, prompt_ids: list[int], variant: str, start: float) -> Generation:
        choice = self.endpoint.post("/completions", {"model": variant, "prompt": prompt_ids, "temperature": 0,
                                                     "max_tokens": self.max_new_tokens})
        text = choice.get("text")
        if not isinstance(text, str):
            raise EndpointError(f"endpoint {self.endpoint.base_url} answered no text for {variant}")
        text = text.strip()
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the server returns text, not ids
        return Generation(variant, ids, text, time.perf_counter() - start)

    def generate(self, prompt_ids: list[int], variants: list[str], on_done=None) -> list[Generation]:
        start = time.perf_counter()
        with ThreadPoolExecutor(max(1, len(variants))) as pool:
            gens = list(pool.map(lambda v: self._one(prompt_ids, v, start), variants))
        if on_done is not None:
            for g in sorted(gens, key=lambda g: g.seconds):
                on_done(g)
        return gens
