"""A small document model rendered twice: Markdown (figures as relative links to PNG files) and one
self-contained HTML page (figures embedded as ``data:image/png;base64`` URIs, nothing fetched)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    name: str  # file stem; the Markdown links ``<figure_dir>/<name>.png``
    png: bytes
    caption: str


@dataclass
class Document:
    """Blocks in order: ``("h1"|"h2"|"h3"|"p"|"pre"|"ul", payload)``, ``("table", (headers, rows))`` or
    ``("figure", Figure)``."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, payload: Any) -> None:
        self.blocks.append((kind, payload))

    @property
    def figures(self) -> list[Figure]:
        return [payload for kind, payload in self.blocks if kind == "figure"]

    def markdown(self, figure_dir: str) -> str:
        out = []
        for kind, payload in self.blocks:
            if kind in ("h1", "h2", "h3"):
                out.append(f"{'#' * int(kind[1])} {payload}")
            elif kind == "p":
                out.append(payload)
            elif kind == "pre":
                out.append(f"```\n{payload.rstrip()}\n```")
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in payload))
            elif kind == "table":
                headers, rows = payload
                lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "figure":
                out.append(f"![{payload.caption}]({figure_dir}/{payload.name}.png)\n\n*{payload.caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
               "pre{background:#f4f4f4;padding:6px;overflow:auto}img{max-width:100%}</style>",
               "</head><body>"]
        for kind, payload in self.blocks:
            if kind in ("h1", "h2", "h3"):
                out.append(f"<{kind}>{html.escape(payload)}</{kind}>")
            elif kind == "p":
                out.append(f"<p>{html.escape(payload)}</p>")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(payload)}</pre>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in payload) + "</ul>")
            elif kind == "table":
                headers, rows = payload
                out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                                     for row in rows) + "</table>")
            elif kind == "figure":
                data = base64.b64encode(payload.png).decode("ascii")
                out.append(f"<figure><img alt=\"{html.escape(payload.caption)}\" src=\"data:image/png;base64,{data}\">"
                           f"<figcaption>{html.escape(payload.caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"
