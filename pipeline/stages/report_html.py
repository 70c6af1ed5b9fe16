"""The `report` stage's page: `reports/report.html`, the written report as one self-contained file.

The page is `reports/report.md` rendered (its tables and figures, the figures inlined) followed by
the neighbour grids of every method and evaluation set (`data/neighbours/neighbours.json`). It
needs no network and no other file: open it in any browser, or check it and take a screenshot with
`python -m pipeline snapshot`.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import io as pio
from pipeline import paths
from pipeline.config import Params
from pipeline.lib import report_page

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def figure_uris(markdown_text: str, folder: Path = paths.REPORTS) -> dict[str, str]:
    """The figures the markdown references (paths relative to the report), as data URIs."""
    out = {}
    for src in report_page.image_sources(markdown_text):
        file = folder / src
        if file.is_file() and file.suffix.lower() in MIME:
            out[src] = report_page.data_uri(file.read_bytes(), MIME[file.suffix.lower()])
    return out


def write_page(params: Params, markdown_text: str, dest: Path | None = None) -> None:
    """Render the page from the report's markdown, its figures and the neighbour grids."""
    grid_file = paths.neighbour_grid()
    grid = pio.read_json(grid_file) if grid_file.is_file() else None
    page = report_page.render(f"Results: {params.experiment}", markdown_text, figure_uris(markdown_text), grid)
    with pio.atomic_path(dest or paths.report_html()) as tmp:
        tmp.write_text(page, encoding="utf-8")
