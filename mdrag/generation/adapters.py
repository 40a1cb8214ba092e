"""Many LoRA adapters on one base model, loaded safely.

Every shipped adapter is loaded onto the same peft-wrapped base (`load_adapter(..., adapter_name=...)`);
generation picks adapters per batch row (`adapter_names`), so comparing variants never reloads weights
and concurrent requests never race on a global "active adapter".

Safety: only `adapter_model.safetensors` is read (pickle files are refused); the header is parsed before
loading (a truncated file fails here, naming the file); each tensor's shape is checked against the
loaded base and the card's base fingerprint is compared, so an adapter for another base fails before
anything is attached. A failed load deletes whatever part of the adapter peft had attached.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from mdrag.errors import MdragError, MissingModelError


class AdapterError(MdragError):
    pass


ADAPTER_FILE = "adapter_model.safetensors"
_LOCK = threading.Lock()


def read_card(folder: Path) -> dict:
    path = Path(folder) / "card.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"Adapter card {path} is not valid JSON ({err}).") from err


def check_adapter(folder: Path, base_model, base_fingerprint: str | None = None) -> dict:
    """Validate an adapter folder against the loaded base model without touching the model."""
    from safetensors import safe_open

    folder = Path(folder)
    weights = folder / ADAPTER_FILE
    if not weights.exists():
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickles:
            raise AdapterError(f"Refusing pickle adapter weights {folder / pickles[0]}: only {ADAPTER_FILE} is loaded.")
        raise MissingModelError(f"Adapter weights not found: {weights}")
    if not (folder / "adapter_config.json").exists():
        raise AdapterError(f"Adapter config not found: {folder / 'adapter_config.json'}")
    card = read_card(folder)
    if base_fingerprint and card.get("base_fingerprint") and card["base_fingerprint"] != base_fingerprint:
        raise AdapterError(
            f"Adapter {folder.name} was trained on base {card.get('base_model')} ({card['base_fingerprint']}), "
            f"not on the loaded base ({base_fingerprint}). Retrain it for this base."
        )
    modules = dict(base_model.named_modules())
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
        raise AdapterError(f"Adapter file {weights} is unreadable (truncated or not safetensors): {err}") from err
    for key, shape in shapes.items():
        # e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj
        name = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        layer = modules.get(name)
        if layer is None or not hasattr(layer, "in_features"):
            raise AdapterError(f"Adapter {weights} targets '{name}', which the loaded base model does not have.")
        base = getattr(layer, "base_layer", layer)
        want_in, want_out = base.in_features, base.out_features
        ok = (shape[1] == want_in) if ".lora_A." in key else (shape[0] == want_out) if ".lora_B." in key else True
        if not ok:
            raise AdapterError(
                f"Adapter {weights} does not fit the loaded base: {key} has shape {shape}, "
                f"the base layer is {want_in} -> {want_out}. It was trained for another model."
            )
    return card


def attach_adapter(model, name: str, folder: Path, base_fingerprint: str | None = None):
    """Attach adapter `name` to `model` (wrapping it in a PeftModel on first use); returns the model."""
    from peft import PeftModel

    with _LOCK:
        if isinstance(model, PeftModel) and name in model.peft_config:
            return model
        base = model.get_base_model() if isinstance(model, PeftModel) else model
        check_adapter(folder, base, base_fingerprint)
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(folder), adapter_name=name, use_safetensors=True)
            else:
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, use_safetensors=True)
        except Exception as err:
            if isinstance(model, PeftModel) and name in model.peft_config:
                model.delete_adapter(name)
            raise AdapterError(f"Loading adapter {folder} failed: {err}") from err
        model.eval()
        return model


def update_norms(folder: Path) -> list[dict]:
    """Per layer and module, ||scaling * B @ A||_F of the LoRA update, from the adapter file alone.

    ||B A||_F^2 = trace((B^T B)(A A^T)) needs only r x r matrices (A: (r, in), B: (out, r)).
    scaling = alpha / r (alpha / sqrt(r) with rslora), honouring rank_pattern / alpha_pattern.
    """
    import re

    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / ADAPTER_FILE))
    rows = []
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")].float()
        a = a.float()
        name = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        r = next((v for p, v in (cfg.get("rank_pattern") or {}).items() if re.search(p, name)), cfg["r"])
        alpha = next((v for p, v in (cfg.get("alpha_pattern") or {}).items() if re.search(p, name)), cfg["lora_alpha"])
        scaling = alpha / (r**0.5 if cfg.get("use_rslora") else r)
        sq = torch.trace((b.T @ b) @ (a @ a.T)).clamp_min(0)  # (r, r) @ (r, r)
        m = re.search(r"layers\.(\d+)\.(?:\w+)\.(\w+)$", name)
        rows.append({"layer": int(m.group(1)) if m else -1, "module": m.group(2) if m else name,
                     "norm": float(scaling * sq.sqrt())})
    return sorted(rows, key=lambda r: (r["layer"], r["module"]))
