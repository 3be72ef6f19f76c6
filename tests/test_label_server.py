"""End to end against a real MONAI Label server (``monailabel start_server``) on 127.0.0.1 and a local studies folder.

Endpoints used (what a client sends):

* ``GET /info/``; ``POST /infer/kneel_landmarks?image=<id>&output=image|json``;
* ``PUT /datastore/label?image=<id>&tag=final|original`` multipart field ``label`` (``<name>.mrk.json``);
* ``PUT /datastore/image?image=<id>`` multipart field ``file``;
* ``POST /train/kneel_landmarks`` JSON ``{"max_epochs": 1, "epoch_length": 2, "batch_size": 2}``, ``GET /train/``;
* ``POST /scoring/kneel_epistemic?run_sync=true`` JSON ``{"mc_samples": 3}``; ``POST /activelearning/<strategy>``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests  # noqa: E402 — a test dependency (the label extra): missing is an error, not a skip
from label_server import require_monailabel, running_label_server, stock_client_label, wait_for_training

SEEDS = (9_500_100, 9_500_101, 9_500_102, 9_500_103)
ONE_KNEE_SEED = 9_500_104
LABELS_DIR = ("labels", "final")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    require_monailabel()
    from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

    root = tmp_path_factory.mktemp("label")
    studies, gt = root / "studies", root / "gt"
    gt.mkdir()
    for i, seed in enumerate(SEEDS):
        _, js = write_radiograph(generate_radiograph(seed, spacing_mm=0.3, size=(1100, 1300)), studies, f"knee_{i}")
        shutil.move(js, gt / js.name)
    _, js = write_radiograph(generate_radiograph(ONE_KNEE_SEED, spacing_mm=0.3, size=(1100, 1300), knees=("R",)),
                             studies, "one_knee")
    shutil.move(js, gt / js.name)
    return root


@pytest.fixture(scope="module")
def server(studies):
    with running_label_server(studies / "studies", studies / "state") as url:
        yield url


def infer(url, image, output="json", **params):
    r = requests.post(f"{url}/infer/kneel_landmarks", params={"image": image, "output": output, **params}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json() if output == "json" else r.content


def put_label(url, image, content, tag="final", name="label.mrk.json"):
    return requests.put(f"{url}/datastore/label", params={"image": image, "tag": tag},
                        files={"label": (name, content)}, timeout=60)


def stored(studies) -> dict[str, bytes]:
    folder = studies / "studies" / "labels"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.mrk.json")}


def gt_px(studies, stem):
    data = json.loads((studies / "gt" / f"{stem}.json").read_text())
    return {s: None if k is None else np.asarray(k["landmarks_px"]) for s, k in data["knees"].items()}


def test_info_lists_the_model(server):
    info = requests.get(server + "/info/").json()
    assert "kneel_landmarks" in info["models"] and "kneel_landmarks" in info["trainers"]
    assert {"random", "first", "kneel_epistemic"} <= set(info["strategies"])
    assert "kneel_epistemic" in info["scoring"]
    assert info["datastore"]["total"] == len(SEEDS) + 1


def test_infer_returns_schema_valid_markups_near_ground_truth(server, studies, markups_schema):
    import jsonschema

    from kneel_monai.label import label_to_pixels, parse_label

    mrk = json.loads(infer(server, "knee_0", output="image"))
    jsonschema.validate(mrk, markups_schema)
    assert [m["name"] for m in mrk["markups"]] == ["Right knee", "Left knee"]
    result = infer(server, "knee_0")
    assert result["model_version"] == 0
    truth = gt_px(studies, "knee_0")
    px = label_to_pixels(parse_label(mrk), tuple(result["pixel_spacing_mm"]))
    for side in ("R", "L"):
        knee = result["knees"][side]
        assert knee["present"] and len(knee["confidence"]) == 16 and knee["measurements"]
        np.testing.assert_allclose(px[side], knee["landmarks_px"], atol=1e-3)
        err_mm = np.linalg.norm(px[side] - truth[side], axis=1) * 0.3
        assert np.median(err_mm) < 3.0, err_mm
    one = json.loads(infer(server, "one_knee", output="image"))
    jsonschema.validate(one, markups_schema)
    assert [m["name"] for m in one["markups"]] == ["Right knee"] and "L" in one["kneel"]["absent_knees"]


def test_label_upload_is_stored_versioned_and_round_trips_to_pixels(server, studies):
    from kneel_monai.label import label_to_ground_truth

    original = infer(server, "knee_1", output="image")
    assert put_label(server, "knee_1", original, tag="original").status_code == 200
    corrected = json.loads(original)
    truth = gt_px(studies, "knee_1")
    for markup, side in zip(corrected["markups"], ("R", "L")):  # the annotator moves every point to the truth
        for i, cp in enumerate(markup["controlPoints"]):
            cp["position"] = [truth[side][i][0] * 0.3, truth[side][i][1] * 0.3, 0.0]
    body = json.dumps(corrected).encode()
    r = put_label(server, "knee_1", body)
    assert r.status_code == 200, r.text
    files = stored(studies)
    assert files["final/knee_1.mrk.json"] == body and files["original/knee_1.mrk.json"] == original
    ds = requests.get(server + "/datastore/", params={"output": "all"}).json()["objects"]["knee_1"]["labels"]
    assert set(ds) == {"final", "original"} and ds["final"]["info"]["knees"] == ["R", "L"]
    label = requests.get(server + "/datastore/label", params={"label": "knee_1", "tag": "final"})
    assert label.content == body
    out = label_to_ground_truth(studies / "studies/labels/final/knee_1.mrk.json", studies / "studies/knee_1.dcm",
                                "knee_1", studies / "gt_roundtrip.json")
    back = json.loads(out.read_text())["knees"]
    for side in ("R", "L"):
        np.testing.assert_allclose(back[side]["landmarks_px"], truth[side], atol=1e-9)


def _bad_cases(good: dict):
    one = json.loads(json.dumps(good))
    one["markups"].pop(1)
    wrong = json.loads(json.dumps(good))
    wrong["markups"][0]["controlPoints"] = wrong["markups"][0]["controlPoints"][:5]
    huge = json.loads(json.dumps(good))
    huge["markups"][0]["controlPoints"][0]["position"][0] = 10 ** 400  # an integer of 401 digits
    return [("knee_2", b"{oops", 400, "not JSON"),
            ("knee_2", ("[" * 100_000 + "]" * 100_000).encode(), 400, "nested far too deep"),
            ("knee_2", json.dumps(huge).encode(), 422, "out of range"),
            ("knee_2", json.dumps({"markups": []}).encode(), 422, "@schema"),
            ("knee_2", json.dumps(wrong).encode(), 422, "5 control points"),
            ("knee_2", json.dumps(one).encode(), 422, "only one knee"),
            ("no_such_image", json.dumps(good).encode(), 404, "unknown image id"),
            ("..%2Fx", json.dumps(good).encode(), 400, "invalid image id"),
            ("../knee_2", json.dumps(good).encode(), 400, "invalid image id")]


def test_bad_input_is_rejected_and_nothing_stored(server, studies, tmp_path):
    good = json.loads(infer(server, "knee_2", output="image"))
    before = stored(studies)
    for image, content, status, words in _bad_cases(good):
        r = put_label(server, image, content)
        assert r.status_code == status and words in r.json()["detail"], (image, r.status_code, r.text)
    r = requests.put(server + "/datastore/image", params={"image": "notes"},
                     files={"file": ("notes.png", b"this is not an image")})
    assert r.status_code == 400 and "not a readable radiograph" in r.json()["detail"]
    assert "/tmp" not in r.json()["detail"] and "notes" in r.json()["detail"]  # not the server's temporary file
    r = requests.put(f"{server}/datastore/label", params={"image": "knee_2", "tag": "../evil"},
                     files={"label": ("label.mrk.json", json.dumps(good).encode())}, timeout=60)
    assert r.status_code == 400 and "invalid label tag" in r.json()["detail"]
    # MONAI Label's own Slicer client, as it submits for a detection model: the scene's boxes, no tag, a temp name
    r = requests.put(f"{server}/datastore/label", params={"image": "knee_2"},
                     data={"params": json.dumps({"label_info": [], "model": "kneel_landmarks"})},
                     files={"label": ("tmpk3x9.json", stock_client_label(tmp_path, 1))}, timeout=60)
    assert r.status_code == 422 and "is a box (ROI)" in r.json()["detail"], r.text
    assert "Kneel Landmarks module" in r.json()["detail"]
    assert stored(studies) == before
    assert not (studies / "studies" / "notes.png").exists()
    assert requests.get(server + "/info/").json()["datastore"]["total"] == len(SEEDS) + 1
    # a radiograph with one knee: its label names the absent knee and is accepted
    assert put_label(server, "one_knee", infer(server, "one_knee", output="image")).status_code == 200


def test_concurrent_label_submissions_lose_nothing(server, studies):
    base = json.loads(infer(server, "knee_3", output="image"))
    n_clients, per_client = 4, 5

    def client(k):
        for j in range(per_client):
            body = json.loads(json.dumps(base))
            body["kneel"]["submission"] = f"{k}-{j}"
            r = put_label(server, "knee_3", json.dumps(body).encode())
            assert r.status_code == 200, r.text

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = studies / "studies" / "labels" / "final"
    revisions = [json.loads(p.read_text())["kneel"]["submission"] for p in (folder / ".history").glob("knee_3.v*")]
    revisions.append(json.loads((folder / "knee_3.mrk.json").read_text())["kneel"]["submission"])
    assert sorted(revisions) == sorted(f"{k}-{j}" for k in range(n_clients) for j in range(per_client))
    info = requests.get(server + "/datastore/", params={"output": "all"}).json()["objects"]["knee_3"]
    assert info["labels"]["final"]["info"]["version"] == n_clients * per_client


def test_training_with_too_few_labels_is_refused_before_it_starts(server):
    def n_tasks():
        r = requests.get(server + "/train/", params={"all": "true"})
        return len(r.json()) if r.status_code == 200 else 0

    before = n_tasks()
    r = requests.post(server + "/train/kneel_landmarks", json={"min_labels": 1000})
    assert r.status_code == 409 and "needs at least 1000 radiographs with a final label" in r.json()["detail"], r.text
    assert n_tasks() == before  # no background run was started


def test_train_publishes_a_new_model_used_by_infer(server, studies):
    for image in ("knee_1", "knee_3"):  # final labels of its own (also when run alone), none for knee_0/knee_2
        assert put_label(server, image, infer(server, image, output="image")).status_code == 200
    objects = requests.get(server + "/datastore/", params={"output": "all"}).json()["objects"]
    n_final = sum("final" in (o.get("labels") or {}) for o in objects.values())
    assert n_final >= 2
    params = {"max_epochs": 1, "epoch_length": 2, "batch_size": 2, "train_roi": True}
    r = requests.post(server + "/train/kneel_landmarks", json=params)
    assert r.status_code == 200, r.text
    again = requests.post(server + "/train/kneel_landmarks", json=params)
    assert again.status_code == 429 and "Already Running" in again.json()["detail"]
    status = wait_for_training(server)
    assert status["status"] == "DONE", status["details"][-20:]
    stats = requests.get(server + "/info/").json()["train_stats"]["kneel_landmarks"]
    assert stats["model_version"] == 1 and stats["metrics"]["n_labels"] == n_final
    assert {"val_pck", "roi_val_pck"} <= set(stats["metrics"])  # both models fine-tuned
    current = json.loads((studies / "state" / "app" / "models" / "current.json").read_text())
    assert current["landmarks"].endswith("v1/landmarks") and current["roi"].endswith("v1/roi")
    # the fine-tuned ROI model keeps the shipped one's fallback, copied beside it
    from kneel_monai.model_io import load_model

    fallback = load_model(current["roi"]).fallback
    assert fallback is not None and fallback.path.resolve() == (Path(current["roi"]).parent / "roi_synthetic").resolve()
    result = infer(server, "knee_0")
    assert result["model_version"] == 1
    assert all(result["knees"][s]["present"] for s in ("R", "L"))


def test_active_learning(server, studies):
    r = requests.post(server + "/scoring/kneel_epistemic", params={"run_sync": "true"}, json={"mc_samples": 3})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert set(scores) == {"knee_0", "knee_2"}  # the radiographs without a final label
    assert all(np.isfinite(v) and v > 0 for v in scores.values())
    pick = requests.post(server + "/activelearning/kneel_epistemic", json={}).json()
    assert pick["id"] == max(scores, key=scores.get) and pick["score"] == pytest.approx(scores[pick["id"]])
    for strategy in ("first", "random"):
        assert requests.post(f"{server}/activelearning/{strategy}", json={}).json()["id"] in scores


def test_restart_keeps_every_label(server, studies):
    before = stored(studies)
    with running_label_server(studies / "studies", studies / "state2") as url:
        ds = requests.get(url + "/datastore/", params={"output": "all"}).json()["objects"]
        finals = {k for k, v in ds.items() if "final" in v["labels"]}
        assert finals == {"knee_1", "knee_3", "one_knee"}
        assert ds["knee_1"]["labels"]["final"]["info"]["knees"] == ["R", "L"]  # the index survived, not only files
    assert stored(studies) == before


def test_kneel_label_server_shortcut_starts_the_app(tmp_path):
    """`kneel label-server STUDIES` runs `monailabel start_server` on the app; /info answers, Ctrl-C-like stop."""
    import signal
    import subprocess
    import sys

    import requests
    from label_server import free_port, require_monailabel

    require_monailabel()
    studies = tmp_path / "studies"
    studies.mkdir()
    port = free_port()
    env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions"), "MPLCONFIGDIR": str(tmp_path / "mpl"),
           "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
    env.pop("MONAI_LABEL_TRACKING_ENABLED", None)  # the shortcut turns tracking off by itself
    proc = subprocess.Popen([sys.executable, "-m", "kneel_monai.cli", "label-server", str(studies), "--port",
                             str(port), "--state-dir", str(tmp_path / "state"), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            try:
                info = requests.get(f"http://127.0.0.1:{port}/info/", timeout=5)
                if info.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "kneel label-server did not answer /info"
            time.sleep(0.5)
        assert "kneel_landmarks" in info.json()["models"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
