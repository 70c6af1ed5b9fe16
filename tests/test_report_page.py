"""The report page renderer: the markdown report's tables and figures, the neighbour grids, nothing external."""
from __future__ import annotations

import re

from pipeline.lib import report_page

MARKDOWN = """# Results

Some text with `code` and <script>alert(1)</script>.

| method | in-domain | Δ |
|---|---|---|
| pretrained | 0.30 | – |
| infuse | 5.61 | +5.32 |

![deltas](fig1_deltas.png)

![gone](missing.png)
"""


def grid() -> dict:
    thumb = report_page.data_uri(b"\x89PNG fake", "image/png")
    item = lambda i, name: {"path": f"shapes/{i:06d}.png", "label": i % 2, "class_name": name,  # noqa: E731
                            "width": 32, "height": 32, "thumb": thumb}
    return {"queries": 1, "neighbours": 2, "methods": ["pretrained", "infuse"],
            "sets": [{"name": "shapes", "domain": "out", "dataset": "web", "split": "test", "subset": "shapes",
                      "gallery_split": "test", "queries": [0],
                      "results": {"infuse": [[{"id": 1, "score": 0.8, "hit": False},
                                              {"id": 2, "score": 0.7, "hit": True}]],
                                  "pretrained": [[{"id": 2, "score": 0.9, "hit": True},
                                                  {"id": 1, "score": 0.5, "hit": False}]]},
                      "items": {"0": item(0, "red circle"), "1": item(1, "blue star"), "2": item(2, "red circle")}}]}


def test_page_inlines_figures_escapes_html_and_references_nothing_outside() -> None:
    assert report_page.image_sources(MARKDOWN) == ["fig1_deltas.png", "missing.png"]
    figure = report_page.data_uri(b"png bytes", "image/png")
    page = report_page.render("Results: tiny", MARKDOWN, {"fig1_deltas.png": figure}, grid())
    assert page.count("<table") == 1 + 1  # the summary table and one query's neighbour table
    assert f'src="{figure}"' in page and "[figure missing.png not found]" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # raw HTML in the markdown is text
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:") for s in sources), sources
    assert "<td>infuse</td>" in page and "<td>+5.32</td>" in page


def test_neighbour_grid_shows_every_method_with_class_names_and_hits() -> None:
    html = report_page.neighbours_html(grid())
    rows = [html.index(f'<th class="method">{method}</th>') for method in ("pretrained", "infuse")]
    assert rows == sorted(rows)  # the methods' order, not the JSON record's key order
    assert html.count('class="hit"') == 2 and html.count('class="miss"') == 2
    assert html.count("red circle") >= 3 and "blue star" in html and "0.900" in html
    assert 'rowspan="2"' in html  # the query is shown once for both methods
    assert 'title="shapes/000001.png"' in html
