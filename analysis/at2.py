"""AT2-style attribution learned per variant (#25): one weight per attention head, fitted on ablations.

AT2 (Cohen-Wang et al., 2025, "Learning to attribute with attention") scores a source by a weighted sum over
heads of the attention the answer pays to it, with the weights learned so that the scores predict what ablating
sources does. Here, per variant (each LoRA changes the heads, so each gets its own weights):

- fitting data: for each training-split prompt, the variant's own answer, `masks` random ablations with the
  answer's logit probability under each (analysis.ablations), and the per-head attention masses of the answer on
  every source sentence from one unablated forward (analysis.source_methods.head_masses). A mask's predicted
  effect is sum over kept sources of score(source) = mask @ masses.T @ weights, linear in the weights.
- fit: AT2 maximises the correlation between predicted and actual outcomes per prompt; we standardise each
  prompt's outcomes (centre, divide by their standard deviation) and its features the same way and fit one ridge
  regression (scikit-learn Ridge, no intercept) over all prompts' masks: the least-squares form of the same goal.
- quality: the LDS on prompts held out of the fit, and a learning curve of held-out LDS against the number of
  fitting prompts. Weights ship as `assets/attribution/at2/<variant>.safetensors` with a card (JSON beside it:
  prompts, masks, keep probability, ridge alpha, fit quality, the curve).

Attribution with the fitted weights is one forward pass (the recording attention), the same as raw attention.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.ablations import random_masks, target_logit
from analysis.attribution_scores import lds
from analysis.source_methods import Case, head_masses
from mdrag.errors import MdragError
from mdrag.evaluation.stats import bootstrap_ci

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "attribution" / "at2"
KEY = "head_weights"


class InvalidWeightsError(MdragError, ValueError):
    """A weights file that is not readable safetensors (or holds no head weights)."""


@dataclass
class Example:
    """One fitting prompt: features (masks, heads) and outcomes (masks,)."""

    query_id: str
    domain: str
    x: np.ndarray  # (masks, heads): sum over kept sources of each head's attention mass
    y: np.ndarray  # (masks,): the answer's logit probability under each mask


def fitting_example(case: Case, masks: int, keep: float, seed: int) -> Example:
    """Ablate `case` with `masks` random masks and record the per-head masses of its unablated forward."""
    sampled = random_masks(masks, len(case.sources), keep, seed)
    y = target_logit(case.scorer.token_logprobs(sampled), case.targets[0])  # the whole answer
    per_head = head_masses(case)[0]  # (heads, sources)
    return Example(case.trace.query_id or case.trace.query, case.trace.domain, sampled.astype(float) @ per_head.T, y)


def _standardised(ex: Example) -> tuple[np.ndarray, np.ndarray] | None:
    spread = ex.y.std()
    if spread == 0:  # the answer ignores every ablation: nothing to learn from this prompt
        return None
    return (ex.x - ex.x.mean(axis=0)) / spread, (ex.y - ex.y.mean()) / spread


def fit_head_weights(examples: list[Example], alpha: float = 1.0) -> np.ndarray:
    """(heads,) weights from a ridge fit over every prompt's standardised masks."""
    from sklearn.linear_model import Ridge

    parts = [p for p in map(_standardised, examples) if p is not None]
    if not parts:
        raise ValueError("No fitting prompt's answer moved under ablation: nothing to fit")
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return Ridge(alpha=alpha, fit_intercept=False).fit(x, y).coef_


def held_out_lds(weights: np.ndarray, examples: list[Example]) -> list[float]:
    return [v for v in (lds(ex.x @ weights, ex.y) for ex in examples) if not np.isnan(v)]


def learning_curve(train: list[Example], held_out: list[Example], alpha: float = 1.0,
                   sizes: list[int] | None = None) -> pd.DataFrame:
    """Held-out LDS (mean, 95% CI over held-out prompts) after fitting on the first n training prompts."""
    sizes = sizes or sorted({n for n in (1, 2, 4, 8, 16, 32, 64, 128, len(train)) if n <= len(train)})
    rows = []
    for n in sizes:
        try:
            weights = fit_head_weights(train[:n], alpha)
        except ValueError:
            continue
        mean, lo, hi = bootstrap_ci(held_out_lds(weights, held_out))
        rows.append({"prompts": n, "lds": mean, "lds_lo": lo, "lds_hi": hi})
    return pd.DataFrame(rows)


