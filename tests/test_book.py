"""The book as a reader sees it: build it with -W, then open every page in Chromium.

The build runs into a temporary folder so it never touches `_build/`. The pages
are served from 127.0.0.1 and every request to any other host is aborted, so the
checks also prove that the site works offline.

Every page is opened once (the session fixture `reports`), and what the browser
saw is recorded; the tests below then each check one property over all pages.
The search page is opened once more with a query. Screenshots of the intro and
of a chapter page are saved to `<html dir>/_screenshots/` for a human to look at.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

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
# Pages Sphinx generates besides the book's own: checked for errors, images and links only.
GENERATED_PAGES = ["genindex.html", "search.html", "py-modindex.html"]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOT_DIR = "_screenshots"
# The anchors chapter and the query that must find it (chapter 6).
SEARCH_QUERY = "anchor"
SEARCH_EXPECTED = "book/06_anchors.html"
# TeX delimiters that MathJax replaces; any left in the visible text was not typeset.
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
# Repository and launch buttons on a chapter made from a notebook.
REPOSITORY = "https://github.com/detlearn/detlearn"
LAUNCH_SERVICES = {"Binder": "mybinder.org", "Colab": "colab.research.google.com"}


# --- the build and the server ----------------------------------------------------------------


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


# --- which pages there are ---------------------------------------------------------------------


def book_pages(html_dir: Path) -> list[str]:
    """Paths (relative to the site root) of the book's own pages, from book/*.html."""
    return sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").glob("*.html"))


def all_pages(html_dir: Path) -> list[str]:
    """Every HTML page of the site: the index, the book's pages and Sphinx's generated pages."""
    generated = [name for name in GENERATED_PAGES if (html_dir / name).is_file()]
    return ["index.html", *book_pages(html_dir), *generated]


def chapter_pages(html_dir: Path) -> list[str]:
    """Book pages made from a notebook (their source copy in _sources/ is an .ipynb)."""
    return [
        path
        for path in book_pages(html_dir)
        if (html_dir / "_sources" / Path(path).with_suffix(".ipynb")).is_file()
    ]


def math_in_source(html_file: Path) -> int:
    """Number of math elements Sphinx wrote into a page (MathJax typesets each one)."""
    return html_file.read_text(encoding="utf-8").count('class="math notranslate nohighlight"')


# --- one visit per page ------------------------------------------------------------------------


