"""Fail the book build when a notebook's stored outputs contain an error.

Notebooks are not executed by the build (their stored outputs are the truth),
so a cell that raised when the notebook was last run would otherwise be
published as a traceback. Each such cell becomes a Sphinx warning, which
``jupyter-book build -W`` turns into a failed build.
"""

from __future__ import annotations

import json

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def error_outputs(notebook: dict) -> list[tuple[int, str]]:
    """``(code cell number from 1, "Name: message")`` for every stored error output."""
    found = []
    code_cells = (
        cell for cell in notebook.get("cells", []) if cell.get("cell_type") == "code"
    )
    for number, cell in enumerate(code_cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append((number, f"{output.get('ename')}: {output.get('evalue')}"))
    return found


def check_source(app: Sphinx, docname: str, source: list[str]) -> None:
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    for number, error in error_outputs(json.loads(source[0])):
        logger.warning(
            "code cell %d stored an error: %s", number, error, location=docname
        )


def setup(app: Sphinx) -> dict:
    app.connect("source-read", check_source)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
