"""Draw docs/images/measurements.png: the knee measurements on the shipped sample's right knee (ground truth).

    python docs/make_measurements_figure.py
"""

import json
from pathlib import Path

import numpy as np

from kneel_monai.io import read_radiograph
from kneel_monai.visualize import draw_knee_measurements

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "synthetic_bilateral_knee"

if __name__ == "__main__":
    truth = json.loads(SAMPLE.with_suffix(".json").read_text(encoding="utf-8"))
    image = read_radiograph(SAMPLE.with_suffix(".dcm"))
    out = draw_knee_measurements(image, np.array(truth["knees"]["R"]["landmarks_px"]), tuple(truth["pixel_spacing_mm"]),
                                 ROOT / "docs" / "images" / "measurements.png",
                                 title="shipped sample (synthetic), right knee, ground-truth landmarks")
    print("wrote", out)
