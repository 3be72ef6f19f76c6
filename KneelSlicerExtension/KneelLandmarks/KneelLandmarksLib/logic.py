"""The module's logic without Qt: a volume node in, editable landmarks and measurements out.

:class:`LandmarksLogic` holds every MRML step of the module so that it runs (and is tested)
headless against Slicer's MRML classes; the Slicer module's Logic is this class plus Slicer's
parameter node, and its Widget only wires the panel to it.

Every step is transactional: :meth:`LandmarksLogic.prepare` checks everything and changes
nothing; :meth:`LandmarksLogic.add_results` either adds all result nodes (and corrects the
volume's spacing when the DICOM tags say so) or, on any error, removes what it added and restores
the volume, leaving the scene as it was.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import results as rn
from .geometry import ijk_to_ras_matrix, volume_spacing_row_col
from .runner import PredictionJob, WarmJob, WarmWorker, default_python, predict_command, worker_command
from .volume import KneelInputError, RadiographInput, prepare_radiograph, write_nrrd

__all__ = [
    "DEVICES", "KneelResultNodes", "LandmarksLogic", "PredictionRequest", "check_device", "check_model",
    "radiograph_tensor",
]

#: device choices: "auto" runs on the GPU when PyTorch sees one
DEVICES = ("auto", "cpu", "cuda")
SPACING_ATTRIBUTE = "KneelLandmarks.loadedSpacing"  # on a volume whose spacing was corrected: what Slicer loaded
_SIDES = ("R", "L")  # kneel_monai.landmarks.SIDES (not imported here: Slicer loads this before kneel_monai exists)
_MOVED_PX = 1e-3  # a point further than this from its prediction counts as edited


@dataclass
class PredictionRequest:
    """A checked request: the radiograph copied out of its volume node and the run's settings."""

    radiograph: RadiographInput
    device: str
    refine: bool
    model_path: str | None
    roi_dir: Path
    landmark_dir: Path


@dataclass
class KneelResultNodes:
    """The nodes of one radiograph's results and what to tell the user."""

    volume: Any
    knees: dict[str, Any]
    table: Any
    messages: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> list:
        return [*self.knees.values(), self.table]


def check_device(device: str) -> None:
    """Refuse an unknown device, or the GPU when PyTorch here sees none (a clear message, not a traceback)."""
    if device not in DEVICES:
        raise KneelInputError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise KneelInputError(
                f"GPU asked for, but PyTorch {torch.__version__} ({build}) sees no CUDA GPU on this computer. Choose "
                "Auto or CPU, or install a CUDA build of PyTorch with the PyTorch Utils module.")


def check_model(model_path: str | None) -> tuple[Path, Path]:
    """``(roi_dir, landmark_dir)`` of the model the user chose (empty: the shipped one), or a clear error."""
    from kneel_monai.inference import resolve_model_dirs

    try:
        roi_dir, landmark_dir = resolve_model_dirs(model_path or None)
    except ValueError as err:
        raise KneelInputError(f"Model folder: {err}") from None
    for folder in (roi_dir, landmark_dir):
        if not (folder / "model.json").is_file():
            raise KneelInputError(f"Model folder: {folder} has no model.json (the shipped models are missing from this "
                                  "installation); choose a model folder.")
    return roi_dir, landmark_dir


def radiograph_tensor(radiograph: RadiographInput):
    """The radiograph as :func:`kneel_monai.io.read_radiograph` gives it: ``MetaTensor (1, H, W)``, affine = spacing."""
    import torch
    from monai.data import MetaTensor

    row, col = radiograph.spacing.spacing_mm
    affine = torch.diag(torch.tensor([row, col, 1.0], dtype=torch.float64))
    meta = {"filename_or_obj": radiograph.image_label, "pixel_spacing_mm": (row, col),
            "spacing_source": radiograph.spacing.source,
            # what the source DICOM says of the view, as the reader gives it (describe_radiograph's values)
            "laterality": radiograph.header_tags.get("ImageLaterality"),
            "view_position": radiograph.header_tags.get("ViewPosition"),
            "patient_orientation": radiograph.header_tags.get("PatientOrientation")}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(radiograph.pixels))[None], affine=affine, meta=meta)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "radiograph"


