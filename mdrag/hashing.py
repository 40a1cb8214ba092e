"""Content hashes that key caches and cards: a derived file is only reused for the exact inputs."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path


@cache
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(folder: Path, pattern: str = "*.safetensors") -> str:
    """Hash of a model folder's weight files (names + contents), 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob(pattern)):
        h.update(path.name.encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()[:16]
