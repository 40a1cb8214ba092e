"""What a result was made on: the library versions and the CPU.

The CPU matters to every speed figure and to the numbers themselves: it picks the generation dtype
(config.generation_dtype), and the 2-core machines we are lent differed 1.5x on model-bound rows between
sessions. Evaluation runs and adapter cards record `versions()`; the benchmark prints `cpu()` above its table
and writes it into its JSON, so no figure travels without its machine.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from mdrag.config import generation_dtype, native_bf16

# The cpuinfo flags that decide our fast paths: AVX2 (MKL's float32 kernels), AVX-512 and native bf16.
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def versions() -> dict[str, str]:
    """Python and the libraries whose versions change numbers (kernels, generation, LoRA, training), read from
    the installed packages' metadata: importing them only to ask (trl alone took ~0.5 s) would slow the start
    of every evaluation run and benchmark."""
    out = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "trl"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # trl is needed only for training
            continue
    return out


def cpu(cpuinfo: Path = Path("/proc/cpuinfo"), dtype: str | None = None) -> dict:
    """The CPU as far as Linux tells (a VM may hide the exact model), cores, torch's threads, the dtype."""
    import torch

    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor speaks for all
    except OSError:  # not Linux
        pass
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", platform.processor() or "unknown"),
            "family/model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "flags": [f for f in _FLAGS if f in flags], "native_bf16": native_bf16(cpuinfo),
            "generation_dtype": dtype or generation_dtype(native=native_bf16(cpuinfo)),
            "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def busy_note(info: dict) -> str | None:
    """A warning when other work holds the CPU before a measurement starts: on two cores a second process
    halved one side of a ratio and flipped it (bench, 2026-12-02); None on an idle machine."""
    load = info.get("load_1min")
    if load is None or load < 0.5 * info["cores"]:
        return None
    return (f"warning: the machine is busy (1-minute load {load:.1f} on {info['cores']} cores) before the first "
            "measurement: other processes share the CPU, so times are longer and ratios may flip; measure on an "
            "idle machine")


def describe(info: dict) -> str:
    """One line for a report header: 'AMD EPYC (family/model 25/1), 2 cores, ...'."""
    return (f"{info['model']} (family/model {info['family/model']}), {info['cores']} cores, "
            f"{info['torch_threads']} torch threads, flags: {' '.join(info['flags']) or 'none of note'}, "
            f"native bf16: {info['native_bf16']}, generation dtype: {info['generation_dtype']}")
