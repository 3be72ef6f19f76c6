"""The parts of MONAI Label that are not its public API but that the app relies on — one list, checked.

MONAI Label gives no hook for what the app needs (an index changed under one lock, a training start
checked before its background run, no run-time download of dcmqi), so the app overrides or calls
these private names. They may change in any MONAI Label release: importing the app's MONAI Label side
checks the installed version and that every name below exists, and fails loudly (ImportError naming
what is missing) rather than misbehaving quietly.

Who uses what:

* :class:`LockedIndexFile` (here; the datastore's ``LockedIndex`` builds on it) overrides
  ``LocalDatastore``'s index methods and uses its private attributes;
* :func:`kneel_monai.label.server.check_training_starts` wraps ``AsyncTask.run``
  (:func:`wrap_async_task_run`);
* the app (``monailabel_app/main.py``) replaces ``MONAILabelApp._download_dcmqi_tools``
  (:class:`NoRuntimeDownloads`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastoreModel

from ..atomic import atomic_write_text

__all__ = ["SUPPORTED_MONAILABEL", "PRIVATE_NAMES", "check_monailabel", "wrap_async_task_run", "NoRuntimeDownloads",
           "LockedIndexFile"]

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


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LockedIndexFile:
    """Mixin for a ``LocalDatastore`` subclass: its index file (private ``LocalDatastore`` methods overridden)
    is read, written and reconciled only under one lock (see :mod:`kneel_monai.label.datastore`).

    The lock is one ``FileLock`` object per datastore: reentrant within a thread, exclusive between threads
    (filelock keeps its state per thread) and between processes. Never call a ``LocalDatastore`` method that
    takes its own ``FileLock`` while holding it (a second lock object on the same file would wait for ever).
    """

    _index_lock_object: FileLock | None = None
    _index_stamp: tuple[int, int, int] | None = None

    @property
    def _index_lock(self) -> FileLock:
        if self._index_lock_object is None:  # created in __init__, before any other thread sees the datastore
            # thread_local: each thread holds its own lock state, so threads exclude each other (the default,
            # spelled out because everything here depends on it)
            self._index_lock_object = FileLock(os.path.join(self._datastore_path, ".lock"), thread_local=True,
                                               poll_interval=0.01)
        return self._index_lock_object

    # -- the index file ---------------------------------------------------------------------------------------
    def _init_from_datastore_file(self, throw_exception=False):
        """Re-read the index if its file changed since this process last read or wrote it."""
        with self._index_lock:
            stamp = _file_stamp(self._datastore_config_path)
            if stamp is None or stamp == self._index_stamp:
                return
            try:
                with open(self._datastore_config_path) as fp:
                    model = LocalDatastoreModel.model_validate_json(fp.read())
            except ValueError as err:
                logger.error(f"datastore index {self._datastore_config_path} is unreadable: {err}")
                if throw_exception:
                    raise
                return
            model.base_path = self._datastore_path
            self._datastore, self._index_stamp = model, stamp

    def _update_datastore_file(self, lock=True):
        """Write the index atomically; ``lock=False`` only where the caller already holds the lock."""
        def write():
            self._ignore_event_config = True
            atomic_write_text(self._datastore_config_path,
                              json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str))
            self._index_stamp = _file_stamp(self._datastore_config_path)

        if lock:
            with self._index_lock:
                write()
        else:
            write()

    def _reconcile_datastore(self):
        """Bring the index in line with the files (same rules as MONAI Label's), on a copy swapped in whole."""
        with self._index_lock:
            self._init_from_datastore_file()
            model = self._datastore.model_copy(deep=True)
            changes = self._reconcile(model)
            if changes:
                self._datastore = model
                self._update_datastore_file()
            logger.debug(f"reconciled the datastore index: {changes} change(s)")

    def _reconcile(self, model: LocalDatastoreModel) -> int:
        changes = 0
        for image_id, obj in list(model.objects.items()):  # entries whose files are gone
            if not os.path.exists(os.path.join(model.image_path(), self._filename(image_id, obj.image.ext))):
                del model.objects[image_id]
                changes += 1
                continue
            for tag, label in list(obj.labels.items()):
                if not os.path.exists(os.path.join(model.label_path(tag), self._filename(image_id, label.ext))):
                    del obj.labels[tag]
                    changes += 1
        for name in self._list_files(model.image_path(), self._extensions):  # new images
            image_id, ext = self._to_id(name)
            if image_id not in model.objects:
                info = {"ts": int(time.time()), "name": self._filename(image_id, ext)}
                model.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
                changes += 1
        labels_dir = model.label_path(None)
        tags = sorted(t for t in os.listdir(labels_dir) if not t.startswith(".")
                      and os.path.isdir(os.path.join(labels_dir, t))) if os.path.isdir(labels_dir) else []
        for tag in tags:  # new labels of known images
            for name in self._list_files(model.label_path(tag), self._extensions):
                label_id, ext = self._to_id(name)
                obj = model.objects.get(label_id)
                if obj is None:
                    logger.warning(f"label {tag}/{name} has no image in the datastore: ignored")
                elif tag not in obj.labels:
                    obj.labels[tag] = DataModel(info={"ts": int(time.time()), "name": self._filename(label_id, ext)},
                                                ext=ext)
                    changes += 1
        return changes

    def _on_any_event(self, event):
        # the file watcher also sees our temporary files and the label history (hidden names): no refresh for those
        rel = os.path.relpath(event.src_path, self._datastore_path)
        if any(part.startswith(".") for part in Path(rel).parts):
            return
        super()._on_any_event(event)


check_monailabel()
