"""Is the judge any good? Three measurements, shown wherever an LLMEval figure is shown.

1. Against Match (the store's own answers), per domain: Cohen's kappa of (score > 0.5) with Match and the
   AUC of the score for Match-right vs Match-wrong answers, with bootstrap CIs; length bias (Spearman of the
   score with answer length, separately among Match-right and Match-wrong answers: a judge that prefers long
   answers whatever their correctness shows a positive correlation in both); sensitivity to the setting (mean
   score vs mean Match per setting: a judge blind to the passages' quality scores every setting alike). Only
   short, yes/no answers count: Match is not meaningful for long-form or unanswerable gold.
2. A sanity set built from the benchmark, deterministic (seeded sample): the gold answer itself (expect
   Yes), another question's gold answer, an empty answer, "I don't know", and the gold answer with a number
   or an entity swapped (all expect No). Pass rate per check.
3. Against people: RAGChecker's meta-evaluation pairs (../shared/data/raw/judge_meta, 280 questions, two long
   answers each, compared for correctness by two annotators on a -2..2 scale, positive = the second answer is
   better). Per annotator row with a preference, does the judge score the preferred answer higher? A tie in
   the judge's scores (|difference| < TIE) counts as half right: it neither agrees nor disagrees. Also the
   Pearson correlation of the label with score(answer 2) - score(answer 1), RAGChecker's own statistic,
   beside its published figure (49.7 for correctness) and the annotators' agreement with each other.

Probes (2 and 3) are stored as `judge_items` in the results store and judged like any answer (resumable).
"""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mdrag.evaluation.stats import bootstrap_ci, cohen_kappa

KAPPA_FLOOR = 0.4  # below this agreement with Match, a domain's LLMEval bars are greyed
TIE = 0.01
SANITY_CHECKS = {  # kind -> expected verdict
    "gold": 1.0, "other question's gold": 0.0, "empty": 0.0, "I don't know": 0.0, "swapped number/entity": 0.0,
}
# RAGChecker (SOURCES.md): Pearson of its correctness metric with people, and of the two annotators.
RAGCHECKER_PUBLISHED = {"ragchecker_correctness_pearson": 0.497, "annotators_correctness_pearson": 0.637}
MATCH_TYPES = ("short", "yes-no")


# ------------------------------------------------------------------------------------------- probes


def _names(text: str) -> list[tuple[int, int]]:
    """Spans of capitalised words that are likely names: not the first word of a sentence (a short answer
    of a few words may be one name)."""
    spans = [m.span() for m in re.finditer(r"\b[A-Z][a-zA-Z]{2,}\b", text)
             if m.start() > 0 and not re.search(r"[.!?:]\s*$", text[: m.start()])]
    first = re.match(r"[A-Z][a-zA-Z]{2,}\b", text)
    return spans or ([first.span()] if first and len(text.split()) <= 4 else [])


def _swap(gold: str, donors: list[str], rng: random.Random) -> str | None:
    """The gold answer made wrong: a number changed, yes <-> no, or a name replaced by one from another
    question's gold. None when none applies."""
    low = gold.strip().lower()
    if low in ("yes", "no", "maybe"):
        return {"yes": "no", "no": "yes", "maybe": "yes"}[low]
    number = re.search(r"\d+(?:[.,]\d+)*", gold)
    if number:
        text = number.group()
        digits = text.replace(",", "")
        value = float(digits)
        new = value + max(1.0, round(abs(value) * 0.5))
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        shown = f"{new:,.{decimals}f}" if "," in text else f"{new:.{decimals}f}"
        return gold[: number.start()] + shown + gold[number.end():]
    spans = _names(gold)
    if not spans:
        return None
    for donor in rng.sample(donors, len(donors)):
        options = [donor[a:b] for a, b in _names(donor) if donor[a:b].lower() not in low]
        if options:
            a, b = spans[rng.randrange(len(spans))]
            return gold[:a] + options[rng.randrange(len(options))] + gold[b:]
    return None


