"""The shipped ROI model's training set (``kneel synth-stage1``): its parts, folds and layouts, deterministic.

The "real" knees are cut from synthetic films as in test_composite (so no real image is needed)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from test_composite import _crop_datalist, films  # noqa: F401 — the module fixture and its crop datalist

from kneel_monai.synthetic.stage1_set import write_stage1_set

COUNTS = {"train": 5, "val": 1, "train_single": 1, "val_single": 1}


def test_the_stage1_set_has_its_four_parts_with_their_folds_and_is_the_same_every_time(tmp_path, films):  # noqa: F811
    crops = _crop_datalist(tmp_path, films)  # crops of fold 0 (validation) and fold 1 (training)
    index = write_stage1_set(tmp_path / "a", crops, COUNTS, seed=3_000_000, progress=False)
    items = json.loads(index.read_text())["items"]
    assert len(items) == sum(COUNTS.values())
    truth = {}
    for item in items:
        part = item["image"].split("/")[-2]
        gen = json.loads((tmp_path / "a" / part / (item["image"].split("/")[-1][:-4] + ".json")).read_text())
        truth[part, gen["seed"]] = (item["fold"], gen["generation"].get("real_knees"), gen["generation"].get("layout"),
                                    gen["generation"].get("crop"))
    train = sorted((seed, v) for (part, seed), v in truth.items() if part == "train")
    assert [seed for seed, _ in train] == list(range(3_000_000, 3_000_005))
    assert all(fold == 1 for _, (fold, *_rest) in train)
    # four in five training films carry training-fold crops; the fifth keeps its synthetic knees
    assert [real is not None for _, (_, real, _, _) in train] == [True, True, True, True, False]
    assert all(set(real.values()) <= {"1R", "1L"} for _, (_, real, _, _) in train if real)
    assert [crop for _, (_, _, _, crop) in train] == ["tight", None, None, "tight", None]  # every third tight
    (val_fold, val_real, _, _), = [v for (part, _), v in truth.items() if part == "val"]
    assert val_fold == 0 and set(val_real.values()) <= {"0R", "0L"}  # validation films: validation crops only
    for part, fold in (("train_single", 1), ("val_single", 0)):
        (f, real, layout, _), = [v for (p, _), v in truth.items() if p == part]
        assert f == fold and layout == "single_knee_fields" and real is not None
    # the same call writes the same films, pixel for pixel
    again = write_stage1_set(tmp_path / "b", crops, COUNTS, seed=3_000_000, progress=False)
    assert len(json.loads(again.read_text())["items"]) == len(items)
    for png in sorted((tmp_path / "a").rglob("*.png")):
        twin = tmp_path / "b" / png.relative_to(tmp_path / "a")
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(twin))), png.name


def test_kneel_synth_stage1_cli_writes_the_set_and_names_bad_input(tmp_path, films, capsys):  # noqa: F811
    from kneel_monai.cli import main

    crops = _crop_datalist(tmp_path, films)
    assert main(["synth-stage1", str(tmp_path / "s"), "--real-knees", crops, "--n", "1", "1", "0", "0",
                 "--no-progress"]) == 0
    assert len(json.loads((tmp_path / "s" / "roi_datalist.json").read_text())["items"]) == 2
    assert main(["synth-stage1", str(tmp_path / "x"), "--real-knees", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err
    assert main(["synth-stage1", str(tmp_path / "y"), "--real-knees", crops, "--n", "1", "-1", "0", "0"]) == 2
    assert "four counts >= 0" in capsys.readouterr().err
