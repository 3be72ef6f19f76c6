"""The MONAI Label side of the app (needs ``monailabel``): infer, train, scoring, strategy, published models.

The datastores are in :mod:`kneel_monai.label.datastore`.

The app folder's ``main.py`` only wires these together; all the logic lives here and in
:mod:`kneel_monai.label` so that it is tested and versioned with the library.

State (models trained here, their version pointer, uncertainty scores) lives in ``state_dir``
(``--conf state_dir DIR``; default a per-user cache folder keyed by the studies' location, outside the studies).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from ..atomic import atomic_write_text
from . import LABEL_EXT, LabelError, epistemic_score
from .datastore import http_error, image_file
from .monailabel_private import wrap_async_task_run

logger = logging.getLogger(__name__)

__all__ = ["MODEL_NAME", "ModelStore", "default_state_dir", "check_training_starts", "KneelInferTask", "KneelTrainTask",
           "KneelEpistemicScoring",
           "KneelEpistemicStrategy"]

MODEL_NAME = "kneel_landmarks"


def check_training_starts(stale_after_s: float = 60.0) -> None:
    """Check a training start in the server, before MONAI Label launches its background run. Idempotent.

    * **429 while another training is still starting.** MONAI Label refuses a second training only once the
      first one's process is registered, which its worker thread does a moment after the server answered;
      a double click on *Train* in that moment queued a second run. A ``SUBMITTED`` training task now counts
      (for at most ``stale_after_s``, so that a start that failed never blocks training for good).
    * **409 with too few labels, or a model the bundle cannot fine-tune** (:meth:`KneelTrainTask.check`),
      instead of a background run that fails where only ``GET /train/`` shows it.

    MONAI Label has no hook there: this wraps its ``AsyncTask.run`` (the call its endpoints make).
    """
    from datetime import datetime

    from monailabel.interfaces.utils.app import app_instance
    from monailabel.utils.async_tasks.utils import tasks

    def starting(method: str) -> bool:
        now = datetime.today()
        return any(t.get("status") == "SUBMITTED" and (now - datetime.strptime(
            t["start_ts"], "%Y-%m-%d %H:%M:%S")).total_seconds() < stale_after_s for t in tasks(method))

    def check(method, request, params, force_sync, enqueue):
        if method == "train":
            if not enqueue and not force_sync and starting(method):
                return None, "++++++++++ Train Task is Already Running (starting)"
            instance = app_instance()
            task = instance._trainers.get((request or {}).get("model"))
            if isinstance(task, KneelTrainTask):
                try:
                    task.check({**(request or {}), **(params or {})}, instance.datastore())
                except LabelError as err:
                    raise http_error(err) from None
        return None

    wrap_async_task_run(check, "kneel_checks")


def default_state_dir(studies: str) -> Path:
    """Where the app keeps trained models and scores unless told (``--conf state_dir``): outside the studies
    (a PACS, or a folder others share or back up), in a per-user cache folder keyed by the studies' location."""
    import hashlib

    where = studies if str(studies).startswith(("http://", "https://")) else str(Path(studies).resolve())
    return Path.home() / ".cache" / "kneel-monai" / "label" / hashlib.sha1(where.encode()).hexdigest()[:12]


class ModelStore:
    """Published models: ``<state_dir>/models/v<N>/landmarks`` (and ``roi`` when it was fine-tuned too) and the
    pointer ``current.json``.

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

    def publish(self, version: int, landmark_dir: str | os.PathLike, metrics: dict[str, Any],
                roi_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """Point ``current.json`` at the new models (the ROI model stays the previous one unless given)."""
        record = dict(self.current(), version=version, landmarks=str(landmark_dir), metrics=metrics,
                      published=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if roi_dir is not None:
            record["roi"] = str(roi_dir)
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


def _model_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    from ..model_io import CONFIG_NAME

    return json.loads((Path(model_dir) / CONFIG_NAME).read_text(encoding="utf-8"))


def _stage_network_args(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The network of ``model_dir`` as the bundle's ``network_args`` (``out_points`` comes from the stage)."""
    cfg = _model_config(model_dir)
    args = dict(cfg["network"]["args"])
    args.pop("out_points", None)
    if cfg["network"].get("preset"):
        args["preset"] = cfg["network"]["preset"]
    return args


def stage_of(model_dir: str | os.PathLike) -> str:
    """The bundle's training stage that matches the model's own preprocessing: fine-tuning must keep it
    (a model trained at 0.3 mm fine-tuned at 0.6 mm would forget its input scale). LabelError (409) if none."""
    from ..training.stages import STAGES, StageConfig

    cfg = _model_config(model_dir)
    pre = cfg.get("preprocessing", {})
    try:
        model_stage = StageConfig.from_preprocessing(str(cfg.get("task")), pre)
    except (KeyError, TypeError, ValueError):
        model_stage = None
    for name, stage in STAGES.items():
        if model_stage is not None and not model_stage.differences(stage):
            return name
    raise LabelError(f"{model_dir}: a {cfg.get('task')} model with preprocessing {pre} matches no training stage "
                     f"of the bundle ({', '.join(STAGES)}); it cannot be fine-tuned here", 409)


