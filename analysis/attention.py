"""How much attention each answer token pays to each prompt segment (instruction, passage 1..k, question,
the answer so far, chat-template tokens), per layer and head, per variant.

Memory-bounded by construction: a registered attention function computes the layer's output with sdpa
exactly as usual and, only while a recording is active in this thread, the softmax of the chosen query rows
(the answer positions), reduced at once to per-segment mass. Nothing of size layers x heads x T x T ever
exists; per layer we hold (heads, answer tokens, segments). `output_attentions=True` would hold all 30
layers' full (heads, T, T) matrices: +1.2 GB at 1,000 tokens here (see mdrag.bench).

Convention: the mass reported for answer token i is the attention of the query position that *produced*
it (the last prompt token for the first answer token), i.e. what the model looked at when choosing it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from mdrag.engine import Engine
from mdrag.trace import RagTrace

if TYPE_CHECKING:
    from mdrag.generation.kv_cache import PromptKV

ATTN_NAME = "mdrag_segments"
TEMPLATE = "template"  # chat-template tokens that belong to no named segment
ANSWER = "answer"
_STATE = threading.local()
_REGISTER_LOCK = threading.Lock()


def segment_names(trace: RagTrace) -> list[str]:
    """Prompt segments in prompt order, then the answer so far and the template remainder."""
    return [s.name for s in trace.spans if s.kind != "answer"] + [ANSWER, TEMPLATE]


def segment_onehot(trace: RagTrace, total: int):
    """(total, segments) 0/1 matrix: which segment each of `total` positions belongs to."""
    import torch

    names = segment_names(trace)
    owner = torch.full((total,), names.index(TEMPLATE), dtype=torch.long)
    for span in trace.spans:
        if span.kind != "answer":
            owner[span.start: span.end] = names.index(span.name)
    owner[len(trace.prompt_ids):] = names.index(ANSWER)
    return torch.nn.functional.one_hot(owner, len(names)).float()  # (total, segments)


class _Recorder:
    """Collects per-layer segment masses for the query rows at absolute positions `rows`."""

    def __init__(self, rows, onehot):
        self.rows = rows  # (n,) absolute positions of the query rows to keep
        self.onehot = onehot  # (T, segments)
        self.layers: dict[int, object] = {}

    def record(self, layer: int, query, key, mask, scaling: float) -> None:
        import torch

        _, heads, t_q, _ = query.shape  # (batch, heads, t_q, head_dim)
        t_k = key.shape[2]  # key: (batch, kv_heads, t_k, head_dim)
        local = self.rows - (t_k - t_q)  # row index within this call's queries
        keep = (local >= 0) & (local < t_q)
        if not bool(keep.all()):
            raise ValueError("recorded rows must be queries of this forward pass")
        q = query[:, :, local].float()  # (batch, heads, n, head_dim)
        k = key.float().repeat_interleave(heads // key.shape[1], dim=1)  # (batch, heads, t_k, head_dim)
        scores = (q @ k.transpose(-1, -2)) * scaling  # (batch, heads, n, t_k)
        if mask is None:  # causal, no padding: row at position p sees keys 0..p
            allowed = torch.arange(t_k)[None, :] <= self.rows[:, None]  # (n, t_k)
            scores = scores.masked_fill(~allowed, float("-inf"))
        elif mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask[:, :, local, :t_k], float("-inf"))
        else:
            scores = scores + mask[:, :, local, :t_k].float()
        probs = torch.softmax(scores, dim=-1)  # (batch, heads, n, t_k)
        self.layers[layer] = (probs @ self.onehot[:t_k]).cpu()  # (batch, heads, n, segments)


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
               **kwargs):
    """sdpa for the output; plus the segment reduction when this thread is recording."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                 **kwargs)
    recorder = getattr(_STATE, "recorder", None)
    if recorder is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        recorder.record(module.layer_idx, query, key, attention_mask, scale)
    return out


