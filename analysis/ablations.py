"""The answer's log-probability under many context ablations, batched on one cached prefix (#25).

An ablation mask keeps or removes each source sentence (analysis.sources); the ablated prompt is the prompt text
with the removed sentences cut out (the empty-text baseline of passage ablation), re-tokenised. Every ablated
prompt starts with the same tokens up to the first removed sentence (at least the system prompt and
instruction): their key/value cache is computed once per variant and shared by every mask, and the masks run
one at a time by default, in lexicographic order of their tokens on one cache cropped back to what each prompt shares
with the one before (sorted random masks share their first sources' decisions, not just the instruction).
`batch_size` > 1 runs right-padded batches instead (padding after a row's last token cannot change its logits
under causal attention), but on a 2-core CPU that was slower: 16 masks of a 683-token NQ-open prompt cost 0.47x a
full forward each one at a time (shared instruction only), 0.63x in batches of 4, 0.75x of 8 (float32, one
thread). The LM head runs only at the answer positions. With ContextCite's keep probability of 0.5 an
ablated prompt holds about half the passage tokens, so one mask costs about half a full forward.

Outputs are per answer token, so one set of forwards serves every target span of the answer (the whole answer
and each of its sentences, teacher-forced).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from analysis.attribution import VariantModel
from analysis.sources import Source, Target, prompt_sources
from mdrag.engine import Engine
from mdrag.trace import RagTrace


def random_masks(n_masks: int, n_sources: int, keep: float, seed: int) -> np.ndarray:
    """(n_masks, n_sources) bool: each source kept with probability `keep`, seeded (ContextCite's sampling)."""
    if not 0 < keep < 1:
        raise ValueError(f"keep probability must be in (0, 1), got {keep}")
    if n_masks < 1:
        raise ValueError(f"need at least one mask, got {n_masks}")
    return np.random.default_rng(seed).random((n_masks, n_sources)) < keep


def target_logit(token_logprobs: np.ndarray, target: Target) -> np.ndarray:
    """(masks,) logit of P(target span) = log p - log(1 - p), the quantity ContextCite's surrogate regresses
    (for a long span p is tiny and this is log p; near p = 1 it still spreads the masks apart)."""
    lp = np.minimum(token_logprobs[:, target.lo: target.hi].sum(axis=1), -1e-9)
    return lp - np.log(-np.expm1(lp))


class AblationScorer:
    """Per-token log P(answer) of one variant under source masks (see the module docstring)."""

    def __init__(self, trace: RagTrace, variant: str, engine: Engine, sources: list[Source] | None = None,
                 dtype: str | None = None, batch_size: int = 1, prefix_cache: bool = True) -> None:
        self.m = VariantModel(trace, variant, engine, dtype)
        if not self.m.answer_ids:
            raise ValueError("The answer is empty: nothing to attribute")
        self.trace = trace
        self.sources = sources if sources is not None else prompt_sources(trace)
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self.forwards = 0  # masks run (rows of the batched forwards)
        self.seconds = 0.0
        self._prefix: tuple[list[int], object] | None = None

    def prompt_ids(self, keep: np.ndarray) -> list[int]:
        """Token ids of the prompt with the sources where `keep` is False cut out."""
        text, at = [], 0
        for source, kept in zip(self.sources, keep, strict=True):
            if not kept:
                text.append(self.trace.prompt[at: source.char_start])
                at = source.char_end
        text.append(self.trace.prompt[at:])
        return self.m.tokenizer("".join(text), add_special_tokens=False)["input_ids"]

    def _shared(self) -> tuple[list[int], object]:
        """Tokens every ablated prompt starts with (those before the first source, less one so each row has a
        prompt token left to predict the answer from) and their KV cache (batch 1)."""
        import torch

        if self._prefix is None:
            first = min((s.char_start for s in self.sources), default=len(self.trace.prompt))
            head = self.m.tokenizer(self.trace.prompt[:first], add_special_tokens=False)["input_ids"]
            full = self.prompt_ids(np.ones(len(self.sources), dtype=bool))
            n = 0
            while n < min(len(head), len(full)) - 1 and head[n] == full[n]:
                n += 1
            prefix = full[: max(0, n - 1)]  # the last head token may merge with what follows: leave it out
            cache = None
            if prefix:
                with torch.inference_mode(), self.m.fast.rows([self.m.name]):
                    cache = self.m.model.get_decoder()(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
            self._prefix = (prefix, cache)
        return self._prefix

    def token_logprobs(self, masks: np.ndarray) -> np.ndarray:
        """(n_masks, answer tokens) log P(answer token i | ablated prompt, answer[:i])."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, len(self.sources))
        started = time.perf_counter()
        rows = [self.prompt_ids(k) for k in masks]
        out = self._rolling(rows) if self.prefix_cache and self.batch_size == 1 else self._batched(rows)
        self.forwards += len(masks)
        self.seconds += time.perf_counter() - started
        return out

    def _logprobs(self, hidden, at) -> np.ndarray:
        """hidden: (batch, tokens, h); at: (batch, answer) positions predicting each answer token -> (batch, answer)."""
        import torch

        answer = self.m.answer_ids
        picked = hidden[torch.arange(hidden.shape[0])[:, None], at]  # (batch, answer, hidden)
        logits = self.m.model.get_output_embeddings()(picked).float()  # (batch, answer, vocab): the head only here
        logp = torch.log_softmax(logits, dim=-1)
        return logp[..., torch.arange(len(answer)), torch.tensor(answer)].numpy()

    def _rolling(self, rows: list[list[int]]) -> np.ndarray:
        """One mask at a time in lexicographic order of their token ids, on one KV cache cropped back to what the
        next prompt shares with the one before it (the shared prefix at least; sorted random masks also share
        their first sources' decisions), so each mask computes only the tokens after that point."""
        import torch

        answer = self.m.answer_ids
        prefix, shared = self._shared()
        cache = copy.deepcopy(shared) if shared is not None else None
        held = list(prefix)  # the tokens `cache` holds
        out = np.empty((len(rows), len(answer)))
        for i in sorted(range(len(rows)), key=rows.__getitem__):
            ids = rows[i]
            if ids[: len(prefix)] != prefix:
                raise ValueError("An ablated prompt does not start with the shared prefix")
            keep = 0
            limit = min(len(held), len(ids) - 1)  # at least the last prompt token is computed afresh
            while keep < limit and held[keep] == ids[keep]:
                keep += 1
            if keep == 0:
                cache = None
            elif cache is not None and len(held) > keep:
                cache.crop(keep - len(held))  # transformers 5: a negative count of tokens to drop from the end
            fresh = ids[keep:] + answer
            with torch.inference_mode(), self.m.fast.rows([self.m.name]):
                res = self.m.model.get_decoder()(input_ids=torch.tensor([fresh]), past_key_values=cache,
                                                 use_cache=True)
                at = torch.tensor([[len(ids) - keep - 1 + j for j in range(len(answer))]])
                out[i] = self._logprobs(res.last_hidden_state, at)[0]
            cache, held = res.past_key_values, ids + answer
        return out

    def _batched(self, rows: list[list[int]]) -> np.ndarray:
        """Right-padded batches of `batch_size` on a copy of the shared prefix's cache (or none)."""
        import torch

        prefix, cache = self._shared() if self.prefix_cache else ([], None)
        answer = self.m.answer_ids
        out = np.empty((len(rows), len(answer)))
        pad = self.m.tokenizer.pad_token_id if self.m.tokenizer.pad_token_id is not None else 0
        for lo in range(0, len(rows), self.batch_size):
            batch = rows[lo: lo + self.batch_size]
            if any(r[: len(prefix)] != prefix for r in batch):
                raise ValueError("An ablated prompt does not start with the shared prefix")
            suffixes = [r[len(prefix):] + answer for r in batch]
            width = max(map(len, suffixes))
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes])  # (batch, width)
            kwargs = {}
            if len(batch) > 1:  # one row needs no mask (plain causal attention, sdpa's fast path)
                kwargs["attention_mask"] = torch.tensor([[1] * (len(prefix) + len(s)) + [0] * (width - len(s))
                                                         for s in suffixes])
            if cache is not None:
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(batch))
                kwargs.update(past_key_values=kv, use_cache=True)
            # answer token j of row r is predicted at suffix position (prompt part length - 1 + j)
            at = torch.tensor([[len(s) - len(answer) - 1 + j for j in range(len(answer))] for s in suffixes])
            with torch.inference_mode(), self.m.fast.rows([self.m.name] * len(batch)):
                hidden = self.m.model.get_decoder()(input_ids=ids, **kwargs).last_hidden_state
                out[lo: lo + len(batch)] = self._logprobs(hidden, at)
        return out

    def full_forward_seconds(self) -> float:
        """Wall time of one unablated forward of prompt + answer (no prefix cache): the cost unit of the bench."""
        import torch

        ids = torch.tensor([self.trace.prompt_ids + self.m.answer_ids])
        started = time.perf_counter()
        with torch.inference_mode(), self.m.fast.rows([self.m.name]):
            self.m.model(input_ids=ids, logits_to_keep=len(self.m.answer_ids) + 1)
        return time.perf_counter() - started