def sanity_items(per_domain: int = 20, seed: int = 0, domains: list[str] | None = None) -> list[dict]:
    """The sanity set: per domain, a seeded sample of answerable test questions and SANITY_CHECKS each."""
    from mdrag.data.benchmark import load_domain
    from mdrag.data.domains import DOMAINS

    items = []
    for name in domains or [d for d in DOMAINS if not DOMAINS[d].extra.get("passages")]:
        queries = [q for q in load_domain(name).split("test") if q.answers and q.answer_type != "unanswerable"]
        rng = random.Random(f"{seed}-{name}")
        sample = rng.sample(queries, min(per_domain, len(queries)))
        for i, q in enumerate(sample):
            gold = q.answers[0]
            other = next((o.answers[0] for o in sample[i + 1:] + sample[:i]
                          if not {a.lower() for a in o.answers} & {a.lower() for a in q.answers}), None)
            swapped = _swap(gold, [o.answers[0] for o in sample if o is not q], rng)
            answers = {"gold": gold, "other question's gold": other, "empty": "", "I don't know": "I don't know.",
                       "swapped number/entity": swapped}
            for kind, answer in answers.items():
                if answer is None or (kind == "swapped number/entity" and answer.lower() == gold.lower()):
                    continue
                items.append({"suite": "sanity", "item": f"{name}/{q.id}", "kind": kind,
                              "expect": SANITY_CHECKS[kind], "domain": name, "question": q.text, "gold": q.answers,
                              "answer": answer, "extra": {"answer_type": q.answer_type}})
    return items


def _response(field) -> tuple[str, str]:
    value = field if isinstance(field, dict) else ast.literal_eval(field)
    return str(value.get("model_name", "")), str(value["response"])


def human_items(path: Path, pairs: int | None = None, seed: int = 0) -> list[dict]:
    """Both answers of each human-labelled pair (a seeded sample of `pairs`, all 280 by default)."""
    rows = json.loads(Path(path).read_text())
    by_pair: dict[int, list[dict]] = {}
    for i, r in enumerate(rows):
        by_pair.setdefault(i // 2, []).append(r)  # rows 2k and 2k+1: the same pair, two annotators
    chosen = sorted(by_pair)
    if pairs is not None and pairs < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, pairs))
    items = []
    for k in chosen:
        first = by_pair[k][0]
        labels = [int(r["correctness_label"]) for r in by_pair[k]]
        for side in ("model1", "model2"):
            model, answer = _response(first[side])
            items.append({"suite": "human", "item": f"pair{k}", "kind": side, "expect": None,
                          "domain": first.get("dataset"), "question": first["query"], "gold": [first["gt_answer"]],
                          "answer": answer, "extra": {"model": model, "correctness_labels": labels}})
    return items


# ------------------------------------------------------------------------------------------- measures


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties half (the Mann-Whitney AUC)."""
    levels = np.unique(scores, return_inverse=True)[1]
    return _auc_of_levels(levels, labels)


def _auc_of_levels(levels: np.ndarray, labels: np.ndarray) -> float:
    """The AUC from each score's rank among the distinct scores (`levels`): counting positives and negatives per
    level, no sort, so a bootstrap ranks the scores once instead of once per resample."""
    size = int(levels.max()) + 1 if len(levels) else 0
    pos = np.bincount(levels[labels == 1], minlength=size).astype(float)  # (levels,)
    neg = np.bincount(levels[labels == 0], minlength=size).astype(float)
    if not pos.sum() or not neg.sum():
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives scored strictly lower than each level
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def _boot(fn, n: int, n_boot: int = 500, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = [fn(rng.integers(0, n, n)) for _ in range(n_boot)]
    values = [v for v in values if not np.isnan(v)]
    return (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))) if values else (np.nan, np.nan)


def match_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Judged rows where Match is meaningful, one per distinct answer per domain."""
    if "m_match" not in df or "judge_score" not in df:
        return df.iloc[0:0]
    sub = df[df["answer_type"].isin(MATCH_TYPES)].dropna(subset=["judge_score", "m_match"])
    return sub.drop_duplicates(["domain", "answer_id"]) if "answer_id" in sub else sub


