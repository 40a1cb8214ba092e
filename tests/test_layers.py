"""The dependency direction is one way (README, "How the code is laid out"): each module imports only from its
own layer or the layers below. Checked on the source, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. The metric and statistics modules are pure leaves (they import nothing of mdrag), so every
# layer may score answers and compute intervals.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("mdrag.config", "mdrag.errors", "mdrag.hashing", "mdrag.machine", "mdrag.cache_files",
              "mdrag.validation", "mdrag.registry", "mdrag.evaluation.answer_metrics", "mdrag.evaluation.stats",
              "mdrag")),
    ("data and generation", ("mdrag.data", "mdrag.generation", "mdrag.openai_compat", "mdrag.trace")),
    ("retrieval", ("mdrag.retrieval",)),
    ("pipeline", ("mdrag.pipeline", "mdrag.engine")),
    ("evaluation and training", ("mdrag.evaluation", "mdrag.training")),
    ("analysis", ("analysis",)),
    ("front-ends", ("mdrag.cli", "mdrag.__main__", "mdrag.openai_server", "app", "ui", "bench")),
]


def layer_of(module: str) -> int:
    best, level = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    return level


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from mdrag.evaluation import stats`
    return {m for m in found if m.split(".")[0] in ("mdrag", "analysis", "app", "ui", "bench")}


SOURCES = sorted([*ROOT.glob("mdrag/**/*.py"), *ROOT.glob("analysis/**/*.py"), *ROOT.glob("ui/**/*.py"),
                  *ROOT.glob("bench/**/*.py"), ROOT / "app.py"])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    here = module_name(path)
    mine = layer_of(here)
    assert mine is not None, f"{here} belongs to no layer: add it to LAYERS"
    upward = []
    for target in imports(path):
        theirs = layer_of(target)
        if theirs is not None and theirs > mine:
            upward.append(f"{target} ({LAYERS[theirs][0]})")
    assert not upward, f"{here} ({LAYERS[mine][0]}) imports from above: {sorted(upward)}"


def test_the_leaf_modules_import_nothing_of_mdrag():
    for leaf in ("mdrag/evaluation/answer_metrics.py", "mdrag/evaluation/stats.py"):
        assert imports(ROOT / leaf) == set(), leaf


# Module-level memoisation allowed: pure functions of their arguments, holding no model or data a session could
# share unseen (engine.py: what sessions share is exactly what one Engine holds).
PURE_MEMOS = {"mdrag.evaluation.answer_metrics._rouge", "mdrag.hashing._sha256"}


def test_no_module_caches_a_model_outside_the_engine():
    memoised = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {ast.unparse(d).split("(")[0].split(".")[-1] for d in node.decorator_list}
                if names & {"cache", "lru_cache", "cached_property"} and "cached_property" not in names:
                    memoised.add(f"{module_name(path)}.{node.name}")
    assert memoised <= PURE_MEMOS, f"module caches outside the engine: {sorted(memoised - PURE_MEMOS)}"
