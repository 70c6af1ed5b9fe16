"""The report as one self-contained HTML page: markdown report + figures + neighbour grids (no I/O).

The written report (markdown) is the one source of the tables; it is rendered here with
markdown-it (CommonMark + tables, raw HTML escaped). Figures it references are swapped for data URIs
the caller supplies, and the neighbour grids are drawn from the `neighbours` stage's record, whose
thumbnails are data URIs already. The page has inline CSS, no scripts and no external references,
so a browser opening it from disk makes no request at all.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Mapping

from markdown_it import MarkdownIt

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.1em; margin: 1.4em 0 0.4em; } h3 small { color: #666; font-weight: normal; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; }
thead th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
td { text-align: right; font-variant-numeric: tabular-nums; } td:first-child { text-align: left; }
p img { max-width: 100%; height: auto; display: block; margin: 0.4em 0; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.missing { color: #a00; font-style: italic; }
.legend { color: #444; } .hit-key { color: #1a7f37; font-weight: bold; } .miss-key { color: #c62828; font-weight: bold; }
.queries { display: flex; flex-wrap: wrap; gap: 0 18px; align-items: flex-start; }
table.nn { margin: 0.3em 0 1.2em; } table.nn td, table.nn th { text-align: center; vertical-align: top; padding: 2px; }
table.nn th.method { text-align: right; white-space: nowrap; font-weight: 600; background: #f7f7f7; }
table.nn figure { margin: 0; width: 74px; }
table.nn img { width: 60px; height: 60px; object-fit: contain; border: 3px solid transparent; display: block; margin: 0 auto; }
table.nn img.px { image-rendering: pixelated; }
table.nn .query img { border-color: #222; } table.nn .hit img { border-color: #2e9e44; } table.nn .miss img { border-color: #d93025; }
table.nn figcaption { font-size: 11px; line-height: 1.2; word-break: break-word; }
table.nn figcaption .score { color: #666; }
"""


def data_uri(data: bytes, mime: str) -> str:
    """A `data:` URI: the bytes inside the page, so showing them needs no request."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def image_sources(markdown_text: str) -> list[str]:
    """The image references of a markdown text, in order (what the caller must supply)."""
    found = []
    for token in _markdown().parse(markdown_text):
        for child in token.children or []:
            if child.type == "image" and child.attrGet("src") not in found:
                found.append(str(child.attrGet("src")))
    return found


def markdown_html(markdown_text: str, images: Mapping[str, str]) -> str:
    """The markdown as HTML, each image's src replaced by `images[src]` (a data URI); an image
    without one becomes a visible note instead of a request for a file."""
    md = _markdown()
    tokens = md.parse(markdown_text)
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src"))
            if src in images:
                child.attrSet("src", images[src])
            else:
                child.type, child.tag, child.children = "html_inline", "", None
                child.content = f'<span class="missing">[figure {html.escape(src)} not found]</span>'
    return md.renderer.render(tokens, md.options, {})


def _figure(item: dict[str, Any], css: str, score: float | None = None) -> str:
    small = max(item.get("width", 0), item.get("height", 0)) < 64  # tiny images: crisp pixels, not blur
    caption = html.escape(str(item["class_name"]))
    if score is not None:
        caption += f'<br><span class="score">{score:.3f}</span>'
    return (f'<td class="{css}"><figure><img{" class=px" if small else ""} src="{item["thumb"]}" '
            f'alt="{html.escape(str(item["class_name"]))}" title="{html.escape(str(item["path"]))}">'
            f"<figcaption>{caption}</figcaption></figure></td>")


def neighbours_html(grid: Mapping[str, Any]) -> str:
    """Per set, per fixed query: one row per method with the query and its top neighbours, each
    with its class name (and score); green frame = same class as the query, red = another class."""
    k = grid["neighbours"]
    parts = ['<h2 id="neighbours">Neighbours of fixed queries, every method and set</h2>',
             f'<p class="legend">The same {grid["queries"]} queries per set under every method; top-{k} '
             'neighbours with cosine similarity. Frame: <span class="hit-key">green</span> = same class as '
             'the query, <span class="miss-key">red</span> = another class. Hover an image for its path.</p>']
    for entry in grid["sets"]:
        name = entry["name"]
        where = "/".join(str(p) for p in (entry["dataset"], entry["split"], entry["subset"]) if p)
        gallery = f", gallery {entry['gallery_split']}" if entry["gallery_split"] != entry["split"] else ""
        domain = "in-domain" if entry["domain"] == "in" else "out-of-domain"
        parts.append(f'<h3 id="nn-{html.escape(name)}">{html.escape(name)} '
                     f"<small>{domain} · {html.escape(where)}{html.escape(gallery)}</small></h3>")
        items = entry["items"]
        parts.append('<div class="queries">')
        for i, qid in enumerate(entry["queries"]):
            methods = [m for m in grid["methods"] if m in entry["results"]]  # JSON objects lose order
            rows = [f'<tr><th>method</th><th>query</th><th colspan="{k}">top-{k}</th></tr>']
            for r, method in enumerate(methods):
                cells = [f'<th class="method">{html.escape(method)}</th>']
                if r == 0:
                    cells.append(_figure(items[str(qid)], "query").replace("<td ", f'<td rowspan="{len(methods)}" ', 1))
                cells += [_figure(items[str(n["id"])], "hit" if n["hit"] else "miss", n["score"])
                          for n in entry["results"][method][i]]
                rows.append("<tr>" + "".join(cells) + "</tr>")
            parts.append('<table class="nn">' + "".join(rows) + "</table>")
        parts.append("</div>")
    return "\n".join(parts)


def render(title: str, markdown_text: str, images: Mapping[str, str], grid: Mapping[str, Any] | None) -> str:
    """The whole page."""
    body = markdown_html(markdown_text, images)
    if grid:
        body += "\n" + neighbours_html(grid)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"  # no favicon request either
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")
