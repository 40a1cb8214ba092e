"""Attribution methods' scores on held-out ablations (#25), aggregated for the report, the README and the app:
mean LDS and top-k log-probability drops with 95% bootstrap CIs over questions, and the mean cost per attribution.
The rows come from analysis/attribution_scores.py (store table `attribution_scores`)."""

from __future__ import annotations

import pandas as pd

from mdrag.evaluation.stats import bootstrap_ci

KS = (1, 3)  # top-k drops kept per row


def summary(rows: pd.DataFrame, by: tuple[str, ...] = ("variant", "domain", "method"), target: str = "answer"
            ) -> pd.DataFrame:
    """Mean LDS and top-k drops with 95% bootstrap CIs over questions, and the mean cost, per group."""
    df = rows[rows["target"] == target] if target else rows
    out = []
    for keys, g in df.groupby(list(by), sort=True):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        row["n"] = int(g["lds"].notna().sum())
        for col in ["lds", *[f"drop{k}" for k in KS]]:
            mean, lo, hi = bootstrap_ci(g[col].dropna().tolist())
            row.update({col: mean, f"{col}_lo": lo, f"{col}_hi": hi})
        row["forwards"] = float(g["forwards"].mean())
        row["seconds"] = float(g["seconds"].mean())
        out.append(row)
    return pd.DataFrame(out)


def summary_markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table: value [CI] per score, n and cost."""
    if table.empty:
        return "_No attribution scores in this store yet._"
    keys = [c for c in ("variant", "domain", "method") if c in table]
    head = [*keys, "n", "LDS", "top-1 drop", "top-3 drop", "forwards", "s / attribution"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [str(getattr(r, k)) for k in keys] + [str(r.n)]
        for col in ("lds", "drop1", "drop3"):
            cells.append(f"{getattr(r, col):.2f} [{getattr(r, col + '_lo'):.2f}, {getattr(r, col + '_hi'):.2f}]")
        cells += [f"{r.forwards:.0f}", f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attribution_section(store) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """Markdown parts and the CSV table of the scored attribution methods, when the store holds their rows."""
    rows = store.attribution_scores_frame()
    if rows.empty:
        return [], {}
    table = summary(rows)
    parts = ["## Attribution methods, scored on held-out ablations (python -m mdrag attribution score)",
             "Per stored answer, each method scores every passage sentence; on held-out random ablations (half the "
             "sentences kept, a seed no method saw) the LDS is the Spearman correlation between the effect the "
             "scores predict (sum over kept sentences) and the answer's actual logit probability; top-k drop: how "
             "much removing the method's k top sentences lowers it. Means over the n answers with 95% bootstrap CIs; "
             "cost per attribution (forwards of the generator, seconds on this CPU). `random` is the floor.",
             summary_markdown(table)]
    return parts, {"attribution_scores": table}
