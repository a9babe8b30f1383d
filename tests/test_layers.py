"""The package's imports point only down its layers (see the design notes).

Read from the source with ``ast``, so the check needs no import to run and
also covers imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "detlearn"
# Layer of each module, bottom first; a module may import only from lower layers
# (and, inside a subpackage, from its sibling modules).
LAYERS = {
    "detlearn._checks": 0,
    "detlearn._kernels": 0,
    "detlearn.boxes": 1,
    "detlearn.anchors": 2,
    "detlearn.losses": 2,
    "detlearn.nms": 2,
    "detlearn.roi": 2,
    "detlearn.windows": 3,
    "detlearn.data": 3,
    "detlearn.coco_data": 2,  # below data, which re-exports its names
    "detlearn.evaluate": 3,
    "detlearn.viz": 3,
    "detlearn.models": 4,
    "detlearn.distributed": 5,
    "detlearn.train": 6,
    "detlearn.__main__": 7,
}
PACKAGES = ("detlearn._kernels", "detlearn.evaluate", "detlearn.models")


def inside(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or one of its submodules."""
    return module == package or module.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of ``module`` (a submodule lies in its package's layer)."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise KeyError(f"{module} has no layer: add it to LAYERS")


def imported_modules(path: Path) -> set[str]:
    """The detlearn modules that one file imports (``from detlearn import x`` gives detlearn.x)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("detlearn")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "detlearn":  # from detlearn import boxes, _checks
                found |= {f"detlearn.{alias.name}" for alias in node.names}
            elif base.startswith("detlearn"):
                found.add(base)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path):
    module = module_name(path)
    if module == "detlearn":  # the package's __init__ only names things
        return
    for imported in imported_modules(path):
        same_package = any(
            inside(module, package) and inside(imported, package) for package in PACKAGES
        )
        assert same_package or layer(imported) < layer(module), f"{module} imports {imported}"


def test_the_layer_check_sees_imports():
    detector = PACKAGE / "models" / "detector.py"
    assert {"detlearn.boxes", "detlearn.nms", "detlearn._checks"} <= imported_modules(detector)
    assert layer("detlearn.models.detector") == 4
