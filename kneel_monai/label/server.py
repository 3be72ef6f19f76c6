"""The MONAI Label side of the app (needs ``monailabel``): datastore, infer, train, scoring, strategy.

The app folder's ``main.py`` only wires these together; all the logic lives here and in
:mod:`kneel_monai.label` so that it is tested and versioned with the library.

State (models trained here, their version pointer, uncertainty scores) lives in ``state_dir``
(``--conf state_dir DIR``; default ``<studies>/.kneel_label`` for a local studies folder).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from ..atomic import atomic_write_text
from . import LABEL_EXT, LabelError, check_id, epistemic_score, label_to_pixels, parse_label

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "KneelDatastore", "ModelStore", "KneelInferTask", "KneelTrainTask",
           "KneelEpistemicScoring", "KneelEpistemicStrategy"]

IMAGE_EXTENSIONS = ("*.dcm", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.nii.gz", "*.nii", "*.nrrd", "*.mha")
MODEL_NAME = "kneel_landmarks"


def _http(err: LabelError) -> HTTPException:
    return HTTPException(status_code=err.status, detail=str(err))


def _atomic_copy(src: str, dest: str) -> None:
    folder = os.path.dirname(dest) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class KneelDatastore(LocalDatastore):
    """A local datastore where radiographs are images and ``.mrk.json`` markups are labels.

    * ids are checked (:func:`kneel_monai.label.check_id`): 400 for ``..``/``/``;
    * an image upload must be a readable radiograph (400 otherwise);
    * a label must be a valid knee markups file whose points fall on its image (4xx otherwise),
      for an image the datastore holds (404 otherwise); nothing is stored on rejection;
    * labels and the datastore index are written atomically (temp file + rename), under the
      datastore lock; each replaced ``final`` label is kept in ``labels/final/.history/``.
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

    def _update_datastore_file(self, lock=True):
        def write():
            self._ignore_event_config = True
            atomic_write_text(self._datastore_config_path,
                              json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str))
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        from ..io import read_radiograph

        try:
            if image_id:
                check_id(image_id)
            read_radiograph(image_filename)
        except LabelError as err:
            raise _http(err) from None
        except Exception as err:  # noqa: BLE001 — anything unreadable is a bad upload
            raise HTTPException(status_code=400, detail=f"not a readable radiograph: {err}") from None
        id_, ext = self._to_id(os.path.basename(image_filename))
        if ext.endswith(".json"):
            raise HTTPException(status_code=400, detail="a markups/JSON file is not an image")
        image_id = image_id or id_
        dest = os.path.join(self._datastore.image_path(), image_id + ext)
        from monailabel.datastore.local import DataModel, ImageLabelModel

        self._init_from_datastore_file()  # (takes the lock itself)
        with FileLock(self._lock_file):
            _atomic_copy(image_filename, dest)
            info = dict(image_info or {}, ts=int(time.time()), name=image_id + ext)
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file(lock=False)
        return image_id

    def validate_label(self, image_id: str, label_filename: str) -> dict[str, Any]:
        """Check a label file for ``image_id``; returns its summary (knees, pixels) or raises LabelError."""
        from ..io import read_radiograph

        check_id(image_id)
        if image_id not in self._datastore.objects:
            self._init_from_datastore_file()
        if image_id not in self._datastore.objects:
            raise LabelError(f"unknown image id {image_id!r}: no such image in the datastore", 404)
        with open(label_filename, "rb") as f:
            label = parse_label(f.read())
        image = read_radiograph(self.get_image_uri(image_id))
        spacing = tuple(float(v) for v in image.meta["pixel_spacing_mm"])
        size = tuple(int(v) for v in image.shape[-2:])
        px = label_to_pixels(label, spacing, size)
        return {"knees": [s for s in ("R", "L") if px[s] is not None], "absent_knees": label.absent,
                "pixel_spacing_mm": list(spacing), "image_size": list(size)}

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            tag = label_tag or DefaultLabelTag.FINAL.value
            check_id(tag)
            summary = self.validate_label(image_id, label_filename)
        except LabelError as err:
            raise _http(err) from None
        from monailabel.datastore.local import DataModel

        name = image_id + LABEL_EXT
        label_path = self._datastore.label_path(tag)
        dest = os.path.join(label_path, name)
        self._init_from_datastore_file()  # (takes the lock itself)
        with FileLock(self._lock_file):
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
            os.makedirs(label_path, exist_ok=True)
            version = int((obj.labels.get(tag).info.get("version", 0) if obj.labels.get(tag) else 0)) + 1
            if os.path.exists(dest):  # keep the replaced revision
                history = os.path.join(label_path, ".history")
                os.makedirs(history, exist_ok=True)
                shutil.copy2(dest, os.path.join(history, f"{image_id}.v{version - 1}{LABEL_EXT}"))
            _atomic_copy(label_filename, dest)
            info = dict(label_info or {})
            info.update(summary, ts=int(time.time()), name=name, version=version)
            obj.labels[tag] = DataModel(info=info, ext=LABEL_EXT)
            self._update_datastore_file(lock=False)
        return image_id


