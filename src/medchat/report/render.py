"""The report as a document: blocks (tables, images, examples) rendered to Markdown and to one
self-contained HTML file. Knows nothing of metrics; `report` and `compare` fill the blocks."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    file: str
    alt: str


@dataclass
class Example:
    title: str
    fields: list[tuple[str, str]]
    url: str | None = None


@dataclass
class Doc:
    """What the report says, in order; rendered once to Markdown and once to HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def add(self, block: Table | Image | Example) -> None:
        self.blocks.append((type(block).__name__.lower(), block))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(doc: Doc) -> str:
    out: list[str] = []
    for kind, b in doc.blocks:
        if kind.startswith("h"):
            out.append(f"{'#' * int(kind[1])} {b}\n")
        elif kind == "p":
            out.append(f"{b}\n")
        elif kind == "table":
            out.append("| " + " | ".join(map(_md_cell, b.header)) + " |")
            out.append(
                "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(b.header))) + "|"
            )
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows]
            out.append("")
        elif kind == "image":
            out.append(f"![{b.alt}]({b.file})\n")
        elif kind == "example":
            out.append(f"**{b.title}**" + (f" ([source]({b.url}))" if b.url else "") + "\n")
            out += [f"- *{name}*: {_md_cell(text) or '(empty)'}" for name, text in b.fields]
            out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.3em .55em;vertical-align:top}
th{background:#f2f2f2}td:not(:first-child){text-align:right;white-space:nowrap}
img{max-width:100%;border:1px solid #eee;margin:.4em 0 1em}
.ex{border-left:3px solid #bbb;padding:.2em .8em;margin:.8em 0;font-size:.9em}
.ex dt{font-weight:600;margin-top:.3em}.ex dd{margin:0 0 0 1em}
"""


def render_html(doc: Doc, image_dir: Path, title: str) -> str:
    """A single HTML file: images embedded as base64 data URIs, no external resources."""
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for kind, b in doc.blocks:
        if kind.startswith("h"):
            out.append(f"<{kind}>{e(b)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(b)}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            data = base64.b64encode((image_dir / b.file).read_bytes()).decode()
            out.append(f"<img alt='{e(b.alt)}' src='data:image/png;base64,{data}'>")
        elif kind == "example":
            link = f" (<a href='{e(b.url)}'>source</a>)" if b.url else ""
            fields = "".join(f"<dt>{e(n)}</dt><dd>{e(t) or '(empty)'}</dd>" for n, t in b.fields)
            out.append(f"<div class='ex'><b>{e(b.title)}</b>{link}<dl>{fields}</dl></div>")
    out.append("</body></html>")
    return "\n".join(out)
