"""Dashboard data from a results store: filtered frames, per-group means with bootstrap CIs, plotly figures,
and the failure cases worth a look. The app shows these; it computes nothing itself."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from mdrag.config import ASSETS_DIR
from mdrag.evaluation.report import judge_agreement, main_retriever, retriever_vs_adapter
from mdrag.evaluation.stats import bootstrap_ci
from mdrag.evaluation.store import ResultsStore, StoreError, case_label, is_case_setting
from mdrag.pipeline import SETTINGS

SHIPPED_STORE = ASSETS_DIR / "results" / "results.sqlite"
METRICS = {"LLMEval": "judge_score", "LLMEval-3": "judge3_score", "Match": "m_match", "Recall": "m_recall",
           "F1": "m_f1", "ROUGE-L": "m_rouge_l", "Answer length (words)": "m_length"}


def open_store(path: str | Path | ResultsStore | None = None) -> ResultsStore:
    """A store opened read-only (the shipped one by default); an open store is returned as it is, so a caller
    that reads several panels opens the file once."""
    if isinstance(path, ResultsStore):
        return path
    path = Path(path) if path else SHIPPED_STORE
    if not path.is_file():
        raise StoreError(f"No results store at {path}. Run python -m mdrag evaluate --store {path} first.")
    return ResultsStore(path, read_only=True)


def load_results(path: str | Path | ResultsStore | None = None, judge: str | None = None,
                 answers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The store's rows as a frame (shipped store by default) with one judge's verdicts (default, or a judge
    this store has no verdicts from: the best present, by agreement with Match), probe rows included as answers
    of their case settings (probe:<probe>=<condition>; `filtered` leaves them out unless chosen). A missing file
    is a clear error. `answers`: the store's answers_frame(), when read already."""
    store = open_store(path)
    if judge and judge not in {j["judge"] for j in store.judges()}:
        judge = None
    return store.frame(judge or None, cases=True, answers=answers)


def setting_choices(source: pd.DataFrame | ResultsStore) -> list[tuple[str, str]]:
    """(label, setting) of the settings in a frame or a store: the paper's first, then each probe case
    ("attack: injection")."""
    if isinstance(source, ResultsStore):
        present = set(source.settings())
    else:
        present = set(source["setting"].dropna()) if "setting" in source else set()
    paper = [(s, s) for s in SETTINGS if s in present]
    return paper + [(case_label(s), s) for s in sorted(s for s in present if is_case_setting(s))]


def judge_choices(path: str | Path | ResultsStore | None = None) -> list[tuple[str, str]]:
    """(label, judge id) of the judges with 2-level verdicts in a store; the best one first."""
    from mdrag.evaluation.verdicts import best_judge

    store = open_store(path)
    found = {j["judge"]: j for j in store.judges() if j["levels"] == 2}
    best = best_judge(store.answers_frame(), store.verdict_frame(2)) if found else None
    order = sorted(found, key=lambda j: (j != best, j))
    return [(f"{found[j]['name']} ({found[j]['n']} verdicts)" + (" — best agreement with Match" if j == best else ""),
             j) for j in order]


def validity_tables(path: str | Path | ResultsStore | None, df: pd.DataFrame) -> dict:
    """The judge-validity panel (evaluation/judge_validity.py) for the judge whose verdicts `df` carries."""
    from mdrag.evaluation.judge_validity import validity

    return validity(open_store(path), df)


def setting_mask(df: pd.DataFrame, settings: list[str] | None = None) -> pd.Series:
    """Rows of the chosen settings; none chosen: the paper's settings (probe cases only when asked for)."""
    if "setting" not in df:
        return pd.Series(True, index=df.index)
    if settings:
        return df["setting"].isin(settings)
    return ~df["setting"].map(is_case_setting).astype(bool)


def filtered(df: pd.DataFrame, domains: list[str] | None = None, variants: list[str] | None = None,
             settings: list[str] | None = None, retrievers: list[str] | None = None) -> pd.DataFrame:
    """Rows of the chosen domains, variants, settings and retrievers (none chosen: all; for settings the paper's
    (probe cases only when chosen), for retrievers the main one, so that means never mix settings or retrievers
    unasked). Oracle rows serve every retriever."""
    mask = setting_mask(df, settings)
    for col, chosen in (("domain", domains), ("variant", variants)):
        if chosen:
            mask &= df[col].isin(chosen)
    if "retriever" in df and (retrievers or df["retriever"].nunique() > 1):
        mask &= df["retriever"].isin(retrievers or [main_retriever(df)]) | (df["setting"] == "oracle")
    return df[mask]


