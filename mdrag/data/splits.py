"""Seeded, order-independent split assignment.

Each id is ranked by sha256(seed:id); the first `n_test` go to test, the next `n_dev` to dev, the rest
to train. The result depends only on the set of ids and the seed (not on file order or Python's hash
seed), so rebuilding gives the same splits byte for byte.
"""

from __future__ import annotations

import hashlib

SEED = 2504_02411  # the paper's arXiv id: one documented seed for every split


def _rank(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def assign_splits(ids: list[str], n_test: int, n_dev: int, seed: int = SEED) -> dict[str, str]:
    ordered = sorted(ids, key=lambda i: _rank(seed, i))
    out = {}
    for pos, item in enumerate(ordered):
        out[item] = "test" if pos < n_test else "dev" if pos < n_test + n_dev else "train"
    return out
