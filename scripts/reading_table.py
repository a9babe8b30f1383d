"""Print the introduction's table of reading times from the chapters' main-path words.

Usage: python scripts/reading_table.py   (paste the table into book/intro.md;
tests/test_notebooks.py checks that the table and the chapters agree)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    spec = importlib.util.spec_from_file_location("bench_book", ROOT / "benchmarks/bench_book.py")
    bench_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_book)
    print("| chapter | title | reading |")
    print("| ---: | --- | ---: |")
    # Numbered chapters only (NN_name.ipynb); the number is the file's prefix.
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        number = int(path.name[:2])
        notebook = nbformat.read(path, as_version=4)
        title = json.loads(path.read_text())["cells"][0]["source"][0].lstrip("# ").strip()
        words = bench_book.main_path_words(notebook)
        minutes = max(5, 5 * round(words / 100 / 5))
        print(f"| {number} | [{title}]({path.name}) | {minutes} min |")


if __name__ == "__main__":
    main()
