"""Emit each inline ``<script>`` only once per page.

sphinx-thebe and sphinx-togglebutton (added by Jupyter Book) register inline
scripts after the HTML builder exists; with Sphinx 7.4 each then appears twice
on every page (once with file ``None``, once with file ``""``, so Sphinx's own
de-duplication misses it). The second ``const THEBE_JS_URL = ...`` throws
"Identifier 'THEBE_JS_URL' has already been declared" in the browser console.
This extension drops repeated scripts (same file, same inline body) from each
page's context before the page is rendered.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _key(script) -> tuple:
    """(file, inline body); an inline script's file is None or "" depending on
    how it was added."""
    attributes = getattr(script, "attributes", None) or {}
    return (str(getattr(script, "filename", script) or ""), attributes.get("body", ""))


def drop_repeated_scripts(
    app: Sphinx, pagename, templatename, context, doctree
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = (
        unique  # in place: it may be the builder's own list, reset for every page
    )


def setup(app: Sphinx) -> dict:
    # Late, after the other extensions (MathJax, for one) have added their
    # scripts to the page.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