def dicomweb_datastore(url: str, search_filter: dict[str, Any] | None = None, cache_path: str | None = None):
    """MONAI Label's DICOMweb datastore for radiographs: every series by default (MONAI Label looks for CT only),
    each served as its folder of DICOM files (no NIfTI conversion: the reader needs the DICOM tags), and
    ``.mrk.json`` labels kept in the app's local cache instead of being uploaded as DICOM SEG."""
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore

    class KneelDICOMWebDatastore(DICOMWebDatastore):
        def save_label(self, image_id, label_filename, label_tag, label_info, label_id=""):  # noqa: ARG002
            check_label_file_name(label_filename)
            if not self._datastore.objects.get(image_id):  # first label of this series: register its image
                LocalDatastore.add_image(self, image_id, image_file(self.get_image_uri(image_id)),
                                         self._dicom_info(image_id))
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)

        def get_label_uri(self, label_id, label_tag):  # the app's own copy, not a DICOM SEG on the PACS
            return LocalDatastore.get_label_uri(self, label_id, label_tag)

    client = DICOMwebClientX(url=url, session=None, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                             wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                             stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    return KneelDICOMWebDatastore(client=client, search_filter=search_filter or {}, cache_path=cache_path,
                                  fetch_by_frame=False, convert_to_nifti=False)


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


class ModelStore:
    """Published landmark models: ``<state_dir>/models/v<N>/`` and the pointer ``current.json``.

    Version 0 is the shipped (or ``--conf landmark_model``) model. Training exports into a new
    folder, then replaces ``current.json`` atomically: the next infer picks it up.
    """

    def __init__(self, state_dir: str | os.PathLike, roi_dir: str, landmark_dir: str):
        self.root = Path(state_dir) / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.pointer = self.root / "current.json"
        self.base = {"version": 0, "roi": str(roi_dir), "landmarks": str(landmark_dir)}

    def current(self) -> dict[str, Any]:
        try:
            return json.loads(self.pointer.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return dict(self.base)

    def next_dir(self) -> tuple[int, Path]:
        version = int(self.current()["version"]) + 1
        while (self.root / f"v{version}").exists():
            version += 1
        return version, self.root / f"v{version}"

    def publish(self, version: int, landmark_dir: str | os.PathLike, metrics: dict[str, Any]) -> dict[str, Any]:
        record = dict(self.current(), version=version, landmarks=str(landmark_dir), metrics=metrics,
                      published=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.pointer, json.dumps(record, indent=2))
        return record


class _PredictorCache:
    """One :class:`KneelPredictor` per (model version, mc_samples), rebuilt when a new version is published."""

    def __init__(self, store: ModelStore, device: str):
        self.store, self.device = store, device
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int], Any] = {}

    def get(self, mc_samples: int = 0):
        from ..inference import KneelPredictor

        current = self.store.current()
        key = (int(current["version"]), int(mc_samples))
        with self._lock:
            if key not in self._cache:
                self._cache = {k: v for k, v in self._cache.items() if k[0] == key[0]}
                self._cache[key] = KneelPredictor(current["roi"], current["landmarks"], device=self.device,
                                                  mc_samples=mc_samples)
            return self._cache[key], current


