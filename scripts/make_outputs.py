"""Regenerate the stored outputs of the book's notebooks, deterministically.

Usage: python scripts/make_outputs.py [NOTEBOOK ...]   (default: every book/*.ipynb)

Each notebook is executed top to bottom with nbclient in the current environment,
then normalised so that two runs give byte-identical files: no execution timing,
no kernel metadata beyond the name, execution counts renumbered 1, 2, ...;
cell ids are kept as authored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNEL_SPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def normalise(nb: nbformat.NotebookNode) -> None:
    """Strip the metadata that changes from run to run, in place."""
    nb.metadata = {"kernelspec": KERNEL_SPEC, "language_info": {"name": "python"}}
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = merge_streams(cell.outputs)
        for output in cell.outputs:
            if "execution_count" in output:
                output.execution_count = count


def merge_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same name: how a kernel splits a print into
    messages depends on timing, so unmerged streams would differ from run to run."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.output_type == "stream"
            and previous is not None
            and previous.output_type == "stream"
            and previous.name == output.name
        ):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def run_notebook(path: Path, timeout: int = 600) -> float:
    """Execute one notebook in its own folder and write it back normalised; returns seconds."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    normalise(nb)
    text = nbformat.writes(nb, version=4)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    for path in notebooks:
        seconds = run_notebook(path.resolve())
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
