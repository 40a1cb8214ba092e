"""Forgetting canaries on the tiny generator and its random adapters: scores equal an independent computation,
runs resume, alerts follow the 5% rule, the shipped files load."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import torch

from mdrag.evaluation import canaries
from mdrag.evaluation.store import ResultsStore

MMLU = [{"id": "mmlu-0", "question": "Who created python?", "options": "A. Guido van Rossum\nB. Paris\nC. 1901\nD. X",
         "answer": "A. Guido van Rossum"},
        {"id": "mmlu-1", "question": "Where is the Eiffel Tower?", "options": "A. Rome\nB. Paris\nC. Berlin\nD. Oslo",
         "answer": "B. Paris"}]
CAUSAL = [{"id": "causal-0", "passage": "The Eiffel Tower is in Paris.", "question": "Is it in Paris?",
           "answer": "Yes"},
          {"id": "causal-1", "passage": "Python was created by Guido.", "question": "Was it made by Rome?",
           "answer": "No"}]
TQA = [{"id": "tqa-0", "question": "Who discovered X-rays?", "answer": ["Wilhelm Röntgen discovered X-rays"]}]


def _write(folder, name, rows):
    with gzip.open(folder / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def tiny_canaries(tmp_path, monkeypatch):
    folder = tmp_path / "canaries"
    folder.mkdir()
    for name, rows in (("mmlu", MMLU), ("causal_judgment", CAUSAL), ("truthfulqa", TQA)):
        _write(folder, name, rows)
    monkeypatch.setattr(canaries, "CANARY_DIR", folder)
    return folder


def _logprob(model, tok, prefix: str, option: str) -> float:
    """Independent reference: plain transformers, float32, the base model."""
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    o = tok(option, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p + o])).logits[0, len(p) - 1: -1]
    return float(torch.log_softmax(logits, -1)[torch.arange(len(o)), torch.tensor(o)].sum())


def test_choice_and_loss_scores_equal_plain_transformers(tiny_canaries, tiny_engine, tiny_generator_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_generator_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_generator_dir, dtype=torch.float32).eval()
    mmlu = canaries.get_canary("mmlu")
    for item in mmlu.load():
        got = canaries.score_item(tiny_engine, mmlu, item, ["vanilla", "full"])
        raw = [_logprob(model, tok, item.prefix, o) for o in item.options]
        norm = [lp / len(o.encode()) for lp, o in zip(raw, item.options, strict=True)]
        assert got["vanilla"]["correct"] == float(raw.index(max(raw)) == item.answer)
        assert got["vanilla"]["correct_norm"] == float(norm.index(max(norm)) == item.answer)
        assert set(got["full"]) == {"correct", "correct_norm"}
    tqa = canaries.get_canary("truthfulqa")
    (item,) = tqa.load()
    got = canaries.score_item(tiny_engine, tqa, item, ["vanilla", "qk_att"])
    n = len(tok(item.options[0], add_special_tokens=False)["input_ids"])
    assert got["vanilla"]["n_tokens"] == n
    assert got["vanilla"]["nll"] == pytest.approx(-_logprob(model, tok, item.prefix, item.options[0]) / n, abs=1e-4)
    assert got["qk_att"]["nll"] != pytest.approx(got["vanilla"]["nll"])  # the adapter changes the model


def test_a_canary_run_is_stored_and_resumes_without_duplicates(tiny_canaries, tiny_engine, tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    first = canaries.run_canaries(tiny_engine, store, ["full"], ["mmlu", "causal_judgment"], show_progress=False)
    assert first == {"rows": 2 * 2 + 2 * 2, "cached": 0}  # vanilla is always added: it is the reference
    again = canaries.run_canaries(tiny_engine, store, ["full", "mlp"], ["mmlu", "causal_judgment"],
                                  show_progress=False)
    assert again == {"rows": 4, "cached": 8}  # only the new variant is scored
    frame = store.canary_frame()
    assert len(frame) == 12 and frame["key"].is_unique
    table = canaries.canary_table(frame)
    assert set(table["variant"]) == {"vanilla", "full", "mlp"}
    assert (table[table.variant == "vanilla"]["delta"] == 0).all()


def test_unknown_canary_names_the_known_ones(tiny_engine, tmp_path):
    from mdrag.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Known: mmlu"):
        canaries.run_canaries(tiny_engine, ResultsStore(tmp_path / "r.sqlite"), ["full"], ["hellaswag"],
                              show_progress=False)


def _frame(canary: str, metric: str, vanilla: list[float], other: list[float]) -> pd.DataFrame:
    rows = []
    for i, (a, b) in enumerate(zip(vanilla, other, strict=True)):
        rows += [{"canary": canary, "item": f"i{i}", "variant": "vanilla", metric: a},
                 {"canary": canary, "item": f"i{i}", "variant": "full", metric: b}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("worse_by, alert", [(0.10, True), (0.02, False), (-0.10, False)])
def test_alerts_follow_the_five_percent_rule_in_each_metrics_direction(worse_by, alert):
    n = 400
    loss = _frame("wiki_loss", "nll", [3.0] * n, [3.0 * (1 + worse_by)] * n)  # NLL: higher is worse
    row = canaries.canary_table(loss).set_index("variant").loc["full"]
    assert row["alert"] == alert and row["relative"] == pytest.approx(worse_by)
    acc_v = [1.0] * 200 + [0.0] * 200  # accuracy 0.5
    k = round(200 * worse_by) if worse_by > 0 else 0
    acc_f = [0.0] * k + [1.0] * (200 - k) + [0.0] * 200  # lower accuracy: worse
    row = canaries.canary_table(_frame("causal_judgment", "correct", acc_v, acc_f))
    row = row[(row.variant == "full") & (row.metric == "accuracy")].iloc[0]
    assert row["alert"] == (worse_by > 0.05)


def test_detectability_grows_with_n():
    import numpy as np

    rng = np.random.default_rng(0)
    few = _frame("causal_judgment", "correct", rng.integers(0, 2, 20).tolist(), rng.integers(0, 2, 20).tolist())
    many_v = rng.normal(3.0, 0.3, 2000)
    many = _frame("wiki_loss", "nll", many_v.tolist(), (many_v + rng.normal(0, 0.05, 2000)).tolist())
    assert not canaries.canary_table(few).set_index(["variant", "metric"]).loc[("full", "accuracy"),
                                                                               "can detect a 5% drop"]
    assert canaries.canary_table(many).set_index("variant").loc["full", "can detect a 5% drop"]
    same = _frame("mmlu", "correct", [0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0])  # no discordance at n=5
    assert not canaries.canary_table(same).set_index("variant").loc["full", "can detect a 5% drop"]


def test_shipped_canaries_load_and_prepare_is_reproducible(tmp_path):
    mmlu = canaries.get_canary("mmlu").load()
    assert len(mmlu) == canaries.MMLU_SAMPLE and all(len(i.options) == 4 and 0 <= i.answer < 4 for i in mmlu)
    causal = canaries.get_canary("causal_judgment").load()
    assert len(causal) == 190 and {i.answer for i in causal} == {0, 1}
    assert len(canaries.get_canary("truthfulqa").load()) == 164
    raw = canaries.RAW_DATA_DIR / "canaries"
    if not raw.exists():
        pytest.skip("../shared/data/raw/canaries is not on this machine")
    canaries.prepare(raw, tmp_path / "a")
    canaries.prepare(raw, tmp_path / "b")
    assert len(canaries.injection_texts()) == 17
    for name in ("mmlu", "causal_judgment", "truthfulqa", "prompt_injection"):
        shipped = (canaries.CANARY_DIR / f"{name}.jsonl.gz").read_bytes()
        a, b = ((tmp_path / d / f"{name}.jsonl.gz").read_bytes() for d in ("a", "b"))
        assert a == b == shipped


def test_canaries_cli_and_report_section(tiny_canaries, tiny_generator_dir, tiny_adapters_root, tmp_path,
                                         monkeypatch, capsys):
    from mdrag.cli import main
    from mdrag.evaluation.report import canary_section

    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    path = tmp_path / "r.sqlite"
    args = ["canaries", "--variants", "full", "--canaries", "causal_judgment", "--store", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "'rows': 4" in out and "Forgetting canaries" in out and "| causal_judgment" in out
    assert main(args) == 0 and "'rows': 0" in capsys.readouterr().out
    assert main(["canaries", "--canaries", "nope", "--store", str(path)]) == 2
    parts, csvs = canary_section(ResultsStore(path))
    assert "## Forgetting canaries" in parts[0] and set(csvs["canaries"]["variant"]) == {"vanilla", "full"}
