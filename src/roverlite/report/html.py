"""Render a report twice from one description: markdown beside its PNGs, and self-contained HTML.

A report is a title and a list of :class:`Section`; each holds blocks: text paragraphs, verdicts,
tables and images (PNG files in the report folder). The markdown links the PNGs; the HTML embeds them as
``data:image/png;base64`` URIs with inline CSS, so the single ``report.html`` can be mailed or
archived and still shows everything, without references to any other file or to the network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roverlite.report.tables import looks_numeric, markdown_table

__all__ = ["Image", "Section", "Table", "Verdict", "render_html", "render_markdown"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.9em; }
p.verdict { font-size: 1.1em; font-weight: bold; padding: 0.4em 0.7em; border-left: 4px solid #999; }
p.verdict.passed { border-color: #2e7d32; color: #1b5e20; }
p.verdict.failed { border-color: #c62828; color: #b71c1c; }
"""


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Image:
    """A PNG in the report folder (``file`` relative to it) with its alternative text."""

    file: str
    alt: str


@dataclass(frozen=True)
class Verdict:
    """A one-line verdict shown in bold (coloured in HTML by ``state``: ``passed``, ``failed``, other)."""

    text: str
    state: str


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[str | Table | Image | Verdict] = field(default_factory=tuple)


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Markdown text; images are relative links to the PNGs beside ``report.md``."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(markdown_table(block.headers, block.rows))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({block.file})")
            elif isinstance(block, Verdict):
                parts.append(f"**{block.text}**")
            else:
                parts.append(str(block))
    return "\n\n".join(parts) + "\n"


def render_html(title: str, sections: Sequence[Section], folder: str | Path) -> str:
    """A standalone HTML page; every image is read from ``folder`` and embedded as base64.

    Raises:
        FileNotFoundError: an image block names a file that is not in ``folder``.
    """
    folder = Path(folder)
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{esc(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Image):
                png = folder / block.file
                if not png.is_file():
                    raise FileNotFoundError(
                        f"Report image not found. Expected a PNG in {str(folder)!r}. Received: {block.file!r}."
                    )
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                body.append(f'<p><img alt="{esc(block.alt)}" src="data:image/png;base64,{data}"></p>')
            elif isinstance(block, Verdict):
                state = block.state if block.state in ("passed", "failed") else "other"
                body.append(f'<p class="verdict {state}">{esc(block.text)}</p>')
            else:
                body.append(f'<p class="note">{esc(str(block))}</p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_table(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        cells = []
        for value in row:
            text = "–" if value is None else str(value)
            numeric = isinstance(value, (int, float)) or looks_numeric(text)
            cells.append(f'<td class="num">{esc(text)}</td>' if numeric else f"<td>{esc(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"

