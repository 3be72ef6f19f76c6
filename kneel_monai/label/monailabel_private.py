"""The parts of MONAI Label that are not its public API but that the app relies on — one list, checked.

MONAI Label gives no hook for what the app needs (an index changed under one lock, a training start
checked before its background run, no run-time download of dcmqi), so the app overrides or calls
these private names. They may change in any MONAI Label release: importing the app's MONAI Label side
checks the installed version and that every name below exists, and fails loudly (ImportError naming
what is missing) rather than misbehaving quietly.

Who uses what:

* :class:`kneel_monai.label.datastore.LockedIndex` overrides ``LocalDatastore``'s index methods and
  uses its private attributes;
* :func:`kneel_monai.label.server.check_training_starts` wraps ``AsyncTask.run``
  (:func:`wrap_async_task_run`);
* the app (``monailabel_app/main.py``) replaces ``MONAILabelApp._download_dcmqi_tools``
  (:class:`NoRuntimeDownloads`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

__all__ = ["SUPPORTED_MONAILABEL", "PRIVATE_NAMES", "check_monailabel", "wrap_async_task_run", "NoRuntimeDownloads"]

logger = logging.getLogger(__name__)

#: the MONAI Label release these private names were read from (and the tests run against)
SUPPORTED_MONAILABEL = "0.8.5"

#: (module, class, attribute) the app overrides, calls or reads
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    ("monailabel.datastore.local", "LocalDatastore", "_init_from_datastore_file"),
    ("monailabel.datastore.local", "LocalDatastore", "_update_datastore_file"),
    ("monailabel.datastore.local", "LocalDatastore", "_reconcile_datastore"),
    ("monailabel.datastore.local", "LocalDatastore", "_on_any_event"),
    ("monailabel.datastore.local", "LocalDatastore", "_filename"),
    ("monailabel.datastore.local", "LocalDatastore", "_to_id"),
    ("monailabel.datastore.local", "LocalDatastore", "_list_files"),
    ("monailabel.utils.async_tasks.task", "AsyncTask", "run"),
    ("monailabel.interfaces.app", "MONAILabelApp", "_download_dcmqi_tools"),
)


def check_monailabel() -> None:
    """ImportError unless the installed MONAI Label is the supported release and has every private name."""
    import importlib

    try:
        installed = version("monailabel")
    except PackageNotFoundError:
        raise ImportError("MONAI Label is not installed: pip install --no-deps "
                          f"monailabel=={SUPPORTED_MONAILABEL} (see docs/label.md)") from None
    if installed != SUPPORTED_MONAILABEL:
        raise ImportError(f"MONAI Label {installed} is installed; the app relies on private parts of "
                          f"{SUPPORTED_MONAILABEL} (kneel_monai/label/monailabel_private.py): install "
                          f"monailabel=={SUPPORTED_MONAILABEL}, or check those names against {installed} first")
    missing = []
    for module, cls, attribute in PRIVATE_NAMES:
        owner = getattr(importlib.import_module(module), cls, None)
        if owner is None or not hasattr(owner, attribute):
            missing.append(f"{module}.{cls}.{attribute}")
    if missing:
        raise ImportError(f"MONAI Label {installed} lacks what the app relies on: {', '.join(missing)}")


def wrap_async_task_run(check: Callable[..., tuple | None], marker: str) -> None:
    """Run ``check(method, request, params, force_sync, enqueue)`` before MONAI Label's ``AsyncTask.run``
    (what its endpoints call to start a task); a non-None answer is returned instead of starting it.
    Idempotent per ``marker``."""
    from monailabel.utils.async_tasks import task as async_task

    original = async_task.AsyncTask.run
    if getattr(original, marker, False):
        return

    def run(method, request=None, params=None, force_sync=False, enqueue=False):
        answer = check(method, request, params, force_sync, enqueue)
        if answer is not None:
            return answer
        return original(method, request=request, params=params, force_sync=force_sync, enqueue=enqueue)

    setattr(run, marker, True)
    async_task.AsyncTask.run = staticmethod(run)


class NoRuntimeDownloads:
    """Mixin for the ``MONAILabelApp``: MONAI Label fetches dcmqi (DICOM SEG conversion) from the internet
    when the studies are DICOMweb; landmark labels are markups, never DICOM SEG, and nothing may be
    downloaded at run time."""

    def _download_dcmqi_tools(self):
        logger.info("DICOMweb studies: dcmqi not needed (landmark labels are .mrk.json), not downloaded")


check_monailabel()
