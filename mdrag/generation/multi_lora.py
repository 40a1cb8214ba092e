"""Many LoRA adapters in one batch, each row its own adapter, in two batched matmuls per layer.

peft's mixed-adapter batch (`adapter_names=`) loops over the adapters inside every LoRA layer, slicing the
batch per adapter: 5 adapters x 30 layers x up to 7 modules is ~1,000 small matmuls plus indexing per decode
step, which made 6 variants decode 3x slower than one here. This module stacks, per targeted linear, every
adapter's A and (scaling-folded) B into zero-padded tensors and adds the update for all rows at once:

    y = W x + B[slot] (A[slot] x)        A: (slots, r_max, in), B: (slots, out, r_max)

Slot 0 is the base model (all zeros). The weights are taken from peft's own LoraLayer modules after peft has
loaded and checked the adapter, so scaling (alpha / r, rslora, rank patterns) is exactly peft's.

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
    """Per targeted linear: each adapter's (A (r, in), B*scaling (out, r)) and their padded stacks."""

    in_features: int
    out_features: int
    weights: dict[str, tuple] = field(default_factory=dict)
    a: object = None  # (slots, r_max, in)
    b: object = None  # (slots, out, r_max)


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
        import torch
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
                entry = self._modules.setdefault(target, _Module(a.shape[1], b.shape[0]))
                entry.weights[name] = (a.to(self.dtype), b.to(self.dtype))
                found += 1
            if not found:
                raise ValueError(f"Adapter {name} has no LoRA layers in this model")
            self.slots.append(name)
            for entry in self._modules.values():
                r_max = max(a.shape[0] for a, _ in entry.weights.values())
                stack_a = torch.zeros(len(self.slots), r_max, entry.in_features, dtype=self.dtype)
                stack_b = torch.zeros(len(self.slots), entry.out_features, r_max, dtype=self.dtype)
                for slot, adapter in enumerate(self.slots):
                    if adapter in entry.weights:
                        a, b = entry.weights[adapter]
                        stack_a[slot, : a.shape[0]] = a
                        stack_b[slot, :, : b.shape[1]] = b
                entry.a, entry.b = stack_a, stack_b
            for target in self._modules.keys() - self._hooks.keys():  # modules targeted for the first time
                self._hooks[target] = plain[target].register_forward_hook(self._make_hook(target))

    @staticmethod
    def _make_hook(target: str):
        import torch

        def hook(module, inputs, output):
            gathered = getattr(_LOCAL, "gathered", None)
            if not gathered or target not in gathered:
                return output
            a_t, b_t = gathered[target]  # (rows, in, r), (rows, r, out)
            x = inputs[0]  # (rows, tokens, in)
            return output + torch.bmm(torch.bmm(x, a_t), b_t)  # (rows, tokens, out)

        return hook

    @contextmanager
    def rows(self, names: list[str]) -> Iterator[None]:
        """Within this block (and this thread), batch row i uses adapter names[i] ('__base__': none)."""
        import torch

        unknown = [n for n in names if n not in self.slots]
        if unknown:
            raise KeyError(f"Adapters not loaded: {unknown}")
        slots = torch.tensor([self.slots.index(n) for n in names])
        gathered = {}
        if any(s != 0 for s in slots.tolist()):
            for target, entry in self._modules.items():
                if not any(n in entry.weights for n in names):
                    continue  # no row's adapter touches this module: skip its zero update (QK-Att alone: 2 of 7)
                # Only the largest rank among these rows' adapters (Full alone: 16, not QK-Att's 85 it is
                # padded to in the stack). Gathered once per batch, not per decode step: (rows, in, r), (rows, r, out)
                r = max(entry.weights[n][0].shape[0] for n in names if n in entry.weights)
                gathered[target] = (entry.a[slots, :r].transpose(1, 2).contiguous(),
                                    entry.b[slots, :, :r].transpose(1, 2).contiguous())
        previous = getattr(_LOCAL, "gathered", None)
        _LOCAL.gathered = gathered
        try:
            yield
        finally:
            _LOCAL.gathered = previous
