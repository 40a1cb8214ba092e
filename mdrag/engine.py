"""The one engine every front-end builds (app, CLI, evaluation runner, bench): the settings, read once, and the
objects requests share.

What two browser sessions share is exactly what one `Engine` holds: the domains, the generator (one base model,
every adapter attached to it once), its stacked-adapter copy in the generation dtype, the first-stage retrievers,
the rerankers and the encoders they share, and the judge once a screen or the bench asks for it. Each is built on
first use under the engine's lock and is read-only afterwards (the stacked model guards its own adapter table).
Nothing is cached in a module: a test builds a fresh engine instead of clearing caches, and two engines never
share a model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, TypeVar

from mdrag.config import LIMITS, generation_dtype

if TYPE_CHECKING:
    from mdrag.data.benchmark import Domain
    from mdrag.generation.generator import Generator
    from mdrag.generation.model import LoadedModel
    from mdrag.generation.multi_lora import MultiLoraModel
    from mdrag.pipeline import RagPipeline
    from mdrag.retrieval.rerank import Reranker
    from mdrag.retrieval.retrievers import Retriever

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Everything a run may set, from flags and the environment, read once where the front-end starts."""

    dtype: str = "float32"  # generation dtype (config.generation_dtype: bfloat16 only where the CPU has it natively)
    generator: str | None = None  # a local HF causal-LM directory; None = the packaged SmolLM2-135M
    endpoint: str | None = None  # an OpenAI-compatible server that generates instead of the local CPU
    max_query_chars: int = LIMITS.max_query_chars
    max_new_tokens: int = LIMITS.max_new_tokens  # paper: greedy, 128 new tokens
    first_k: int = LIMITS.first_stage_k  # paper: SPLADE top-50 ...
    top_k: int = LIMITS.rerank_k  # ... reranked, top-5 to the generator
    domains_file: str | None = None  # your own domains (data/domains.register_domains_file), registered at start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **flags) -> Settings:
        """Settings from the environment (MDRAG_DTYPE, MDRAG_GENERATOR, MDRAG_MAX_QUERY_CHARS,
        MDRAG_DOMAINS_FILE) overridden by the flags that are not None."""
        env = os.environ if env is None else env
        values: dict = {"dtype": generation_dtype(env.get("MDRAG_DTYPE") or None),
                        "generator": env.get("MDRAG_GENERATOR") or None,
                        "domains_file": env.get("MDRAG_DOMAINS_FILE") or None}
        if env.get("MDRAG_MAX_QUERY_CHARS"):
            values["max_query_chars"] = int(env["MDRAG_MAX_QUERY_CHARS"])
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in flags.items() if v is not None and k in known})
        if values.get("dtype"):
            generation_dtype(values["dtype"])  # an unknown dtype fails here, with the known ones named
        return cls(**values)

    def but(self, **changes) -> Settings:
        return replace(self, **changes)