def save_head_weights(variant: str, weights: np.ndarray, card: dict, folder: Path | None = None) -> Path:
    """`<variant>.safetensors` (float32 (heads,)) and `<variant>.json` (the card), each written atomically."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder or WEIGHTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{variant}.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file({KEY: torch.tensor(weights, dtype=torch.float32)}, str(tmp), metadata={"variant": variant})
    tmp.replace(target)
    card_tmp = folder / f"{variant}.json.tmp"
    card_tmp.write_text(json.dumps(card, indent=1, sort_keys=True), encoding="utf-8")
    card_tmp.replace(folder / f"{variant}.json")
    return target


def load_head_weights(variant: str, folder: Path | str | None = None) -> np.ndarray:
    """(heads,) weights of `variant` (safetensors only); a clear error when none were fitted."""
    from safetensors import safe_open

    from mdrag.errors import MissingModelError

    path = Path(folder or WEIGHTS_DIR) / f"{variant}.safetensors"
    if not path.exists():  # an MdragError: the CLI prints one line, the app a message
        raise MissingModelError(f"No AT2 head weights for variant '{variant}' ({path.name}); fit them with "
                                f"`python -m mdrag attribution fit-at2 --variants {variant}`")
    try:
        with safe_open(str(path), framework="np") as f:
            return np.asarray(f.get_tensor(KEY), dtype=np.float64)
    except Exception as err:
        raise InvalidWeightsError(f"AT2 head weights for '{variant}' are unreadable ({path.name}): {err}") from err


def weights_fingerprint(variant: str, folder: Path | str | None = None) -> str:
    import hashlib

    return hashlib.sha256((Path(folder or WEIGHTS_DIR) / f"{variant}.safetensors").read_bytes()).hexdigest()[:12]


def load_card(variant: str, folder: Path | str | None = None) -> dict | None:
    path = Path(folder or WEIGHTS_DIR) / f"{variant}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def fitted_variants(folder: Path | str | None = None) -> list[str]:
    folder = Path(folder or WEIGHTS_DIR)
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.exists() else []


def fit_and_card(variant: str, examples: list[Example], held_out_share: float = 0.25, alpha: float = 1.0,
                 masks: int = 0, keep: float = 0.5, extra: dict | None = None) -> tuple[np.ndarray, dict]:
    """Fit on the first prompts, measure on the last `held_out_share` of them (at least one), then refit on all
    for the shipped weights. The card records what went in and how well it predicts held-out ablations."""
    if len(examples) < 2:
        raise ValueError("AT2 needs at least two fitting prompts (one held out to measure the fit)")
    cut = len(examples) - max(1, round(len(examples) * held_out_share))
    train, test = examples[:cut], examples[cut:]
    curve = learning_curve(train, test, alpha)
    weights = fit_head_weights(train, alpha)
    mean, lo, hi = bootstrap_ci(held_out_lds(weights, test))
    final = fit_head_weights(examples, alpha)
    card = {"variant": variant, "method": "AT2-style per-head weights, ridge on standardised ablations",
            "prompts": [{"query_id": e.query_id, "domain": e.domain} for e in examples],
            "n_prompts": len(examples), "n_fit": len(train), "n_held_out": len(test), "masks": masks, "keep": keep,
            "alpha": alpha, "heads": int(final.shape[0]), "held_out_lds": mean, "held_out_lds_ci": [lo, hi],
            "curve": curve.to_dict("records"), "created": time.strftime("%Y-%m-%d"), **(extra or {})}
    return final, card


def training_prompts(engine, domains: list[str], per_domain: int, seed: int = 0) -> list[tuple[str, str]]:
    """(domain, query id) of `per_domain` answerable training-split questions per domain, seeded, interleaved
    across domains so any prefix of the list (the learning curve's) mixes them."""
    import random

    picked = []
    for name in domains:
        queries = sorted((q for q in engine.domain(name).split("train") if q.gold_ids), key=lambda q: q.id)
        picked.append([(name, q.id) for q in random.Random(f"{seed}|{name}").sample(queries, min(per_domain,
                                                                                                 len(queries)))])
    return [pair for group in zip(*picked, strict=False) for pair in group]


def fit_variants(engine, variants: list[str], domains: list[str], per_domain: int = 8, masks: int = 32,
                 keep: float = 0.5, alpha: float = 1.0, folder: Path | None = None, checkpoints: Path | None = None,
                 progress=None, seed: int = 0, retriever: str = "splade", reranker: str = "minilm"
                 ) -> dict[str, dict]:
    """Fit and ship AT2 weights for each variant from the same training prompts (retrieved setting): every
    variant's answer generated in one batch per prompt, then its ablations and head masses. Each (variant,
    prompt) example is checkpointed (npz) so a killed run resumes; returns the cards."""
    from analysis.source_methods import make_case
    from mdrag.config import cache_dir

    checkpoints = Path(checkpoints or cache_dir() / "at2-examples")
    checkpoints.mkdir(parents=True, exist_ok=True)
    prompts = training_prompts(engine, domains, per_domain, seed)
    examples: dict[str, list[Example]] = {v: [] for v in variants}
    tag = f"{engine.settings.dtype}-m{masks}-k{keep}-s{seed}"
    for domain, query_id in (progress(prompts) if progress else prompts):
        paths = {v: checkpoints / f"{v}-{domain}-{query_id}-{tag}.npz".replace("/", "_") for v in variants}
        missing = [v for v in variants if not paths[v].exists()]
        if missing:
            pipe = engine.pipeline(domain, retriever=retriever, reranker=reranker)
            trace = pipe.answer(pipe.trace(pipe.retrieve(query_id=query_id), "retrieved"), missing)
            for v in missing:
                if not trace.answers[v].token_ids:
                    continue
                ex = fitting_example(make_case(trace, v, engine), masks, keep, seed)
                tmp = paths[v].with_suffix(".tmp.npz")
                np.savez(tmp, x=ex.x, y=ex.y)
                tmp.replace(paths[v])
        for v in variants:
            if paths[v].exists():
                data = np.load(paths[v])
                examples[v].append(Example(query_id, domain, data["x"], data["y"]))
    cards = {}
    for v in variants:
        weights, card = fit_and_card(v, examples[v], alpha=alpha, masks=masks, keep=keep,
                                     extra={"dtype": engine.settings.dtype, "domains": domains, "seed": seed,
                                            "setting": "retrieved", "split": "train"})
        save_head_weights(v, weights, card, folder)
        cards[v] = card
    return cards
