"""The groundedness checker's citations against passage ablation (#24): does the passage a claim can be cited to
(the checker: it supports the text) coincide with the passage the answer depends on (ablation: leaving it out
lowers the answer's log-probability most)? Where they differ, an answer may read as grounded in one passage
while the model produced it from another, or from its own weights.

Per stored answer with at least one supported claim: the prompt rebuilt from the store (analysis.gold_attention
.trace_from_rows; a prompt that no longer hashes the same is skipped), passage ablation of the variant's own
answer (1 + k forwards of the generator), its top passage against the set of passages the checker cites.
"""

from __future__ import annotations

from collections.abc import Callable

from analysis.attribution import passage_ablation
from analysis.gold_attention import trace_from_rows
from mdrag.engine import Engine
from mdrag.evaluation.groundedness import grounded_answers


def citation_rows(store, engine: Engine, checker: str | None = None, limit: int | None = None,
                  progress: Callable | None = None) -> list[dict]:
    """Compare checker citations with passage ablation on up to `limit` stored prompts (query and setting) whose
    answers have supported claims and no row yet; rows written per prompt (resumable). Returns the new rows."""
    grounding = store.grounding_frame()  # read once: the join and the checker's default both need it
    joined = grounded_answers(store.answers_frame(), grounding, checker)
    if joined.empty:
        return []
    fingerprint = checker or grounding["checker"].value_counts().idxmax()
    done = set(store.citations_frame().query("checker == @fingerprint")["result_key"])
    todo = joined[(joined["n_supported"] > 0) & ~joined["key"].isin(done)]
    todo = todo.assign(_prompt=[tuple(p["id"] for p in ps) for ps in todo["passages"]])  # one prompt per group
    groups = [g for _, g in todo.groupby(["domain", "query_id", "setting", "_prompt"], sort=True)][:limit]
    made = []
    for g in (progress(groups) if progress else groups):
        trace = trace_from_rows(g.drop_duplicates("variant"), engine)
        if trace is None:
            continue
        rows = []
        for r in g.drop_duplicates("variant").itertuples():
            if not trace.answers[r.variant].token_ids:
                continue
            attr = passage_ablation(trace, r.variant, engine)
            top = max(range(len(attr.scores)), key=attr.scores.__getitem__)  # 0-based prompt position
            cited = sorted({c["cite"] for c in r.claims if c["cite"] is not None})
            gold = [p.is_gold for p in trace.passages]
            rows.append({"result_key": r.key, "checker": fingerprint, "domain": r.domain, "setting": r.setting,
                         "query_id": r.query_id, "variant": r.variant, "top_ablation": top + 1,
                         "cited": [c + 1 for c in cited], "agree": int(top in cited), "top_is_gold": int(gold[top]),
                         "cites_gold": int(any(gold[c] for c in cited))})
        store.put_citations(rows)
        made += rows
    return made

