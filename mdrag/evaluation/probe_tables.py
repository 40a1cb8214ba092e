"""Tables and figures of probe rows (analysis/probes.py writes them into the store's `probe_rows`): Match per
condition with 95% bootstrap CIs, and for the position probe the per-question dependence of Match on the gold
passage being first, relative to vanilla, which flags a position shortcut (issue #22: the adapters, trained on
prompts in rerank order, learned to answer from Document 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from mdrag.evaluation.stats import bootstrap_ci


def curves(frame: pd.DataFrame, by_domain: bool = False) -> pd.DataFrame:
    """Per (domain,) variant and condition: n, Match mean [95% CI], mean gold log-probability and attention."""
    if frame.empty:
        return pd.DataFrame()
    keys = (["domain"] if by_domain else []) + ["variant", "condition"]
    rows = []
    for group, g in frame.groupby(keys, sort=True):
        group = group if isinstance(group, tuple) else (group,)
        mean, lo, hi = bootstrap_ci(g["m_match"].dropna().tolist())
        rows.append({**dict(zip(keys, group, strict=True)), "n": len(g), "Match": mean, "low": lo, "high": hi,
                     "gold logprob": g["gold_logprob"].mean(),
                     "gold attention": g["gold_attention"].mean() if g["gold_attention"].notna().any() else None})
    out = pd.DataFrame(rows)
    out["order"] = pd.to_numeric(out["condition"], errors="coerce")
    return out.sort_values([*keys[:-1], "order"]).drop(columns="order").reset_index(drop=True)


ATTACK_RATES = {"m_match": "gold answer", "m_swapped": "forged answer", "m_injected": "obeys the injection",
                "m_abstained": "abstains"}


def attack_table(frame: pd.DataFrame, reference: str = "clean") -> pd.DataFrame:
    """The adversarial suite (probe 'attack'): per attack and variant, each rate that applies with its 95% CI, and
    the gold-answer rate's paired change from the same questions' clean prompt."""
    sub = frame[frame["probe"] == "attack"] if "probe" in frame else frame
    if sub.empty:
        return pd.DataFrame()
    clean = sub[sub["condition"] == reference].set_index(["domain", "query_id", "variant"])["m_match"]
    rows = []
    order = {c: i for i, c in enumerate(["clean", "injection", "jailbreak", "contradiction", "outdated",
                                         "near_duplicate", "unanswerable"])}
    for (condition, variant), g in sorted(sub.groupby(["condition", "variant"]), key=lambda kv: (
            order.get(kv[0][0], 99), kv[0][1])):
        row = {"attack": condition, "variant": variant, "n": len(g)}
        for col, label in ATTACK_RATES.items():
            if col in g and g[col].notna().any():
                mean, lo, hi = bootstrap_ci(g[col].dropna().tolist())
                row[label] = f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"
        if condition != reference:
            paired = (g.set_index(["domain", "query_id", "variant"])["m_match"] - clean).dropna()
            if len(paired):
                mean, lo, hi = bootstrap_ci(paired.tolist())
                row["gold answer vs clean"] = f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)


SHORTCUT_MARGIN = 0.0  # flagged when the lower CI bound of (variant's dependence - vanilla's) is above this


def position_dependence(frame: pd.DataFrame, reference: str = "vanilla", metric: str = "m_match") -> pd.DataFrame:
    """Per variant: `metric` (Match; or gold_logprob, which moves even when the greedy answer does not) with
    the gold passage first minus its mean at positions 2..k, per question (paired), and the same difference
    relative to `reference`'s on the same questions, with 95% bootstrap CIs. A variant whose dependence
    exceeds the reference's (CI above 0) is flagged: a position shortcut. `p`: the one-sided paired t-test of
    the same (dependence above the reference's), for corrections over many such tests (dependence_by_domain)."""
    sub = frame[frame["probe"] == "position"] if "probe" in frame else frame
    if sub.empty:
        return pd.DataFrame()
    sub = sub.assign(first=sub["condition"].astype(str) == "1")
    per_q = sub.groupby(["domain", "query_id", "variant", "first"])[metric].mean().unstack("first")
    if True not in per_q or False not in per_q:
        return pd.DataFrame()
    dep = (per_q[True] - per_q[False]).unstack("variant")  # (questions, variants)
    rows = []
    for v in dep.columns:
        mean, lo, hi = bootstrap_ci(dep[v].dropna().tolist())
        row = {"variant": v, "n": int(dep[v].notna().sum()), "first - rest": mean, "low": lo, "high": hi}
        if reference in dep and v != reference:
            rel = (dep[v] - dep[reference]).dropna()
            rmean, rlo, rhi = bootstrap_ci(rel.tolist())
            row.update({f"vs {reference}": rmean, "vs low": rlo, "vs high": rhi,
                        "shortcut": bool(rlo > SHORTCUT_MARGIN), "p": _p_above_zero(rel.to_numpy())})
        rows.append(row)
    return pd.DataFrame(rows)


def _p_above_zero(diffs: np.ndarray) -> float:
    """One-sided paired t-test p of mean(diffs) > 0; 1.0 where it is undefined (fewer than two questions, or every
    difference the same: Match differences are often all 0 within a small domain)."""
    if len(diffs) < 2 or np.ptp(diffs) == 0:
        return 1.0 if len(diffs) < 2 or diffs[0] <= 0 else 0.0
    return float(stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue)


FDR_LEVEL = 0.05  # Benjamini-Hochberg over every interval of the per-domain table (2 measures x domains x variants)


def _ci_text(row: pd.Series, reference: str) -> str:
    return f"{row[f'vs {reference}']:+.3f} [{row['vs low']:+.3f}, {row['vs high']:+.3f}]"


def dependence_by_domain(frame: pd.DataFrame, reference: str = "vanilla") -> pd.DataFrame:
    """Per domain and variant: the dependence on the gold passage being first relative to `reference`'s
    (position_dependence within the domain), on Match and on the gold answer's log-probability, and which of the
    two flags a shortcut there. A pooled flag can come from one domain; this says which. The table holds many
    intervals (2 per row), so some flag by chance: 'after FDR' names the flagged measures ('shortcut on') whose
    one-sided paired t-test also survives Benjamini-Hochberg at FDR_LEVEL over all of them (scipy's
    false_discovery_control): a subset of the flags, never a measure whose bootstrap CI reaches 0."""
    sub = frame[frame["probe"] == "position"] if "probe" in frame else frame
    rows, p_values, row_flags = [], [], []  # p_values: (Match p, log-prob p) per row; row_flags: its flagged measures
    for domain, g in sub.groupby("domain", sort=True):
        match, logprob = (position_dependence(g, reference, metric) for metric in ("m_match", "gold_logprob"))
        if f"vs {reference}" not in match or f"vs {reference}" not in logprob:
            continue  # no reference rows (or no position 1 and others) in this domain: nothing to compare with
        flags = {"Match": set(flagged(match)), "log-prob": set(flagged(logprob))}
        match, logprob = match.set_index("variant"), logprob.set_index("variant")  # same variants: same rows
        for v in match.index.drop(reference, errors="ignore"):
            on = [name for name, variants in flags.items() if v in variants]
            rows.append({"domain": domain, "variant": v, "n": int(match.loc[v, "n"]),
                         f"Match vs {reference}": _ci_text(match.loc[v], reference),
                         f"log-prob vs {reference}": _ci_text(logprob.loc[v], reference),
                         "shortcut on": ", ".join(on) or "-"})
            p_values.append((match.loc[v, "p"], logprob.loc[v, "p"]))
            row_flags.append(on)
    if rows:
        q = stats.false_discovery_control(np.asarray(p_values, dtype=float).ravel()).reshape(-1, 2)  # (rows, measures)
        for row, on, (q_match, q_logprob) in zip(rows, row_flags, q, strict=True):
            row["after FDR"] = ", ".join(name for name, qv in (("Match", q_match), ("log-prob", q_logprob))
                                         if name in on and qv <= FDR_LEVEL) or "-"
    return pd.DataFrame(rows)


def flagged(dependence: pd.DataFrame) -> list[str]:
    """Variants whose Match depends on the gold position more than the reference's (CI above 0)."""
    if dependence.empty or "shortcut" not in dependence:
        return []
    return dependence.loc[dependence["shortcut"].fillna(False).astype(bool), "variant"].tolist()


def curves_figure(table: pd.DataFrame, title: str = "Match by gold passage position"):
    """Plotly lines: Match per position with 95% CI bars, one line per variant."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for variant, g in table.groupby("variant", sort=True):
        fig.add_trace(go.Scatter(x=g["condition"], y=g["Match"], mode="lines+markers", name=str(variant),
                                 error_y={"type": "data", "symmetric": False,
                                          "array": (g["high"] - g["Match"]).to_numpy(),
                                          "arrayminus": (g["Match"] - g["low"]).to_numpy()}))
    n = int(table["n"].min()) if len(table) else 0
    fig.update_layout(title=f"{title} (n ≥ {n} questions per point, 95% CI)", xaxis_title="gold passage position",
                      yaxis_title="Match", yaxis_range=[0, 1], height=380, margin={"t": 50, "b": 40})
    return fig


def question_table(rows: list[dict]) -> pd.DataFrame:
    """One question's probe rows as a (variant x condition) table of answers marked right/wrong."""
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["cell"] = [f"{'✓' if m.get('match') else '✗'} {a[:60]}" for m, a in zip(df["metrics"], df["answer"],
                                                                                  strict=True)]
    return df.pivot(index="variant", columns="condition", values="cell").reset_index()


def question_summary(rows: list[dict]) -> pd.DataFrame:
    """Per variant and condition for one question: Match, gold log-probability, attention on gold."""
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return pd.DataFrame({"variant": df["variant"], "position": df["condition"],
                         "Match": [m.get("match") for m in df["metrics"]],
                         "gold logprob": np.round(df["gold_logprob"].astype(float), 3),
                         "gold attention": df["gold_attention"]})
