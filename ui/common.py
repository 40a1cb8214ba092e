"""What every tab shares: the server's objects (one engine, the stores it may open, the judge of the Ask cards,
the concurrency group of model-bound events, the download folder) and the HTML helpers.

Every text that comes from a user, a corpus or a model is HTML-escaped before it is rendered (gr.HTML does not
sanitise). Each browser session keeps its own trace in gr.State, so concurrent users never see each other's
answers; what they share is exactly `Server` (and, through it, the engine's models).
"""

from __future__ import annotations

import atexit
import hashlib
import html
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from mdrag.engine import Engine
from mdrag.evaluation import dashboard
from mdrag.trace import RagTrace

esc = html.escape
CSS = """
.mdrag-answers {display: flex; flex-wrap: wrap; gap: 10px}
.mdrag-answer {flex: 1 1 260px; border: 1px solid #ccc; border-radius: 8px; padding: 8px}
.mdrag-answer.pending {opacity: .5}
.mdrag-passages td {vertical-align: top; padding: 4px}
.mdrag-error {color: #b00020; font-weight: bold}
.mdrag-highlight span {border-radius: 3px}
"""
SHIPPED_LABEL = "shipped results (assets/results/results.sqlite)"


def error_html(err: Exception) -> str:
    return f"<p class='mdrag-error'>⚠ {esc(str(err))}</p>"


def need_trace(trace: RagTrace | None) -> RagTrace:
    if trace is None or not trace.answers:
        raise gr.Error("Ask a question first (Ask tab): the analysis runs on its answers.")
    return trace


def offered_stores(paths: list[Path | str]) -> dict[str, Path]:
    """The stores the dashboards offer, by label: `paths` (labelled as given), then the shipped store."""
    stores = {str(p): Path(p) for p in paths}
    stores.setdefault(SHIPPED_LABEL, dashboard.SHIPPED_STORE)
    return stores


@dataclass
class Server:
    """One app process: its engine and what its flags chose. A browser picks a store by label, never a path:
    the server opens no file it was not given."""

    engine: Engine
    stores: dict[str, Path] = field(default_factory=lambda: offered_stores([]))
    judge_spec: str = "default"  # --judge: the judge of the Ask cards' verdicts
    model_jobs: int = 1  # --model-jobs: model-bound events running at once across all sessions
    stream_every: float = 0.25  # seconds between redraws of streaming answers (each redraw ships the cards' HTML)
    _downloads: Path | None = field(default=None, repr=False)
    _attribution_scores: pd.DataFrame | None = field(default=None, repr=False)

    def model_bound(self) -> dict:
        """Event options of every model-bound event (generation, attention, attribution, probes): one shared
        concurrency group, so at most `model_jobs` run at once whatever the number of listeners or sessions
        (per-listener limits let about fifteen run together on two cores)."""
        return {"concurrency_id": "model", "concurrency_limit": self.model_jobs}

    def judge(self):
        """The Ask cards' judge, loaded on first use by whichever session needs it first (shared read-only)."""
        from mdrag.evaluation.judge import shared_judge

        return shared_judge(self.engine, self.judge_spec)

    def store_path(self, label: str) -> Path:
        """The offered store behind a label; anything else (a path typed into a request) is refused."""
        if label not in self.stores:
            raise gr.Error("Unknown results store. This server offers: " + "; ".join(self.stores) + " (start it "
                           "with --store PATH to add one).")
        return self.stores[label]

    def download(self, table: pd.DataFrame, name: str) -> str:
        """A CSV of `table` in this server's download folder (see `save_download`)."""
        return self.save_download(table.to_csv(index=False), name, ".csv")

    def save_download(self, text: str, name: str, suffix: str) -> str:
        """`text` as a file in this server's download folder, named by its content: the same content clicked twice
        is one file, and the folder goes when the app stops (no temporary file left behind per click)."""
        if self._downloads is None:
            self._downloads = Path(tempfile.mkdtemp(prefix="mdrag-downloads-"))
            atexit.register(self.remove_downloads)
        path = self._downloads / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}{suffix}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return str(path)

    def attribution_scores(self) -> pd.DataFrame:
        """The shipped store's attribution-method scores by (variant, method), read once (shown beside a
        method's picture in the Attribution tab)."""
        if self._attribution_scores is None:
            from mdrag.evaluation.attribution_table import summary
            from mdrag.evaluation.store import ResultsStore

            rows = ResultsStore(dashboard.SHIPPED_STORE, read_only=True).attribution_scores_frame()
            self._attribution_scores = summary(rows, by=("variant", "method")) if len(rows) else pd.DataFrame()
        return self._attribution_scores

    def remove_downloads(self) -> None:
        """Remove this server's download folder (registered to run when the app stops)."""
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
            self._downloads = None