class Engine:
    """Shared, lazily built parts of the pipeline; see the module docstring."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.lock = threading.RLock()  # guards building the parts below, never a request's work
        self._parts: dict[tuple, object] = {}
        self._building: dict[tuple, threading.Lock] = {}  # one gate per shared part being built (`share`)
        from mdrag.retrieval.encoders import Encoders

        self.encoders = Encoders()  # SPLADE / MiniLM, loaded once for every retriever and reranker built here
        if self.settings.domains_file:
            from pathlib import Path

            from mdrag.data.domains import register_domains_file

            register_domains_file(Path(self.settings.domains_file))

    def _once(self, key: tuple, build: Callable[[], T]) -> T:
        with self.lock:
            if key not in self._parts:
                self._parts[key] = build()
            return self._parts[key]

    def parts(self) -> list[tuple]:
        """The keys of what this engine has built so far (what its users share)."""
        with self.lock:
            return list(self._parts)

    # ------------------------------------------------------------------------------------------ data
    def domain(self, name: str) -> Domain:
        from mdrag.data.benchmark import load_domain
        from mdrag.data.domains import resolve_domain

        spec = resolve_domain(name)
        return self._once(("domain", spec.name, repr(spec.extra), spec.folder), lambda: load_domain(spec.name))

    # ------------------------------------------------------------------------------------ generation
    def generator(self) -> LoadedModel:
        from mdrag.generation.model import load_generator, resolve_generator_dir

        folder = resolve_generator_dir(self.settings.generator)
        return self._once(("generator", str(folder)), lambda: load_generator(folder))

    def stacked(self, dtype: str | None = None) -> MultiLoraModel:
        """The base model in `dtype` (default: the generation dtype) with every attached adapter stacked
        (multi_lora.py). Analysis runs on the generation dtype's copy, so it sees the answer's own numbers;
        integrated gradients asks for a float32 one."""
        from mdrag.generation.generator import stacked_model

        loaded = self.generator()
        dtype = dtype or self.settings.dtype
        return self._once(("stacked", loaded.fingerprint, dtype), lambda: stacked_model(loaded, dtype))

    def decoder(self, max_new_tokens: int | None = None, fast: bool = True, dtype: str | None = None) -> Generator:
        """A greedy decoder over the shared generator (cheap: it holds no weights of its own)."""
        from mdrag.generation.generator import Generator

        dtype = dtype or self.settings.dtype
        return Generator(self.generator(), self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
                         fast=fast, dtype=dtype, stacked=self.stacked(dtype) if fast else None)

    def attach(self, variants: list[str], dtype: str | None = None) -> list[str]:
        """Attach these variants' adapters (once each) to the generator and the stacked model of `dtype`;
        returns each variant's row name ('__base__' for vanilla). Safe while another request decodes: new
        modules are hooked under the stacked model's lock, and rows are chosen per thread."""
        return self.decoder(dtype=dtype).ensure_adapters(variants)

    def attach_shipped(self) -> list[str]:
        """Attach every adapter found (shipped or trained here) at start, so no request pays for it later; an
        adapter that fails its checks is left out and named in the returned notes."""
        from mdrag.errors import MdragError
        from mdrag.generation.variants import available_variants

        notes = []
        for v in available_variants():
            try:
                self.attach([v])
            except MdragError as err:
                notes.append(f"{v}: {err}")
        return notes

    def share(self, key: tuple, build: Callable[[], T]) -> T:
        """A part a higher layer builds (e.g. the judge: evaluation.judge.shared_judge), kept here like the
        engine's own so every session and section shares one copy; `key[0]` names its kind for `release`.
        Built behind a gate of its own, outside the engine's lock: the judge loads for a minute in float32, and
        Ask requests meanwhile reach the generator and retrievers at once (callers of the same key wait for
        the one build)."""
        with self.lock:
            if key in self._parts:
                return self._parts[key]
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self.lock:
                if key in self._parts:  # built while this caller waited at the gate
                    return self._parts[key]
            value = build()  # must not build engine parts: a higher layer's part needs none of them
            with self.lock:
                self._parts[key] = value
                self._building.pop(key, None)
            return value

    def release(self, kind: str) -> int:
        """Let go of every part of this kind (e.g. 'judge': 3-6 GB) before work that needs the memory; a later
        request builds it again. Returns how many were dropped."""
        import gc

        with self.lock:
            keys = [k for k in self._parts if k[0] == kind]
            for k in keys:
                del self._parts[k]
        gc.collect()
        return len(keys)

    # ------------------------------------------------------------------------------------- retrieval
    def retriever(self, name: str, domain: Domain) -> Retriever:
        from mdrag.retrieval.retrievers import make_retriever

        return self._once(("retriever", name, domain.name, domain.fingerprint()),
                          lambda: make_retriever(name, domain, self.encoders))

    def reranker(self, name: str) -> Reranker:
        from mdrag.retrieval.rerank import make_reranker

        return self._once(("reranker", name), lambda: make_reranker(name, self.encoders))

    # -------------------------------------------------------------------------------------- pipeline
    def pipeline(self, domain: str | Domain, retriever: str = "splade", reranker: str = "minilm",
                 top_k: int | None = None) -> RagPipeline:
        from mdrag.pipeline import RagPipeline

        dom = self.domain(domain) if isinstance(domain, str) else domain
        return RagPipeline(self, dom, retriever=retriever, reranker=reranker,
                           top_k=self.settings.top_k if top_k is None else int(top_k))
