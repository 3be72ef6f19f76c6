"""Shared test fixtures.

The original release's snapshot fixtures live in the project's ``shared/`` folder beside the
checkout (set ``KNEEL_SHARED_DIR`` to point elsewhere). Without it those tests skip — except
under CI, where a missing ``shared/`` is an error rather than a silent skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("KNEEL_SHARED_DIR", REPO_ROOT.parent / "shared"))


def require_shared(relative: str, check: str | None = None) -> Path:
    """A file or folder of ``shared/``: skip without it, fail under CI (where it must be there)."""
    path = shared_dir() / relative
    if not (path / check if check else path).exists():
        message = f"{path} not found (set KNEEL_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def release_fixture_dir() -> Path:
    return require_shared("fixtures/kneel_original_snapshot", check="hc/session.pkl")


@pytest.fixture(scope="session")
def markups_schema() -> dict:
    return json.loads(require_shared("slicer/markups-schema-v1.0.3.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def kneel_csv_path() -> Path:
    return require_shared("data/kneel_oai_landmarks_0.3mm.csv")



@pytest.fixture(scope="module", autouse=True)
def torch_threads(request):
    """Torch threads for a test module that sets ``TORCH_THREADS`` (others keep the default).

    Width-8 test networks gain nothing from threads, and 2 threads beside another busy process are
    far slower; the shipped models' tests want both cores.
    """
    wanted = getattr(request.module, "TORCH_THREADS", None)
    if wanted is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    yield
    torch.set_num_threads(before)
