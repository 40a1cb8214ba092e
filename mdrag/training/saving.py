"""Publishing a trained folder (generator adapter or adapted encoder): no machine paths, swapped in whole."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def swap_in(tmp: Path, target: Path) -> None:
    """Replace `target` by the finished folder `tmp` (same parent), so a reader never sees half a folder."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def write_card(folder: Path, card: dict) -> Path:
    """Write `folder/card.json` whole (temporary file, then rename): a reader never sees half a card."""
    path = folder / "card.json"
    tmp = path.with_name(".card.json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def publish(tmp: Path, target: Path, card: dict, base_name: str) -> None:
    """Write `card.json`, name the base without a path in `adapter_config.json` (if any), drop the generated
    README.md (it repeats the training machine's paths), then swap `tmp` in as `target`."""
    adapter_config = tmp / "adapter_config.json"
    if adapter_config.exists():
        cfg = json.loads(adapter_config.read_text())
        cfg["base_model_name_or_path"] = base_name  # never a path of the training machine
        adapter_config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for extra in tmp.glob("README.md"):
        extra.unlink()
    write_card(tmp, card)
    swap_in(tmp, target)
