"""MONAI Label datastores for radiographs with ``.mrk.json`` labels: a local studies folder and a DICOMweb PACS.

Why not MONAI Label's ``LocalDatastore`` as it is: its index (``datastore_v2.json``) is read outside its lock,
changed in memory and written back in place, by several actors at once — request handlers, its file
watcher's thread (``refresh`` on every file event) and the training/scoring subprocesses (a reconcile at
start-up). A label saved in one of them could drop out of the index written by another, and a training then
saw fewer labels than the folder holds. Here every read-change-write of the index happens under one lock
(reentrant per thread, exclusive across threads and processes), the index is re-read whenever its file
changed (inode, mtime in ns, size — not a float mtime), written atomically, and a reconcile works on a copy
that is swapped in whole, so a reader never sees a half-rebuilt index.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import (
    DataModel,
    ImageLabelModel,
    LocalDatastore,
)
from monailabel.interfaces.datastore import DefaultLabelTag

from ..atomic import atomic_write
from ..landmarks import SIDES
from . import LABEL_EXT, LabelError, check_id, label_to_pixels, parse_label
from .monailabel_private import LockedIndexFile

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "KneelDatastore", "check_label_file_name", "dicomweb_datastore", "image_file"]

IMAGE_EXTENSIONS = ("*.dcm", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.nii.gz", "*.nii", "*.nrrd", "*.mha")
FINAL = DefaultLabelTag.FINAL.value


def http_error(err: LabelError) -> HTTPException:
    return HTTPException(status_code=err.status, detail=str(err))


def atomic_copy(src: str, dest: str) -> None:
    """Copy ``src`` onto ``dest`` all-or-nothing (the project's one atomic writer, with fsync)."""
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def check_label_file_name(label_filename: str) -> None:
    if not str(label_filename).endswith(".json"):
        raise HTTPException(status_code=415, detail=f"labels are Slicer markups ({LABEL_EXT}), got {label_filename!r}")


def image_file(image: Any) -> str:
    """The radiograph's file: the path itself, or the one DICOM file of a series folder (DICOMweb cache)."""
    if isinstance(image, str) and os.path.isdir(image):
        files = sorted(p for p in Path(image).iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) != 1:
            raise HTTPException(status_code=400, detail=f"a radiograph series has one image; {image!r} has "
                                f"{len(files)} files")
        return str(files[0])
    if not isinstance(image, str) or not os.path.isfile(image):
        raise HTTPException(status_code=404, detail=f"image not found: {image!r}")
    return image


class LockedIndex(LockedIndexFile):
    """Mixin for a ``LocalDatastore`` subclass: images and labels stored, and the index changed, only under the
    index lock of :class:`~kneel_monai.label.monailabel_private.LockedIndexFile`."""

    # -- changes: re-read, change, write, all under the lock --------------------------------------------------
    def _register_image(self, image_id: str, src: str, ext: str, info: dict[str, Any]) -> None:
        dest = os.path.join(self._datastore.image_path(), self._filename(image_id, ext))
        with self._index_lock:
            self._init_from_datastore_file()
            atomic_copy(src, dest)
            info = dict(info or {}, ts=int(time.time()), name=self._filename(image_id, ext))
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file()

    def _store_label(self, image_id: str, src: str, tag: str, info: dict[str, Any]) -> str:
        """Copy ``src`` in as the ``tag`` label of ``image_id``; the label it replaces goes to ``.history``."""
        name = self._filename(image_id, LABEL_EXT)
        with self._index_lock:
            self._init_from_datastore_file()
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
            label_path = self._datastore.label_path(tag)
            dest = os.path.join(label_path, name)
            os.makedirs(label_path, exist_ok=True)
            previous = obj.labels.get(tag)
            version = int(previous.info.get("version", 0) if previous else 0) + 1
            if os.path.exists(dest):  # keep the replaced revision
                history = os.path.join(label_path, ".history")
                os.makedirs(history, exist_ok=True)
                shutil.copy2(dest, os.path.join(history, f"{image_id}.v{version - 1}{LABEL_EXT}"))
            atomic_copy(src, dest)
            info = dict(info or {}, ts=int(time.time()), name=name, version=version)
            obj.labels[tag] = DataModel(info=info, ext=LABEL_EXT)
            self._update_datastore_file()
        return image_id

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        with self._index_lock:
            self._init_from_datastore_file()
            super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        with self._index_lock:
            self._init_from_datastore_file()
            super().update_label_info(label_id, label_tag, info)

    # -- label checks -----------------------------------------------------------------------------------------
    def validate_label(self, image_id: str, label_filename: str) -> dict[str, Any]:
        """Check a label file for ``image_id``; returns its summary (knees, pixels) or raises LabelError."""
        from ..io import read_radiograph

        check_id(image_id)
        self._init_from_datastore_file()
        if image_id not in self._datastore.objects:
            raise LabelError(f"unknown image id {image_id!r}: no such image in the datastore", 404)
        with open(label_filename, "rb") as f:
            label = parse_label(f.read())
        try:
            image = read_radiograph(image_file(self.get_image_uri(image_id)))
        except ValueError as err:  # the stored image itself is unreadable (e.g. truncated): not the label's fault
            raise LabelError(f"image {image_id!r} cannot be read, so no label can be checked against it: "
                             f"{getattr(err, 'problem', err)}", 409) from None
        spacing = tuple(float(v) for v in image.meta["pixel_spacing_mm"])
        size = tuple(int(v) for v in image.shape[-2:])
        px = label_to_pixels(label, spacing, size)
        return {"knees": [s for s in SIDES if px[s] is not None], "absent_knees": label.absent,
                "pixel_spacing_mm": list(spacing), "image_size": list(size)}

    def _checked_label(self, image_id: str, label_filename: str, label_tag: str) -> tuple[str, dict[str, Any]]:
        try:
            tag = label_tag or FINAL
            check_id(tag, "label tag")
            return tag, self.validate_label(image_id, label_filename)
        except LabelError as err:
            raise http_error(err) from None


class KneelDatastore(LockedIndex, LocalDatastore):
    """A local datastore where radiographs are images and ``.mrk.json`` markups are labels.

    * ids are checked (:func:`kneel_monai.label.check_id`): 400 for ``..``/``/``;
    * an image upload must be a readable radiograph (400 otherwise);
    * a label must be a valid knee markups file whose points fall on its image (4xx otherwise),
      for an image the datastore holds (404 otherwise); nothing is stored on rejection;
    * labels and the index are written atomically under the index lock (:class:`LockedIndex`);
      each replaced label is kept in ``labels/<tag>/.history/``.
    """

    def __init__(self, path: str, image_extensions=IMAGE_EXTENSIONS, **kwargs):
        self._image_patterns = [e for e in image_extensions if not e.endswith(".json")]
        self._label_patterns = ["*" + LABEL_EXT]
        super().__init__(path, extensions=[*self._image_patterns, *self._label_patterns], **kwargs)

    # listing: images are radiographs only, labels are markups only
    def _list_files(self, path, patterns):
        is_images = os.path.realpath(path) == os.path.realpath(self._datastore.image_path())
        patterns = self._image_patterns if is_images else self._label_patterns
        files = [f for f in os.listdir(path) if not f.startswith(".")]
        return {f: f for p in patterns for f in fnmatch.filter(files, p)}

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        from ..io import read_radiograph

        try:
            if image_id:
                check_id(image_id)
            read_radiograph(image_filename)
        except LabelError as err:
            raise http_error(err) from None
        except Exception as err:  # noqa: BLE001 — anything unreadable is a bad upload
            # the problem without the server's temporary file name, which means nothing to the client
            problem = str(getattr(err, "problem", None) or err).replace(str(image_filename), "the upload")
            raise HTTPException(status_code=400, detail=f"{image_id or 'upload'}: not a readable radiograph: "
                                                        f"{problem}") from None
        id_, ext = self._to_id(os.path.basename(image_filename))
        if ext.endswith(".json"):
            raise HTTPException(status_code=400, detail="a markups/JSON file is not an image")
        image_id = image_id or id_
        self._register_image(image_id, image_filename, ext, image_info)
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        tag, summary = self._checked_label(image_id, label_filename, label_tag)
        return self._store_label(image_id, label_filename, tag, dict(label_info or {}, **summary))


def dicomweb_datastore(url: str, search_filter: dict[str, Any] | None = None, cache_path: str | None = None):
    """MONAI Label's DICOMweb datastore for radiographs: every series by default (MONAI Label looks for CT only),
    each served as its folder of DICOM files (no NIfTI conversion: the reader needs the DICOM tags), and
    ``.mrk.json`` labels checked like local ones and kept in the app's cache, not uploaded as DICOM SEG."""
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX

    client = DICOMwebClientX(url=url, session=None, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                             wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                             stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    return _dicomweb_class()(client=client, search_filter=search_filter or {}, cache_path=cache_path,
                             fetch_by_frame=False, convert_to_nifti=False)


@functools.cache
def _dicomweb_class():
    from monailabel.datastore.dicom import DICOMWebDatastore  # needs the DICOMweb client packages

    class KneelDICOMWebDatastore(LockedIndex, DICOMWebDatastore):
        def save_label(self, image_id, label_filename, label_tag, label_info, label_id=""):  # noqa: ARG002
            check_label_file_name(label_filename)
            try:
                check_id(image_id)
            except LabelError as err:
                raise http_error(err) from None
            self._init_from_datastore_file()
            if image_id not in self._datastore.objects:  # first label of this series: register its image
                try:
                    series = image_file(self.get_image_uri(image_id))
                except HTTPException:
                    raise
                except Exception as err:  # noqa: BLE001 — the PACS does not have it
                    raise HTTPException(status_code=404, detail=f"unknown series {image_id!r}: {err}") from None
                self._register_image(image_id, series, Path(series).suffix or ".dcm", self._dicom_info(image_id))
            tag, summary = self._checked_label(image_id, label_filename, label_tag)
            return self._store_label(image_id, label_filename, tag, dict(label_info or {}, **summary))

        def get_label_uri(self, label_id, label_tag, image_id=""):  # noqa: ARG002 — the app's copy, not a SEG
            return LocalDatastore.get_label_uri(self, label_id, label_tag)

        # labelled = a markups label kept here (MONAI Label looks for DICOM SEG series on the PACS)
        def _series_and_labelled(self) -> tuple[list[str], set[str]]:
            series = self.list_images()  # one QIDO query
            self._init_from_datastore_file()
            finals = {k for k, v in self._datastore.objects.items() if v.labels.get(FINAL)}
            return series, finals.intersection(series)

        def get_labeled_images(self, label_tag=None, labels=None):  # noqa: ARG002
            series, labelled = self._series_and_labelled()
            return [s for s in series if s in labelled]

        def get_unlabeled_images(self, label_tag=None, labels=None):  # noqa: ARG002
            series, labelled = self._series_and_labelled()
            return [s for s in series if s not in labelled]

    return KneelDICOMWebDatastore
