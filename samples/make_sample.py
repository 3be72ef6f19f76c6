"""Re-create the shipped sample radiograph (synthetic; see samples/README.md).

    python samples/make_sample.py            # writes synthetic_bilateral_knee.dcm/.json beside this file
"""

from pathlib import Path

from kneel_monai.synthetic.generate import generate_radiograph, write_radiograph

SEED = 4242
SPACING_MM = 0.2
SIZE = (1600, 1900)  # rows, columns: 320 × 380 mm, both knees
STEM = "synthetic_bilateral_knee"


def make_sample(out_dir: Path = Path(__file__).resolve().parent) -> tuple[Path, Path]:
    sample = generate_radiograph(SEED, spacing_mm=SPACING_MM, size=SIZE)
    return write_radiograph(sample, out_dir, STEM, transfer_syntax="jpeg2000_lossless")


if __name__ == "__main__":
    for path in make_sample():
        print("wrote", path)
