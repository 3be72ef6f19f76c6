"""The shipped sample radiograph is the generator's, labelled synthetic, and its ground truth matches."""

import json
import sys

import numpy as np
import pydicom
from conftest import REPO_ROOT

from kneel_monai.io import read_radiograph

SAMPLES = REPO_ROOT / "samples"


def test_sample_is_the_generators_synthetic_radiograph(tmp_path):
    sys.path.insert(0, str(SAMPLES))
    try:
        from make_sample import make_sample
    finally:
        sys.path.remove(str(SAMPLES))
    image_path, truth_path = make_sample(tmp_path)
    shipped = SAMPLES / "synthetic_bilateral_knee.dcm"
    a, b = read_radiograph(shipped).numpy(), read_radiograph(image_path).numpy()
    # the renderer's float sums depend on the thread count: a handful of pixels can round to the
    # neighbouring grey level; anything more is a different image
    diff = np.abs(a - b)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-4 * diff.size, (diff.max(), np.count_nonzero(diff))
    assert json.loads((SAMPLES / "synthetic_bilateral_knee.json").read_text())["knees"] == \
        json.loads(truth_path.read_text())["knees"]
    header = pydicom.dcmread(shipped, stop_before_pixels=True)
    assert "SYNTHETIC" in str(header.PatientName) and "synthetic" in header.SeriesDescription
    assert shipped.stat().st_size < 4_000_000  # small enough for git
