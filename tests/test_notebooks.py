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