class KneelTrainTask(TrainTask):
    """Fine-tune the landmark model on the ``final`` labels with the bundle's training; publish a new version.

    Request keys: ``max_epochs`` (1), ``epoch_length`` (None: whole epoch), ``batch_size`` (4),
    ``learning_rate`` (1e-4), ``min_labels`` (2), ``train_roi`` (False: also fine-tune the ROI model, on the
    knee centres of the same labels). Each model is fine-tuned at the stage it was trained at
    (:func:`stage_of`). Runs in MONAI Label's training subprocess.
    """

    def __init__(self, store: ModelStore, bundle_dir: str, state_dir: str, device: str = "cpu"):
        super().__init__("Fine-tune the KNEEL landmark model on the corrected (final) labels with the bundle")
        self.store, self.bundle_dir, self.state_dir, self.device = store, bundle_dir, Path(state_dir), device

    def config(self) -> dict[str, Any]:
        return {"max_epochs": 1, "epoch_length": 0, "batch_size": 4, "learning_rate": 1e-4, "min_labels": 2,
                "train_roi": False}

    def stats(self) -> dict[str, Any]:
        current = self.store.current()
        return {"model_version": current["version"], "metrics": current.get("metrics", {}),
                "published": current.get("published")}

    def _conf(self, request: dict[str, Any]) -> dict[str, Any]:
        return {**self.config(), **{k: v for k, v in request.items() if k in self.config()}}

    def labelled_images(self, request: dict[str, Any], datastore) -> list[str]:
        """The ids with a final label; LabelError (409) if fewer than ``min_labels``."""
        need = int(self._conf(request)["min_labels"])
        ids = sorted(datastore.get_labeled_images(label_tag=DefaultLabelTag.FINAL.value))
        if len(ids) < need:
            raise LabelError(f"training needs at least {need} radiographs with a final label; the datastore has "
                             f"{len(ids)}", 409)
        return ids

    def check(self, request: dict[str, Any], datastore) -> list[str]:
        """What can be checked before a run starts (LabelError 409): enough labels, models at a known stage."""
        ids = self.labelled_images(request, datastore)
        current = self.store.current()
        stage_of(current["landmarks"])
        if _flag(self._conf(request)["train_roi"]):
            stage_of(current["roi"])
        return ids

    def __call__(self, request, datastore) -> dict[str, Any]:
        from ..data import build_datalists
        from ..model_io import carry_fallback
        from . import label_to_ground_truth

        conf = self._conf(request)
        ids = self.check(request, datastore)
        run = self.state_dir / "train" / time.strftime("run_%Y%m%d_%H%M%S")
        data = run / "data"
        data.mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            label_to_ground_truth(datastore.get_label_uri(image_id, DefaultLabelTag.FINAL.value),
                                  image_file(datastore.get_image_uri(image_id)), image_id, data / f"{image_id}.json")
        lists = build_datalists(data, n_folds=min(5, len(ids)), seed=0, progress=False)
        lists.write(run / "lists")
        current = self.store.current()
        version, version_dir = self.store.next_dir()
        started = time.time()
        metrics = self._fine_tune(current["landmarks"], run, version_dir / "landmarks", conf)
        roi_dir = None
        if _flag(conf["train_roi"]):
            roi_dir = version_dir / "roi"
            metrics.update({f"roi_{k}": v for k, v in self._fine_tune(current["roi"], run, roi_dir, conf).items()})
            carry_fallback(current["roi"], roi_dir)  # the fine-tuned ROI model keeps its fallback's proposals
        metrics.update(train_seconds=round(time.time() - started, 2), n_labels=len(ids))
        record = self.store.publish(version, version_dir / "landmarks", metrics, roi_dir=roi_dir)
        logger.info(f"published model v{version} (landmarks{' + ROI' if roi_dir else ''}): {metrics}")
        return record

    def _fine_tune(self, model_dir: str, run: Path, export_dir: Path, conf: dict[str, Any]) -> dict[str, float]:
        """One bundle training run from ``model_dir`` (every layer transferred) at the model's own stage."""
        from monai.bundle import ConfigWorkflow

        configs = Path(self.bundle_dir) / "configs"
        wf = ConfigWorkflow(
            config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
            workflow_type=None, run_id="training", bundle_root=str(run), stage=stage_of(model_dir),
            dataset_dir=str(run / "lists"), init_from=str(model_dir), network_args=_stage_network_args(model_dir),
            transfer="$kneel_monai.training.transfer_weights(@network, @init_from, skip_prefixes=())",
            max_epochs=int(conf["max_epochs"]), epoch_length=int(conf["epoch_length"]) or None,
            batch_size=int(conf["batch_size"]), learning_rate=float(conf["learning_rate"]), cache=False,
            mixup_alpha=0.0, progress=False, tensorboard=False, export_dir=str(export_dir),
            device=f"$torch.device('{self.device}')",
        )
        wf.initialize()
        transferred = wf.parser.get_parsed_content("transfer")
        wf.run()
        metrics = {k: float(v) for k, v in wf.parser.get_parsed_content("evaluator").state.metrics.items()
                   if isinstance(v, (int, float))}
        wf.finalize()
        metrics["n_transferred"] = len(transferred)
        return metrics


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


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
                result = predictor.predict_file(image_file(datastore.get_image_uri(image_id))).to_dict()
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
