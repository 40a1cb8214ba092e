"""The Dashboards tab: per-domain metrics with CIs from a results store the server offers, the retriever
comparison, the judge's validity panel and the position probe's curves."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from mdrag.data.domains import DOMAINS
from mdrag.errors import MdragError
from mdrag.evaluation import dashboard
from mdrag.evaluation.store import ResultsStore
from mdrag.generation.variants import VARIANTS
from mdrag.pipeline import SETTINGS
from ui.common import Server, esc


class DashboardsTab:
    def __init__(self, server: Server) -> None:
        self.server = server

    def layout(self) -> None:
        offered = list(self.server.stores)
        with gr.Row():
            self.store = gr.Dropdown(offered, value=offered[0], label="results store (the server's --store files "
                                     "and the shipped one)", elem_id="store-choice")
            self.metric = gr.Dropdown(list(dashboard.METRICS), value="Match", label="metric")
            self.by = gr.Radio(["domain", "cluster", "retriever"], value="domain", label="group by")
            judges = self.judges_in(offered[0])
            self.judge = gr.Dropdown(judges, value=judges[0][1] if judges else None,
                                     label="LLMEval judge (its verdicts; validity below)")
        with gr.Row():
            self.domains = gr.CheckboxGroup(list(DOMAINS), label="domains (none = all)")
            self.variants = gr.CheckboxGroup(list(VARIANTS), label="variants (none = all)")
            self.settings = gr.CheckboxGroup(self.settings_in(offered[0]), elem_id="dashboard-settings",
                                             label="settings (none = the paper's three; probe cases when chosen)")
            self.retrievers = gr.CheckboxGroup(self.retrievers_in(offered[0]),
                                               label="retrievers (none = the main one, splade>minilm)")
        self.button = gr.Button("Show", variant="primary", elem_id="dashboard-button")
        summary = gr.Markdown()
        bars = gr.Plot(elem_id="dashboard-bars")
        by_setting = gr.Plot()
        with gr.Row():
            robust = gr.Dataframe(label="noise robustness (noisy / oracle)")
            longform = gr.Dataframe(label="long-form answers")
        table = gr.Dataframe(label="means with 95% CIs")
        csv = gr.File(label="download CSV")
        compared = gr.Dataframe(label="better retriever or generator adapter? paired differences on the same "
                                      "questions (retrieved setting, 95% bootstrap CI)")
        adapted = gr.Dataframe(label="adapted dense retrievers: first-stage quality before/after (trained_on_it "
                                     "false: forgetting check)")
        canaries = gr.Dataframe(label="generator adapters, forgetting canaries: each variant vs vanilla on the same "
                                      "items, 95% CI; alert = worse by more than 5% relative; 'can detect' = a 5% drop "
                                      "is within reach at this n (python -m mdrag canaries)", elem_id="canaries")
        gr.Markdown("### Is the judge any good? (evaluation/judge_validity.py; kappa < 0.4 greys a domain's LLMEval "
                    "bars)")
        valid_match = gr.Dataframe(label="judge vs Match per domain: kappa and AUC with 95% CIs, length bias "
                                         "(Spearman with answer words among Match-right / -wrong)",
                                   elem_id="judge-validity")
        with gr.Row():
            valid_settings = gr.Dataframe(label="sensitivity to the setting: LLMEval vs Match")
            valid_sanity = gr.Dataframe(label="sanity set from the benchmark: pass rate per check")
        valid_human = gr.Markdown()
        attacks = gr.Dataframe(label="adversarial suite (python -m mdrag probe attack): per attack and variant, the "
                                     "rate of the gold answer, of a forged answer, of obeying an injected instruction "
                                     "and of abstaining (95% CI)", elem_id="attacks")
        gr.Markdown("### Position probe: does a variant answer from Document 1? (python -m mdrag probe position)")
        probe_summary = gr.Markdown(elem_id="probe-summary")
        probe_curves = gr.Plot(elem_id="probe-curves")
        probe_dependence = gr.Dataframe(label="Match with the gold passage first minus at positions 2..k, per "
                                              "question; vs vanilla paired (95% CI); shortcut: CI above 0")
        gr.Markdown("### Groundedness: is each answer sentence supported by a passage of its prompt? (python -m "
                    "mdrag ground; the packaged 1.5B judge as entailment checker, plus a fact check: a claim's numbers "
                    "and names must occur in the passage)")
        with gr.Row():
            grounding = gr.Dataframe(label="per variant and setting: faithfulness, gold passage used, claims from "
                                           "distractors only (noise sensitivity), no claim supported; 95% CIs",
                                     elem_id="grounding")
            grounding_valid = gr.Dataframe(label="the checker's validation: accuracy per kind of claim with a known "
                                                 "answer, on the set its threshold was chosen on (dev) and on other "
                                                 "questions (held-out); judge alone: without the fact check (read "
                                                 "the left table through it)",
                                           elem_id="grounding-validation")
        self.outputs = [bars, by_setting, robust, longform, table, csv, summary, compared, adapted, canaries,
                        valid_match, valid_settings, valid_sanity, valid_human, attacks, probe_curves,
                        probe_dependence, probe_summary, grounding, grounding_valid]
        self.button.click(self.dashboards, [self.store, self.domains, self.variants, self.settings, self.retrievers,
                                            self.metric, self.by, self.judge], self.outputs)
        self.store.change(self.store_changed, self.store, [self.judge, self.retrievers, self.settings])

    # ---------------------------------------------------------------------------------------- handlers
    def open(self, label: str) -> ResultsStore:
        """The offered store behind `label`, opened read-only; a missing or unreadable file is a readable error."""
        try:
            return dashboard.open_store(self.server.store_path(label))
        except MdragError as err:
            raise gr.Error(str(err)) from err

    def frame(self, label: str, judge: str | None = None, store: ResultsStore | None = None,
              answers: pd.DataFrame | None = None) -> pd.DataFrame:
        try:
            return dashboard.load_results(store or self.open(label), judge, answers)
        except MdragError as err:
            raise gr.Error(str(err)) from err

    def judges_in(self, label: str) -> list[tuple[str, str]]:
        try:
            return dashboard.judge_choices(self.open(label))
        except (MdragError, gr.Error):
            return []

    def default_label(self) -> str:
        return next(iter(self.server.stores))

    def settings_in(self, label: str) -> list[tuple[str, str]]:
        """(label, setting) of the settings an offered store holds: the paper's, then its probe cases."""
        try:
            return dashboard.setting_choices(self.open(label))
        except (MdragError, gr.Error):
            return [(s, s) for s in SETTINGS]

    def retrievers_in(self, label: str) -> list[str]:
        """Retrievers present in an offered store (none if it cannot be read yet)."""
        try:
            return self.open(label).retrievers()
        except (MdragError, gr.Error):
            return []

    def dashboards(self, label: str, domains: list[str], variants: list[str], settings: list[str],
                   retrievers: list[str], metric: str, by: str, judge: str | None = None):
        from mdrag.evaluation.judge_validity import weak_domains

        store = self.open(label)  # once per click: every panel below reads this one connection
        answers = store.answers_frame()  # and this one read of the answers (~1.5 s on the shipped store)
        whole = self.frame(label, judge, store, answers)
        every_retriever = dashboard.retriever_choices(whole)
        # grouping by retriever compares them all unless some are picked
        df = dashboard.filtered(whole, domains, variants, settings,
                                retrievers or (every_retriever if by == "retriever" else None))
        if df.empty:
            raise gr.Error("No rows match these filters.")
        judge_name = ", ".join(sorted(set(df["judge"].dropna())))
        valid = dashboard.validity_tables(store, whole[dashboard.setting_mask(whole)])  # as the report: paper settings
        bars = dashboard.metric_bars(df, metric, by, judge_name, weak_domains(valid["against_match"]))
        by_setting = dashboard.metric_bars(df, metric, "setting", judge_name)
        robust = dashboard.noise_robustness(df, metric).round(3)
        longform = dashboard.longform(df).round(2)
        table = dashboard.means_with_ci(df, metric, [by, "variant", "setting"]).round(3)
        csv = self.server.download(table, "dashboard")
        summary = f"{len(df)} rows, {df['query_id'].nunique()} questions. " + dashboard.judge_summary(df)
        compared = dashboard.retriever_comparison(dashboard.filtered(whole, domains, variants, settings,
                                                                     every_retriever), metric)
        probe = dashboard.position_probe(store, domains, variants)
        return (bars, by_setting, robust, longform, table, str(csv), esc(summary), compared.round(3),
                dashboard.adapted_retrievers().round(3), dashboard.canaries(store).round(3),
                valid["against_match"].round(3), valid["settings"].round(3),
                valid.get("sanity", pd.DataFrame()).round(3), esc(dashboard.human_summary(valid.get("human", {}))),
                dashboard.attacks(store), probe["figure"], probe["dependence"].round(3), esc(probe["summary"]),
                *(t.round(3) for t in dashboard.groundedness(store, domains, variants, settings, answers)))

    def store_changed(self, label: str):
        """A newly picked store: its judges, retrievers and settings as the selectors' choices."""
        judges = self.judges_in(label)
        return (gr.Dropdown(choices=judges, value=judges[0][1] if judges else None),
                gr.CheckboxGroup(choices=self.retrievers_in(label), value=[]),
                gr.CheckboxGroup(choices=self.settings_in(label), value=[]))
