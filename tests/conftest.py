"""Shared test fixtures.

The original release's snapshot fixtures live in the project's ``shared/`` folder beside the
checkout (set ``KNEEL_SHARED_DIR`` to point elsewhere). Without it those tests skip — except
under CI, where a missing ``shared/`` is an error rather than a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("KNEEL_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def release_fixture_dir() -> Path:
    folder = shared_dir() / "fixtures" / "kneel_original_snapshot"
    if not (folder / "hc" / "session.pkl").is_file():
        message = f"release snapshot fixtures not found at {folder} (set KNEEL_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder

