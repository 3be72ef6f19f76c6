r"""Draw the module's icon: a synthetic right knee with its 16 landmarks (tibia red, femur green).

    python KneelSlicerExtension/tools/make_icon.py \
        KneelSlicerExtension/KneelLandmarks/Resources/Icons/KneelLandmarks.png

With ``--sample-thumbnail``, the Sample Data thumbnail of the sample radiograph instead:

    python KneelSlicerExtension/tools/make_icon.py --sample-thumbnail \
        KneelSlicerExtension/KneelLandmarks/Resources/Icons/KneelSyntheticBilateralKnee.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from kneel_monai.landmarks import BONE_COLOURS, LANDMARKS
from kneel_monai.synthetic.generate import generate_radiograph


def make_icon(path: str, size: int = 128, seed: int = 11, field_mm: float = 110.0) -> None:
    sample = generate_radiograph(seed, spacing_mm=0.3, size=(1100, 1300), knees=("R",))
    points = np.asarray(sample.knees["R"]["landmarks_px"])
    half = field_mm / 0.3 / 2
    cx, cy = points[4]
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    grey = (np.clip(sample.image, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(grey).crop(box).resize((size, size), Image.LANCZOS).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = size / (box[2] - box[0])
    radius = max(2, size // 40)
    for lm, (x, y) in zip(LANDMARKS, points):
        u, v = (x - box[0]) * scale, (y - box[1]) * scale
        colour = tuple(int(255 * c) for c in BONE_COLOURS[lm.bone])
        draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=colour, outline=(0, 0, 0))
    image.save(path)


def make_sample_thumbnail(path: str, dicom: str = "samples/synthetic_bilateral_knee.dcm", width: int = 280) -> None:
    """The whole radiograph, about the 260 x 280 pixels Slicer's Sample Data module shows."""
    from kneel_monai.io import read_radiograph

    pixels = np.asarray(read_radiograph(dicom))[0]
    low, high = np.percentile(pixels, (1, 99))
    grey = (np.clip((pixels - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    height = round(width * grey.shape[0] / grey.shape[1])
    Image.fromarray(grey).resize((width, height), Image.LANCZOS).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sample-thumbnail", action="store_true", help="the sample radiograph's thumbnail instead")
    args = parser.parse_args()
    if args.sample_thumbnail:
        make_sample_thumbnail(args.out)
    else:
        make_icon(args.out, args.size)


if __name__ == "__main__":
    main()
