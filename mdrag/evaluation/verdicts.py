"""Judging a store's answers, and reading one judge's verdicts back beside them.

`judge_store` judges every stored answer that has no verdict from a judge yet: distinct answers only (the same
answer to the same question is judged once however many rows hold it), shortest first, in chunks that each
land in one transaction, so a killed run resumes where it stopped and a second run finds nothing to do. It
never touches the generator.

`attach_verdicts` puts one judge's verdicts on the answer rows as the columns every table and chart reads
(`judge_score`, `judge3_score`, `judge`, ...). With no judge named it picks the best one present: the one
that agrees best with Match (Cohen's kappa on short-answer rows, where Match is meaningful), the registry's
order breaking ties and deciding where nothing can be measured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from mdrag.evaluation.judge import JUDGES, PROMPT_VERSION, Verdict, gold_text, verdict_rows
from mdrag.evaluation.stats import cohen_kappa

CHUNK = 32  # answers per transaction: a kill loses at most this many verdicts' work


def judge_store(store, judge, levels: tuple[int, ...] = (2,), limit: int | None = None, batch_size: int = 8,
                show_progress: bool = True, source: str = "results",
                only: Mapping[str, Sequence[str]] | None = None) -> dict[str, int]:
    """Judge every answer in `store` with no verdict from `judge` at each of `levels`; returns counts.
    `source`: results (generated answers) or judge_items (the judge's own validity probes); `only`: just the
    answers of these rows (store.unjudged)."""
    from tqdm import tqdm

    counts = {"judged": 0, "failed": 0, "low_mass": 0, "already": 0}
    total_answers = store.distinct_answers(source, only)
    for lv in levels:
        todo = store.unjudged(judge.fingerprint, PROMPT_VERSION, lv, source, only)
        counts["already"] += total_answers - len(todo)
        todo = todo[:limit] if limit is not None else todo
        bar = tqdm(total=len(todo), desc=f"judge ({lv} levels)", unit="answer", disable=not show_progress,
                   file=sys.stderr)
        for at in range(0, len(todo), CHUNK):
            chunk = todo[at: at + CHUNK]
            start = time.perf_counter()
            try:
                found = judge.judge_many([(a["question"], gold_text(a["gold"]), a["answer"]) for a in chunk],
                                         levels=lv, batch_size=batch_size)
            except Exception as err:  # a judge failure is stored, never loses the answers: retried next run
                found = [Verdict(None, error=f"judge {type(err).__name__}: {err}") for _ in chunk]
            rows = verdict_rows(judge, chunk, found, lv, (time.perf_counter() - start) / len(chunk))
            store.put_verdicts(rows)
            counts["judged"] += sum(r["error"] is None for r in rows)
            counts["failed"] += sum(r["error"] is not None for r in rows)
            counts["low_mass"] += sum(r["mass"] is not None and r["mass"] < 0.5 for r in rows)
            bar.update(len(chunk))
        bar.close()
    return counts


def other_dtype_note(store, judge, levels: int = 2) -> str | None:
    """A heads-up before judging when the store holds this judge model's verdicts in another dtype only: the
    dtype is part of a judge's id (bf16 and float32 verdicts differ in the third digit), so judging here adds a
    second instrument and judges every answer again instead of the answers the other dtype has not seen. The
    judge's dtype follows the CPU (config.generation_dtype), so on an AVX2-only CPU the shipped bf16 verdicts
    are not extended unless MDRAG_DTYPE says so."""
    model, _, dtype = judge.fingerprint.rpartition("@")
    if not model:
        return None
    ids = {j["judge"] for j in store.judges()}
    others = sorted(i.rpartition("@")[2] for i in ids if i.rpartition("@")[0] == model and i != judge.fingerprint)
    if not others:
        return None
    todo = len(store.unjudged(judge.fingerprint, PROMPT_VERSION, levels))
    return (f"Note: this store's verdicts from {judge.name} are in {', '.join(others)}; this judge runs in {dtype}, "
            f"another instrument, so it judges {todo} answers again instead of adding to theirs (set "
            f"MDRAG_DTYPE={others[0]} to add to them).")


def judge_kappas(answers: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per judge (2-level verdicts): n and Cohen's kappa of (score > 0.5) against Match on short answers."""
    rows = []
    if "m_match" not in answers:
        answers = answers.assign(m_match=float("nan"))
    short = answers[answers["answer_type"] != "long"][["answer_id", "m_match"]].dropna()
    two = verdicts[(verdicts["levels"] == 2) & verdicts["score"].notna()]
    for judge, g in two.groupby("judge"):
        joined = short.merge(g[["answer_id", "score"]].drop_duplicates("answer_id"), on="answer_id")
        kappa = cohen_kappa((joined["score"] > 0.5).astype(int), joined["m_match"].astype(int)) if len(joined) \
            else float("nan")
        rows.append({"judge": judge, "name": g["judge_name"].iloc[0], "n": len(joined), "kappa": kappa})
    return pd.DataFrame(rows, columns=["judge", "name", "n", "kappa"])


def _registry_rank(judge_id: str, name: str) -> int:
    for key, spec in JUDGES.items():
        if judge_id.startswith(key) or spec.label in str(name):
            return spec.rank
    return 9 if "135m" in f"{judge_id} {name}".lower() else 5


def best_judge(answers: pd.DataFrame, verdicts: pd.DataFrame, min_n: int = 30) -> str | None:
    """The judge id to show when none is chosen: highest kappa against Match where measured on >= min_n
    answers, else the registry's preference."""
    table = judge_kappas(answers, verdicts)
    if table.empty:
        return None
    table["measured"] = (table["n"] >= min_n) & table["kappa"].notna()
    table["rank"] = [_registry_rank(j, n) for j, n in zip(table["judge"], table["name"], strict=True)]
    table["key"] = table["kappa"].where(table["measured"], -2.0)
    return str(table.sort_values(["key", "rank"], ascending=[False, True]).iloc[0]["judge"])


def resolve_judge_id(verdicts: pd.DataFrame, judge: str) -> str | None:
    """A judge id from an id, a registry name or a display name (prefix match), or None."""
    ids = verdicts[["judge", "judge_name"]].drop_duplicates()
    for col in ("judge", "judge_name"):
        exact = ids[ids[col] == judge]
        if len(exact):
            return str(exact.iloc[0]["judge"])
    starts = ids[ids["judge"].str.startswith(judge) | ids["judge_name"].str.startswith(JUDGES[judge].label
                                                                                      if judge in JUDGES else judge)]
    return str(starts.iloc[0]["judge"]) if len(starts) else None


def attach_verdicts(answers: pd.DataFrame, verdicts: pd.DataFrame, judge: str | None = None) -> pd.DataFrame:
    """`answers` with the chosen judge's verdicts (2 and 3 levels, latest prompt version first)."""
    out = answers.copy()
    chosen = best_judge(answers, verdicts) if judge is None else resolve_judge_id(verdicts, judge)
    for col in ("judge", "judge_id", "judge_score", "judge3_score", "judge_mass", "judge_low_mass", "judge_error"):
        out[col] = None
    if chosen is None or out.empty:
        for col in ("judge_score", "judge3_score", "judge_mass"):
            out[col] = out[col].astype(float)
        return out
    mine = verdicts[verdicts["judge"] == chosen].copy()
    mine["current"] = (mine["prompt_version"] == PROMPT_VERSION).astype(int)
    mine["ok"] = mine["error"].isna().astype(int)
    mine = mine.sort_values(["ok", "current", "created"], ascending=False)
    for lv, col in ((2, "judge_score"), (3, "judge3_score")):
        best = mine[mine["levels"] == lv].drop_duplicates("answer_id").set_index("answer_id")
        out[col] = out["answer_id"].map(best["score"]).astype(float)
        if lv == 2:
            out["judge_mass"] = out["answer_id"].map(best["mass"]).astype(float)
            out["judge_low_mass"] = out["judge_mass"] < 0.5
            out["judge_error"] = out["answer_id"].map(best["error"])
    judged = out["judge_score"].notna() | out["judge3_score"].notna()
    out.loc[judged, "judge"] = str(mine["judge_name"].iloc[0]) if len(mine) else chosen
    out.loc[judged, "judge_id"] = chosen
    return out


def judge_trace(trace, judge, levels: int = 2) -> None:
    """The judge's verdict on each answer of a trace with a gold answer, stored on the answer (VariantAnswer
    .verdict). A judge failure is recorded there too, never raised: the answers are already shown."""
    if not trace.gold_answers or not trace.answers:
        return
    names = list(trace.answers)
    try:
        found = judge.judge_many([(trace.query, gold_text(trace.gold_answers), trace.answers[n].text)
                                  for n in names], levels=levels)
    except Exception as err:  # the answers stay; the card says why there is no verdict
        found = [Verdict(None, error=f"judge {type(err).__name__}: {err}") for _ in names]
    for name, verdict in zip(names, found, strict=True):
        trace.answers[name].verdict = {"judge": judge.name, "weak": bool(getattr(judge, "weak", False)),
                                       "score": verdict.score, "mass": verdict.mass, "error": verdict.error}
