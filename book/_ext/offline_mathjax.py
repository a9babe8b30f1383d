"""Serve MathJax from the built site itself, so math renders without internet.

MathJax 3 comes from the PyPI package ``django-static-mathjax`` (plain static
files, no Django needed), installed with the book's extras. After an HTML build
its ``es5`` folder is copied to ``_static/mathjax``; ``mathjax_path`` in
``_config.yml`` points there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def mathjax_es5_folder() -> Path:
    """The installed MathJax ``es5`` folder (the one holding ``tex-chtml.js``)."""
    import mathjax  # the module shipped by django-static-mathjax

    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (folder / "tex-chtml.js").is_file():
        raise ExtensionError(f"MathJax not found at {folder}; install the book extras")
    return folder


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    shutil.copytree(mathjax_es5_folder(), target, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    mathjax_es5_folder()  # fail early, before a long build, if it is missing
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
