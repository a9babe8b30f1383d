"""Reading length and running time of every chapter: a markdown table.

Run by hand (not part of the test suite):

    python benchmarks/bench_book.py                    # every chapter, about 8 minutes
    python benchmarks/bench_book.py --words            # words only, no execution
    python benchmarks/bench_book.py book/03_boxes.ipynb

Words are counted in the markdown cells of a chapter's main path: everything up
to its "Exercises" section, without the sections whose title starts with
"Going further" or "Under the hood" (optional reading). At about 120 words a
minute for technical prose read with its code, 2,500 words is a 30-45 minute
chapter. Running time is the chapter executed top to bottom in a fresh kernel
with two threads (the book's CI machine has two cores), outputs discarded.

Targets: at most 2,500 words on the main path; at most 120 s per chapter.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
MAX_WORDS = 2500
MAX_SECONDS = 120
OPTIONAL_TITLE = re.compile(r"^(going further|under the hood)", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6}) +(.+)$", re.M)
# Words of prose: MyST directives' option lines and fences are not prose.
DIRECTIVE_LINE = re.compile(r"^(`{3,}|:\w+:).*$", re.M)


def main_path_words(notebook: nbformat.NotebookNode) -> int:
    """Words of the markdown on a chapter's main path (see the module docstring).

    An optional section lasts until the next heading of its own level or above.
    """
    words = 0
    optional_level = None  # heading level of the optional section being skipped
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        headings = HEADING.findall(cell.source)
        if any(
            level == "##" and title.lower().startswith("exercises") for level, title in headings
        ):
            break
        for level, title in headings:
            if optional_level is not None and len(level) <= optional_level:
                optional_level = None
            if optional_level is None and OPTIONAL_TITLE.match(title):
                optional_level = len(level)
        if optional_level is None:
            prose = DIRECTIVE_LINE.sub("", cell.source)
            words += len(re.findall(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*", prose))
    return words


def run_seconds(path: Path) -> float:
    """Execute one chapter in a fresh kernel (outputs discarded); returns seconds."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb")
    parser.add_argument("--words", action="store_true", help="count words only, run nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    print("| chapter | words (main path) | seconds (2 threads) |")
    print("| --- | ---: | ---: |")
    over = 0
    for path in notebooks:
        words = main_path_words(nbformat.read(path, as_version=4))
        seconds = None if args.words else run_seconds(path.resolve())
        over += words > MAX_WORDS or (seconds is not None and seconds > MAX_SECONDS)
        shown = "-" if seconds is None else f"{seconds:.0f}"
        print(f"| {path.stem} | {words:,} | {shown} |", flush=True)
    print(f"\n{over} chapter(s) over {MAX_WORDS:,} words or {MAX_SECONDS} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