class PageVisit:
    """Opens one page offline and records console errors and blocked requests."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(viewport=VIEWPORT)
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


# JavaScript run in each page once it has loaded.
WAIT_FOR_MATHJAX = """async () => {
    const mj = window.MathJax;
    if (!(mj && mj.startup && mj.startup.promise)) return false;
    await mj.startup.promise;
    return true;
}"""
WAIT_FOR_IMAGES = """async () => {
    const images = Array.from(document.images);
    images.forEach(img => { img.loading = "eager"; });
    await Promise.all(images.filter(img => !img.complete).map(img => new Promise(done => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
    })));
}"""
COLLECT = """() => {
    const main = document.querySelector("main") || document.body;
    const prose = main.cloneNode(true);
    prose.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight")
        .forEach(e => e.remove());
    const shown = e => {
        const style = getComputedStyle(e);
        return style.display !== "none" && style.visibility !== "hidden"
            && e.getBoundingClientRect().height > 0;
    };
    const solutions = Array.from(document.querySelectorAll("main .solution"));
    return {
        url: location.href,
        title: document.title,
        heading: (document.querySelector("main h1") || {innerText: ""}).innerText.trim(),
        sidebarLinks: document.querySelectorAll("nav.bd-docs-nav a").length,
        images: Array.from(document.images).map(img => img.src),
        brokenImages: Array.from(document.images)
            .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src),
        links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
        mjx: document.querySelectorAll("mjx-container").length,
        mjxErrors: Array.from(document.querySelectorAll("mjx-merror"))
            .map(e => e.getAttribute("data-mjx-error") || e.textContent),
        proseText: prose.textContent,
        solutions: solutions.length,
        openSolutions: solutions.filter(s => Array.from(s.children)
            .some(c => !c.classList.contains("admonition-title")
                       && !c.classList.contains("toggle-button") && shown(c))).length,
    };
}"""


@dataclass
class PageReport:
    """What the browser saw on one page."""

    path: str
    url: str = ""
    title: str = ""
    heading: str = ""
    sidebar_links: int = 0
    images: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    math_expected: int = 0
    mathjax_ran: bool = False
    mjx: int = 0
    mjx_errors: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    solutions: int = 0
    open_solutions: int = 0


def raw_tex_snippets(text: str) -> list[str]:
    """Short excerpts around each TeX delimiter left in the text."""
    return [
        " ".join(text[max(m.start() - 30, 0) : m.end() + 30].split())
        for m in RAW_TEX.finditer(text)
    ][:5]


def screenshot_targets(html_dir: Path) -> dict[str, str]:
    """Which pages to photograph: the intro and the first chapter made from a notebook."""
    targets = {"book/intro.html": "intro.png"}
    chapters = chapter_pages(html_dir)
    if chapters:
        targets[chapters[0]] = "chapter.png"
    return targets


def take_screenshots(page, folder: Path, name: str) -> None:
    """The top of the page as `name`; its exercises section, when it has one, beside it."""
    page.screenshot(path=str(folder / name))
    exercises = page.locator("section#exercises")
    if exercises.count():
        exercises.first.screenshot(path=str(folder / name.replace(".png", "-exercises.png")))


@pytest.fixture(scope="session")
def reports(html_dir, site, browser) -> dict[str, PageReport]:
    """Open every page once in Chromium; return what was seen, by page path."""
    from playwright.sync_api import Error as PlaywrightError

    shots = screenshot_targets(html_dir)
    (html_dir / SCREENSHOT_DIR).mkdir(exist_ok=True)
    seen: dict[str, PageReport] = {}
    for path in all_pages(html_dir):
        report = PageReport(path=path, math_expected=math_in_source(html_dir / path))
        visit = PageVisit(browser, site)
        try:
            page = visit.open(path)
            if path == "index.html":  # a redirect to the intro; wait until it has happened
                page.wait_for_url("**/book/intro.html")
                page.wait_for_load_state("networkidle")
            report.mathjax_ran = page.evaluate(WAIT_FOR_MATHJAX)
            page.evaluate(WAIT_FOR_IMAGES)
            data = page.evaluate(COLLECT)
            if path in shots:
                take_screenshots(page, html_dir / SCREENSHOT_DIR, shots[path])
        except PlaywrightError as exc:  # recorded, so that one bad page does not hide the rest
            report.errors = [*visit.errors, f"the browser could not open the page: {exc}"]
            seen[path] = report
            continue
        finally:
            visit.close()
        report.url = data["url"]
        report.title = data["title"]
        report.heading = data["heading"]
        report.sidebar_links = data["sidebarLinks"]
        report.images = data["images"]
        report.broken_images = data["brokenImages"]
        report.links = data["links"]
        report.errors = visit.errors
        report.blocked = visit.blocked
        report.mjx = data["mjx"]
        report.mjx_errors = data["mjxErrors"]
        report.raw_tex = raw_tex_snippets(data["proseText"])
        report.solutions = data["solutions"]
        report.open_solutions = data["openSolutions"]
        seen[path] = report
    return seen


def fail_if(problems: list[str], what: str) -> None:
    assert not problems, f"{len(problems)} {what}:\n" + "\n".join(problems)


# --- the checks ----------------------------------------------------------------------------------


def test_the_book_has_pages(html_dir):
    pages = book_pages(html_dir)
    assert "book/intro.html" in pages, f"no book/intro.html in the build; pages: {pages}"
    assert len(pages) >= 3, f"expected the intro and at least two more pages, found {pages}"


def test_every_page_has_a_title_and_the_sidebar(reports):
    problems = []
    for path, report in reports.items():
        if path in GENERATED_PAGES:
            continue
        if path == "index.html" and not report.url.endswith("/book/intro.html"):
            problems.append(f"index.html: did not redirect to book/intro.html, got {report.url}")
        if not report.heading:
            problems.append(f"{path}: no <h1> title heading in <main>")
        elif report.heading.strip(" #¶") not in report.title:
            problems.append(
                f"{path}: <title> {report.title!r} lacks its heading {report.heading!r}"
            )
        if not report.sidebar_links:
            problems.append(f"{path}: no sidebar navigation (nav.bd-docs-nav has no links)")
    fail_if(problems, "pages without a title or sidebar")


def test_no_console_errors_and_no_remote_requests(reports):
    problems = []
    for path, report in reports.items():
        problems += [f"{path}: console error: {text}" for text in report.errors]
        problems += [f"{path}: requested a remote URL (blocked): {url}" for url in report.blocked]
    fail_if(problems, "console errors or remote requests")


def test_every_image_loads(reports):
    problems = [
        f"{path}: image did not load: {src}"
        for path, report in reports.items()
        for src in report.broken_images
    ]
    fail_if(problems, "broken images")


class _Ids(HTMLParser):
    """Collects every id (and <a name=...>) of an HTML page: the targets of #fragments."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


def page_ids(html_file: Path) -> set[str]:
    parser = _Ids()
    parser.feed(html_file.read_text(encoding="utf-8"))
    return parser.ids


