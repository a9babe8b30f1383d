"""Tidy the API reference (book/api.md) that autodoc builds from detlearn's docstrings.

A ``NamedTuple``'s fields are properties whose docstring is "Alias for field
number N". detlearn documents the fields in the class docstring instead (a
Google-style ``Attributes:`` section, which napoleon turns into entries of
their own), so autodoc's copies would describe every field twice: a duplicate
object description, which fails the ``-W`` build. They are skipped here.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def skip_namedtuple_field_aliases(app: Sphinx, what, name, obj, skip, options):
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None  # let autodoc decide


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-skip-member", skip_namedtuple_field_aliases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