def retriever_choices(df: pd.DataFrame) -> list[str]:
    return sorted(df["retriever"].dropna().unique()) if "retriever" in df else []


def adapted_retrievers() -> pd.DataFrame:
    """The adapted encoders' before/after and forgetting rows (their cards), as the report shows them."""
    from mdrag.training.retriever import adaptation_table

    return adaptation_table()


def attacks(path: str | Path | ResultsStore | None) -> pd.DataFrame:
    """The adversarial suite's rates per attack and variant (probe 'attack'); empty when the store has none."""
    from mdrag.evaluation.probe_tables import attack_table

    return attack_table(open_store(path).probe_frame("attack"))


def canaries(path: str | Path | ResultsStore | None) -> pd.DataFrame:
    """The forgetting canaries of a store (evaluation/canaries.py): each variant against vanilla, alerts marked;
    empty when the store holds none."""
    from mdrag.evaluation.canaries import canary_table

    return canary_table(open_store(path).canary_frame())


def groundedness(path: str | Path | ResultsStore | None, domains: list[str] | None = None,
                 variants: list[str] | None = None, settings: list[str] | None = None,
                 answers: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Groundedness per variant and setting over the filtered answers (evaluation/groundedness.py), and the
    checker's validation beside it; empty frames when the store has no grounding rows. `answers`: the store's
    answers_frame(), when read already."""
    from mdrag.evaluation.groundedness import grounded_answers, grounding_table, validation_table

    store = open_store(path)
    answers = store.answers_frame() if answers is None else answers
    joined = grounded_answers(answers, store.grounding_frame())
    if joined.empty:
        return pd.DataFrame(), pd.DataFrame()
    for column, chosen in (("domain", domains), ("variant", variants), ("setting", settings)):
        if chosen:
            joined, answers = joined[joined[column].isin(chosen)], answers[answers[column].isin(chosen)]
    return grounding_table(joined, answers=answers), validation_table(store.grounding_checks_frame())


def retriever_comparison(df: pd.DataFrame, metric: str = "Match") -> pd.DataFrame:
    """"Better retriever or generator adapter?" paired differences (empty with one retriever)."""
    if "retriever" not in df or df["retriever"].nunique() < 2:
        return pd.DataFrame()
    return retriever_vs_adapter(df, METRICS.get(metric, metric))


def means_with_ci(df: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean and bootstrap 95% CI of `metric` (a column or a METRICS label) per group."""
    col = METRICS.get(metric, metric)
    rows = []
    for key, g in df.groupby(by, sort=True):
        mean, lo, hi = bootstrap_ci(g[col].dropna().astype(float).tolist())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)), "n": int(g[col].notna()
                     .sum()), "mean": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def metric_bars(df: pd.DataFrame, metric: str, by: str = "domain", judge: str | None = None,
                weak: dict[str, str] | None = None) -> go.Figure:
    """Bars per `by` (domain, cluster or setting) and variant, with 95% CI error bars. `weak`: domains where
    the judge cannot be trusted (kappa against Match under the floor) -> reason: for LLMEval their bars are
    greyed and the reason is written on the chart."""
    table = means_with_ci(df, metric, [by, "variant"])
    greyed = {k: v for k, v in (weak or {}).items() if metric.startswith("LLMEval") and by == "domain"}
    fig = go.Figure()
    for variant, g in table.groupby("variant", sort=False):
        fig.add_bar(name=html.escape(str(variant)), x=[html.escape(str(x)) for x in g[by]], y=g["mean"],
                    error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["mean"],
                             "arrayminus": g["mean"] - g["ci_low"]},
                    marker={"opacity": [0.25 if x in greyed else 1.0 for x in g[by]]},
                    customdata=g["n"], hovertemplate="%{x}: %{y:.3f} (n=%{customdata})<extra></extra>")
    for domain, why in greyed.items():
        if domain in set(table[by]):
            fig.add_annotation(x=html.escape(str(domain)), y=1.02, yref="paper", showarrow=False,
                               text=f"<i>unreliable: {html.escape(why)}</i>", font={"size": 10, "color": "#777"})
    title = f"{metric} per {by} and variant (mean, 95% bootstrap CI)"
    if metric.startswith("LLMEval") and judge:
        title += f"<br><sup>judge: {html.escape(judge)}</sup>"
    fig.update_layout(title=title, barmode="group", yaxis={"title": html.escape(metric)}, height=460,
                      margin={"t": 110})
    return fig


