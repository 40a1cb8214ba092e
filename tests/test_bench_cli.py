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
