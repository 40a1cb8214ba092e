"""Teacher-forced log-probabilities of a continuation, every variant as a row of one forward pass.

What log-likelihood evaluations score (multiple choice by the likelihood of each option, the loss on a text,
the gold answer's probability under a prompt): no generation, one forward per (prefix, continuation) whatever
the number of variants, on the stacked-adapter model (multi_lora.py) the answers are generated with.
"""

from __future__ import annotations

from mdrag.generation.multi_lora import MultiLoraModel


def continuation_logprobs(stacked: MultiLoraModel, rows: list[str], prefix_ids: list[int],
                          target_ids: list[int]) -> list[float]:
    """sum over the target tokens of log P(token | prefix, earlier target tokens), one value per row name
    ('__base__' for the base model, else an adapter already stacked). Empty target: 0.0 per row."""
    import torch

    if not target_ids:
        return [0.0] * len(rows)
    if not prefix_ids:
        raise ValueError("a continuation needs at least one prefix token to be predicted from")
    ids = torch.tensor([prefix_ids + target_ids] * len(rows))  # (rows, prefix + target)
    with torch.inference_mode(), stacked.rows(rows):
        # logits of the last len(target)+1 positions; position i predicts token i+1
        logits = stacked.model(input_ids=ids, logits_to_keep=len(target_ids) + 1).logits[:, :-1]  # (rows, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp[:, torch.arange(len(target_ids)), torch.tensor(target_ids)].sum(dim=1)  # (rows,)
    return [float(x) for x in picked]
