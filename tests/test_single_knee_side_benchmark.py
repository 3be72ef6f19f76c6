"""benchmarks/eval_single_knee_side.py end to end, on knees the repository can hold (the real crops and films are
not in it): two crops cut from a synthetic film in the crop set's format and split, and the shipped sample as a
bilateral film whose knees are cut out. What is checked is what the figures rest on: every crop and film knee is
judged against its own true side, a cut-out film knee is decided as a lone centred knee (by its anatomy, not its
position), and the table, JSON and picture are written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kneel_monai.data.oai_crops import SPLIT_FORMAT
from kneel_monai.synthetic.generate import generate_radiograph

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "synthetic_bilateral_knee.dcm"


def write_crop_set(folder: Path) -> dict[str, str]:
    """A right and a left knee of one synthetic film as 224 px crops at 0.45 mm, landmark 4 at (112, 125) as in
    the real set, with its reference.json; returns {key: side}."""
    film = generate_radiograph(7_300_011, knees=("R", "L"), spacing_mm=0.45, size=(700, 900))
    pixels = film.image.astype(np.float64)
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    grey = np.clip((pixels - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    records, sides = [], {}
    for side in ("R", "L"):
        truth = np.asarray(film.knees[side]["landmarks_px"])
        x0, y0 = (np.round(truth[4]) - [112, 125]).astype(int)
        key = f"9900001{side}"
        Image.fromarray(grey[y0:y0 + 224, x0:x0 + 224]).save(folder / f"{key}.png")
        in_crop = truth - [x0, y0]
        records.append({"key": key, "subject_id": "9900001", "side": side, "kl": 0,
                        "landmarks_roi_0.3mm": (in_crop * 1.5).tolist(), "landmarks_crop_px_approx": in_crop.tolist()})
        sides[key] = side
    (folder / "reference.json").write_text(json.dumps(records))
    return sides


def test_single_knee_side_benchmark_judges_each_knee_against_its_own_side(tmp_path):
    crops, films, out = tmp_path / "crops", tmp_path / "films", tmp_path / "out"
    crops.mkdir(), films.mkdir()
    sides = write_crop_set(crops)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"format": SPLIT_FORMAT, "crops": {"9900001R": {"part": "validation"},
                                                                    "9900001L": {"part": "test"}}}))
    (films / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    (films / "views.csv").write_text(f"file,view\n{SAMPLE.name},bilateral_ap\n")
    run = subprocess.run([sys.executable, "benchmarks/eval_single_knee_side.py", "--crops", str(crops), "--split",
                          str(split), "--films", str(films), "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((out / "single_knee_side.json").read_text())
    rows = {r["key"]: r for r in data["rows"]}
    assert {k: rows[k]["side"] for k in sides} == sides
    assert rows["9900001R"]["part"] == "validation" and rows["9900001L"]["part"] == "test"
    # the sample's two knees, cut out: each one lone knee, judged against where it lay, decided by its anatomy
    film_rows = [r for r in data["rows"] if r["part"] == "films"]
    assert sorted(r["side"] for r in film_rows) == ["L", "R"]
    truth = json.loads(SAMPLE.with_suffix(".json").read_text())
    for r in film_rows + [rows[k] for k in sides]:
        assert r["knees"] == 1, r["key"]
        assert r["source"] in ("anatomy", "anatomy_uncertain"), r["key"]
        assert set(r["confidence"]) == {"R", "L"}
        if r["source"] == "anatomy_uncertain":
            assert r["quality"] == "check", r["key"]
    # a cut-out knee's landmarks are given back in the film's pixels: its tibial and femoral centres (ids 4, 12:
    # the same whichever side it was called, unlike the margins) on that knee of the film
    for r in film_rows:
        knee = np.asarray(truth["knees"][r["side"]]["landmarks_px"])[[4, 12]]
        mm = np.linalg.norm(np.asarray(r["landmarks_px"])[[4, 12]] - knee, axis=1) * truth["pixel_spacing_mm"][0]
        assert mm.max() < 3.0, (r["key"], mm)
    summary = {s["part"]: s for s in data["summary"]}
    assert set(summary) == {"validation", "test", "all crops", "films"}
    assert summary["films"]["knees"] == 2 and summary["all crops"]["knees"] == 2
    for part, s in summary.items():
        mine = [r for r in data["rows"] if r["part"] == part or (part == "all crops" and r["part"] != "films")]
        assert s["sure"] + s["to_check"] == s["one_knee_found"] == len(mine)
        assert s["sure_wrong"] == sum(r["source"] == "anatomy" and r["called"] != r["side"] for r in mine)
    table = (out / "single_knee_side.md").read_text()
    assert "| films | 2 |" in table and "| validation | 1 |" in table
    with Image.open(out / "single_knee_side.png") as im:
        assert im.size[0] > 500 and im.size[1] > 300
