"""The benchmark script's command line (the benchmarks themselves are run by hand: they print ratios
against baselines measured in the same run, they are not timed unit tests)."""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench import suite as bench

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--only", "warp-drive"])


def test_rows_carry_the_ratio_to_their_baseline():
    bench.ROWS.clear()
    bench._row("x", "ours vs base", 3.0, 1.5, "s", "< 2x")
    assert bench.ROWS[-1]["ratio"] == 2.0 and bench.ROWS[-1]["target"] == "< 2x"
    bench._row("x", "no baseline", 3.0, None, "s")
    assert bench.ROWS[-1]["ratio"] is None


def test_growth_figure_pairs_each_series_with_its_baseline():
    rows = []
    for n, ours, base in ((1, 2.0, 2.0), (3, 3.0, 6.0), (6, 4.0, 12.0)):
        bench.ROWS.clear()
        bench._row("v", f"{n}", ours, base, "s", grow=("time vs variants", n, "batched", "sequential"))
        rows += bench.ROWS
    bench._row("r", "no growth", 1.0, 1.0, "s")
    fig = bench.growth_figure([*rows, *bench.ROWS])
    traces = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert traces == {"batched": ([1, 3, 6], [2.0, 3.0, 4.0]), "sequential": ([1, 3, 6], [2.0, 6.0, 12.0])}


@pytest.mark.slow
@pytest.mark.timeout(2700)  # all fifteen sections at toy sizes: ~15-25 min on a 2-core AVX2-only CPU (float32 judge)
def test_every_section_runs_on_the_real_models_and_writes_its_rows(tmp_path):
    """The whole bench at quick sizes, as a user runs it (a section once crashed on its own one-variant row
    and went unnoticed for a session because nothing ran it): every section leaves rows, every row measured
    against a baseline carries its ratio, the JSON and the growth figure are written."""
    out, fig = tmp_path / "bench.json", tmp_path / "growth.png"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out), "--figure", str(fig)],
                          capture_output=True, text=True, timeout=2400, cwd=ROOT,
                          env={**os.environ, "MDRAG_CHROMIUM": os.environ.get("MDRAG_CHROMIUM", "/usr/bin/chromium")})
    assert done.returncode == 0, done.stderr[-3000:]
    # where this test's minutes go, in CI's warnings summary (the suite must stay near 30 minutes)
    warnings.warn(next(x for x in done.stdout.splitlines() if x.startswith("section wall time:")), stacklevel=1)
    written = json.loads(out.read_text())
    assert written["machine"]["cores"] == os.cpu_count() and written["machine"]["versions"]["torch"]
    assert "machine: " in done.stdout.splitlines()[0]  # the table's machine is named before any figure
    rows = written["rows"]
    assert {r["section"] for r in rows} == set(bench.SECTIONS)
    for r in rows:
        assert math.isfinite(r["ours"]), r
        if r["baseline"]:
            assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"], rel=1e-2), r
    assert fig.stat().st_size > 10_000
    ask = [r for r in rows if r["section"] == "ask"]
    for n in bench.QUICK.ask_counts:
        for what in ("first token", "first answer", "all answers"):
            assert any(f", {n} variants: {what} vs one variant" in r["what"] for r in ask), (n, what)
    assert all(r["ratio"] == 1.0 for r in ask if ", 1 variants:" in r["what"])
    # six variants: far enough from one that a busy machine cannot flip the order (at three, CI once saw 0.99x)
    most = max(bench.QUICK.ask_counts)
    most_all = next(r for r in ask if f", {most} variants: all answers" in r["what"])
    assert most_all["ratio"] > 1.0  # more answers cost more than one: the baseline is really the one-variant run
    assert any(r["section"] == "grounding" and "claims checked per minute" in r["what"] and r["ours"] > 0
               for r in rows)
    assert any(r["section"] == "sources" and "ContextCite, 4 masks on the shared prefix" in r["what"]
               and r["ratio"] > 0 for r in rows)
    precision = next(r for r in rows if r["section"] == "train" and "in the precision train picks" in r["what"])
    if "(fp32) vs bf16" in precision["what"]:  # bf16 emulated here (~10x slower): float32 must be the faster path
        assert precision["ratio"] > 1.0
    six = next(r for r in rows if r["what"] == "6 variants batched vs sequential")
    assert six["ratio"] < 1.0  # one stacked batch beats six generate calls: the point of batching
    sessions = [r for r in rows if r["section"] == "sessions"]
    for q in ("p50", "p95"):
        for what in ("first token", "all answers"):
            row = next(r for r in sessions if f"{q} seconds to {what}" in r["what"])
            assert row["ours"] > 0 and row["baseline"] > 0, row  # the load beside the same questions alone
    assert any("peak resident memory" in r["what"] and r["ours"] > 500 for r in sessions)
