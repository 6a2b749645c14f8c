"""What the compare page looks like: its HTML fragments (banners, answer stats, sources), the
theme and the CSS. Pure functions of their inputs, so the page's text is tested without a browser."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medchat.ground import safety

if TYPE_CHECKING:
    from medchat.serve.ui import ColumnState


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def memory_html(group: Any) -> str:
    from medchat.infer.model_group import memory_in_use

    mem = memory_in_use()
    parts = [f"process RSS {_mib(mem['rss_bytes'])}"]
    if mem["cuda_allocated_bytes"] is not None:
        parts.append(f"CUDA allocated {_mib(mem['cuda_allocated_bytes'])}")
    n_cols, n_sets = len(group.columns), len(group.weight_sets)
    parts.append(f"{n_cols} models on {n_sets} loaded weight set{'s' * (n_sets != 1)}")
    return f'<div class="mc-memory">Memory in use: {" · ".join(parts)}</div>'


def alert_html(verdict: safety.SafetyVerdict) -> str:
    """The safety banner: emergency (call now), urgent (be seen today), not checked (not
    English), or the medication note; '' when there is nothing to say."""
    if not verdict.message:
        return ""
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in verdict.notes if n != verdict.message)
    body = f"<p>{html.escape(verdict.message)}</p>{notes}"
    if verdict.red_flag:
        return (
            '<div class="mc-alert mc-urgent" role="alert" data-level="emergency">'
            f'<div class="mc-alert-title">Emergency: this may need help now</div>{body}</div>'
        )
    if verdict.level == "urgent":
        return (
            '<div class="mc-alert mc-sameday" role="alert" data-level="urgent">'
            f'<div class="mc-alert-title">Urgent: get care today</div>{body}</div>'
        )
    if not verdict.judged:
        return (
            '<div class="mc-alert mc-sameday" role="note" data-level="not-checked">'
            f'<div class="mc-alert-title">Not checked</div>{body}</div>'
        )
    return f'<div class="mc-alert mc-note" role="note" data-level="none">{body}</div>'


def notice_html(message: str) -> str:
    return f'<div class="mc-notice" role="status">{html.escape(message)}</div>'


def reference_html(row: dict[str, Any], max_chars: int = 900) -> str:
    """The reference answer for a test-split question, with its source link."""
    answer = row["answer"].strip()
    if len(answer) > max_chars:
        answer = answer[:max_chars].rsplit(" ", 1)[0] + " …"
    source = html.escape(row.get("source") or "the dataset")
    url = row.get("url") or ""
    link = (
        f' · <a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">'
        f"{html.escape(url)}</a>"
        if url.startswith(("http://", "https://"))
        else ""
    )
    return (
        '<div class="mc-ref"><div class="mc-ref-head">Reference answer '
        f'<span class="mc-sub">test split · {source}{link}</span></div>'
        f'<div class="mc-ref-body">{html.escape(answer)}</div></div>'
    )


def _source_link(i: int, citation: Any) -> str:
    title = html.escape(f"[{i}] {citation.title}")
    url = citation.url or ""
    if url.startswith(("http://", "https://")):
        return f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">{title}</a>'
    return f"<span>{title}</span>"


def citations_html(citations: Sequence[Any]) -> str:
    """Numbered source links (title -> URL), as shown under each rag answer."""
    links = [_source_link(i, c) for i, c in enumerate(citations, 1)]
    return f'<div class="mc-cites">Sources: {" · ".join(links)}</div>' if links else ""


def sources_html(citations: Sequence[Any], k: int) -> str:
    """The panel above the columns: what every model was given to ground its answer."""
    if not citations:
        return notice_html(
            "No source: nothing in the knowledge base matches this question, so the models "
            "answered alone and cite nothing."
        )
    rows = "".join(
        f'<li>{_source_link(i, c)} <span class="mc-sub">{html.escape(c.source or "")} · '
        f"matched “{html.escape(c.question)}”</span></li>"
        for i, c in enumerate(citations, 1)
    )
    return (
        '<div class="mc-ref"><div class="mc-ref-head">Knowledge-base passages given to every '
        f'model <span class="mc-sub">rag · top {k}</span></div><ol class="mc-sources">{rows}</ol>'
        "</div>"
    )


def stats_html(
    state: ColumnState,
    waits_for: Sequence[str] = (),
    scoring: bool = False,
    citations: Sequence[Any] = (),
) -> str:
    """The line under an answer: progress, time, tokens/s, scores, sources; or the error."""
    if state.status == "error":
        return f'<div class="mc-stats" data-state="error"><span class="mc-err">⚠ {html.escape(state.error or "")}</span></div>'
    if state.status == "idle":
        return ""
    if state.status == "waiting":
        why = f" (shares weights with {', '.join(waits_for)})" if waits_for else ""
        return f'<div class="mc-stats" data-state="waiting">waiting for its turn{html.escape(why)}…</div>'
    parts = [f"{state.seconds:.2f} s", f"{state.tokens} tokens", f"{state.tokens_per_s:.1f} tok/s"]
    if state.status == "streaming":
        return f'<div class="mc-stats" data-state="streaming">answering… {" · ".join(parts)}</div>'
    scores = []
    if state.rouge_l is not None:
        scores.append(f"ROUGE-L <b>{state.rouge_l:.1f}</b>")
    if state.semantic is not None:
        scores.append(f"semantic <b>{state.semantic:.1f}</b>")
    score_line = (
        f'<div class="mc-scores">vs reference: {" · ".join(scores)}</div>' if scores else ""
    )
    if scoring:
        score_line = '<div class="mc-scores">scoring against the reference…</div>'
    cites = citations_html(citations)
    return f'<div class="mc-stats" data-state="done">{" · ".join(parts)}{score_line}{cites}</div>'


def column_header_html(col: Any, shares_with: Sequence[str]) -> str:
    share = (
        f"shares loaded weights with {', '.join(shares_with)}"
        if shares_with
        else "own loaded weights"
    )
    return (
        f'<div class="mc-colhead"><div class="mc-name">{html.escape(col.name)}</div>'
        f'<span class="mc-kind mc-kind-{col.kind}">{html.escape(col.description)}</span>'
        f'<div class="mc-share">{html.escape(share)}</div></div>'
    )


def theme() -> Any:
    """A quiet theme on system fonts (the default theme would fetch fonts from the web)."""
    import gradio as gr

    sans = [
        "ui-sans-serif",
        "system-ui",
        "-apple-system",
        "Segoe UI",
        "Roboto",
        "Helvetica Neue",
        "Arial",
        "sans-serif",
    ]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="teal", neutral_hue="slate", font=sans, font_mono=mono).set(
        button_primary_background_fill="#0f766e",
        button_primary_background_fill_hover="#115e59",
        button_primary_text_color="#ffffff",
        # quiet grey labels: the colour is kept for what needs attention
        block_title_background_fill="*neutral_100",
        block_title_text_color="*neutral_600",
        block_label_background_fill="*neutral_100",
        block_label_text_color="*neutral_600",
    )


HEADER_HTML = """
<div class="mc-header">
  <div class="mc-logo">✚</div>
  <div>
    <h1>medchat <span>· compare answers</span></h1>
    <p>Ask one medical question. The original model and each fine-tuned model answer it side by
    side with the same generation settings, so you can see what fine-tuning changed. For questions
    from the test split the reference answer and each model's ROUGE-L and semantic similarity to it
    are shown.</p>
  </div>
