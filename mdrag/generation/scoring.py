"""Teacher-forced log-probabilities of a continuation, every variant as a row of one forward pass.

What log-likelihood evaluations score (multiple choice by the likelihood of each option, the loss on a text,
the gold answer's probability under a prompt): no generation, one forward per (prefix, continuation) whatever
the number of variants, on the stacked-adapter model (multi_lora.py) the answers are generated with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdrag.generation.multi_lora import MultiLoraModel

if TYPE_CHECKING:
    from mdrag.generation.kv_cache import PromptKV


def continuation_logprobs(stacked: MultiLoraModel, rows: list[str], prefix_ids: list[int],
                          target_ids: list[int], prefix_kv: list[PromptKV] | None = None) -> list[float]:
    """sum over the target tokens of log P(token | prefix, earlier target tokens), one value per row name
    ('__base__' for the base model, else an adapter already stacked). Empty target: 0.0 per row.

    `prefix_kv`: each row's keys and values of `prefix_ids` as its prefill left them (generator on_prefill);
    then only the prefix's last token and the target are computed (the same numbers up to float rounding)."""
    import torch

    if not target_ids:
        return [0.0] * len(rows)
    if not prefix_ids:
        raise ValueError("a continuation needs at least one prefix token to be predicted from")
    kwargs = {}
    if prefix_kv is not None and len(prefix_ids) > 1:
        from mdrag.generation.kv_cache import cache_from_prompts

        if len(prefix_kv) != len(rows):
            raise ValueError(f"{len(prefix_kv)} prompt caches for {len(rows)} rows")
        # the cache holds prefix[:-1]; prefix[-1] is fed again so its logits predict the first target token
        kwargs = {"past_key_values": cache_from_prompts(stacked.model.config, prefix_kv, len(prefix_ids) - 1),
                  "use_cache": True}
        ids = torch.tensor([prefix_ids[-1:] + target_ids] * len(rows))  # (rows, 1 + target)
    else:
        ids = torch.tensor([prefix_ids + target_ids] * len(rows))  # (rows, prefix + target)
    with torch.inference_mode(), stacked.rows(rows):
        # logits of the last len(target)+1 positions; position i predicts token i+1
        out = stacked.model(input_ids=ids, logits_to_keep=len(target_ids) + 1, **kwargs)
        logits = out.logits[:, :-1]  # (rows, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp[:, torch.arange(len(target_ids)), torch.tensor(target_ids)].sum(dim=1)  # (rows,)
    return [float(x) for x in picked]
