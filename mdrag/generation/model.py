"""Load the generator: the packaged SmolLM2-135M-Instruct GGUF, converted once to a safetensors cache,
or any local Hugging Face causal-LM directory (e.g. Llama-3.2-1B-Instruct) given by path.

Why the conversion: transformers dequantises the GGUF in ~18 s and marks the model as quantised, so it
refuses `save_pretrained`. We build a fresh model from the config (without `quantization_config`), load
the dequantised weights, and save plain safetensors; later starts reload in well under a second.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from mdrag.cache_files import build_once
from mdrag.config import GENERATOR_GGUF, cache_dir
from mdrag.errors import MissingModelError
from mdrag.hashing import file_sha256, folder_fingerprint


def _is_converted(folder: Path) -> bool:
    weights = (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()
    return weights and (folder / "tokenizer.json").exists()


def convert_gguf(gguf: Path, out: Path, dtype: str = "float32") -> None:
    """Dequantise a GGUF into a plain safetensors model + tokenizer folder `out` (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf.name}
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Dequantised straight into `dtype`: for the 1.5B judge in bfloat16 this halves the conversion's peak
    # memory (two copies of 3.5 GB instead of 7 GB each).
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=getattr(torch, dtype), **kw)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(quantised.state_dict())
    del quantised
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, **kw).save_pretrained(out)


def converted_generator_dir() -> Path:
    """The local safetensors copy of the packaged GGUF generator, converting it on first use (atomic and
    locked: processes starting together on an empty cache all get the finished copy)."""
    gguf = GENERATOR_GGUF.path()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{file_sha256(gguf)[:12]}"
    return build_once(target, _is_converted, lambda tmp: convert_gguf(gguf, tmp),
                      f"Converting {gguf.name} to safetensors (once, ~20 s) -> {target}")


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel (peft-wrapped once adapters are attached)
    tokenizer: object
    path: Path
    fingerprint: str  # hash of the weights: keys caches and adapter compatibility
    # Held while an adapter is attached: wrapping in a PeftModel replaces `model` for everyone who shares it.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name


def resolve_generator_dir(path: str | Path | None = None) -> Path:
    """`None` or 'smollm2-135m' -> the packaged model; otherwise a local HF directory."""
    chosen = path
    if chosen in (None, "", "smollm2-135m"):
        return converted_generator_dir()
    folder = Path(chosen)
    if not (folder / "config.json").exists():
        raise MissingModelError(
            f"Generator '{chosen}' is not a local Hugging Face model directory (no config.json). "
            "Nothing is downloaded at run time: point to a folder with config.json, tokenizer and weights."
        )
    return folder


def generator_config(path: str | None = None):
    """The generator's transformers config (shapes: layers, heads) without loading its weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_generator_dir(path), trust_remote_code=False)


def load_generator(path: str | Path | None = None, attn_implementation: str = "sdpa") -> LoadedModel:
    """A freshly loaded generator in eval mode, fp32 on CPU (each call loads again: the engine,
    mdrag/engine.py, is what loads it once and shares it). Never `trust_remote_code`; safetensors only."""
    import torch

    folder = resolve_generator_dir(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation=attn_implementation, trust_remote_code=False,
        use_safetensors=True,
    ).eval()
    return LoadedModel(model, tokenizer, folder, folder_fingerprint(folder))
