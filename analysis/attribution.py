"""Context attribution: which passages (and which sentences, which tokens) the answer depends on.

- Passage ablation with captum (`FeatureAblation` through `LLMAttribution`, a `TextTemplateInput` whose
  features are the passages): the drop in the log-probability of the variant's own answer when a passage is
  replaced by the baseline (empty text). 1 + k forward passes (`forward_in_tokens=False`; captum's default
  token-by-token path is wrong with transformers 5 and ~50x slower, see VERIFIED.md).
- Sentence ablation inside one passage: the same with that passage's sentences as the features.
- Token-level integrated gradients on the embeddings (captum `LayerIntegratedGradients`), on demand: one
  integrated-gradients pass per answer token, minutes on a CPU for a long prompt.
- Deletion curve: remove passages cumulatively in attribution order and watch the answer's log-prob fall.
- Agreement: Spearman rank correlation between attention mass, ablation and gradient per passage.

Every forward runs on the same stacked-adapter model the answer was generated with, in its dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mdrag.data.chunking import sentences
from mdrag.engine import Engine
from mdrag.trace import RagTrace


@dataclass
class Attribution:
    """Scores per feature (passage or sentence): how much the answer's log-prob drops without it."""

    variant: str
    features: list[str]  # names: passage_1.. or sentence texts
    scores: list[float]
    full_logprob: float  # log P(answer | full prompt)
    kind: str = "passage"
    token_scores: list[list[float]] = field(default_factory=list)  # (answer tokens, features)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"variant": self.variant, "feature": self.features, "score": self.scores})


class VariantModel:
    """The stacked-adapter model with one variant selected, as captum and our own checks see it."""

    def __init__(self, trace: RagTrace, variant: str, engine: Engine, dtype: str | None = None,
                 target: str | None = None):
        if variant not in trace.answers:
            raise KeyError(f"No answer for {variant} in this trace; generate it first")
        self.fast = engine.stacked(dtype)  # default: the generation dtype the answer was made in
        self.name = engine.attach([variant], dtype)[0]
        self.tokenizer = engine.generator().tokenizer
        self.model = self.fast.model
        # The variant's own answer, or a forced target text (e.g. the gold answer: "which passage would
        # support the right answer?").
        self.answer_ids = (self.tokenizer(target, add_special_tokens=False)["input_ids"] if target is not None
                           else list(trace.answers[variant].token_ids))

    def answer_logprob(self, prompt_text: str) -> float:
        """log P(answer tokens | prompt), the prompt tokenised as the generator saw it."""
        import torch

        ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full = torch.tensor([ids + self.answer_ids])  # (1, prompt + answer)
        with torch.inference_mode(), self.fast.rows([self.name]):
            logits = self.model(input_ids=full, logits_to_keep=len(self.answer_ids) + 1).logits[0, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)  # (answer, vocab)
        return float(logp[torch.arange(len(self.answer_ids)), torch.tensor(self.answer_ids)].sum())


def _passage_ranges(trace: RagTrace) -> list[tuple[str, int, int]]:
    return [(s.name, s.char_start, s.char_end) for s in trace.spans if s.kind == "passage"]