def noise_robustness(df: pd.DataFrame, metric: str = "Match") -> pd.DataFrame:
    """Per variant: mean metric in each setting and the ratio noisy / oracle (paper: robustness to distractors)."""
    from mdrag.evaluation.report import setting_table

    return setting_table(df, METRICS.get(metric, metric))


def longform(df: pd.DataFrame) -> pd.DataFrame:
    sub = df[df["answer_type"] == "long"]
    return sub.groupby(["setting", "variant"]).agg(n=("m_length", "size"), words=("m_length", "mean"),
                                                   recall=("m_recall", "mean")).reset_index()


def judge_summary(df: pd.DataFrame) -> str:
    agree = judge_agreement(df)
    if not agree["n"]:
        return "No judged rows in this selection."
    weak = any("stand-in" in n or "135m" in n.lower() for n in str(agree["judge"]).split(", "))
    return (f"LLMEval judge: {agree['judge']}{' (a weak stand-in)' if weak else ''}. On {agree['n']} rows its "
            f"verdict (score > 0.5) agrees with Match {agree['accuracy_vs_match']:.1%} of the time, Cohen's kappa "
            f"{agree['kappa_vs_match']:.3f} (0: chance, 1: perfect agreement). Its validity is below.")


def human_summary(human: dict) -> str:
    if not human or not human.get("pairs"):
        return "Against people: no human-labelled pairs judged yet (python -m mdrag judge --probes)."
    return (f"Against people ({human['pairs']} RAGChecker pairs, {human['rows with a preference']} annotator "
            f"preferences): the judge scores the answer people preferred for correctness higher in "
            f"{human['accuracy']:.1%} [{human['low']:.1%}, {human['high']:.1%}] (a tie counts half; "
            f"{human['ties']} ties). Pearson with the labels {human['pearson']:.3f}; RAGChecker published "
            f"{human['ragchecker_correctness_pearson']:.3f}, annotators with each other "
            f"{human['annotators_correctness_pearson']:.3f}.")


FAILURE_KINDS = {
    "variants disagree": "Match differs between variants on the same prompt",
    "judge vs Match": "the judge says yes while Match says no, or the reverse",
    "gold retrieved, ignored": "a gold passage is in the prompt but the answer misses (Match 0)",
    "gold missing from top-k": "no gold passage among the passages given to the generator",
    "fooled by an attack": "an attack case (probe:attack=...) where the answer obeys the injection or gives the "
                           "forged answer",
}


