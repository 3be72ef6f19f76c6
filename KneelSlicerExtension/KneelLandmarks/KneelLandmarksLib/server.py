"""The module as a MONAI Label client: next sample, infer on the server, submit the edited landmarks, train.

A thin layer over MONAI Label's own Python client (``monailabel.client.MONAILabelClient``; inside
Slicer the MONAILabel extension's copy, ``MONAILabelLib``, is used when the package is not
installed). The server is the project's MONAI Label app (``kneel label-server``), model
``kneel_landmarks``: its infer returns the prediction (the ``kneel-monai/prediction`` JSON that
``kneel predict`` writes) and a ``.mrk.json`` label; a submitted label is a ``.mrk.json`` of both
knees written by :func:`kneel_monai.io.markups.write_markups` from the landmarks as edited, so the
server turns it back into pixels exactly.

Nothing here touches the scene: :class:`~KneelLandmarksLib.logic.LandmarksLogic` adds the
prediction (``add_results``) and reads the edits back (``edited_prediction``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["LabelServerError", "LabelServer", "DEFAULT_MODEL", "STRATEGIES"]

DEFAULT_MODEL = "kneel_landmarks"
#: the panel's names → the app's active-learning strategies
STRATEGIES = {"epistemic": "kneel_epistemic", "random": "random", "first": "first"}


class LabelServerError(RuntimeError):
    """A MONAI Label request that failed, with the server's own message."""


def _client_class():
    try:
        from monailabel.client import MONAILabelClient
    except ImportError:
        try:  # inside Slicer, with the MONAILabel extension installed
            from MONAILabelLib import MONAILabelClient  # type: ignore[no-redef]
        except ImportError:
            raise LabelServerError("MONAI Label's client is not available: install the MONAILabel extension "
                                   "(Extensions Manager) or the monailabel package") from None
    return MONAILabelClient


def _server_message(err: Exception) -> str:
    """The useful part of a MONAI Label client error: the server's ``detail`` when it sent one."""
    text = str(getattr(err, "msg", "") or err)
    start = text.find("{")
    if start >= 0:
        try:
            detail = json.loads(text[start:]).get("detail")
            if detail:
                return detail if isinstance(detail, str) else json.dumps(detail)
        except (ValueError, AttributeError):
            pass
    return text


class LabelServer:
    """One MONAI Label server and model.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        model: the app's model name (``kneel_landmarks``).
        client: a MONAI Label client object (default: one made for ``url``).
    """

    def __init__(self, url: str, model: str = DEFAULT_MODEL, client: Any = None) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise LabelServerError(f"Server URL must start with http:// or https://, got {url!r}")
        self.url, self.model = url.rstrip("/"), model
        self.client = client if client is not None else _client_class()(self.url)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the client raises its own exception types, or URLError/OSError
            raise LabelServerError(f"{what} on {self.url} failed: {_server_message(err)}") from None

    # ------------------------------------------------------------------ session
    def info(self) -> dict[str, Any]:
        """The server's ``/info``; checks that it serves the landmark model."""
        info = self._call("Connecting", self.client.info)
        if self.model not in (info.get("models") or {}):
            raise LabelServerError(f"{self.url} does not serve the model '{self.model}' "
                                   f"(it has: {', '.join(info.get('models') or {}) or 'none'})")
        return info

    def next_sample(self, strategy: str = "epistemic") -> str:
        """The id of the next radiograph to annotate, by an active-learning strategy."""
        if strategy not in STRATEGIES:
            raise LabelServerError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        answer = self._call("Asking for the next sample", self.client.next_sample, STRATEGIES[strategy], {})
        image_id = answer.get("id") if isinstance(answer, dict) else None
        if not image_id:
            raise LabelServerError(f"{self.url} has no radiograph left to annotate ({strategy})")
        return image_id

    def download_image(self, image_id: str, folder: str | os.PathLike | None = None) -> Path:
        """Fetch the radiograph (``GET /datastore/image``) into ``folder``; returns the file to load in Slicer."""
        import urllib.parse
        import urllib.request

        folder = Path(folder or tempfile.mkdtemp(prefix="kneel-label-"))
        folder.mkdir(parents=True, exist_ok=True)
        url = f"{self.url}/datastore/image?image={urllib.parse.quote_plus(image_id)}"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
                disposition = response.headers.get("content-disposition", "")
        except Exception as err:  # noqa: BLE001
            raise LabelServerError(f"Downloading '{image_id}' from {self.url} failed: {err}") from None
        name = disposition.split("filename=")[-1].strip('"; ') if "filename=" in disposition else ""
        suffix = "".join(Path(name).suffixes) or ".dcm"
        path = folder / (Path(image_id).name.replace("..", "_") + ("" if image_id.endswith(suffix) else suffix))
        path.write_bytes(data)
        return path

    def infer(self, image_id: str) -> dict[str, Any]:
        """The server's prediction for a radiograph (the ``kneel-monai/prediction`` dict)."""
        label_file, body = self._call("Inference", self.client.infer, self.model, image_id, {})
        try:
            result = json.loads(body) if isinstance(body, (str, bytes)) else body
        except ValueError:
            result = {}
        prediction = (result or {}).get("prediction") if isinstance(result, dict) else None
        if prediction is None and isinstance(result, dict) and "knees" in result:
            prediction = result
        if prediction is None:
            raise LabelServerError(f"{self.url}: the infer answer for '{image_id}' has no prediction "
                                   f"(keys: {', '.join(result or {}) if isinstance(result, dict) else type(result)})")
        if label_file and os.path.isfile(label_file):
            os.remove(label_file)  # the same landmarks as the prediction, as markups; not needed here
        return prediction

    def submit(self, image_id: str, prediction: dict[str, Any], tag: str = "final") -> dict[str, Any]:
        """Store the landmarks as edited (a prediction dict, e.g. ``LandmarksLogic.edited_prediction``) as the
        image's label."""
        from kneel_monai.io.markups import write_markups
        from kneel_monai.results import RadiographResult  # no torch needed to write a label

        with tempfile.TemporaryDirectory(prefix="kneel-label-") as tmp:
            path = write_markups(RadiographResult.from_dict(prediction), Path(tmp) / "label.mrk.json")
            return self._call("Submitting the label", self.client.save_label, image_id, str(path), tag)

    def train(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start the app's training on the labelled radiographs."""
        return self._call("Starting training", self.client.train_start, self.model, params or {})

