"""Ground truth, folds, datalists and the stage transform chains on real files written to disk."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from kneel_monai.data import (
    GroundTruth,
    GroundTruthError,
    KneeTruth,
    build_datalists,
    patient_folds,
    read_datalist,
    read_ground_truth,
    split_folds,
    write_ground_truth,
)
from kneel_monai.data.pipelines import landmark_stage_transforms, roi_stage_transforms
from kneel_monai.io import write_dicom
from kneel_monai.transforms import points_between

SPACING = 0.5  # mm, so a 140 mm ROI is 280 source pixels
H, W = 600, 800


def knee_points(cx, cy, mirrored):
    """16 plausible landmarks (x, y) px around the tibial centre (cx, cy); left knees mirrored."""
    t = np.linspace(-1, 1, 9)
    tibia = np.stack([cx + 70 * t, cy + 6 * t**2], 1)
    f = np.linspace(-1, 1, 7)
    femur = np.stack([cx + 65 * f, cy - 14 - 10 * (1 - f**2)], 1)
    pts = np.concatenate([tibia, femur])
    if mirrored:
        pts[:, 0] = 2 * cx - pts[:, 0]
    return pts


def draw(points_by_side):
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.full((H, W), 300.0)
    for pts in points_by_side.values():
        for x, y in pts:
            img += 3000 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2))
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_case(folder, name, subject, knees, kl=(1, 2), **dicom_options):
    pts = {side: knee_points(*centre, side == "L") for side, centre in knees.items()}
    image = folder / f"{name}.dcm"
    write_dicom(image, draw(pts), (SPACING, SPACING), patient_id=subject, uid_seed=name, **dicom_options)
    gt = GroundTruth(None, image, {s: (KneeTruth(pts[s], kl[i]) if s in pts else None) for i, s in enumerate("RL")},
                     subject, image_size=(H, W))
    write_ground_truth(gt, folder / f"{name}.json")
    return pts


def test_folds_keep_patients_together_and_balance_kl():
    rng = np.random.default_rng(0)
    subjects = [f"s{i // 2}" for i in range(400)]  # two knees each
    grades = rng.integers(0, 5, size=400).tolist()
    folds = patient_folds(subjects, grades)
    assert set(folds) == set(subjects) and set(folds.values()) == set(range(5))
    assert patient_folds(subjects, grades) == folds  # deterministic (seed 42)
    assert patient_folds(subjects, grades, seed=1) != folds
    top = {}
    for s, g in zip(subjects, grades):
        top[s] = max(top.get(s, -1), g)
    for grade in range(5):
        counts = Counter(folds[s] for s in top if top[s] == grade)
        assert max(counts.values()) - min(counts.get(f, 0) for f in range(5)) <= 1
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_ground_truth_round_trip_and_errors(tmp_path):
    pts = knee_points(200, 300, False)
    gt = GroundTruth(None, tmp_path / "a.dcm", {"R": KneeTruth(pts, 3), "L": None}, "subj", (0.15, 0.15), (H, W))
    path = write_ground_truth(gt, tmp_path / "a.json")
    assert json.loads(path.read_text())["image"] == "a.dcm"  # stored relative
    back = read_ground_truth(path)
    np.testing.assert_array_equal(back.knees["R"].landmarks_px, pts)
    assert back.knees["L"] is None and back.knees["R"].kl == 3 and back.image == tmp_path / "a.dcm"

    def broken(change):
        data = json.loads(path.read_text())
        change(data)
        (tmp_path / "b.json").write_text(json.dumps(data))
        return pytest.raises(GroundTruthError, match=str(tmp_path / "b.json"))

    with broken(lambda d: d["knees"]["R"].update(landmarks_px=pts[:15].tolist())):
        read_ground_truth(tmp_path / "b.json")
    with broken(lambda d: d["knees"]["R"].update(landmarks_px=(pts + [W, 0]).tolist())):
        read_ground_truth(tmp_path / "b.json")
    with broken(lambda d: d["knees"].update(R=None)):
        read_ground_truth(tmp_path / "b.json")
    with broken(lambda d: d["knees"]["R"].update(kl=7)):
        read_ground_truth(tmp_path / "b.json")
    with broken(lambda d: d.update(format="other")):
        read_ground_truth(tmp_path / "b.json")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    cases = {}
    cases["k1"] = write_case(folder, "k1", "p1", {"R": (200, 300), "L": (600, 310)})
    cases["k2"] = write_case(folder, "k2", "p2", {"R": (210, 290)}, photometric="MONOCHROME1")
    cases["k3"] = write_case(folder / "deep" / "er", "k3", "p3", {"L": (590, 300)}, kl=(None, 4))
    # bad cases: truncated DICOM, landmarks outside the image, missing image, broken JSON
    write_case(folder, "bad_trunc", "p4", {"R": (200, 300)})
    data = (folder / "bad_trunc.dcm").read_bytes()
    (folder / "bad_trunc.dcm").write_bytes(data[: len(data) // 2])
    write_case(folder, "bad_outside", "p5", {"R": (200, 300)})
    gt = json.loads((folder / "bad_outside.json").read_text())
    gt["knees"]["R"]["landmarks_px"][0] = [W + 50, 10]
    del gt["image_size"]  # so only the image itself can tell
    (folder / "bad_outside.json").write_text(json.dumps(gt))
    write_case(folder, "bad_missing", "p6", {"R": (200, 300)})
    (folder / "bad_missing.dcm").unlink()
    (folder / "bad_json.json").write_text('{"format": "kneel-monai/ground-truth", "image": ')
    return folder, cases


def test_build_datalists_goes_past_bad_files(cohort, tmp_path):
    folder, cases = cohort
    lists = build_datalists(folder, n_folds=2, progress=False)
    assert sorted(i["subject_id"] for i in lists.roi) == ["p1", "p2", "p3"]
    assert len(lists.landmarks) == 4
    reasons = {item["file"].rsplit("/", 1)[-1]: item["reason"] for item in lists.bad_files}
    assert set(reasons) == {"bad_trunc.json", "bad_outside.json", "bad_missing.json", "bad_json.json"}
    assert "bad_trunc.dcm" in reasons["bad_trunc.json"]
    assert "outside" in reasons["bad_outside.json"]
    assert "invalid JSON" in reasons["bad_json.json"]
    k1 = next(i for i in lists.roi if i["subject_id"] == "p1")
    np.testing.assert_allclose(k1["knee_centres_px"]["R"], cases["k1"]["R"][4])
    p3 = next(i for i in lists.landmarks if i["subject_id"] == "p3")
    assert p3["side"] == "L" and p3["kl"] == 4
    roi_path, lm_path = lists.write(tmp_path)
    data = read_datalist(lm_path)
    assert data["stage"] == "landmarks" and len(data["items"]) == 4 and len(data["bad_files"]) == 4
    train, val = split_folds(data["items"], 0)
    assert not {i["subject_id"] for i in train} & {i["subject_id"] for i in val}


def blob_peak_xy(image, near, radius=6):
    a = np.asarray(image)[0]
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    mask = (xs - near[0]) ** 2 + (ys - near[1]) ** 2 <= radius**2
    w = np.clip(a - np.median(a), 0, None) * mask
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_landmark_stage_pipeline_puts_points_on_the_knee(cohort):
    folder, cases = cohort
    items = build_datalists(folder, progress=False).landmarks
    chain = landmark_stage_transforms(train=False)
    for item in items:
        out = chain(item)
        img, target = out["image"], out["target"]
        assert img.shape == (1, 450, 450) and target.shape == (16, 2)
        assert float(img.min()) >= 0 and float(img.max()) <= 1
        px = target.double().numpy() * 450 - 0.5
        # the ROI is centred on landmark 4: centre of the 467 px ROI (233), then MONAI's pad to 520
        # (26 before) and centre crop to 450 (from 35): 233 + 26 - 35
        np.testing.assert_allclose(px[4], [224, 224], atol=1e-4)
        # flip-to-right: tibia id 0 (lateral) is left of id 8 for both knees
        assert px[0, 0] < px[8, 0]
        # the pixels agree: blobs drawn at the landmarks are where the targets say (0.3 mm pixels)
        for p in px[[0, 4, 8, 9, 15]]:
            np.testing.assert_allclose(blob_peak_xy(img, p), p, atol=0.6)
        # and the chain inverts: target → original radiograph pixels
        back = points_between(px, img.affine, out["image_original_affine"])
        np.testing.assert_allclose(back, item["landmarks_px"], atol=1e-3)


def test_roi_stage_pipeline_two_halves(cohort):
    folder, _ = cohort
    items = {i["subject_id"]: i for i in build_datalists(folder, progress=False).roi}
    halves = roi_stage_transforms(train=False)(items["p1"])
    assert [h["side"] for h in halves] == ["R", "L"]
    for half, side in zip(halves, "RL"):
        assert half["image"].shape == (1, 450, 450)
        px = half["target"].double().numpy()[0] * 450 - 0.5
        torch.testing.assert_close(half["image_original_affine"],
                                   torch.diag(torch.tensor([SPACING, SPACING, 1.0], dtype=torch.float64)))
        back = points_between(px[None], half["image"].affine, half["image_original_affine"])[0]
        np.testing.assert_allclose(back, items["p1"]["knee_centres_px"][side], atol=1e-3)
    # training drops the half without a knee; evaluation keeps it with a NaN target
    assert len(roi_stage_transforms(train=True)(items["p2"])) == 1
    kept = roi_stage_transforms(train=False)(items["p2"])
    assert torch.isnan(kept[1]["target"]).all() and torch.isfinite(kept[0]["target"]).all()


def test_training_chain_runs_and_keeps_targets_consistent(cohort):
    folder, _ = cohort
    items = build_datalists(folder, progress=False).landmarks
    chain = landmark_stage_transforms(train=True)
    chain.set_random_state(0)
    for item in items:
        out = chain(item)
        assert out["image"].shape == (1, 450, 450) and out["target"].shape == (16, 2)
        assert torch.isfinite(out["target"]).all()


def test_the_evaluation_chain_s_targets_are_the_landmarks_exactly(cohort):
    """Each target, as the network's normalised pixel-centred coordinates, maps back through the sample's affines
    to the annotated landmark it came from (left knees mirrored and back)."""
    from kneel_monai.transforms import points_between

    folder, _ = cohort
    for item in build_datalists(folder, progress=False).landmarks:
        out = landmark_stage_transforms(train=False)(item)
        h, w = out["image"].shape[-2:]
        target_px = out["target"].double().numpy() * np.array([w, h]) - 0.5
        back = points_between(target_px, out["image"].affine, out["image_original_affine"])
        np.testing.assert_allclose(back, np.asarray(item["landmarks_px"], dtype=float), atol=1e-6)


def test_samples_batch_with_a_monai_dataloader(cohort):
    from monai.data import DataLoader, Dataset

    folder, _ = cohort
    lists = build_datalists(folder, progress=False)
    loader = DataLoader(Dataset(lists.landmarks, landmark_stage_transforms(train=False)), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 450, 450) and batch["target"].shape == (4, 16, 2)
    assert sorted(batch["kl"].tolist()) == [1, 1, 2, 4]  # k1 R 1, L 2; k2 R 1; k3 L 4
    roi = DataLoader(Dataset(lists.roi, roi_stage_transforms(train=True)), batch_size=2)
    batch = next(iter(roi))  # each radiograph gives its halves with a knee; the loader flattens them
    assert batch["image"].shape[1:] == (1, 450, 450) and batch["target"].shape[1:] == (1, 2)


def test_cutout_is_an_ablation_switch():
    from kneel_monai.transforms import RandCutoutd

    def has_cutout(chain):
        return any(isinstance(t, RandCutoutd) for t in chain.transforms)

    assert has_cutout(landmark_stage_transforms(train=True))
    assert not has_cutout(landmark_stage_transforms(train=True, cutout=0))
    assert not has_cutout(roi_stage_transforms(train=False))

def test_the_training_chain_moves_every_landmark_with_the_image(tmp_path):
    """Random warp, crop, cutout and intensity changes applied to an image whose 16 landmarks are bright blobs:
    after the chain each target (normalised, pixel-centred) still sits on its blob."""
    import SimpleITK as sitk
    from imaging import centroid
    from imaging import radiograph as blob_image

    xs = np.linspace(300, 1000, 9)
    tibia = np.stack([xs, np.full(9, 700.0)], axis=1)
    femur = np.stack([np.linspace(320, 980, 7), np.full(7, 560.0)], axis=1)
    points = np.concatenate([tibia, femur])
    image = blob_image(h=1300, w=1300, spacing=(0.15, 0.15), blobs=[tuple(p) for p in points])
    path = tmp_path / "blobs.mha"
    sitk_image = sitk.GetImageFromArray(image[0].numpy())
    sitk_image.SetSpacing((0.15, 0.15))
    sitk.WriteImage(sitk_image, str(path))
    item = {"image": str(path), "spacing_mm": [0.15, 0.15], "side": "R", "landmarks_px": points.tolist()}
    errors = []
    for seed in range(4):
        chain = landmark_stage_transforms(train=True)
        chain.set_random_state(seed)
        out = chain(item)
        pixels = out["image"].numpy()
        size = pixels.shape[-1]
        for target in out["target"].double().numpy() * size - 0.5:
            x, y = int(round(target[0])), int(round(target[1]))
            if not (4 <= x < size - 4 and 4 <= y < size - 4) or pixels[0, y - 2:y + 3, x - 2:x + 3].max() < 0.3:
                continue  # warped off the crop, or under the cutout
            errors.append(np.linalg.norm(centroid(out["image"], target, 4.0) - target))
    assert len(errors) > 40
    assert np.median(errors) < 0.75 and np.percentile(errors, 90) < 1.5, np.round(sorted(errors)[-5:], 2)