class KneelInferTask(InferTask):
    """Both knees' 16 landmarks: a ``.mrk.json`` label plus ``result_json`` (points, confidences, measurements)."""

    def __init__(self, predictors: _PredictorCache):
        super().__init__(type=InferType.DETECTION, labels=["Right knee", "Left knee"], dimension=2,
                         description="KNEEL: 16 landmarks per knee (tibia + femur) on a plain knee radiograph; "
                         "returns a Slicer .mrk.json", config={"mc_samples": 0})
        self.predictors = predictors

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["model_version"] = self.predictors.store.current()["version"]
        out["label_format"] = LABEL_EXT
        return out

    def __call__(self, request) -> tuple[str, dict]:
        from ..io.markups import markups_dict

        image = image_file(request["image"])
        mc = int(request.get("mc_samples", 0) or 0)
        predictor, current = self.predictors.get(mc)
        try:
            result = predictor.predict_file(image)
        except (ValueError, OSError) as err:
            raise HTTPException(status_code=400, detail=f"cannot predict on this image: {err}") from None
        markups = markups_dict(result)
        markups["kneel"]["model_version"] = current["version"]
        fd, out = tempfile.mkstemp(suffix=LABEL_EXT)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(markups, f, indent=2)
        res = result.to_dict()
        res["model_version"] = current["version"]
        res["label_format"] = "slicer-markups" + LABEL_EXT
        return out, res


def _stage_network_args(landmark_dir: str) -> dict[str, Any]:
    cfg = json.loads((Path(landmark_dir) / "model.json").read_text(encoding="utf-8")) \
        if (Path(landmark_dir) / "model.json").is_file() else None
    if cfg is None:
        from ..model_io import load_model

        cfg = load_model(landmark_dir).config
    args = dict(cfg["network"]["args"])
    args.pop("out_points", None)
    if cfg["network"].get("preset"):
        args["preset"] = cfg["network"]["preset"]
    return args


class KneelTrainTask(TrainTask):
    """Fine-tune the landmark model on the ``final`` labels with the bundle's training; publish a new version.

    Request keys: ``max_epochs`` (1), ``epoch_length`` (None: whole epoch), ``batch_size`` (4),
    ``learning_rate`` (1e-4), ``min_labels`` (2). Runs in MONAI Label's training subprocess.
    """

    def __init__(self, store: ModelStore, bundle_dir: str, state_dir: str, device: str = "cpu"):
        super().__init__("Fine-tune the KNEEL landmark model on the corrected (final) labels with the bundle")
        self.store, self.bundle_dir, self.state_dir, self.device = store, bundle_dir, Path(state_dir), device

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 1, "epoch_length": 0, "batch_size": 4, "learning_rate": 1e-4, "min_labels": 2}

    def stats(self) -> dict[str, Any]:
        current = self.store.current()
        return {"model_version": current["version"], "metrics": current.get("metrics", {}),
                "published": current.get("published")}

    def __call__(self, request, datastore) -> dict[str, Any]:
        from monai.bundle import ConfigWorkflow

        from ..data import build_datalists
        from . import label_to_ground_truth

        conf = {**self.config(), **{k: v for k, v in request.items() if k in self.config()}}
        ids = sorted(datastore.get_labeled_images(label_tag=DefaultLabelTag.FINAL.value))
        if len(ids) < int(conf["min_labels"]):
            raise ValueError(f"training needs at least {conf['min_labels']} radiographs with a final label; "
                             f"the datastore has {len(ids)}")
        run = self.state_dir / "train" / time.strftime("run_%Y%m%d_%H%M%S")
        data = run / "data"
        data.mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            label_to_ground_truth(datastore.get_label_uri(image_id, DefaultLabelTag.FINAL.value),
                                  datastore.get_image_uri(image_id), image_id, data / f"{image_id}.json")
        lists = build_datalists(data, n_folds=min(5, len(ids)), seed=0, progress=False)
        lists.write(run / "lists")
        current = self.store.current()
        version, export_dir = self.store.next_dir()
        configs = Path(self.bundle_dir) / "configs"
        wf = ConfigWorkflow(
            config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
            workflow_type=None, run_id="training", bundle_root=str(run), stage="landmarks_cpu", dataset_dir=str(run / "lists"),
            init_from=str(current["landmarks"]), network_args=_stage_network_args(current["landmarks"]),
            transfer="$kneel_monai.training.transfer_weights(@network, @init_from, skip_prefixes=())",
            max_epochs=int(conf["max_epochs"]), epoch_length=int(conf["epoch_length"]) or None,
            batch_size=int(conf["batch_size"]), learning_rate=float(conf["learning_rate"]), cache=False,
            mixup_alpha=0.0, progress=False, tensorboard=False, export_dir=str(export_dir),
            device=f"$torch.device('{self.device}')",
        )
        started = time.time()
        wf.initialize()
        transferred = wf.parser.get_parsed_content("transfer")
        wf.run()
        metrics = {k: float(v) for k, v in wf.parser.get_parsed_content("evaluator").state.metrics.items()
                   if isinstance(v, (int, float))}
        wf.finalize()
        metrics.update(train_seconds=round(time.time() - started, 2), n_labels=len(ids),
                       n_transferred=len(transferred))
        record = self.store.publish(version, export_dir, metrics)
        logger.info(f"published landmark model v{version}: {metrics}")
        return record