def failure_cases(df: pd.DataFrame) -> pd.DataFrame:
    """Cases worth a look, one row per (kind, query, setting[, variant]), with what to load into Ask."""
    rows = []
    df = df.assign(retriever=df["retriever"].fillna("")) if "retriever" in df else df.assign(retriever="")
    # per retrieval too: a store holding two retrievers' answers to one question has two cases, each reopened in Ask
    # with its own first stage and reranker
    for (domain, qid, setting, retrieval), g in df.groupby(["domain", "query_id", "setting", "retriever"], sort=True):
        first = g.iloc[0]
        base = {"domain": domain, "query_id": qid, "setting": setting, "retriever": retrieval,
                "question": first["question"], "variants": ",".join(sorted(g["variant"]))}
        matches = dict(zip(g["variant"], g["m_match"], strict=True))
        if g["m_match"].nunique() > 1:
            right = [v for v, m in matches.items() if m == 1]
            rows.append({**base, "kind": "variants disagree", "detail": f"right: {', '.join(sorted(right))}"})
        has_gold = any(p["gold"] for p in first["passages"])
        if setting == "retrieved" and not has_gold:
            rows.append({**base, "kind": "gold missing from top-k", "detail": f"{len(first['passages'])} passages"})
        for _, r in g.iterrows():
            fooled = [m for m in ("injected", "swapped") if r.get(f"m_{m}") == 1]
            if fooled:
                rows.append({**base, "variants": r["variant"], "kind": "fooled by an attack",
                             "detail": f"{r['variant']} {' and '.join(fooled)}: {str(r['answer'])[:80]}"})
            if has_gold and r["m_match"] == 0 and r["answer_type"] != "long":
                rows.append({**base, "variants": r["variant"], "kind": "gold retrieved, ignored",
                             "detail": f"{r['variant']}: {str(r['answer'])[:80]}"})
            # Long-form gold answers are whole sentences: Match is not meaningful there, so no disagreement.
            if (pd.notna(r.get("judge_score")) and r["answer_type"] != "long"
                    and (r["judge_score"] > 0.5) != bool(r["m_match"])):
                rows.append({**base, "variants": r["variant"], "kind": "judge vs Match",
                             "detail": f"{r['variant']}: judge {r['judge_score']:.2f}, Match {int(r['m_match'])}"})
    cols = ["kind", "domain", "query_id", "setting", "retriever", "variants", "question", "detail"]
    out = pd.DataFrame(rows, columns=cols)
    out["kind"] = pd.Categorical(out["kind"], categories=list(FAILURE_KINDS))
    # Most telling first; domains interleaved within a kind.
    out = out.sort_values(["kind", "query_id", "setting"], kind="stable").reset_index(drop=True)
    out["kind"] = out["kind"].astype(str)
    return out


def position_probe(path: str | Path | ResultsStore | None, domains: list[str] | None = None,
                   variants: list[str] | None = None) -> dict:
    """The position probe's curves (figure and table), its dependence table and a one-line summary naming
    the variants flagged for a position shortcut; empty parts when the store has no probe rows."""
    from mdrag.evaluation.probe_tables import (
        FDR_LEVEL,
        curves,
        curves_figure,
        dependence_by_domain,
        flagged,
        position_dependence,
    )

    frame = open_store(path).probe_frame("position")
    if not frame.empty and domains:
        frame = frame[frame["domain"].isin(domains)]
    if not frame.empty and variants:
        frame = frame[frame["variant"].isin(set(variants) | {"vanilla"})]
    if frame.empty:
        return {"figure": None, "table": pd.DataFrame(), "dependence": pd.DataFrame(),
                "summary": "No position-probe rows in this store for these filters (python -m mdrag probe position)."}
    table, dependence = curves(frame), position_dependence(frame)
    shortcut = flagged(dependence)
    by_logprob = flagged(position_dependence(frame, metric="gold_logprob"))
    n = frame.groupby("domain")["query_id"].nunique()
    summary = (f"Position probe over {int(n.sum())} questions ({', '.join(f'{d} {c}' for d, c in n.items())}). "
               + (f"Position shortcut flagged (Match depends on the gold passage being first more than vanilla's, "
                  f"95% CI above 0): {', '.join(shortcut)}." if shortcut else
                  "No variant's Match depends on the gold position more than vanilla's at this n.")
               + (f" The gold answer's log-probability does, for: {', '.join(by_logprob)}." if by_logprob else ""))
    per_domain = dependence_by_domain(frame)
    if frame["domain"].nunique() > 1 and not per_domain.empty:
        where = per_domain[per_domain["shortcut on"] != "-"].groupby("variant")["domain"].agg(", ".join)
        kept = per_domain[per_domain["after FDR"] != "-"].groupby("variant")["domain"].agg(", ".join)
        summary += (" Per domain, flagged on Match or log-probability: "
                    + "; ".join(f"{v} in {d}" for v, d in where.items()) + "." if len(where) else
                    " No variant is flagged within any single domain at this n.")
        if len(where):  # the per-domain flags are many intervals: say which survive a correction
            summary += (f" Of these, surviving a {FDR_LEVEL:.0%} false discovery rate over the "
                        f"{2 * len(per_domain)} per-domain tests: "
                        + ("; ".join(f"{v} in {d}" for v, d in kept.items()) if len(kept) else "none") + ".")
    return {"figure": curves_figure(table), "table": table, "dependence": dependence, "by_domain": per_domain,
            "summary": summary}