def install(model) -> None:
    """Make `model` use the recording-capable attention (identical outputs to sdpa when not recording)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    with _REGISTER_LOCK:
        AttentionInterface.register(ATTN_NAME, _attention)
        # The mask builder must be registered too, or padding masks silently vanish (VERIFIED.md).
        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
        if model.config._attn_implementation != ATTN_NAME:
            model.set_attn_implementation(ATTN_NAME)


@contextmanager
def recording(rows, onehot):
    recorder = _Recorder(rows, onehot)
    _STATE.recorder = recorder
    try:
        yield recorder
    finally:
        _STATE.recorder = None


@dataclass
class SegmentAttention:
    """Tidy per-token masses: one row per (variant, token, layer, head, segment)."""

    per_token: pd.DataFrame
    segments: list[str]
    gold_segments: list[str]

    def frame(self, tokens: Iterable[int] | None = None) -> pd.DataFrame:
        """Mean mass over the chosen answer tokens (all by default): (variant, layer, head, segment, mass)."""
        df = self.per_token if tokens is None else self.per_token[self.per_token["token"].isin(list(tokens))]
        out = df.groupby(["variant", "layer", "head", "segment"], sort=False, observed=True)["mass"].mean()
        return out.reset_index()


def answer_attention(trace: RagTrace, engine: Engine, variants: list[str] | None = None,
                     prompt_kv: dict[str, PromptKV] | None = None) -> SegmentAttention:
    """Segment masses for every answer token of each variant in the trace (one forward pass per variant), on
    the engine's stacked model in the generation dtype: the answer's own attention. `prompt_kv`: a variant's
    prompt keys and values as its generation's prefill left them (Generator on_prefill); that variant's pass
    then computes only the positions that produced answer tokens, on top of the cached prompt."""
    import torch

    from mdrag.generation.kv_cache import cache_from_prompts

    variants = variants or list(trace.answers)
    missing = [v for v in variants if v not in trace.answers]
    if missing:
        raise KeyError(f"No answer in this trace for {missing}; generate them first")
    fast = engine.stacked()
    install(fast.model)
    names = engine.attach(variants)
    segments = segment_names(trace)
    frames = []
    n = len(trace.prompt_ids)
    for variant, name in zip(variants, names, strict=True):
        answer = trace.answers[variant].token_ids
        ids = trace.prompt_ids + answer
        rows = torch.arange(n - 1, n - 1 + max(1, len(answer)))  # positions that produced each answer token
        kv = (prompt_kv or {}).get(variant)
        if kv is not None and n > 1:  # keys and values of prompt[:-1] cached: feed positions n-1 .. on
            kwargs = {"past_key_values": cache_from_prompts(fast.model.config, [kv], n - 1), "use_cache": True}
            fed = ids[n - 1: n - 1 + len(rows)]  # (rows,): the last prompt token and the answer but its last
        else:
            kwargs, fed = {}, ids
        with torch.inference_mode(), fast.rows([name]), recording(rows, segment_onehot(trace, len(ids))) as rec:
            fast.model(input_ids=torch.tensor([fed]), logits_to_keep=1, **kwargs)  # no full logits
        stacked = torch.stack([rec.layers[layer][0] for layer in sorted(rec.layers)])  # (layers, heads, n, seg)
        layers, heads, tokens, _ = stacked.shape
        index = pd.MultiIndex.from_product([range(layers), range(heads), range(tokens), segments],
                                           names=["layer", "head", "token", "segment"])
        frame = pd.DataFrame({"mass": stacked.reshape(-1).numpy()}, index=index).reset_index()
        frame.insert(0, "variant", variant)
        frames.append(frame)
    gold = [f"passage_{i + 1}" for i, p in enumerate(trace.passages) if p.is_gold]
    per_token = pd.concat(frames, ignore_index=True)
    per_token["segment"] = pd.Categorical(per_token["segment"], categories=segments)
    return SegmentAttention(per_token, segments, gold)
