"""The real-crop pipeline on a crop set made here with a known pose per crop.

The real OAI crops cannot be in the repository, so a small set with the same layout is cut from
synthetic radiographs: 224 px crops around each knee (left knees not mirrored), each at its own
pixel spacing and offset, with the annotation given — as the real set gives it — in the KNEEL
release's 0.3 mm ROI, plus the set's crude constant mapping. Registration must recover each
crop's true pose (and so its spacing) from predictions, refuse bad records by key, and the
datalists must carry the registered points through the stage transforms exactly.
"""

import json

import numpy as np
import pytest
from PIL import Image

from kneel_monai.data.datalists import read_datalist
from kneel_monai.data.oai_crops import (
    ANNOTATION_SPACING_MM,
    CropSetError,
    annotation_in_crop,
    build_crop_dataset,
    default_split_path,
    make_split,
    pose_spacing_mm,
    read_crop_reference,
    read_registration,
    read_split,
    register_round,
)
from kneel_monai.data.pipelines import landmark_stage_transforms
from kneel_monai.inference import KneelPredictor, default_model_dirs
from kneel_monai.similarity import fit_similarity
from kneel_monai.synthetic.generate import generate_radiograph
from kneel_monai.training.crop_evaluation import evaluate_crops, pooled_summary
from kneel_monai.transforms import points_between

TORCH_THREADS = 2
CROP = 224
#: (seed, spacing of the crops, offset of the crop window from the knee centre)
CASES = [(11, 0.42, (-6, 3)), (12, 0.50, (5, -4))]


