"""The real-film evaluation and its robustness settings run end to end (on the shipped synthetic sample: the real
films are not in the repository): a film read smaller and re-compressed still gives its knees, and the robustness
summary puts the settings side by side."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "synthetic_bilateral_knee.dcm"


def _run(*args: str) -> str:
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_eval_settings_and_robustness_summary(tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(SAMPLE, films / SAMPLE.name)
    noise = np.random.default_rng(0).integers(0, 255, size=(400, 300), dtype=np.uint8)
    Image.fromarray(noise).save(films / "noise.png")  # a film with no knee: read with a guessed spacing
    (films / "views.csv").write_text(f"file,view\n{SAMPLE.name},bilateral_ap\nnoise.png,lateral\n")
    script = "benchmarks/eval_full_radiographs.py"
    _run(script, "--images", str(films), "--out", str(tmp_path / "as_read"))
    _run(script, "--images", str(films), "--out", str(tmp_path / "smaller_jpeg"), "--downscale", "2",
         "--jpeg-quality", "80", "--spacing-error", "1.05")
    for setting in ("as_read", "smaller_jpeg"):
        data = json.loads((tmp_path / setting / "full_radiographs.json").read_text())
        assert data["summary"]["ap_knees_found"] == 2 and data["summary"]["non_ap_with_a_knee_present"] == 0
        assert data["summary"]["failed_to_read"] == []
    rows = {s: {r["file"]: r for r in json.loads((tmp_path / s / "full_radiographs.json").read_text())["rows"]}
            for s in ("as_read", "smaller_jpeg")}
    film, full = rows["smaller_jpeg"][SAMPLE.name], rows["as_read"][SAMPLE.name]
    assert film["settings"] == {"downscale": 2.0, "jpeg_quality": 80, "spacing_error": 1.05}
    # half the pixels each way at twice the spacing; re-compressed to a JPEG, the DICOM's spacing is a guess
    # given again, off by the error
    assert np.allclose(np.array(full["shape"]) / 2, film["shape"], atol=1)
    assert np.allclose(np.array(full["pixel_spacing_mm"]) * 2 * 1.05, film["pixel_spacing_mm"], rtol=0.01)
    noise = rows["smaller_jpeg"]["noise.png"]
    assert np.allclose(noise["pixel_spacing_mm"], 270.0 / 400 * 1.05 * 2, rtol=0.01)
    assert set(film["found"]) == {"R", "L"} and all(k["shape_distance"] < 6 for k in film["found"].values())

    picture = tmp_path / "robustness.png"
    out = _run("benchmarks/full_radiographs_robustness.py", str(tmp_path / "as_read"), str(tmp_path / "smaller_jpeg"),
               "--picture", str(picture), "--out", str(tmp_path / "summary"))
    assert "found in every setting: 2; in some: 0" in out
    summary = json.loads((tmp_path / "summary" / "robustness.json").read_text())
    assert summary["settings"] == ["as_read", "smaller_jpeg"]
    assert set(summary["knees"]) == {f"{SAMPLE.name} R", f"{SAMPLE.name} L"}
    with Image.open(picture) as im:
        assert im.size[0] > 300 and im.size[1] > 100
