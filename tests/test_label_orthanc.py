"""The MONAI Label app on a real PACS: Orthanc + DICOMweb on 127.0.0.1, loaded with synthetic radiographs.

`monailabel start_server --studies http://127.0.0.1:<port>/dicom-web`: the series are listed by QIDO
(every modality, not MONAI Label's CT-only default), fetched by WADO into the app's cache, predicted
near the ground truth, and a `.mrk.json` label is kept by the app (not uploaded as DICOM SEG) — with
nothing downloaded from the internet (MONAI Label's dcmqi download is skipped).
"""

import json

import numpy as np
import pytest
import requests
from label_server import running_label_server
from orthanc_server import require_orthanc, start_orthanc, upload

from kneel_monai.metrics import landmark_errors_mm
from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

SAMPLES = {9_700_001: (1100, 1300), 9_700_002: (1000, 1250)}  # distinct sizes tell the series apart


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory):
    require_orthanc()
    root = tmp_path_factory.mktemp("label_pacs")
    truth, files = {}, []
    for seed, size in SAMPLES.items():
        sample = generate_radiograph(seed, spacing_mm=0.3, size=size)
        image, _ = write_radiograph(sample, root / "dicom", f"k{seed}")
        files.append(image)
        truth[size] = sample
    with start_orthanc(root / "orthanc") as pacs:
        upload(pacs["url"], files)
        with running_label_server(pacs["dicomweb"], root / "state") as url:
            yield url, truth


def test_infer_on_a_pacs_series(pacs_server):
    url, truth = pacs_server
    assert "kneel_landmarks" in requests.get(f"{url}/info/", timeout=30).json()["models"]
    seen = set()
    for _ in SAMPLES:
        first = requests.post(f"{url}/activelearning/random", json={}, timeout=60).json()
        seen.add(first["id"])
    seen.add(requests.post(f"{url}/activelearning/first", json={}, timeout=60).json()["id"])
    predicted = set()
    for series in sorted(seen):  # every series a strategy offered is one of the PACS's radiographs
        answer = requests.post(f"{url}/infer/kneel_landmarks", params={"image": series, "output": "json"}, json={},
                               timeout=120)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()
        sample = truth[tuple(prediction["image_size"])]
        predicted.add(tuple(prediction["image_size"]))
        assert prediction["spacing_source"] == "ImagerPixelSpacing"  # the DICOM tags came through the PACS
        errors = np.concatenate([
            landmark_errors_mm(np.array(prediction["knees"][side]["landmarks_px"])[None],
                               np.array(sample.knees[side]["landmarks_px"])[None],
                               np.array(sample.pixel_spacing_mm[::-1])[None])[0] for side in ("R", "L")])
        assert errors.max() < 10 and np.median(errors) < 3, errors
    assert len(predicted) == len(seen)  # distinct ids, distinct radiographs


def test_a_label_for_a_pacs_series_is_kept_by_the_app(pacs_server):
    url, _ = pacs_server
    series = requests.post(f"{url}/activelearning/first", json={}, timeout=60).json()["id"]
    markups = requests.post(f"{url}/infer/kneel_landmarks", params={"image": series, "output": "image"}, json={},
                            timeout=120)
    assert markups.status_code == 200, markups.text
    label = json.loads(markups.content)
    stored = requests.put(f"{url}/datastore/label", params={"image": series, "tag": "final"},
                          files={"label": ("label.mrk.json", markups.content)}, data={"params": "{}"}, timeout=60)
    assert stored.status_code == 200, stored.text
    back = requests.get(f"{url}/datastore/label", params={"label": series, "tag": "final"}, timeout=60)
    assert back.status_code == 200, back.text
    assert json.loads(back.content)["markups"] == label["markups"]
    wrong = requests.put(f"{url}/datastore/label", params={"image": series, "tag": "final"},
                         files={"label": ("label.nii.gz", b"not markups")}, data={"params": "{}"}, timeout=60)
    assert 400 <= wrong.status_code < 500, wrong.text


def _label(url, series) -> None:
    markups = requests.post(f"{url}/infer/kneel_landmarks", params={"image": series, "output": "image"}, json={},
                            timeout=120)
    assert markups.status_code == 200, markups.text
    stored = requests.put(f"{url}/datastore/label", params={"image": series, "tag": "final"},
                          files={"label": ("label.mrk.json", markups.content)}, data={"params": "{}"}, timeout=60)
    assert stored.status_code == 200, stored.text


def test_training_on_pacs_labels_publishes_a_model(pacs_server):
    """Labels kept by the app count as labelled (MONAI Label looks for DICOM SEG series): each next sample is
    a series without a label, and training runs on the labels and publishes a model that infer then uses."""
    from label_server import wait_for_training

    url, _ = pacs_server
    labelled = []
    while series := requests.post(f"{url}/activelearning/first", json={}, timeout=60).json().get("id"):
        assert series not in labelled and len(labelled) < len(SAMPLES)
        _label(url, series)
        labelled.append(series)
    assert labelled  # (whatever the earlier tests labelled, now every series has a label)
    r = requests.post(f"{url}/train/kneel_landmarks", json={"max_epochs": 1, "epoch_length": 2, "batch_size": 2},
                      timeout=60)
    assert r.status_code == 200, r.text
    status = wait_for_training(url)
    assert status["status"] == "DONE", status["details"][-20:]
    stats = requests.get(f"{url}/info/", timeout=30).json()["train_stats"]["kneel_landmarks"]
    assert stats["model_version"] == 1 and stats["metrics"]["n_labels"] == len(SAMPLES)
    answer = requests.post(f"{url}/infer/kneel_landmarks", params={"image": labelled[0], "output": "json"}, json={},
                           timeout=120)
    assert answer.status_code == 200 and answer.json()["model_version"] == 1, answer.text
