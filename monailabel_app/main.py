"""MONAI Label app for KNEEL knee landmarks (issue 8).

    monailabel start_server --app monailabel_app --studies <folder or DICOMweb URL> --conf models kneel_landmarks

All logic lives in ``kneel_monai.label`` (label checks and conversion), ``kneel_monai.label.datastore``
(local folder and DICOMweb datastores) and ``kneel_monai.label.server`` (infer/train/scoring/strategy tasks);
this file wires them.

``--conf`` keys: ``models`` (``kneel_landmarks``), ``state_dir`` (trained models and scores;
default a per-user cache folder keyed by the studies' location, never inside the studies),
``model`` (a bundle/model folder for the starting models; default the shipped ones),
``device`` (``auto``/``cpu``/``cuda``), ``mc_samples`` (dropout passes for the epistemic score, 4).
"""

from __future__ import annotations

import logging
from pathlib import Path

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from kneel_monai.inference import default_bundle_dir, resolve_device, resolve_model_dirs
from kneel_monai.label.datastore import IMAGE_EXTENSIONS, KneelDatastore, dicomweb_datastore
from kneel_monai.label.monailabel_private import NoRuntimeDownloads
from kneel_monai.label.server import (
    MODEL_NAME,
    KneelEpistemicScoring,
    KneelEpistemicStrategy,
    KneelInferTask,
    KneelTrainTask,
    ModelStore,
    _PredictorCache,
    check_training_starts,
    default_state_dir,
)

logger = logging.getLogger(__name__)
BUNDLE_DIR = default_bundle_dir()  # the bundle installed with kneel_monai (a checkout's bundles/kneel_landmarks)


class KneelLabelApp(NoRuntimeDownloads, MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        models = [m.strip() for m in (conf or {}).get("models", MODEL_NAME).split(",") if m.strip()]
        unknown = sorted(set(models) - {MODEL_NAME, "all"})
        if unknown:
            raise ValueError(f"--conf models: unknown {', '.join(unknown)}; this app serves '{MODEL_NAME}'")
        self.state_dir = Path(conf.get("state_dir") or default_state_dir(studies))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        roi_dir, landmark_dir = resolve_model_dirs(conf.get("model") or None)
        self.device = str(resolve_device(conf.get("device", "auto")))
        self.store = ModelStore(self.state_dir, roi_dir, landmark_dir)
        self.predictors = _PredictorCache(self.store, self.device)
        self.mc_samples = int(conf.get("mc_samples", 4))
        check_training_starts()  # 429 while one starts, 409 with too few labels (see its doc)
        self._scoring = KneelEpistemicScoring(self.predictors, str(self.state_dir), mc_samples=self.mc_samples)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="KNEEL knee landmarks",
                         description="Active annotation of 16 knee landmarks per knee on plain radiographs",
                         version="1", labels=["Right knee", "Left knee"])

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):  # a PACS (e.g. Orthanc) over DICOMweb
            search = {"Modality": self.conf["modality"]} if self.conf.get("modality") else {}
            return dicomweb_datastore(self.studies, search, str(self.state_dir / "dicomweb"))
        # radiograph patterns: --conf image_ext "*.dcm,*.png", else MONAI_LABEL_DATASTORE_FILE_EXT when the user
        # changed it from MONAI Label's default (which has no *.dcm), else ours; labels are always *.mrk.json
        extensions = IMAGE_EXTENSIONS
        default = type(settings).model_fields["MONAI_LABEL_DATASTORE_FILE_EXT"].default
        if self.conf.get("image_ext"):
            extensions = tuple(e.strip() for e in self.conf["image_ext"].split(",") if e.strip())
        elif list(settings.MONAI_LABEL_DATASTORE_FILE_EXT) != list(default):
            extensions = tuple(settings.MONAI_LABEL_DATASTORE_FILE_EXT)
        return KneelDatastore(self.studies, image_extensions=extensions,
                              auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                              read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self):
        return {MODEL_NAME: KneelInferTask(self.predictors)}

    def init_trainers(self):
        return {MODEL_NAME: KneelTrainTask(self.store, str(BUNDLE_DIR), str(self.state_dir), device=self.device)}

    def init_scoring_methods(self):
        return {"kneel_epistemic": self._scoring}

    def init_strategies(self):
        return {"random": Random(), "first": First(), "kneel_epistemic": KneelEpistemicStrategy(self._scoring)}
