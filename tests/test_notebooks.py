"""The chapters' stored outputs, read as files: what nbval compares must repeat on any machine.

nbval re-executes every chapter and compares its text outputs with the stored
ones. The last bits of ``exp``, ``log`` and of summation orders differ between
CPUs and math libraries, so an unrounded float (``14.000001907348633`` on one
machine, ``14.0`` on another) in a compared output breaks the book for some
readers. These checks read the notebooks without running them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
# Cells whose outputs nbval does not compare.
UNCOMPARED_TAGS = {"nbval-ignore-output", "nbval-skip", "raises-exception"}
# A float printed with more than six digits after the point: a raw repr, not a rounded print.
LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:e[-+]?\d+)?")
# Text outputs that nbval compares (images are not compared).
TEXT_KEYS = ("text/plain", "text/markdown", "text/html")


def compared_texts(notebook: Path) -> list[tuple[int, str]]:
    """(cell index, text) of every text output that nbval compares in one notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    texts = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        if UNCOMPARED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        if "# NBVAL_IGNORE_OUTPUT" in "".join(cell["source"]):
            continue
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                texts.append((index, "".join(output["text"])))
            for key in TEXT_KEYS:
                if key in output.get("data", {}):
                    texts.append((index, "".join(output["data"][key])))
    return texts


def test_the_long_float_pattern():
    assert LONG_FLOAT.findall("[14.000001907348633, 2.0] and 0.1234567") == [
        "14.000001907348633",
        "0.1234567",
    ]
    assert LONG_FLOAT.findall("AP 0.123456, 1e-07, 3.5e-05, v0.29.1, 2.14.1") == []


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_compared_outputs_print_floats_rounded(notebook):
    found = [
        f"cell {index}: {match}"
        for index, text in compared_texts(notebook)
        for match in LONG_FLOAT.findall(text)
    ]
    assert not found, f"unrounded floats in compared outputs of {notebook.name}: {found[:10]}"


# --- the introduction's reading times ----------------------------------------------------------

WORDS_PER_MINUTE = 100  # the rate the introduction states
READING_ROW = re.compile(r"^\| *(\d+) *\| *(.+?) *\| *(\d+) min *\|$", re.M)


def load_bench_book():
    """benchmarks/bench_book.py as a module (it counts a chapter's main-path words)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_book", ROOT / "benchmarks/bench_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reading_minutes(words: int) -> int:
    """Minutes to read ``words`` at the stated rate, to the nearest 5 (at least 5)."""
    return max(5, 5 * round(words / WORDS_PER_MINUTE / 5))


def test_the_introduction_states_each_chapters_reading_time():
    import nbformat

    bench_book = load_bench_book()
    rows = READING_ROW.findall((ROOT / "book" / "intro.md").read_text(encoding="utf-8"))
    numbered = [path for path in CHAPTERS if path.name[:2].isdigit()]
    assert [int(number) for number, _, _ in rows] == [int(path.name[:2]) for path in numbered]
    for (number, _, minutes), path in zip(rows, numbered, strict=True):
        words = bench_book.main_path_words(nbformat.read(path, as_version=4))
        assert int(minutes) == reading_minutes(words), f"chapter {number}: {words} words"
        assert words <= bench_book.MAX_WORDS, f"{path.name} has {words} words on its main path"
