"""The benchmark script's command line (the benchmarks themselves are run by hand: they print ratios
against baselines measured in the same run, they are not timed unit tests)."""

import pytest

from mdrag import bench


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
def test_ask_section_runs_on_the_real_models_and_rows_every_variant_count():
    """The Ask section once crashed on its own one-variant row (a target looked up by count): run it for real
    (quick sizes) and check every (count, measure) row is there, each next to the one-variant baseline."""
    bench.ROWS.clear()
    bench.bench_ask(quick=True)
    rows = [r for r in bench.ROWS if r["section"] == "ask"]
    for n in (1, 2, 3, 6):
        for what in ("first token", "first answer", "all answers"):
            assert any(f", {n} variants: {what} vs one variant" in r["what"] for r in rows), (n, what)
    one = [r for r in rows if ", 1 variants:" in r["what"]]
    assert all(r["ratio"] == 1.0 for r in one)
    six_all = next(r for r in rows if ", 6 variants: all answers" in r["what"])
    assert six_all["ratio"] > 1.0  # six answers cost more than one: the baseline is really the one-variant run
