"""bertviz head and model views that work offline and cannot run injected code.

bertviz's HTML loads require.js, d3 and jQuery from cdnjs and embeds the tokens unescaped inside a
<script>. We inline the vendored copies (assets/vendor/bertviz, from npm, with licences), drop its CDN
`require.config`, neutralise `</` and `<!--` inside every inlined script (a token `</script><script>...`
would otherwise end the script and run code), and return the page inside `<iframe sandbox="allow-scripts"
srcdoc="...">`, so it renders the same in a browser and inside Gradio with no network request.

Attention for the views comes from the memory-bounded recorder (analysis.attention): only the chosen
window of query rows is ever materialised, never the full T x T matrices of every layer.
"""

from __future__ import annotations

import html
import re

from mdrag.config import ASSETS_DIR
from mdrag.engine import Engine
from mdrag.trace import RagTrace

VENDOR = ASSETS_DIR / "vendor" / "bertviz"
_SCRIPT_OPEN = '\n<script type="text/javascript">\n'
_CDN_SCRIPT = re.compile(r'<script src="https://cdnjs[^"]*"></script>')
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.S)
_SOURCE_MAP = re.compile(r"//[#@] sourceMappingURL=\S+")
MAX_WINDOW = 120  # tokens; the head view's size grows with layers x heads x window^2


def _safe_script(code: str) -> str:
    """Code that cannot close its <script> element or open an HTML comment state inside it.
    `<\\/` and `<\\!--` mean the same inside JS strings; bertviz's code has neither outside strings."""
    return _SOURCE_MAP.sub("", code).replace("</", "<\\/").replace("<!--", "<\\!--")


def _vendored() -> str:
    names = ["jquery.min.js", "d3.min.js", "require.js"]
    missing = [n for n in names if not (VENDOR / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Vendored bertviz scripts missing from {VENDOR}: {missing}")
    parts = [f"<script>{_safe_script((VENDOR / n).read_text(encoding='utf-8'))}</script>" for n in names]
    # require.js is loaded after the globals exist; these make `requirejs(['jquery','d3'], ...)` resolve locally.
    parts.append("<script>define('jquery', [], function () { return window.jQuery; });"
                 "define('d3', [], function () { return window.d3; });</script>")
    return "".join(parts)


def offline_page(bertviz_html: str, title: str = "attention") -> str:
    """bertviz's returned HTML -> a self-contained document with no external URL."""
    body, sep, script = bertviz_html.partition(_SCRIPT_OPEN)
    if not sep:
        raise ValueError("Unexpected bertviz output: no inline script found")
    script = script.removesuffix("\n</script>\n")
    body = _CDN_SCRIPT.sub("", body)
    script = _REQUIRE_CONFIG.sub("", script, count=1)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            + _vendored() + "</head><body>" + body + "<script>" + _safe_script(script) + "</script></body></html>")


def iframe(page: str, height: int = 720) -> str:
    """The page inside a sandboxed iframe (scripts run, but with no access to the embedding app)."""
    return (f'<iframe sandbox="allow-scripts" style="width:100%;height:{int(height)}px;border:0" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>')


def _display_tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([t]) for t in ids]


def token_window_attention(trace: RagTrace, variant: str, start: int, end: int, engine: Engine,
                           layers: list[int] | None = None):
    """Attention among tokens start..end (absolute positions over prompt + answer) for the chosen layers:
    a list of (1, heads, w, w) tensors and the window's token strings. Keys outside the window are not
    shown (rows need not sum to 1)."""
    import torch

    from analysis.attention import install, recording
    from analysis.attribution import VariantModel

    m = VariantModel(trace, variant, engine)
    ids = list(trace.prompt_ids) + m.answer_ids
    if end - start > MAX_WINDOW:
        raise ValueError(f"Window of {end - start} tokens is too large for the head view (max {MAX_WINDOW})")
    if not 0 <= start < end <= len(ids):
        raise ValueError(f"Window {start}..{end} is outside the sequence (0..{len(ids)})")
    install(m.model)
    onehot = torch.zeros(len(ids), end - start)  # (T, w): column j = position start + j
    onehot[torch.arange(start, end), torch.arange(end - start)] = 1.0
    with torch.inference_mode(), m.fast.rows([m.name]), recording(torch.arange(start, end), onehot) as rec:
        m.model(input_ids=torch.tensor([ids[:end]]), logits_to_keep=1)
    chosen = layers if layers is not None else sorted(rec.layers)
    return [rec.layers[layer] for layer in chosen], _display_tokens(m.tokenizer, ids[start:end])


def segment_level_attention(trace: RagTrace, variant: str, engine: Engine):
    """Passage-level view: every segment is one unit; entry (i, j) = mean over the query tokens of segment i
    of the attention mass on segment j. Returns a list of (1, heads, S, S) tensors and the segment names."""
    import torch

    from analysis.attention import install, recording, segment_names, segment_onehot
    from analysis.attribution import VariantModel

    m = VariantModel(trace, variant, engine)
    ids = list(trace.prompt_ids) + m.answer_ids
    names = segment_names(trace)
    onehot = segment_onehot(trace, len(ids))  # (T, S)
    install(m.model)
    with torch.inference_mode(), m.fast.rows([m.name]), recording(torch.arange(len(ids)), onehot) as rec:
        m.model(input_ids=torch.tensor([ids]), logits_to_keep=1)
    counts = onehot.sum(0).clamp_min(1)  # tokens per segment (S,)
    out = []
    for layer in sorted(rec.layers):
        per_token = rec.layers[layer]  # (1, heads, T, S)
        out.append((onehot.T @ per_token) / counts[None, None, :, None])  # (1, heads, S, S)
    present = onehot.sum(0) > 0
    keep = torch.nonzero(present).flatten()
    return [a[:, :, keep][:, :, :, keep] for a in out], [names[i] for i in keep.tolist()]


def head_view_html(attention, tokens: list[str], height: int = 720) -> str:
    from bertviz import head_view

    rounded = [a.float().round(decimals=4) for a in attention]  # 4 digits: a quarter of the size
    page = offline_page(head_view(attention=rounded, tokens=tokens, html_action="return").data, "head view")
    return iframe(page, height)


def model_view_html(attention, tokens: list[str], height: int = 900) -> str:
    from bertviz import model_view

    rounded = [a.float().round(decimals=4) for a in attention]
    page = offline_page(model_view(attention=rounded, tokens=tokens, html_action="return").data, "model view")
    return iframe(page, height)
