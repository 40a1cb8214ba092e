"""The Failures tab: stored cases worth a look (a variant wrong where another is right, ...); a click loads one
into Ask."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from mdrag.evaluation import dashboard
from mdrag.generation.variants import VARIANTS
from mdrag.retrieval.rerank import RERANKERS
from mdrag.retrieval.retrievers import retriever_names
from ui.dashboards import DashboardsTab


class FailuresTab:
    def __init__(self, dashboards: DashboardsTab) -> None:
        self.dashboards = dashboards  # the same offered stores and judge selector

    def layout(self) -> None:
        self.kinds = gr.CheckboxGroup(list(dashboard.FAILURE_KINDS), label="kinds (none = all)",
                                      info="; ".join(f"{k}: {v}" for k, v in dashboard.FAILURE_KINDS.items()))
        self.settings = gr.CheckboxGroup(self.dashboards.settings_in(self.dashboards.default_label()),
                                         label="settings (none = the paper's: retrieved, oracle, noisy)",
                                         info="attack and position-probe cases are settings too",
                                         elem_id="failures-settings")
        self.button = gr.Button("Find cases", variant="primary", elem_id="failures-button")
        self.table = gr.Dataframe(label="click a row to load it into Ask (attack cases with their passages)",
                                  interactive=False, elem_id="failures-table")
        self.button.click(self.failures, [self.dashboards.store, self.kinds, self.dashboards.judge, self.settings],
                          self.table)
        self.dashboards.store.change(lambda label: gr.CheckboxGroup(choices=self.dashboards.settings_in(label),
                                                                    value=[]), self.dashboards.store, self.settings)

    def failures(self, label: str, kinds: list[str], judge: str | None = None,
                 settings: list[str] | None = None) -> pd.DataFrame:
        df = self.dashboards.frame(label, judge)
        cases = dashboard.failure_cases(df[dashboard.setting_mask(df, settings)])
        if kinds:
            cases = cases[cases["kind"].isin(kinds)]
        return cases.reset_index(drop=True)

    @staticmethod
    def load_case(cases: pd.DataFrame, evt: gr.SelectData):
        """A clicked failure row -> the Ask tab's inputs (then Ask runs it): the case's domain, question, setting,
        variants, and the first stage and reranker its answers were retrieved with ("splade>minilm"; one Ask does
        not offer is left as Ask has it)."""
        row = cases.iloc[evt.index[0]]
        chosen = [v for v in str(row["variants"]).split(",") if v in VARIANTS] or ["vanilla"]
        first, _, rerank = str(row.get("retriever") or "").partition(">")
        retriever = first if first in retriever_names() else gr.update()
        reranker = rerank if rerank in RERANKERS else gr.update()
        return (row["domain"], row["question"], row["query_id"], row["setting"], chosen, retriever, reranker,
                gr.Tabs(selected="ask"))
