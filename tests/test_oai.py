"""OAI builder: DICOMs found by PatientID in any layout + the KNEEL CSV → landmarks in original pixels."""

import csv
from pathlib import Path

import numpy as np
import pytest

from kneel_monai.data.oai import build_oai_dataset, original_px_to_roi, read_kneel_csv, roi_to_original_px
from kneel_monai.data.pipelines import landmark_stage_transforms
from kneel_monai.io import write_dicom


@pytest.fixture(scope="module")
def csv_rows(kneel_csv_path):
    with open(kneel_csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def spec_formula(rec, spacing):
    """method.md §6 written out point by point (independent of the library's vectorised version)."""
    values = [float(v) for v in (rec["tibia"] + "," + rec["femur"]).split(",")]
    x0, y0 = (int(v) for v in rec["bbox"].split(",")[:2])
    out = []
    for i in range(16):
        x, y = values[2 * i], values[2 * i + 1]
        if rec["side"] == "L":
            x = 466 - x
        out.append(((x + x0 - 100) * 0.3 / spacing[1], (y + y0 - 100) * 0.3 / spacing[0]))
    return np.array(out)


def test_the_whole_csv_parses_and_round_trips(kneel_csv_path):
    rows, bad = read_kneel_csv(kneel_csv_path)
    assert len(rows) == 748 and not bad
    for row in rows[:50]:
        px = roi_to_original_px(row, (0.14, 0.15))
        np.testing.assert_allclose(original_px_to_roi(px, row.side, row.bbox, (0.14, 0.15)), row.roi_points,
                                   atol=1e-9)
        # landmark 4 is the ROI centre in every row (233, 233)
        np.testing.assert_allclose(row.roi_points[4], [233, 233], atol=1)


def test_build_from_dicoms_in_any_layout(csv_rows, tmp_path):
    by_subject = {}
    for rec in csv_rows:
        by_subject.setdefault(rec["subject_id"], []).append(rec)
    subjects = [s for s, recs in by_subject.items() if len(recs) == 2][:2] + \
               [s for s, recs in by_subject.items() if len(recs) == 1][:1]
    oai = tmp_path / "oai"
    spacings = {subjects[0]: (0.3, 0.3), subjects[1]: (0.27, 0.3), subjects[2]: (0.25, 0.25)}
    expected = {}
    for n, subject in enumerate(subjects):
        spacing = spacings[subject]
        points = {rec["side"]: spec_formula(rec, spacing) for rec in by_subject[subject]}
        expected[subject] = points
        allpts = np.concatenate(list(points.values()))
        h, w = int(allpts[:, 1].max() + 150), int(allpts[:, 0].max() + 150)
        ys, xs = np.mgrid[0:h, 0:w]
        img = np.full((h, w), 200.0) + 0.05 * xs
        for pts in points.values():
            for x, y in pts:
                img += 2500 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2))
        folder = oai / f"visit{n}" / subject[::-1] / "series"
        tag = "PixelSpacing" if n == 1 else "ImagerPixelSpacing"
        write_dicom(folder / "000001", np.clip(img, 0, 4095).astype(np.uint16), spacing, spacing_tag=tag,
                    patient_id=subject, series_description="Bilateral PA Fixed Flexion Knee", uid_seed=subject)
    # a decoy: same subject, another series, must not be preferred
    write_dicom(oai / "other" / "decoy", np.full((100, 100), 7, np.uint16), (0.2, 0.2), patient_id=subjects[0],
                series_description="Lateral knee", uid_seed="decoy")
    (oai / "notes.txt").write_text("not a DICOM")
    # the CSV: those subjects' rows, one subject with no image, one malformed row
    rows = [r for s in subjects for r in by_subject[s]]
    missing = next(r for r in csv_rows if r["subject_id"] not in subjects)
    broken = dict(rows[0], subject_id="broken", tibia="1,2,3")
    csv_path = tmp_path / "ann.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(rows + [missing, broken])

    report = build_oai_dataset(oai, csv_path, tmp_path / "gt", n_folds=2, progress=False)
    assert len(report.written) == 3
    assert [u["subject_id"] for u in report.unmatched] == [missing["subject_id"]]
    assert any("tibia needs 9" in b["reason"] and ":" in b["file"] for b in report.bad_files)
    items = report.datalists.landmarks
    assert len(items) == 5
    for item in items:
        np.testing.assert_allclose(item["landmarks_px"], expected[item["subject_id"]][item["side"]], atol=0.01)
        assert Path(item["image"]).name == "000001"
    # and the pixels agree: the landmark-stage chain puts the drawn blobs where the targets are
    out = landmark_stage_transforms(train=False)(items[0])
    px = out["target"].double().numpy() * 450 - 0.5
    a = np.asarray(out["image"])[0]
    for x, y in px[[0, 4, 8, 12]]:
        r, c = int(round(y)), int(round(x))
        window = a[r - 3 : r + 4, c - 3 : c + 4]
        assert window.max() > np.median(a) + 0.3
