"""Where the shared email corpus lies, for the tests that read it (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def need_corpus() -> Path:
    """The corpus folder; skip without it, but fail in CI, where it must be."""
    if CORPUS.is_dir():
        return CORPUS
    if os.environ.get("CI") == "true":
        pytest.fail(f"the shared email corpus is required in CI (CI=true): {CORPUS}")
    pytest.skip(f"the shared email corpus is not at {CORPUS}")
