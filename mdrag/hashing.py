"""Content hashes that key caches and cards: a derived file is only reused for the exact inputs."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per version of the file: keyed by its size and modification time, so a
    file rewritten in place (an adapter retrained under the same name) is hashed again, never served stale."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
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