class KneelEpistemicScoring(ScoringMethod):
    """MC-dropout spread (mm) for every radiograph without a final label, into ``<state_dir>/scores.json``."""

    def __init__(self, predictors: _PredictorCache, state_dir: str, mc_samples: int = 4):
        super().__init__(f"Epistemic uncertainty: mean MC-dropout spread (mm, {mc_samples} passes) of the landmarks")
        self.predictors, self.path, self.mc_samples = predictors, Path(state_dir) / "scores.json", mc_samples

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"scores": {}}

    def __call__(self, request, datastore) -> dict[str, Any]:
        mc = max(2, int(request.get("mc_samples", self.mc_samples)))
        predictor, current = self.predictors.get(mc)
        ids = datastore.get_unlabeled_images(label_tag=DefaultLabelTag.FINAL.value)
        limit = request.get("max_images")
        old = self.read()
        scores = {k: v for k, v in old.get("scores", {}).items()
                  if old.get("model_version") == current["version"] and k in ids}
        for image_id in ids[: int(limit)] if limit else ids:
            if image_id in scores and not request.get("force"):
                continue
            try:
                result = predictor.predict_file(datastore.get_image_uri(image_id)).to_dict()
                scores[image_id] = epistemic_score(result)
            except Exception as err:  # noqa: BLE001 — an unreadable image is scored first: someone must look
                logger.warning(f"epistemic scoring of {image_id} failed: {err}")
                scores[image_id] = float("inf")
        out = {"model_version": current["version"], "mc_samples": mc, "scores": scores,
               "ts": int(time.time())}
        atomic_write_text(self.path, json.dumps(out, indent=2))
        return out


class KneelEpistemicStrategy(Strategy):
    """The unlabelled radiograph with the highest epistemic score (run the scoring method first)."""

    def __init__(self, scoring: KneelEpistemicScoring):
        super().__init__("The unlabelled radiograph whose landmarks are most uncertain (MC-dropout spread, mm)")
        self.scoring = scoring

    def __call__(self, request, datastore) -> dict[str, Any]:
        ids = set(datastore.get_unlabeled_images(label_tag=DefaultLabelTag.FINAL.value))
        scores = {k: v for k, v in self.scoring.read().get("scores", {}).items() if k in ids}
        if not scores:
            if not ids:
                return {}
            self.scoring({}, datastore)  # not scored yet: score now (synchronously)
            scores = {k: v for k, v in self.scoring.read().get("scores", {}).items() if k in ids}
        if not scores:
            return {}
        best = max(sorted(scores), key=lambda k: scores[k])
        return {"id": best, "score": scores[best], "strategy": "kneel_epistemic"}
