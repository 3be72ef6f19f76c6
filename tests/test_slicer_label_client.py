"""The Slicer module as a MONAI Label client, headless: a real server on 127.0.0.1, real MRML nodes.

Next sample → download → load as Slicer does → the server's landmarks as fiducials → drag a point →
submit → the server's stored label has the point where it was dragged, in pixels, exactly.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from label_server import running_label_server

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "KneelSlicerExtension" / "KneelLandmarks"

try:
    from slicer import vtkMRMLScene
except ImportError as err:
    if os.environ.get("CI"):
        pytest.fail(f"slicer-core is not installed ({err})", pytrace=False)
    pytest.skip(f"slicer-core is not installed ({err})", allow_module_level=True)

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from KneelLandmarksLib import LabelServer, LabelServerError, LandmarksLogic  # noqa: E402
from KneelLandmarksLib import testing as kt  # noqa: E402

from kneel_monai.io import read_radiograph  # noqa: E402
from kneel_monai.io.markups import read_markups  # noqa: E402
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph  # noqa: E402

TORCH_THREADS = 2  # see conftest.torch_threads
SEEDS = (9_600_001, 9_600_002)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_client")
    truth = {}
    for seed in SEEDS:
        sample = generate_radiograph(seed, spacing_mm=0.3, size=(1100, 1300))
        image, gt = write_radiograph(sample, root / "studies", f"knee_{seed}")
        gt.unlink()  # the studies folder holds radiographs only; the truth stays here
        truth[image.stem] = sample
    with running_label_server(root / "studies", root / "state") as url:
        yield url, truth, root


def test_next_sample_infer_edit_submit(server, tmp_path):
    url, truth, _ = server
    client = LabelServer(url)
    assert "kneel_landmarks" in client.info()["models"]
    image_id = client.next_sample("first")
    assert image_id in truth
    path = client.download_image(image_id, tmp_path)
    assert read_radiograph(path).shape[-2:] == truth[image_id].image.shape

    prediction = client.infer(image_id)
    scene = vtkMRMLScene()
    logic = LandmarksLogic(scene)
    volume = kt.read_volume_file(scene, path)
    results = logic.add_results(logic.prepare(volume, device="cpu"), prediction)
    kt.check_landmarks_on_truth(results, volume, truth[image_id])  # the server's landmarks sit on the knees

    node = results.knees["R"]
    moved = kt.control_point_positions(node)[8] + np.array([3.0, -2.0, 0.0])  # drag T8 in RAS
    node.SetNthControlPointPosition(8, *moved)
    edited = logic.edited_prediction(volume)
    answer = client.submit(image_id, edited)
    assert answer  # the datastore's answer

    import requests

    stored = requests.get(f"{url}/datastore/label", params={"label": image_id, "tag": "final"}, timeout=30)
    assert stored.status_code == 200, stored.text
    (tmp_path / "stored.mrk.json").write_bytes(stored.content)
    spacing = read_radiograph(path).meta["pixel_spacing_mm"]
    back_r = read_markups(tmp_path / "stored.mrk.json", spacing)["R"]
    np.testing.assert_allclose(np.asarray(back_r), np.asarray(edited["knees"]["R"]["landmarks_px"]), atol=1e-3)
    assert not np.allclose(np.asarray(back_r)[8], np.asarray(prediction["knees"]["R"]["landmarks_px"])[8], atol=1.0)


def test_client_errors_are_clear(server):
    url, _, _ = server
    with pytest.raises(LabelServerError, match="does not serve the model 'hip'"):
        LabelServer(url, model="hip").info()
    with pytest.raises(LabelServerError, match="unknown strategy"):
        LabelServer(url).next_sample("loudest")
    with pytest.raises(LabelServerError, match="must start with http"):
        LabelServer("127.0.0.1:8000")
    closed = LabelServer("http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(LabelServerError, match="Connecting on http://127.0.0.1:9 failed"):
        closed.info()
    with pytest.raises(LabelServerError, match="Submitting the label"):
        LabelServer(url).submit("../escape", json.loads(json.dumps(_empty_prediction())))
    with pytest.raises(LabelServerError, match="Starting training .* needs at least 1000 radiographs"):
        LabelServer(url).train({"min_labels": 1000})


def _empty_prediction():
    knee = {"side": "R", "present": True, "landmarks_px": [[100.0 + i, 200.0] for i in range(16)],
            "landmarks_mm": [[30.0 + i, 60.0] for i in range(16)], "confidence": [0.5] * 16, "centre_px": None,
            "reason": "", "measurements": {}, "quality": "ok", "quality_reasons": [], "spread_mm": None}
    return {"format": "kneel-monai/prediction", "format_version": 1, "image": "x.dcm", "image_size": [1100, 1300],
            "pixel_spacing_mm": [0.3, 0.3], "spacing_source": "ImagerPixelSpacing",
            "knees": {"R": knee, "L": {**knee, "side": "L", "present": False, "landmarks_px": None,
                                        "landmarks_mm": None, "confidence": None}}, "timings_s": {}}