def against_match(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain and over all: n, accuracy, kappa [CI], AUC [CI], length bias among right / wrong answers."""
    from scipy.stats import spearmanr

    sub = match_rows(df)
    rows = []
    for domain, g in [*sub.groupby("domain", sort=True), ("all", sub)]:
        if g.empty:
            continue
        score, match = g["judge_score"].to_numpy(float), g["m_match"].to_numpy(int)
        verdict = (score > 0.5).astype(int)
        words = g["answer"].fillna("").str.split().str.len().to_numpy(float)
        lo_k, hi_k = _boot(lambda i, v=verdict, m=match: cohen_kappa(v[i], m[i]), len(g))
        levels = np.unique(score, return_inverse=True)[1]
        lo_a, hi_a = _boot(lambda i, s=levels, m=match: _auc_of_levels(s[i], m[i]), len(g))
        bias = {}
        for name, right in (("right", 1), ("wrong", 0)):
            pick = match == right
            varied = pick.sum() > 2 and np.ptp(words[pick]) > 0 and np.ptp(score[pick]) > 0
            bias[f"length rho ({name})"] = float(spearmanr(score[pick], words[pick]).statistic) if varied \
                else float("nan")
        # With one Match class (all right or all wrong) agreement beyond chance cannot be measured.
        kappa = cohen_kappa(verdict, match) if 0 < match.sum() < len(match) else float("nan")
        rows.append({"domain": domain, "n": len(g), "Match-right": int(match.sum()),
                     "accuracy": float((verdict == match).mean()), "kappa": kappa,
                     "kappa low": lo_k, "kappa high": hi_k, "AUC": auc(score, match), "AUC low": lo_a,
                     "AUC high": hi_a, **bias})
    return pd.DataFrame(rows)


def setting_sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean judge score and mean Match [95% CI] on the same rows (all answer types Match can
    read). The judge should move with Match: lower with retrieved and noisy passages than with oracle ones."""
    sub = df[df["answer_type"].isin(MATCH_TYPES)].dropna(subset=["judge_score", "m_match"])
    rows = []
    for setting, g in sub.groupby("setting", sort=True):
        j, m = bootstrap_ci(g["judge_score"].tolist()), bootstrap_ci(g["m_match"].astype(float).tolist())
        rows.append({"setting": setting, "n": len(g), "LLMEval": j[0], "LLMEval low": j[1], "LLMEval high": j[2],
                     "Match": m[0], "Match low": m[1], "Match high": m[2]})
    return pd.DataFrame(rows)


def _item_scores(items: pd.DataFrame, verdicts: pd.DataFrame, judge: str) -> pd.DataFrame:
    mine = verdicts[(verdicts["judge"] == judge) & (verdicts["levels"] == 2) & verdicts["score"].notna()]
    score = mine.sort_values("created").drop_duplicates("answer_id", keep="last").set_index("answer_id")["score"]
    out = items.copy()
    out["score"] = out["answer_id"].map(score)
    return out.dropna(subset=["score"])


def sanity_table(items: pd.DataFrame, verdicts: pd.DataFrame, judge: str) -> pd.DataFrame:
    """Per check: n, pass rate [95% CI], mean score."""
    sub = _item_scores(items[items["suite"] == "sanity"], verdicts, judge)
    rows = []
    for kind in SANITY_CHECKS:
        g = sub[sub["kind"] == kind]
        if g.empty:
            continue
        passed = ((g["score"] > 0.5) == (g["expect"] > 0.5)).astype(float)
        mean, lo, hi = bootstrap_ci(passed.tolist())
        rows.append({"check": kind, "expect": "Yes" if SANITY_CHECKS[kind] else "No", "n": len(g),
                     "pass rate": mean, "low": lo, "high": hi, "mean score": float(g["score"].mean())})
    return pd.DataFrame(rows)


def human_agreement(items: pd.DataFrame, verdicts: pd.DataFrame, judge: str) -> dict:
    """Pairwise accuracy [95% CI] against each annotator's correctness preference, Pearson of the labels
    with the judge's score difference, and the annotators' own agreement on the same pairs."""
    sub = _item_scores(items[items["suite"] == "human"], verdicts, judge)
    wide = sub.pivot_table(index="item", columns="kind", values="score", aggfunc="first").dropna()
    if wide.empty or not {"model1", "model2"} <= set(wide.columns):
        return {"pairs": 0}
    labels = sub.drop_duplicates("item").set_index("item")["extra"].map(lambda e: e["correctness_labels"])
    diffs, marks, rows_l = [], [], []
    first, second = [], []
    for item, d in (wide["model2"] - wide["model1"]).items():
        lab = labels[item]
        if len(lab) == 2:
            first.append(lab[0])
            second.append(lab[1])
        for label in lab:
            diffs.append(d)
            rows_l.append(label)
            if label != 0:
                marks.append(0.5 if abs(d) < TIE else float(np.sign(d) == np.sign(label)))
    mean, lo, hi = bootstrap_ci(marks)
    pearson = float(np.corrcoef(rows_l, diffs)[0, 1]) if np.std(diffs) > 0 else float("nan")
    annotators = float(np.corrcoef(first, second)[0, 1]) if len(first) > 2 else float("nan")
    return {"pairs": len(wide), "rows with a preference": len(marks), "accuracy": mean, "low": lo, "high": hi,
            "ties": int(sum(m == 0.5 for m in marks)), "pearson": pearson, "annotators pearson (these pairs)":
            annotators, **RAGCHECKER_PUBLISHED}


def register_probes(store, sanity_per_domain: int = 20, human_path: Path | None = None,
                    human_pairs: int | None = None) -> dict[str, int]:
    """Put the sanity set and the human pairs into the store's judge_items (idempotent)."""
    items = sanity_items(sanity_per_domain) if sanity_per_domain else []
    if human_path is not None and Path(human_path).is_file():
        items += human_items(human_path, human_pairs)
    store.put_items(items)
    return {"sanity": sum(i["suite"] == "sanity" for i in items), "human": sum(i["suite"] == "human" for i in items)}


def validity(store, df: pd.DataFrame, agreement: pd.DataFrame | None = None) -> dict:
    """Everything above for the judge whose verdicts `df` carries (df from store.frame(judge)); `agreement`:
    against_match(df) when the caller has it already (its bootstrap is the slow part)."""
    judge = next(iter(df["judge_id"].dropna()), None) if "judge_id" in df else None
    out = {"judge": next(iter(df["judge"].dropna()), None) if "judge" in df else None, "judge_id": judge,
           "against_match": against_match(df) if agreement is None else agreement,
           "settings": setting_sensitivity(df)}
    if judge is not None:
        items, verdicts = store.items_frame(), store.verdict_frame(2)
        out["sanity"] = sanity_table(items, verdicts, judge) if len(items) else pd.DataFrame()
        out["human"] = human_agreement(items, verdicts, judge) if len(items) else {"pairs": 0}
    return out


def weak_domains(agreement: pd.DataFrame) -> dict[str, str]:
    """Domains whose kappa against Match is under KAPPA_FLOOR -> the reason shown on the chart."""
    if agreement is None or agreement.empty:
        return {}
    return {r["domain"]: (f"judge kappa vs Match {r['kappa']:.2f} < {KAPPA_FLOOR}" if r["kappa"] == r["kappa"] else
                          "judge agreement with Match not measurable here (one Match class)")
            for _, r in agreement.iterrows() if r["domain"] != "all" and not r["kappa"] >= KAPPA_FLOOR}
