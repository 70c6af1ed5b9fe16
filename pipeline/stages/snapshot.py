"""`python -m pipeline snapshot [--page reports/report.html] [--out reports/report.png]`.

Opens the report page in a real headless Chromium (driven by Playwright), checks that it renders
offline (no console error, no failed request, no request leaving the page, every image decoded, the
tables present) and saves a full-page screenshot. Chromium is the system's (the Debian package
`chromium`, or the browser named by the environment variable CHROMIUM): Playwright's own browser
download is not needed.
"""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import io as pio
from pipeline import paths
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """$CHROMIUM, else the first Chromium-family browser on PATH."""
    candidates = [os.environ.get("CHROMIUM")] + [shutil.which(name) for name in BROWSERS]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@dataclass
class PageCheck:
    """What a browser saw opening the page."""
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)  # anything but the page file and data: URIs
    tables: int = 0
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def problems(self) -> list[str]:
        return ([f"console error: {e}" for e in self.console_errors]
                + [f"failed request: {r}" for r in self.failed_requests]
                + [f"request outside the page: {r}" for r in self.outside_requests]
                + [f"image not decoded: {i}" for i in self.broken_images]
                + (["no table on the page"] if not self.tables else []))


def open_page(page_file: Path, screenshot: Path | None = None, width: int = 1280) -> PageCheck:
    """Load `page_file` in headless Chromium, record what happened, optionally save a screenshot."""
    from playwright.sync_api import sync_playwright

    if not page_file.is_file():
        raise FileNotFoundError(f"missing page {page_file}: run the report stage (`dvc repro`) first")
    browser_path = find_chromium()
    if browser_path is None:
        raise RuntimeError("no Chromium found: install the Debian package (`apt-get install chromium`) or set "
                           "CHROMIUM=/path/to/chromium")
    url = page_file.resolve().as_uri()
    check = PageCheck()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda msg: check.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda err: check.console_errors.append(str(err)))
            page.on("requestfailed", lambda req: check.failed_requests.append(f"{req.url[:120]} ({req.failure})"))
            page.on("request", lambda req: None if req.url == url or req.url.startswith("data:")
                    else check.outside_requests.append(req.url[:200]))
            page.goto(url, wait_until="load")
            check.tables = page.locator("table").count()
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete && e.naturalWidth > 0, "
                                                      "e.getAttribute('alt') || ''])")
            check.images = len(images)
            check.broken_images = [alt for ok, alt in images if not ok]
            check.text = page.inner_text("body")
            if screenshot is not None:
                with pio.atomic_path(screenshot) as tmp:
                    page.screenshot(path=str(tmp), full_page=True, type="png")
        finally:
            browser.close()
    return check


def main(args: argparse.Namespace) -> None:
    page, out = Path(args.page or paths.report_html()), Path(args.out or paths.screenshot())
    check = open_page(page, out)
    print(f"[snapshot] {page}: {check.tables} tables, {check.images} images, {len(check.problems)} problems; "
          f"screenshot {out}")
    if check.problems:
        raise RuntimeError(f"{page} does not render cleanly: " + "; ".join(check.problems[:5]))