def _template(text: str, ranges: list[tuple[int, int]]) -> tuple[str, list[str]]:
    """`text` with each char range turned into a `{}` slot (literal braces doubled) and the slot values."""
    parts, values, at = [], [], 0
    for start, end in sorted(ranges):
        parts.append(text[at:start].replace("{", "{{").replace("}", "}}") + "{}")
        values.append(text[start:end])
        at = end
    parts.append(text[at:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts), values


def _answer_logits_only(model, n_answer: int):
    """The generator as captum's sequence forward (`forward_in_tokens=False`) sees it, with the LM head run
    only where it is read. captum concatenates prompt + answer, calls `model.forward` and reads
    logits[:, input_len - 1 : input_len - 1 + n_answer]; the LM head over the other ~700 prompt positions
    (576 x 49,152 per position on SmolLM2) was ~20% of each ablation forward. Those positions come back as
    zeros, never read: same numbers, 1 + k forwards of the body only."""
    import torch

    class AnswerLogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @property
        def device(self):
            return self.model.device

        def forward(self, input_ids, **kwargs):
            out = self.model(input_ids=input_ids, logits_to_keep=n_answer + 1, **kwargs)
            kept = out.logits  # (batch, n_answer + 1, vocab): the positions that predict the answer (+ one after)
            full = kept.new_zeros(kept.shape[0], input_ids.shape[1], kept.shape[2])  # (batch, seq, vocab)
            full[:, -kept.shape[1]:] = kept
            out.logits = full
            return out

    return AnswerLogitsOnly()


def _captum_ablation(m: VariantModel, template: str, values: list[str], baselines: list[str] | None = None):
    import torch
    from captum.attr import FeatureAblation, LLMAttribution, TextTemplateInput

    if not m.answer_ids:
        raise ValueError("The answer is empty: nothing to attribute")
    if m.tokenizer("x")["input_ids"] != m.tokenizer("x", add_special_tokens=False)["input_ids"]:
        raise ValueError("This tokenizer adds special tokens by itself; captum would insert them twice")
    llm = LLMAttribution(FeatureAblation(_answer_logits_only(m.model, len(m.answer_ids))), m.tokenizer)
    # FeatureAblation's first forward is the unablated prompt: keep its log P(answer) rather than paying one
    # more forward for it (1 + k forwards in all). Element 0 is the sequence total, the rest per token.
    inner, evals = llm.attr_method.forward_func, []
    llm.attr_method.forward_func = lambda *a, **k: evals.append(inner(*a, **k)) or evals[-1]
    inp = TextTemplateInput(template, values=values, baselines=baselines)
    with m.fast.rows([m.name]):
        res = llm.attribute(inp, target=torch.tensor(m.answer_ids), forward_in_tokens=False)
    token_attr = res.token_attr.tolist() if res.token_attr is not None else []
    full = float(evals[0].reshape(-1)[0])
    return res.seq_attr.tolist(), token_attr, full


def passage_ablation(trace: RagTrace, variant: str, engine: Engine, target: str | None = None,
                     dtype: str | None = None) -> Attribution:
    """Drop in log P(answer) when each passage is emptied (captum FeatureAblation, 1 + k forwards).
    `target`: attribute this text instead of the variant's own answer."""
    m = VariantModel(trace, variant, engine, dtype, target)
    ranges = _passage_ranges(trace)
    template, values = _template(trace.prompt, [(s, e) for _, s, e in ranges])
    scores, token_scores, full = _captum_ablation(m, template, values)
    return Attribution(variant, [n for n, _, _ in ranges], scores, full, token_scores=token_scores)


def sentence_ablation(trace: RagTrace, variant: str, passage: int, engine: Engine) -> Attribution:
    """Sentence-level ablation inside passage number `passage` (1-based), the other passages kept."""
    ranges = _passage_ranges(trace)
    if not 1 <= passage <= len(ranges):
        raise ValueError(f"Passage {passage} does not exist; this prompt has {len(ranges)}")
    _, start, end = ranges[passage - 1]
    spans = [(start + s, start + e) for s, e in sentences(trace.prompt[start:end])]
    m = VariantModel(trace, variant, engine)
    template, values = _template(trace.prompt, spans)
    scores, token_scores, full = _captum_ablation(m, template, values)
    return Attribution(variant, values, scores, full, kind="sentence", token_scores=token_scores)


def deletion_curve(trace: RagTrace, variant: str, order: list[str], engine: Engine) -> pd.DataFrame:
    """log P(answer) after removing 0, 1, ..., k passages in `order` (names like passage_3)."""
    m = VariantModel(trace, variant, engine)
    ranges = _passage_ranges(trace)
    template, values = _template(trace.prompt, [(s, e) for _, s, e in ranges])
    names = [n for n, _, _ in ranges]
    rows, removed = [], set()
    for step in range(len(order) + 1):
        if step:
            removed.add(order[step - 1])
        text = template.format(*["" if n in removed else v for n, v in zip(names, values, strict=True)])
        rows.append({"variant": variant, "removed": step, "last_removed": order[step - 1] if step else "",
                     "logprob": m.answer_logprob(text)})
    return pd.DataFrame(rows)


def gradient_attribution(trace: RagTrace, variant: str, engine: Engine, token_range: tuple[int, int] | None = None,
                         n_steps: int = 8) -> pd.DataFrame:
    """Integrated gradients on the input embeddings for answer tokens `token_range` (default: all).

    One row per prompt token: (position, token text, segment, score). Template tokens are skipped as
    features (otherwise they dominate, VERIFIED.md). Gradients need float32: bf16 IG is too coarse."""
    import torch
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    m = VariantModel(trace, variant, engine, dtype="float32")
    lo, hi = token_range or (0, len(m.answer_ids))
    if not 0 <= lo < hi <= len(m.answer_ids):
        raise ValueError(f"Token range {lo}..{hi} is outside the answer (0..{len(m.answer_ids)})")
    owner = {}
    for span in trace.spans:
        if span.kind != "answer":
            owner.update({t: span.name for t in range(span.start, span.end)})
    # The answer prefix before `lo` joins the prompt (it is context for the chosen tokens).
    ids = list(trace.prompt_ids) + m.answer_ids[:lo]
    skip = [t for pos, t in enumerate(ids) if pos not in owner and pos < len(trace.prompt_ids)]
    llm = LLMGradientAttribution(LayerIntegratedGradients(m.model, m.model.get_input_embeddings()), m.tokenizer)
    inp = TextTokenInput(m.tokenizer.decode(ids), m.tokenizer, skip_tokens=sorted(set(skip)))
    with m.fast.rows([m.name]):
        res = llm.attribute(inp, target=torch.tensor(m.answer_ids[lo:hi]), n_steps=n_steps,
                            internal_batch_size=2)
    scores = res.seq_attr.float().tolist()
    kept = [pos for pos, t in enumerate(ids) if t not in set(skip)]
    if len(kept) != len(scores):  # decode/encode round trip changed the tokens: report, don't guess
        raise ValueError("The prompt did not survive a tokenizer round trip; gradient attribution unavailable")
    return pd.DataFrame({"position": kept, "token": [m.tokenizer.decode([ids[p]]) for p in kept],
                         "segment": [owner.get(p, "answer") for p in kept], "score": scores})


def agreement(per_passage: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Spearman rank correlation between explanation methods over passages.

    `per_passage`: method -> {passage name -> score}, e.g. attention mass, ablation, gradient."""
    from scipy.stats import spearmanr

    methods = list(per_passage)
    rows = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            common = sorted(set(per_passage[a]) & set(per_passage[b]))
            x = [per_passage[a][p] for p in common]
            y = [per_passage[b][p] for p in common]
            rho = spearmanr(x, y).statistic if len(common) > 2 and np.std(x) > 0 and np.std(y) > 0 else np.nan
            rows.append({"A": a, "B": b, "passages": len(common), "spearman": float(rho)})
    return pd.DataFrame(rows)
