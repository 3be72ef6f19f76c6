"""A real MONAI Label server for tests: ``monailabel start_server`` on a free 127.0.0.1 port.

Reusable (Orthanc/DICOMweb and Slicer-client tests)::

    from label_server import running_label_server
    with running_label_server(studies, tmp_path / "state") as url:   # studies: a folder or a DICOMweb URL
        requests.get(url + "/info/")

All server state (sessions, trained models, scores, matplotlib cache) is under ``state``;
``MONAI_LABEL_TRACKING_ENABLED=false``. Skips when ``monailabel`` is not installed (fails under CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servers import free_port, missing, wait_until_up

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_DIR = REPO_ROOT / "monailabel_app"


def require_monailabel() -> str:
    exe = shutil.which("monailabel")
    try:
        import monailabel  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        missing("monailabel is not installed (see docs/label.md: two-step install)")
    return exe


@contextlib.contextmanager
def running_label_server(studies: str | os.PathLike, state: str | os.PathLike, conf: dict[str, str] | None = None,
                         env: dict[str, str] | None = None, timeout: float = 120.0):
    """Start the app on ``studies``; yield its base URL; stop it (its whole process group)."""

    exe = require_monailabel()
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = {"models": "kneel_landmarks", "state_dir": str(state / "app"), "device": "cpu", **(conf or {})}
    cmd = [exe, "start_server", "--app", str(APP_DIR), "--studies", str(studies), "--host", "127.0.0.1",
           "--port", str(port)]
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    full_env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false",
                "MONAI_LABEL_SESSION_PATH": str(state / "sessions"),
                "MPLCONFIGDIR": str(state / "mpl"), "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
                **(env or {})}
    log = open(state / f"server_{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(state),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url + "/info/", state / f"server_{port}.log", "monailabel", timeout)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


def wait_for_training(url: str, timeout: float = 300.0) -> dict:
    """Poll ``GET /train/`` until the newest task has ended; return its final status.

    Not ``check_if_running``: MONAI Label registers the task's process a moment after answering the POST,
    and in that window "nothing is running" would be read as "done".
    """
    import requests

    deadline = time.time() + timeout
    while True:
        status = requests.get(url + "/train/").json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        if time.time() > deadline:
            raise TimeoutError("training still running")
        time.sleep(1)


def python() -> str:
    return sys.executable


def stock_client_label(tmp_path: Path, boxes: int) -> bytes:
    """What MONAI Label's own Slicer client submits for a detection-type model (its
    ``onGenerateJSONFromMulipltROIs``): every ROI node of the scene saved by Slicer's markups JSON storage
    node, the ``markups`` entries gathered under one ``@schema``."""
    import slicer
    from slicer import vtkMRMLScene

    scene = vtkMRMLScene()
    entries = []
    for i in range(boxes):
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"box {i}")
        roi.SetCenter(100 + 50 * i, 80, 0)
        roi.SetSize(60, 40, 1)
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        storage.SetFileName(str(tmp_path / f"box{i}.json"))
        assert storage.WriteData(roi)
        entries.append(json.loads((tmp_path / f"box{i}.json").read_text())["markups"][0])
    schema = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
              "markups-schema-v1.0.3.json#")  # as the client writes it
    return json.dumps({"@schema": schema, "markups": entries}).encode()
