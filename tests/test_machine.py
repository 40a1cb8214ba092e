"""What results record about the machine they were made on (mdrag.machine)."""

import os

import pytest

from mdrag import machine


@pytest.mark.parametrize("flags, kept, native", [
    ("fpu sse avx avx2 fma", ["avx2"], False),
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", ["avx2", "avx512f", "avx512_bf16"], True),
])
def test_cpu_reads_the_first_processor_and_keeps_the_flags_that_pick_our_paths(tmp_path, flags, kept, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n"
                       f"flags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: another\nflags\t\t: sse\n")
    info = machine.cpu(cpuinfo)
    assert info["model"] == "AMD EPYC 7B13" and info["family/model"] == "25/1"
    assert info["flags"] == kept and info["native_bf16"] is native and info["cores"] == os.cpu_count()
    line = machine.describe(info)
    assert "AMD EPYC 7B13" in line and f"native bf16: {native}" in line and info["generation_dtype"] in line


def test_cpu_without_cpuinfo_says_so_instead_of_failing(tmp_path):
    info = machine.cpu(tmp_path / "missing")
    assert info["flags"] == [] and info["native_bf16"] is False and info["family/model"] == "?/?"
    assert "none of note" in machine.describe(info)


@pytest.mark.parametrize("load, cores, busy", [(0.2, 2, False), (0.9, 2, False), (1.0, 2, True), (2.3, 2, True),
                                              (3.0, 16, False), (None, 2, False)])
def test_a_busy_machine_is_named_before_a_measurement(load, cores, busy):
    note = machine.busy_note({"load_1min": load, "cores": cores})
    assert (note is not None) is busy
    if busy:
        assert f"load {load:.1f} on {cores} cores" in note and "ratios may flip" in note


def test_cpu_reads_the_load_it_starts_under():
    info = machine.cpu()
    assert info["load_1min"] == pytest.approx(os.getloadavg()[0], abs=1.0)


def test_versions_name_the_libraries_that_change_numbers():
    import peft
    import torch
    import transformers

    got = machine.versions()
    assert (got["torch"], got["transformers"], got["peft"]) == (torch.__version__, transformers.__version__,
                                                                peft.__version__)


@pytest.mark.parametrize("script, env, want", [
    ("import mdrag, numpy", {}, 1),  # before numpy loads: the environment variable
    ("import numpy, scipy.linalg; import mdrag", {}, 1),  # numpy and scipy loaded first: threadpoolctl
    ("import mdrag, numpy", {"OPENBLAS_NUM_THREADS": "2"}, 2),  # the user's choice wins
])
def test_numpy_blas_runs_one_thread_beside_torch(script, env, want):
    """Importing mdrag leaves numpy's OpenBLAS one thread (its spinning idle threads slowed torch's next
    forward ~3x on 2 cores), in a fresh interpreter whichever was imported first; torch keeps its threads."""
    import json
    import subprocess
    import sys

    probe = (f"{script}; import threadpoolctl, torch; print(__import__('json').dumps([torch.get_num_threads()] + "
             "[i['num_threads'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']))")
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", probe], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    torch_threads, *blas = json.loads(out.stdout.strip().splitlines()[-1])
    assert blas and all(n == want for n in blas)
    import torch

    assert torch_threads == torch.get_num_threads()  # torch's own pool untouched