class LandmarksLogic:
    """MRML logic of the Kneel Landmarks module.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        file_for_instance: finds a DICOM instance's file (``slicer.dicomDatabase.fileForInstance``).
        python: the interpreter of the background process (default: ``PythonSlicer`` if on the PATH, else
            this interpreter).
        env: the background process's environment (default: this process's).
        package_root: a folder holding ``kneel_monai/`` to run in the background process (default: the
            installed package).
        warm: keep one background process for the session (``kneel worker``: PyTorch and the models load
            once; the first Apply pays that, later ones only the prediction); False starts ``kneel predict``
            for every radiograph.
    """

    def __init__(self, scene, file_for_instance: Callable[[str], str] | None = None, python: str | None = None,
                 env: dict[str, str] | None = None, package_root: str | os.PathLike | None = None,
                 warm: bool = True) -> None:
        self.scene = scene
        self.warm = warm
        self._worker: WarmWorker | None = None
        self.file_for_instance = file_for_instance
        self.python = python or default_python()
        self.env = env
        self.package_root = package_root
        self._observations: dict[str, tuple[Any, int]] = {}

    # ------------------------------------------------------------------ checking and predicting
    def prepare(self, volume_node, device: str = "auto", refine: bool = True,
                model_path: str | None = None, field_width_mm: float | None = None) -> PredictionRequest:
        """Check the volume, the device and the model; nothing in the scene changes. ``field_width_mm`` gives a
        volume with Slicer's 1 mm pixels and nothing to check them against its spacing (see ``check_spacing``)."""
        radiograph = prepare_radiograph(volume_node, self.file_for_instance, field_width_mm)
        check_device(device)
        roi_dir, landmark_dir = check_model(model_path)
        return PredictionRequest(radiograph, device, bool(refine), model_path or None, roi_dir, landmark_dir)

    def predict_in_process(self, request: PredictionRequest, predictor=None) -> dict[str, Any]:
        """Run the predictor in this process (scripts, tests); the panel uses :meth:`start_prediction`."""
        from kneel_monai.inference import KneelPredictor

        if predictor is None:
            predictor = KneelPredictor(request.roi_dir, request.landmark_dir, device=request.device,
                                       refine=request.refine)
        result = predictor.predict_image(radiograph_tensor(request.radiograph), request.radiograph.image_label)
        return result.to_dict()

    def start_prediction(self, request: PredictionRequest) -> PredictionJob | WarmJob:
        """Predict the radiograph in a background process (the session's warm one, or a new ``kneel predict``);
        poll the returned job."""
        work_dir = PredictionJob.new_work_dir()
        try:
            image = write_nrrd(request.radiograph.pixels, request.radiograph.spacing.spacing_mm,
                               work_dir / "radiograph.nrrd", request.radiograph.header_tags)
            out_dir = work_dir / "prediction"
            if self.warm:
                return self._worker_for(request).submit(image, out_dir, work_dir)
            command = predict_command(self.python, image, out_dir, request.device, request.refine,
                                      request.model_path, self.package_root)
            return PredictionJob(command, work_dir, out_dir / "radiograph.json", env=self.env).start()
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise

    def _worker_for(self, request: PredictionRequest) -> WarmWorker:
        """The session's warm process for these settings (another device, model or refinement: a new one)."""
        command = worker_command(self.python, request.device, request.refine, request.model_path, self.package_root)
        if self._worker is None or self._worker.command != command:
            self.stop_worker()
            self._worker = WarmWorker(command, env=self.env)
        return self._worker

    def stop_worker(self) -> None:
        """End the session's warm process (the module's cleanup; a later Apply starts a new one)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    # ------------------------------------------------------------------ results into the scene
    def add_results(self, request: PredictionRequest, prediction: dict[str, Any]) -> KneelResultNodes:
        """Add the landmarks and the measurements table of a prediction (replacing earlier ones of the volume)."""
        volume = self.scene.GetNodeByID(request.radiograph.volume_id)
        if volume is None:
            raise KneelInputError(f"'{request.radiograph.volume_name}' was removed from the scene while the model ran.")
        prediction = self._checked_prediction(request, prediction)
        present = [s for s in _SIDES if prediction["knees"][s]["present"]]
        if not present:
            reasons = "; ".join(f"{s}: {prediction['knees'][s].get('reason', '')}" for s in _SIDES)
            raise KneelInputError(f"No knee found on '{request.radiograph.volume_name}' ({reasons}).")
        previous = self.results_for(volume)
        spacing = request.radiograph.spacing
        loaded_spacing = volume.GetSpacing()
        created: list = []
        try:
            if spacing.corrected:
                volume.SetSpacing(spacing.spacing_mm[1], spacing.spacing_mm[0], loaded_spacing[2])
                volume.SetAttribute(SPACING_ATTRIBUTE, json.dumps([loaded_spacing[1], loaded_spacing[0]]))
            ijk_to_ras = ijk_to_ras_matrix(volume)
            knees = {}
            for side in present:
                knees[side] = rn.create_knee_node(self.scene, side, prediction["knees"][side], ijk_to_ras, volume)
                created.append(knees[side])
            table = rn.create_measurements_table(self.scene, volume, prediction,
                                                 f"{request.radiograph.volume_name} knee measurements")
            created.append(table)
            for node in knees.values():
                node.SetNodeReferenceID(rn.TABLE_REFERENCE, table.GetID())
        except BaseException:
            rn.remove_nodes(self.scene, created)
            if spacing.corrected:
                volume.SetSpacing(*loaded_spacing)
                volume.RemoveAttribute(SPACING_ATTRIBUTE)
            raise
        if previous is not None:
            self.remove_results(previous)
        for node in knees.values():
            self._observe(node)
        messages = list(request.radiograph.messages) + [self.summary(prediction)]
        return KneelResultNodes(volume, knees, table, messages)

    @staticmethod
    def _checked_prediction(request: PredictionRequest, prediction: dict[str, Any]) -> dict[str, Any]:
        from kneel_monai.results import PREDICTION_FORMAT

        if not isinstance(prediction, dict) or prediction.get("format") != PREDICTION_FORMAT:
            raise KneelInputError("The model's output is not a kneel-monai prediction.")
        h, w = request.radiograph.pixels.shape
        if list(prediction.get("image_size", [])) != [h, w]:
            raise KneelInputError(f"The prediction is for a {prediction.get('image_size')} image, the radiograph is "
                                  f"{h} × {w}.")
        prediction = copy.deepcopy(prediction)
        if set(prediction.get("knees", {})) != set(_SIDES):
            raise KneelInputError("The prediction does not have both knee sides.")
        prediction["image"] = request.radiograph.image_label
        prediction["pixel_spacing_mm"] = list(request.radiograph.spacing.spacing_mm)
        prediction["spacing_source"] = request.radiograph.spacing.source
        return prediction

    @staticmethod
    def summary(prediction: dict[str, Any]) -> str:
        from kneel_monai.io.markups import KNEE_NAMES

        parts = []
        for side in _SIDES:
            knee = prediction["knees"][side]
            if knee["present"]:
                quality = knee.get("quality") or "?"
                reasons = f" ({'; '.join(knee['quality_reasons'])})" if knee.get("quality_reasons") else ""
                parts.append(f"{KNEE_NAMES[side]}: 16 landmarks, quality {quality}{reasons}")
            else:
                parts.append(f"{KNEE_NAMES[side]}: not found ({knee.get('reason', '')})")
        return "; ".join(parts) + "."

    def results_for(self, volume_node) -> KneelResultNodes | None:
        """The result nodes on a volume, or None."""
        if volume_node is None:
            return None
        knees = rn.knee_nodes_of(self.scene, volume_node.GetID())
        table = rn.measurements_table_of(self.scene, volume_node.GetID())
        if not knees and table is None:
            return None
        return KneelResultNodes(volume_node, knees, table)

    def remove_results(self, results: KneelResultNodes) -> None:
        for node in results.knees.values():
            self._unobserve(node)
        rn.remove_nodes(self.scene, [n for n in results.nodes if n is not None])

    # ------------------------------------------------------------------ edits and measurements
    def knee_geometry(self, knee_node) -> tuple[np.ndarray, np.ndarray]:
        """A knee node's points now: ``((16, 2) pixels, (16, 2) mm)`` in the radiograph's pixel grid."""
        volume = knee_node.GetNodeReference(rn.VOLUME_REFERENCE)
        if volume is None:
            raise KneelInputError(f"'{knee_node.GetName()}' has lost its radiograph volume.")
        px = rn.knee_points_px(knee_node, ijk_to_ras_matrix(volume))
        row, col = volume_spacing_row_col(volume)
        return px, px * np.array([col, row])

    def update_measurements(self, knee_node) -> dict[str, float]:
        """Recompute a knee's measurements from its points and write them into the table."""
        from kneel_monai.measurements import knee_measurements

        _, mm = self.knee_geometry(knee_node)
        measured = knee_measurements(mm)
        table = knee_node.GetNodeReference(rn.TABLE_REFERENCE)
        if table is not None:
            rn.set_table_column(table, knee_node.GetAttribute(rn.SIDE), measured)
        return measured

    def _observe(self, knee_node) -> None:
        self._unobserve(knee_node)
        tag = knee_node.AddObserver(knee_node.PointModifiedEvent, self._on_point_modified)
        self._observations[knee_node.GetID()] = (knee_node, tag)

    def _unobserve(self, knee_node) -> None:
        node, tag = self._observations.pop(knee_node.GetID(), (None, None))
        if node is not None:
            node.RemoveObserver(tag)

    def _on_point_modified(self, caller, event=None) -> None:
        try:
            self.update_measurements(caller)
        except (KneelInputError, ValueError):  # a node being edited into an odd state: the table waits
            pass

    def observe_results(self) -> int:
        """Observe every knee node of the scene (after a scene is loaded); returns how many are observed."""
        for node_id, (node, _) in list(self._observations.items()):
            if node.GetScene() is not self.scene:
                self._unobserve(node)
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            if node.GetAttribute(rn.ROLE) == "landmarks" and node.GetID() not in self._observations:
                self._observe(node)
        return len(self._observations)

    def stop_observing(self) -> None:
        for node, tag in self._observations.values():
            node.RemoveObserver(tag)
        self._observations.clear()

    def edited_prediction(self, volume_node) -> dict[str, Any]:
        """The volume's prediction JSON with the landmarks where they are now (and measurements redone)."""
        from kneel_monai.landmarks import LANDMARKS
        from kneel_monai.measurements import knee_measurements

        results = self.results_for(volume_node)
        if results is None or results.table is None:
            raise KneelInputError(f"No landmarks on '{volume_node.GetName() if volume_node else ''}': run Apply first.")
        prediction = json.loads(results.table.GetAttribute(rn.PREDICTION))
        for side in _SIDES:
            knee = prediction["knees"][side]
            if not knee["present"]:
                continue
            node = results.knees.get(side)
            if node is None:
                knee.update(present=False, landmarks_px=None, landmarks_mm=None, measurements={},
                            reason="landmarks deleted in Slicer")
                continue
            px, mm = self.knee_geometry(node)
            moved = np.linalg.norm(px - np.asarray(knee["landmarks_px"]), axis=1) > _MOVED_PX
            knee["landmarks_px"] = px.round(4).tolist()
            knee["landmarks_mm"] = mm.round(4).tolist()
            knee["measurements"] = knee_measurements(mm)
            if moved.any():
                labels = ", ".join(LANDMARKS[i].label.split(" ", 1)[0] for i in np.flatnonzero(moved))
                knee["quality_reasons"] = list(knee.get("quality_reasons") or []) + [f"edited in Slicer: {labels}"]
        return prediction

    # ------------------------------------------------------------------ saving
    def save_markups(self, volume_node, folder: str | os.PathLike) -> list[Path]:
        """Write each knee node with Slicer's markups JSON storage node: ``<volume>_right_knee.mrk.json`` …"""
        results = self.results_for(volume_node)
        if results is None or not results.knees:
            raise KneelInputError("No landmarks to save: run Apply first.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for side in _SIDES:
            node = results.knees.get(side)
            if node is None:
                continue
            path = folder / f"{_safe_name(volume_node.GetName())}_{'right' if side == 'R' else 'left'}_knee.mrk.json"
            storage = rn.new_storage_node(self.scene, "vtkMRMLMarkupsJsonStorageNode")
            storage.SetFileName(str(path))
            if not storage.WriteData(node):
                raise OSError(f"could not write {path}")
            paths.append(path)
        return paths

    def export_cohort_csv(self, volume_node, path: str | os.PathLike) -> Path:
        """Write the knees' cohort-CSV rows (``kneel predict``'s columns) with the edited landmarks.

        An existing cohort CSV gets the rows added (rows of the same image and side replaced).
        """
        from kneel_monai.atomic import atomic_write_text
        from kneel_monai.cohort import COHORT_COLUMNS, cohort_rows

        rows = cohort_rows(self.edited_prediction(volume_node))
        path = Path(path)
        kept: list[dict[str, str]] = []
        if path.is_file() and path.stat().st_size:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != COHORT_COLUMNS:
                    raise KneelInputError(f"{path.name} is not a kneel cohort CSV (its columns differ); choose another "
                                          "file.")
                new = {(r["file"], r["side"]) for r in rows}
                kept = [r for r in reader if (r["file"], r["side"]) not in new]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COHORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept + rows)
        return atomic_write_text(path, buffer.getvalue())
