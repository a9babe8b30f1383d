"""Root pytest configuration: point nbval at the sanitize file by absolute path,
so `pytest --nbval` gives the same result from any working directory."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests never open windows

ROOT = Path(__file__).resolve().parent


def pytest_configure(config):
    if getattr(config.option, "nbval_sanitize_with", None) is None:
        config.option.nbval_sanitize_with = str(ROOT / "nbval_sanitize.cfg")
