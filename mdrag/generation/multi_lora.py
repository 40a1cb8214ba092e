"""Many LoRA adapters in one batch, each row its own adapter, in two matmuls per targeted linear.

peft's mixed-adapter batch (`adapter_names=`) loops over the adapters inside every LoRA layer, slicing the
batch per adapter: 5 adapters x 30 layers x up to 7 modules is ~1,000 small matmuls plus indexing per decode
step, which made 6 variants decode 3x slower than one here. Here, per targeted linear, the A matrices of the
batch's adapters are concatenated along the rank (and the scaling-folded B matrices likewise), every row
projects onto all of them at once, and a 0/1 mask keeps each row's own adapter's block:

    y = W x + B_cat (mask_row * (A_cat x))      A_cat: (R, in), B_cat: (out, R), R = sum of the batch's ranks

Each adapter's weights are read once per step, where a per-row gather (A[slot] x, zero-padded to the largest
rank: the first version of this module) read rows x r_max, ~295 MB of LoRA weights per 6-row decode step
beside 540 MB of base weights (QK-Att's rank 85 padded Full's 16). A and B are kept transposed, (in, r) and
(r, out), so both products are x @ W with a contiguous W: for these small in-cache matrices that beat
W @ x^T 1.5-5x (measured, 6 rows). Rows of the base model ('__base__') get an all-zero mask. The weights are
taken from peft's own LoraLayer modules after peft has loaded and checked the adapter, so scaling (alpha / r,
rslora, rank patterns) is exactly peft's.

The update runs in forward hooks on a plain (un-wrapped) copy of the base model. Which slot each row uses is
thread-local, so two app users generating at the same time on the shared model never see each other's rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

_LOCAL = threading.local()


# Decode steps feed each linear a few rows (one per variant). Measured on a 2-core AVX2 EPYC, float32, the
# SmolLM2 decode step: x @ W^T as F.linear runs it takes 2.2x as long for 3 rows as for one (72 -> 160 ms
# per step), while the same product computed as W @ x^T takes ~1.2x; a single row padded to two beats the
# gemv F.linear picks for it (76 -> 65 ms per step). Same numbers up to float32 rounding (logits within 1e-4).
_FEW_ROWS = 8


def _few_rows_linear(module, x):
    """module's Linear forward; x: (..., in) -> (..., out)."""
    import torch
    import torch.nn.functional as F

    flat = x.reshape(-1, x.shape[-1])  # (rows, in)
    rows = flat.shape[0]
    if rows > _FEW_ROWS or not flat.is_floating_point():
        return F.linear(x, module.weight, module.bias)
    if rows == 1:
        flat = flat.repeat(2, 1)  # a real copy: a stride-0 expand sends mm down a slow path (measured 2x)
    y = torch.mm(module.weight, flat.T).T[:rows].contiguous()  # (out, in) @ (in, rows) -> (rows, out)
    if module.bias is not None:
        y = y + module.bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


@dataclass
class _Module:
    """Per targeted linear: each adapter's (A^T (in, r), (B*scaling)^T (r, out)), contiguous."""

    weights: dict[str, tuple] = field(default_factory=dict)


class MultiLoraModel:
    """A plain copy of the base model plus stacked adapters; `rows(names)` picks each batch row's adapter."""

    def __init__(self, model, dtype) -> None:
        import torch

        self.model = model.to(dtype).eval()
        if dtype == torch.float32:
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.forward = partial(_few_rows_linear, module)
        self.dtype = dtype
        self.slots: list[str] = ["__base__"]
        self._modules: dict[str, _Module] = {}
        self._lock = threading.Lock()
        self._hooks: dict[str, object] = {}  # target module name -> its forward-hook handle

    @classmethod
    def from_pretrained(cls, folder, dtype, attn_implementation: str = "sdpa") -> MultiLoraModel:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=False,
            use_safetensors=True,
        )
        return cls(model, dtype)

    def has(self, name: str) -> bool:
        return name in self.slots

    def add_from_peft(self, peft_model, name: str) -> None:
        """Copy adapter `name`'s weights out of a PeftModel that has loaded (and checked) it."""
        from peft.tuners.lora import LoraLayer

        with self._lock:
            if name in self.slots:
                return
            prefix = "base_model.model."
            plain = dict(self.model.named_modules())
            found = 0
            for mod_name, mod in peft_model.named_modules():
                if not isinstance(mod, LoraLayer) or name not in mod.lora_A:
                    continue
                target = mod_name.removeprefix(prefix)
                if target not in plain:
                    raise KeyError(f"{target} of adapter {name} has no counterpart in the base model")
                a = mod.lora_A[name].weight.detach()  # (r, in)
                b = mod.lora_B[name].weight.detach() * mod.scaling[name]  # (out, r)
                entry = self._modules.setdefault(target, _Module())
                entry.weights[name] = (a.T.to(self.dtype).contiguous(), b.T.to(self.dtype).contiguous())
                found += 1
            if not found:
                raise ValueError(f"Adapter {name} has no LoRA layers in this model")
            self.slots.append(name)
            for target in self._modules.keys() - self._hooks.keys():  # modules targeted for the first time
                self._hooks[target] = plain[target].register_forward_hook(self._make_hook(target))

    @staticmethod
    def _make_hook(target: str):
        import torch

        def hook(module, inputs, output):
            gathered = getattr(_LOCAL, "gathered", None)
            if not gathered or target not in gathered:
                return output
            a_t, b_t, mask = gathered[target]  # (in, R), (R, out), (rows, 1, R) or None: all rows use all R
            x = inputs[0]  # (rows, tokens, in)
            h = torch.matmul(x, a_t)  # (rows, tokens, R)
            if mask is not None:
                h = h * mask  # each row keeps its own adapter's block of the rank
            flat = output.reshape(-1, output.shape[-1])  # (rows * tokens, out)
            return torch.addmm(flat, h.reshape(-1, h.shape[-1]), b_t).view_as(output)

        return hook

    @contextmanager
    def rows(self, names: list[str]) -> Iterator[None]:
        """Within this block (and this thread), batch row i uses adapter names[i] ('__base__': none)."""
        import torch

        with self._lock:  # a consistent view: another session may be adding an adapter with new targets
            unknown = [n for n in names if n not in self.slots]
            modules = {target: dict(entry.weights) for target, entry in self._modules.items()}
        if unknown:
            raise KeyError(f"Adapters not loaded: {unknown}")
        gathered = {}
        for target, weights in modules.items():
            # Only the adapters of these rows that target this module (QK-Att alone: 2 of 7 modules), each at
            # its own rank. Concatenated once per set of rows, not per decode step.
            used = [n for n in dict.fromkeys(names) if n in weights]
            if not used:
                continue
            if len(used) == 1:
                a, b = weights[used[0]]
            else:
                a = torch.cat([weights[n][0] for n in used], dim=1)  # (in, R)
                b = torch.cat([weights[n][1] for n in used])  # (R, out)
            mask = None
            if any(n != used[0] for n in names):  # rows differ: each keeps its own block
                blocks, start = {}, 0
                for n in used:
                    blocks[n] = slice(start, start + weights[n][1].shape[0])
                    start = blocks[n].stop
                mask = torch.zeros(len(names), 1, start, dtype=self.dtype)
                for row, n in enumerate(names):
                    if n in blocks:
                        mask[row, 0, blocks[n]] = 1
            gathered[target] = (a, b, mask)
        previous = getattr(_LOCAL, "gathered", None)
        _LOCAL.gathered = gathered
        try:
            yield
        finally:
            _LOCAL.gathered = previous