def _crop_set(folder):
    """Crops + reference.json; returns {key: (true crop points (16, 2), spacing)}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth, records = {}, []
    for seed, spacing, (dx, dy) in CASES:
        sample = generate_radiograph(seed, spacing_mm=spacing, size=(900, 1200))
        image = sample.image
        for side, knee in sample.knees.items():
            pts = np.asarray(knee["landmarks_px"])
            x0 = int(round(pts[4, 0])) - CROP // 2 + dx
            y0 = int(round(pts[4, 1])) - int(CROP * 0.56) + dy
            crop = image[y0:y0 + CROP, x0:x0 + CROP]
            assert crop.shape == (CROP, CROP)
            key = f"{9000000 + seed}{side}"
            Image.fromarray(np.round(crop * 255).astype(np.uint8)).save(folder / f"{key}.png")
            crop_pts = pts - [x0, y0]
            # the release's ROI frame: 0.3 mm pixels, landmark 4 at the ROI centre, crop orientation
            annotation = (crop_pts - crop_pts[4]) * (spacing / ANNOTATION_SPACING_MM) + 233.0
            approx = 0.667 * (annotation - annotation[4]) + [112.0, 125.0]
            records.append({"key": key, "subject_id": str(9000000 + seed), "side": side, "kl": knee["kl"],
                            "landmarks_roi_0.3mm": annotation.round(3).tolist(),
                            "landmarks_crop_px_approx": approx.round(3).tolist()})
            truth[key] = (crop_pts, spacing)
    (folder / "reference.json").write_text(json.dumps(records))
    return truth


@pytest.fixture(scope="module")
def crop_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    return folder, _crop_set(folder)


@pytest.fixture(scope="module")
def split_file(crop_set, tmp_path_factory):
    folder, truth = crop_set
    keys = sorted(truth)
    parts = {keys[0]: "test", keys[1]: "validation", keys[2]: "train", keys[3]: "train"}
    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps({"format": "kneel-monai/crop-split", "crops": {k: {"part": p} for k,
                                                                              p in parts.items()}}))
    return path


def test_reader_refuses_bad_records_by_key_and_keeps_the_rest(crop_set, tmp_path):
    folder, truth = crop_set
    records = json.loads((folder / "reference.json").read_text())
    broken = dict(records[0], key="9999999R", subject_id="9999999")
    broken["landmarks_roi_0.3mm"] = broken["landmarks_roi_0.3mm"][:15]
    missing = dict(records[1], key="9999998L", subject_id="9999998")
    bad_side = dict(records[2], key="9999997R", side="X")
    truncated = dict(records[3], key="9999996L", subject_id="9999996")
    work = tmp_path / "set"
    work.mkdir()
    for rec in records:
        (work / f"{rec['key']}.png").write_bytes((folder / f"{rec['key']}.png").read_bytes())
    (work / "9999999R.png").write_bytes((folder / f"{records[0]['key']}.png").read_bytes())
    (work / "9999997R.png").write_bytes((folder / f"{records[0]['key']}.png").read_bytes())
    png = (folder / f"{records[3]['key']}.png").read_bytes()
    (work / "9999996L.png").write_bytes(png[: len(png) // 3])
    (work / "reference.json").write_text(json.dumps(records + [broken, missing, bad_side, truncated]))
    good, problems = read_crop_reference(work)
    assert sorted(r.key for r in good) == sorted(truth)
    reasons = {p["key"]: p["reason"] for p in problems}
    assert "15 points" in reasons["9999999R"] and "expected 16" in reasons["9999999R"]
    assert "9999998L.png" in reasons["9999998L"] and "missing" in reasons["9999998L"]
    assert "side" in reasons["9999997R"]
    assert "9999996L.png" in reasons["9999996L"] and "cannot be read" in reasons["9999996L"]
    (work / "reference.json").write_text("{not json")
    with pytest.raises(CropSetError, match="reference.json"):
        read_crop_reference(work)


def test_registration_recovers_each_crops_pose_and_spacing_from_predictions(crop_set):
    folder, truth = crop_set
    records, _ = read_crop_reference(folder)
    rng = np.random.default_rng(3)
    predictions = {}
    for rec in records:
        pts = truth[rec.key][0] + rng.normal(0, 0.7, size=(16, 2))  # a good model's scatter
        pts[2] += [9.0, 6.0]  # and one bad landmark
        predictions[rec.key] = (pts, np.full(16, 0.5))
    fitted = register_round(records, predictions)
    for rec in records:
        crop_pts, spacing = truth[rec.key]
        result = fitted[rec.key]
        assert result["ok"], result["reason"]
        assert result["spacing_mm"] == pytest.approx(spacing, rel=0.01)
        placed = annotation_in_crop(rec, np.asarray(result["pose"]))
        assert np.abs(placed - crop_pts).max() < 1.0  # px: the bad landmark did not drag the pose
        assert np.argmax(result["residual_mm"]) == 2


def test_a_fit_that_does_not_hold_is_reported_with_its_reason(crop_set):
    folder, truth = crop_set
    records, _ = read_crop_reference(folder)
    rng = np.random.default_rng(4)
    predictions = {r.key: (truth[r.key][0], np.full(16, 0.5)) for r in records}
    garbage = records[0].key
    predictions[garbage] = (rng.uniform(0, CROP, size=(16, 2)), np.full(16, 0.5))
    fitted = register_round(records, predictions)
    assert not fitted[garbage]["ok"] and "residual" in fitted[garbage]["reason"]
    assert all(fitted[r.key]["ok"] for r in records[1:])
    # a pose that still moves between two model rounds fails too
    previous = {r.key: np.asarray(fitted[r.key]["pose"]) for r in records}
    shifted = {k: (p + [8.0, 0.0], c) for k, (p, c) in predictions.items()}
    moved = register_round(records, shifted, previous)
    assert not moved[records[1].key]["ok"] and "moving" in moved[records[1].key]["reason"]
    assert register_round(records, shifted, previous, judge_movement=False)[records[1].key]["ok"]


def test_build_rounds_and_datalists_through_the_stage_transforms(crop_set, split_file, tmp_path):
    folder, truth = crop_set
    out = tmp_path / "built"
    start = build_crop_dataset(folder, out, split=split_file, progress=False)
    assert (start["round"], start["train"], start["validation"], start["test"]) == (0, 2, 1, 1)
    roi, landmark_dir = default_model_dirs()
    summary = build_crop_dataset(folder, out, model=landmark_dir, split=split_file, progress=False)
    registration = read_registration(out / "registration.json")
    assert [r["round"] for r in registration["rounds"]] == [0, 1] and summary["round"] == 1
    assert registration["rounds"][1]["model"] == str(landmark_dir)
    training = read_datalist(out / "landmark_datalist.json")["items"]
    test = read_datalist(out / "landmark_test_datalist.json")["items"]
    test_keys = {i["key"] for i in test}
    assert test_keys.isdisjoint(i["key"] for i in training)  # the test part never reaches training
    assert {i["fold"] for i in training if i["key"] in read_split(split_file)} <= {0, 1}
    kept = {k for k, v in registration["rounds"][1]["crops"].items() if v["ok"]}
    assert {i["key"] for i in training + test} == kept
    # every registered point survives the landmark stage (CLAHE included) and maps back exactly
    chain = landmark_stage_transforms(False, spacing_mm=0.6, pad=260, crop=224,
                                      local_contrast={"kind": "clahe", "tile_mm": 16.0, "clip_limit": 0.01})
    for item in training + test:
        d = chain(dict(item))
        assert d["image"].shape == (1, 224, 224) and float(d["image"].min()) >= 0 and float(d["image"].max()) <= 1
        px = d["target"].double().numpy() * 224 - 0.5
        back = points_between(px, d["image"].affine, d["image_original_affine"])
        np.testing.assert_allclose(back, np.asarray(item["landmarks_px"]), atol=1e-3)
        assert d["image_original_affine"][0, 0].item() == pytest.approx(item["spacing_mm"][0])


def test_crop_evaluation_reports_registered_aligned_and_mean_shape_errors(crop_set, split_file, tmp_path):
    folder, truth = crop_set
    out = tmp_path / "built"
    build_crop_dataset(folder, out, split=split_file, progress=False)
    # a reference placed exactly (the true pose) so that registered errors are the model's own
    test_items = read_datalist(out / "landmark_test_datalist.json")["items"]
    for item in test_items:
        crop_pts, spacing = truth[item["key"]]
        item["landmarks_px"], item["spacing_mm"] = crop_pts.tolist(), [spacing, spacing]
    from kneel_monai.data.datalists import write_datalist

    write_datalist(out / "landmark_test_datalist.json", "landmarks", test_items)
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    summary = evaluate_crops(predictor, out / "landmark_test_datalist.json", tmp_path / "eval", progress=False)
    per_crop = json.loads((tmp_path / "eval" / "crops.json").read_text())
    assert summary["n_knees"] == len(per_crop) == len(test_items)
    for crop in per_crop:
        reg, ali = np.asarray(crop["error_mm"]), np.asarray(crop["aligned_error_mm"])
        assert np.sqrt((ali ** 2).mean()) <= np.sqrt((reg ** 2).mean()) + 1e-9  # alignment can only help
    assert summary["mean_shape"]["all"]["median_mm"] > 0
    for name in ("crops_metrics.json", "crops_report.md", "ced_crops.png", "registered/pck_test.md"):
        assert (tmp_path / "eval" / name).is_file()


def test_pooled_summary_counts_each_landmark_and_outlier_knee():
    errors = np.zeros((4, 16))
    errors[0, 4] = 12.0  # one outlier knee
    errors[1, [0, 8]] = 2.0
    errors[2, 1] = 50.0  # not in the test subset: ignored
    s = pooled_summary(errors)
    assert s["n_knees"] == 4 and s["outlier_knees_pct"] == 25.0
    assert s["pck"]["2.5"] == pytest.approx(100 * 23 / 24) and s["pck"]["1.0"] == pytest.approx(100 * 21 / 24)


def test_the_shipped_split_is_subject_wise_stratified_and_reproducible():
    data = json.loads(default_split_path().read_text())
    crops = data["crops"]
    parts = {p: [k for k, v in crops.items() if v["part"] == p] for p in ("train", "validation", "test")}
    subjects = {p: {crops[k]["subject_id"] for k in keys} for p, keys in parts.items()}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["validation"] & subjects["test"])
    assert not (subjects["train"] & subjects["validation"])
    for grade in range(5):
        n_test = sum(crops[k]["kl"] == grade for k in parts["test"])
        n_all = sum(v["kl"] == grade for v in crops.values())
        assert abs(n_test - n_all / 5) <= 4, (grade, n_test, n_all)
    from kneel_monai.data.oai_crops import CropRecord

    records = [CropRecord(k, v["subject_id"], k[-1], v["kl"], default_split_path(), np.zeros((16, 2)),
                          np.zeros((16, 2))) for k, v in crops.items()]
    assert make_split(records, seed=data["seed"])["crops"] == crops


def test_approx_pose_is_the_sets_constant_mapping(crop_set):
    folder, _ = crop_set
    records, _ = read_crop_reference(folder)
    for rec in records:
        pose = fit_similarity(rec.annotation, rec.approx_px)
        assert pose_spacing_mm(pose) == pytest.approx(ANNOTATION_SPACING_MM / 0.667, rel=1e-3)
        np.testing.assert_allclose(annotation_in_crop(rec, pose)[4], [112.0, 125.0], atol=0.01)



def test_bundle_evaluates_the_crop_test_part(crop_set, split_file, tmp_path):
    """`monai.bundle run evaluating_crops` on a build-oai-crops folder gives the same numbers as the library."""
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    folder, _ = crop_set
    built = tmp_path / "built"
    build_crop_dataset(folder, built, split=split_file, progress=False)
    configs = Path(__file__).resolve().parents[1] / "bundles" / "kneel_landmarks" / "configs"
    wf = ConfigWorkflow(config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
                        meta_file=str(configs / "metadata.json"), logging_file=False, run_id="evaluating_crops",
                        workflow_type=None, bundle_root=str(configs.parent), dataset_dir=str(built),
                        output_dir=str(tmp_path / "bundle_out"), device="$torch.device('cpu')")
    wf.initialize()
    wf.run()
    summary = wf.parser.get_parsed_content("crops_evaluation")
    wf.finalize()
    direct = evaluate_crops(KneelPredictor(*default_model_dirs(), device="cpu"), built / "landmark_test_datalist.json",
                            tmp_path / "direct", progress=False)
    assert summary["n_knees"] == direct["n_knees"] == 1
    assert summary["registered"]["all"]["median_mm"] == pytest.approx(direct["registered"]["all"]["median_mm"])
    assert (tmp_path / "bundle_out" / "eval" / "crops" / "crops_report.md").is_file()


def test_cli_builds_and_names_a_missing_reference(crop_set, split_file, tmp_path, capsys):
    from kneel_monai.cli import main

    folder, _ = crop_set
    assert main(["build-oai-crops", str(folder), str(tmp_path / "out"), "--split", str(split_file)]) == 0
    printed = capsys.readouterr().out
    assert "round 0: 4 crops — train 2, validation 1, test 1" in printed
    for name in ("registration.json", "landmark_datalist.json", "landmark_test_datalist.json",
                 "registration_rounds.md", "registration_overlays.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert main(["build-oai-crops", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "reference.json" in err
    assert not (tmp_path / "out2" / "landmark_datalist.json").exists()
