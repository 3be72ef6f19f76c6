"""Shared test fixtures.

Everything a test reads lives in the repository: ``tests/data/`` (the original release's small
snapshot fixture, Slicer's markups schema) and the package (the KNEEL annotation CSV), so a fresh
clone runs every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def release_fixture_dir() -> Path:
    """Snapshots in the original release's format, made by its code (width 8; README there)."""
    return TEST_DATA / "kneel_original_snapshot_small"


@pytest.fixture(scope="session")
def markups_schema() -> dict:
    return json.loads((TEST_DATA / "slicer" / "markups-schema-v1.0.3.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def kneel_csv_path() -> Path:
    from kneel_monai.data.oai import default_annotation_csv

    return default_annotation_csv()


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


def messages(err: BaseException) -> str:
    """The messages of an exception and of everything it was raised from (a config expression wraps them)."""
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(out)
