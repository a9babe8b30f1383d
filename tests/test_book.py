"""The book as a reader sees it: build it with -W, then open every page in Chromium.

The build runs into a temporary folder so it never touches `_build/`. The pages
are served from 127.0.0.1 and every request to any other host is aborted, so the
checks also prove that the site works offline.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Pages Sphinx generates besides the book's own; they are checked separately or not at all.
GENERATED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


@pytest.fixture(scope="session")
def html_dir(tmp_path_factory) -> Path:
    """Build the book with warnings as errors; return the folder holding index.html."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"jupyter-book build failed:\n{log[-5000:]}"
    assert "WARNING" not in log, f"the build printed warnings:\n{log[-5000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def site(html_dir):
    """Serve the built book on an ephemeral localhost port; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def book_pages(html_dir: Path) -> list[str]:
    """Paths (relative to the site root) of the index and every page of the book."""
    pages = sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").glob("*.html"))
    return ["index.html", *pages]


class PageVisit:
    """Opens one page offline and records console errors and blocked requests."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context()
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._only_localhost)
        self.page = self.context.new_page()
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.base_url = base_url

    def _only_localhost(self, route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _on_console(self, message):
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, path: str):
        self.page.goto(f"{self.base_url}/{path}", wait_until="load")
        self.page.wait_for_load_state("networkidle")
        return self.page

    def close(self):
        self.context.close()


def broken_images(page) -> list[str]:
    return page.evaluate(
        "() => Array.from(document.images)"
        ".filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src)"
    )


def test_book_builds_and_every_page_renders(html_dir, site, browser):
    pages = book_pages(html_dir)
    assert len(pages) >= 3, f"expected the index and at least two pages, found {pages}"
    problems = []
    for path in pages:
        visit = PageVisit(browser, site)
        try:
            page = visit.open(path)
            heading = page.locator("main h1").first
            if not heading.count() or not heading.inner_text().strip():
                problems.append(f"{path}: no title heading")
            elif heading.inner_text().strip(" #¶") not in page.title():
                problems.append(f"{path}: <title> {page.title()!r} lacks {heading.inner_text()!r}")
            if not page.locator("nav.bd-docs-nav a").count():
                problems.append(f"{path}: no sidebar navigation")
            problems += [f"{path}: image did not load: {src}" for src in broken_images(page)]
            problems += [f"{path}: console error: {text}" for text in visit.errors]
            problems += [f"{path}: requested a remote URL: {url}" for url in visit.blocked]
        finally:
            visit.close()
    assert not problems, "\n".join(problems)

