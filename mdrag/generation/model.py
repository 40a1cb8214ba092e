"""Load the generator: the packaged SmolLM2-135M-Instruct GGUF, converted once to a safetensors cache,
or any local Hugging Face causal-LM directory (e.g. Llama-3.2-1B-Instruct) given by path.

Why the conversion: transformers dequantises the GGUF in ~18 s and marks the model as quantised, so it
refuses `save_pretrained`. We build a fresh model from the config (without `quantization_config`), load
the dequantised weights, and save plain safetensors; later starts reload in well under a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mdrag.config import GENERATOR_GGUF, cache_dir
from mdrag.errors import MissingModelError
from mdrag.hashing import file_sha256, folder_fingerprint


def converted_generator_dir() -> Path:
    """The local safetensors copy of the packaged GGUF generator, converting it on first use."""
    gguf = GENERATOR_GGUF.path()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{file_sha256(gguf)[:12]}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf.name} to safetensors (once, ~20 s) -> {target}", flush=True)
    kw = {"gguf_file": gguf.name}
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    tmp = Path(tempfile.mkdtemp(dir=target.parent.parent if target.parent.exists() else cache_dir()))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)  # atomic: a killed conversion never leaves a half-written cache
    return target


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel (peft-wrapped once adapters are attached)
    tokenizer: object
    path: Path
    fingerprint: str  # hash of the weights: keys caches and adapter compatibility

    @property
    def name(self) -> str:
        return self.path.name


def resolve_generator_dir(path: str | Path | None = None) -> Path:
    """`None` or 'smollm2-135m' -> the packaged model; otherwise a local HF directory."""
    chosen = path or os.environ.get("MDRAG_GENERATOR")
    if chosen in (None, "", "smollm2-135m"):
        return converted_generator_dir()
    folder = Path(chosen)
    if not (folder / "config.json").exists():
        raise MissingModelError(
            f"Generator '{chosen}' is not a local Hugging Face model directory (no config.json). "
            "Nothing is downloaded at run time: point to a folder with config.json, tokenizer and weights."
        )
    return folder


def load_generator(path: str | None = None, attn_implementation: str = "sdpa") -> LoadedModel:
    """The generator in eval mode, fp32 on CPU, loaded once per resolved directory (so changing
    MDRAG_GENERATOR or passing another path never returns a model cached for a different one)."""
    return _load_generator(resolve_generator_dir(path), attn_implementation)


@cache
def _load_generator(folder: Path, attn_implementation: str) -> LoadedModel:
    """Never `trust_remote_code`; safetensors only."""
    import torch
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