</div>
"""

FOOTER_HTML = """
<div class="mc-footer">
  <p><b>Not medical advice.</b> {disclaimer}</p>
  <p class="mc-sub">Runs locally: nothing you type leaves this machine. Answers come from research
  models and may invent facts, including drug names and doses.</p>
</div>
"""

CSS = """
.gradio-container { max-width: 1320px !important; margin: 0 auto !important; }
.mc-header { display: flex; gap: 14px; align-items: flex-start; padding: 6px 2px 2px; }
.mc-logo { flex: none; width: 40px; height: 40px; border-radius: 10px; background: #0f766e;
  color: #fff; font-size: 24px; line-height: 40px; text-align: center; font-weight: 700; }
.mc-header h1 { font-size: 1.55rem; margin: 0 0 4px; font-weight: 700; letter-spacing: -0.01em; }
.mc-header h1 span { color: #0f766e; font-weight: 600; }
.mc-header p { margin: 0; color: var(--body-text-color-subdued); max-width: 900px; line-height: 1.45; }
.mc-disclaimer { background: #fffbeb; border: 1px solid #f5d78e; color: #713f12;
  border-radius: 10px; padding: 9px 14px; font-size: 0.9rem; }
.mc-alert { border-radius: 10px; padding: 12px 16px; }
.mc-alert p { margin: 4px 0 0; }
.mc-urgent { background: #fef2f2; border: 2px solid #dc2626; color: #7f1d1d; }
.mc-alert-title { font-weight: 700; font-size: 1.05rem; color: #b91c1c; }
.mc-sameday { background: #fffbeb; border: 2px solid #d97706; color: #78350f; }
.mc-sameday .mc-alert-title { color: #b45309; }  /* red is kept for "call now" */
.mc-note { background: #eff6ff; border: 1px solid #93c5fd; color: #1e3a8a; }
.mc-notice { background: #f1f5f9; border: 1px solid #cbd5e1; color: #334155; border-radius: 10px;
  padding: 9px 14px; }
.mc-ref { border: 1px solid var(--border-color-primary); border-left: 4px solid #0f766e;
  border-radius: 10px; padding: 10px 14px; background: var(--block-background-fill); }
.mc-ref-head { font-weight: 650; margin-bottom: 4px; }
.mc-ref-body { font-size: 0.92rem; line-height: 1.45; white-space: pre-wrap; }
.mc-sub { font-weight: 400; color: var(--body-text-color-subdued); font-size: 0.85rem; }
.mc-columns { gap: 12px; }
.mc-col { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 10px 12px;
  background: var(--block-background-fill); box-shadow: 0 1px 2px rgba(15, 23, 42, 0.05); }
.mc-colhead { line-height: 1.3; }
.mc-name { font-weight: 700; font-size: 1.08rem; margin-bottom: 4px; overflow-wrap: anywhere; }
.mc-kind { display: inline-block; font-size: 0.75rem; padding: 2px 9px; border-radius: 999px;
  font-weight: 600; white-space: nowrap; }
.mc-kind-pretrained { background: #e2e8f0; color: #334155; }
.mc-kind-full { background: #ede9fe; color: #5b21b6; }
.mc-kind-lora { background: #ccfbf1; color: #115e59; }
.mc-kind-qlora { background: #ffedd5; color: #9a3412; }
.mc-share { font-size: 0.75rem; color: var(--body-text-color-subdued); margin-top: 4px; }
.mc-answer textarea { font-size: 0.93rem !important; line-height: 1.45 !important; }
.mc-stats { font-size: 0.8rem; color: var(--body-text-color-subdued); min-height: 1.2em; }
.mc-scores { margin-top: 2px; color: var(--body-text-color); }
.mc-cites { margin-top: 2px; }
.mc-cites a, .mc-sources a { color: var(--link-text-color); }
.mc-sources { margin: 4px 0 0 18px; padding: 0; }
.mc-err { color: #b91c1c; }
.mc-memory { font-size: 0.8rem; color: var(--body-text-color-subdued); text-align: right; }
.mc-footer { border-top: 1px solid var(--border-color-primary); margin-top: 8px; padding-top: 10px;
  font-size: 0.82rem; color: var(--body-text-color-subdued); }
.mc-footer p { margin: 2px 0; }
"""
