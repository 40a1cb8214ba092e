"""Derived files written once, safely: build into a temporary folder beside the target, then rename.

Two processes starting together on an empty cache (two `python -m mdrag ask`, the app and a test run)
must neither crash nor read a half-written model. So a build takes an exclusive file lock next to the
target, checks again whether another process finished it meanwhile, builds into a temporary folder in the
same directory, and renames it into place (a rename within one file system is atomic). A build killed
half-way leaves only its temporary folder, which the next build removes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, is_complete: Callable[[Path], bool], build: Callable[[Path], None],
               what: str = "") -> Path:
    """`target` after `build(tmp_dir)` has filled a temporary folder that then became `target`.

    `is_complete(target)` says whether an earlier build (this process or another) already finished. Messages
    go to stderr: a command whose stdout is JSON must not start with a progress line."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):  # another process built it while we waited for the lock
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            if what:
                print(what, file=sys.stderr, flush=True)
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any other
            if target.exists():  # an incomplete folder from an older, non-atomic version
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