def test_every_internal_link_resolves(reports, html_dir, site):
    """Every link to this site names an existing file, and its #fragment an id on that page."""
    host = urlparse(site).netloc
    linked_from: dict[tuple[str, str], set[str]] = {}  # (path, fragment) -> pages linking there
    for path, report in reports.items():
        for href in report.links:
            url = urlparse(href)
            if url.scheme in ("http", "https") and url.netloc == host:
                key = (unquote(url.path).lstrip("/"), unquote(url.fragment))
                linked_from.setdefault(key, set()).add(path)
    assert linked_from, "no internal links found on any page"

    ids_cache: dict[Path, set[str]] = {}
    problems = []
    for (relative, fragment), sources in sorted(linked_from.items()):
        target = html_dir / relative
        if not relative or relative.endswith("/"):
            target = target / "index.html"
        link = relative + (f"#{fragment}" if fragment else "")
        where = ", ".join(sorted(sources)[:3]) + (" ..." if len(sources) > 3 else "")
        if not target.is_file():
            problems.append(f"{link}: no such file (linked from {where})")
            continue
        if fragment and target.suffix == ".html":
            if target not in ids_cache:
                ids_cache[target] = page_ids(target)
            if fragment not in ids_cache[target]:
                problems.append(f"{link}: no id {fragment!r} on that page (linked from {where})")
    fail_if(problems, f"broken internal links (of {len(linked_from)} checked)")


def test_math_is_rendered(reports):
    """On every page with math, MathJax ran, typeset each formula, and left no raw TeX."""
    math_pages = [path for path, report in reports.items() if report.math_expected]
    assert math_pages, "no page contains math: expected some in the intro, chapter 1 and glossary"
    problems = []
    for path, report in reports.items():
        if report.math_expected:
            if not report.mathjax_ran:
                problems.append(f"{path}: has math but MathJax did not load (window.MathJax)")
            elif report.mjx < report.math_expected:
                problems.append(
                    f"{path}: {report.math_expected} formulas but only {report.mjx} "
                    "mjx-container elements: MathJax did not typeset them all"
                )
            problems += [f"{path}: MathJax error: {text}" for text in report.mjx_errors]
        problems += [f"{path}: raw TeX left in the text: ...{s}..." for s in report.raw_tex]
    fail_if(problems, "math problems")


def test_exercise_solutions_start_collapsed(reports):
    problems = [
        f"{path}: {report.open_solutions} of {report.solutions} exercise solutions are open"
        for path, report in reports.items()
        if report.open_solutions
    ]
    fail_if(problems, "pages with solutions shown before the reader asks")


def test_chapters_have_launch_and_repository_buttons(reports, html_dir):
    """A chapter made from a notebook offers Binder and Colab for that notebook, and the repo."""
    chapters = chapter_pages(html_dir)
    assert chapters, "no chapter made from a notebook in the build"
    problems = []
    for path in chapters:
        links = reports[path].links
        notebook = Path(path).with_suffix(".ipynb").as_posix()
        for service, host in LAUNCH_SERVICES.items():
            if not any(host in link and notebook in link for link in links):
                problems.append(f"{path}: no {service} launch link for {notebook}")
        if not any(link.rstrip("/") == REPOSITORY for link in links):
            problems.append(f"{path}: no link to the repository {REPOSITORY}")
    fail_if(problems, "missing launch or repository buttons")


def test_screenshots_were_written(reports, html_dir):
    """The intro and a chapter are photographed (for a human to look at) during the visits."""
    problems = []
    for path, name in screenshot_targets(html_dir).items():
        shot = html_dir / SCREENSHOT_DIR / name
        if path not in reports:
            problems.append(f"{path} was not visited, so {name} was not taken")
        elif not shot.is_file() or shot.stat().st_size < 10_000:
            problems.append(f"{shot}: missing or nearly empty")
        elif shot.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            problems.append(f"{shot}: not a PNG file")
    assert len(screenshot_targets(html_dir)) == 2, "no chapter page to photograph"
    fail_if(problems, "screenshot problems")


def test_search_finds_the_anchors_chapter(html_dir, site, browser):
    assert (html_dir / SEARCH_EXPECTED).is_file(), (
        f"{SEARCH_EXPECTED} is not in the build, so searching for {SEARCH_QUERY!r} cannot "
        f"find it: add the anchors chapter ({Path(SEARCH_EXPECTED).with_suffix('')}) to _toc.yml"
    )
    visit = PageVisit(browser, site)
    try:
        page = visit.open(f"search.html?q={SEARCH_QUERY}")
        page.wait_for_function(
            "() => { const h = document.querySelector('#search-results h2');"
            " return h && h.textContent.startsWith('Search Results'); }",
            timeout=30_000,
        )
        summary = page.locator("#search-results p.search-summary").inner_text()
        results = page.eval_on_selector_all(
            "#search-results ul.search li a", "links => links.map(a => a.href)"
        )
        errors = visit.errors
    finally:
        visit.close()
    assert not errors, "console errors on the search page:\n" + "\n".join(errors)
    found = sorted({urlparse(href).path.lstrip("/") for href in results})
    assert SEARCH_EXPECTED in found, (
        f"search for {SEARCH_QUERY!r} did not list {SEARCH_EXPECTED} ({summary!r}); "
        f"results: {found}"
    )
