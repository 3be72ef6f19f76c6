import numpy as np
import pytest
from matplotlib.image import imread
from test_data import knee_points

from kneel_monai.visualize import draw_landmarks_overlay


def test_overlay_draws_tibia_red_and_femur_green_where_the_landmarks_are(tmp_path):
    image = np.random.default_rng(0).uniform(0.3, 0.4, size=(300, 500))
    knees = {"R": knee_points(130, 150, False), "L": None}
    path = draw_landmarks_overlay(image, knees, tmp_path / "o.png", title="test")
    rgb = imread(path)[..., :3]
    assert rgb.shape[:2] == (300, 500)
    red = (rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    green = (rgb[..., 1] > 0.6) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
    ys, xs = np.nonzero(red)
    assert red.sum() > 50 and abs(np.median(ys) - knees["R"][:9, 1].mean()) < 10
    ys, xs = np.nonzero(green)
    assert green.sum() > 50 and np.median(ys) < knees["R"][:9, 1].mean()  # femur above the tibia
    # the left half has no landmarks, only the "no knee found" note
    assert not red[:, 300:].any() and not green[:, 300:].any()


def test_overlay_downscales_and_rejects_bad_points(tmp_path):
    big = np.zeros((2000, 3000), dtype=np.float32)
    big[::7] = 1.0
    path = draw_landmarks_overlay(big, {"R": knee_points(700, 900, False)}, tmp_path / "b.png", max_side_px=600)
    assert imread(path).shape[:2] == (400, 600)
    with pytest.raises(ValueError, match=r"\(16, 2\)"):
        draw_landmarks_overlay(big, {"R": np.zeros((15, 2))}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="2-D"):
        draw_landmarks_overlay(np.zeros((3, 4, 5)), {}, tmp_path / "d.png")
    assert not (tmp_path / "c.png").exists()


def test_overlay_puts_reference_crosses_on_their_points_and_keeps_the_grey_elsewhere(tmp_path):
    image = np.random.default_rng(1).uniform(0.3, 0.4, size=(300, 500))
    truth = knee_points(130, 150, False)
    path = draw_landmarks_overlay(image, {"R": None, "L": None}, tmp_path / "r.png", reference={"R": truth},
                                  title=None)
    rgb = imread(path)[..., :3]
    white = (rgb > 0.95).all(axis=-1)
    for x, y in np.rint(truth).astype(int):  # a cross's centre pixel is drawn on each reference point
        assert white[y - 1:y + 2, x - 1:x + 2].any()
    grey = np.isclose(rgb[..., 0], rgb[..., 1]) & np.isclose(rgb[..., 1], rgb[..., 2])
    assert grey[200:, :].all()  # below the knee and the labels: the radiograph only, still grey
