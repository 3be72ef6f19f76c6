"""Real knees composited into synthetic films, and single-knee fields, for training stage 1.

The "real" knees here are cut from synthetic films at another pixel size (0.45 mm, as the real
crops), so that where each pixel and landmark must land is known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates

from kneel_monai.landmarks import SIDES
from kneel_monai.synthetic.composite import RealKnee, composite_real_knees, read_real_knees, single_knee_fields
from kneel_monai.synthetic.generate import generate_radiograph

CROP_MM, CROP_PX = 0.45, 224


def cut_knee(sample, side: str, key: str = "k") -> RealKnee:
    """A 224 px crop at 0.45 mm around ``side``'s knee of ``sample`` (a crop of the real set's kind)."""
    film_mm = sample.pixel_spacing_mm[0]
    pts = np.asarray(sample.knees[side]["landmarks_px"])
    origin = pts[4] - (CROP_PX / 2) * CROP_MM / film_mm  # film px of the crop's pixel (0, 0)
    v, u = np.mgrid[0:CROP_PX, 0:CROP_PX].astype(np.float64)
    ratio = CROP_MM / film_mm
    image = map_coordinates(sample.image, [v * ratio + origin[1], u * ratio + origin[0]], order=1)
    return RealKnee(key, image.astype(np.float32), (pts - origin) / ratio, CROP_MM, side)


@pytest.fixture(scope="module")
def films():
    return [generate_radiograph(s, spacing_mm=0.3, size=(1150, 1330)) for s in (11, 12)]


def test_a_films_own_knees_composited_back_land_where_they_were(films):
    film = films[0]
    own = [cut_knee(film, s) for s in SIDES]
    out = composite_real_knees(film, own, np.random.default_rng(0), contrast_range=(1.0, 1.0))
    for side in SIDES:
        assert np.abs(out.knees[side]["landmarks_px"] - film.knees[side]["landmarks_px"]).max() < 1e-6
        # inside the crop (weight 1) the film shows the crop's pixels: the same image, linearly remapped
        c = np.rint(film.knees[side]["landmarks_px"][4]).astype(int)
        before, after = (im[c[1] - 80:c[1] + 80, c[0] - 80:c[0] + 80].ravel() for im in (film.image, out.image))
        assert np.corrcoef(before, after)[0, 1] > 0.97
    # far from both knees nothing changed
    assert np.array_equal(out.image[:60], film.image[:60])
    assert out.params["real_knees"] == {"R": "k", "L": "k"}
    assert film.image is not out.image and not np.array_equal(film.image, out.image)


def test_another_knee_keeps_its_own_shape_in_mm_and_sits_on_the_target_knee(films):
    donor, film = films
    out = composite_real_knees(film, [cut_knee(donor, s, f"d{s}") for s in SIDES], np.random.default_rng(1))
    for side in SIDES:
        new_mm = out.knees[side]["landmarks_px"] * 0.3
        donor_mm = np.asarray(donor.knees[side]["landmarks_px"]) * 0.3

        def pairwise(p):
            return np.linalg.norm(p[:, None] - p[None], axis=-1)

        assert np.allclose(pairwise(new_mm), pairwise(donor_mm), atol=1e-6)  # a rigid move, no stretch
        target_mm = np.asarray(film.knees[side]["landmarks_px"]) * 0.3
        assert np.linalg.norm(new_mm.mean(0) - target_mm.mean(0)) < 3.0  # centroids fitted onto each other
    assert out.params["real_knees"] == {"R": "dR", "L": "dL"}


def test_a_side_without_a_real_knee_is_refused(films):
    with pytest.raises(ValueError, match="no real L knee"):
        composite_real_knees(films[0], [cut_knee(films[1], "R")], np.random.default_rng(0))


def test_single_knee_fields_are_two_centred_fields_whose_landmarks_follow_the_pixels(films):
    film = films[0]
    out = single_knee_fields(film, np.random.default_rng(3), jitter_mm=20.0)
    h, w = out.image.shape
    assert w % 2 == 0 and h <= film.image.shape[0]
    for i, side in enumerate(SIDES):
        old = np.asarray(film.knees[side]["landmarks_px"])
        new = out.knees[side]["landmarks_px"]
        # a pure shift: the pixel under each landmark is the same one
        shift = new - old
        assert np.allclose(shift, shift[0]) and np.allclose(shift[0], np.rint(shift[0]))
        o, n = np.rint(old).astype(int), np.rint(new).astype(int)
        assert np.array_equal(film.image[o[:, 1], o[:, 0]], out.image[n[:, 1], n[:, 0]])
        # each knee in its own half, within the jitter (+ a pixel) of that half's centre
        half_centre = np.array([(i + 0.5) * w / 2, h / 2])
        assert (new[:, 0] >= i * w / 2).all() and (new[:, 0] < (i + 1) * w / 2).all()
        assert np.abs(new.mean(0) - half_centre).max() * 0.3 <= 20.0 + 0.3 * 2
    assert out.params["layout"] == "single_knee_fields"
    with pytest.raises(ValueError, match="bilateral"):
        single_knee_fields(generate_radiograph(5, spacing_mm=0.3, size=(1150, 1330), knees=("R",)),
                           np.random.default_rng(0))


def _crop_datalist(tmp_path, films) -> str:
    items = []
    for f, film in enumerate(films):
        for side in SIDES:
            knee = cut_knee(film, side)
            name = f"{f}{side}.png"
            Image.fromarray((np.clip(knee.image, 0, 1) * 255).astype(np.uint8)).save(tmp_path / name)
            items.append({"image": name, "spacing_mm": [CROP_MM, CROP_MM], "side": side, "fold": f,
                          "landmarks_px": knee.landmarks_px.tolist(), "source": "oai_crops", "key": f"{f}{side}"})
    items.append({"image": "x.png", "source": "synthetic", "fold": 1})  # not a real crop: skipped
    path = tmp_path / "landmark_datalist.json"
    path.write_text(json.dumps({"format": "kneel-monai/datalist", "stage": "landmarks", "items": items}))
    return str(path)


def test_read_real_knees_keeps_the_folds_asked_for_and_names_bad_files(tmp_path, films):
    path = _crop_datalist(tmp_path, films)
    knees = read_real_knees(path, folds=[1])
    assert [k.key for k in knees] == ["1R", "1L"]
    assert knees[0].image.shape == (CROP_PX, CROP_PX) and 0.0 <= knees[0].image.min() <= knees[0].image.max() <= 1.0
    assert len(read_real_knees(path)) == 4
    with pytest.raises(ValueError, match="no 'oai_crops' knee in folds \\[3\\]"):
        read_real_knees(path, folds=[3])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "0R.png")
    with pytest.raises(ValueError, match="0R.png: expected a grey crop"):
        read_real_knees(path)


def test_kneel_synth_with_real_knees_writes_composited_films_and_records_them(tmp_path, films):
    from kneel_monai.cli import main
    from kneel_monai.data.datalists import build_datalists

    path = _crop_datalist(tmp_path, films)
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n", "3", "--format", "png", "--spacing", "0.3", "--size", "1150", "1330",
                 "--single-knee-fraction", "0", "--real-knees", path, "--real-folds", "0",
                 "--real-knee-fraction", "1", "--single-field-fraction", "0.5", "--no-progress"]) == 0
    items = json.loads((out / "dataset.json").read_text())["items"]
    assert all(it["real_knees"] == {"R": "0R", "L": "0L"} for it in items)
    assert {it["layout"] for it in items} <= {"bilateral", "single_knee_fields"}
    # the films are a training set as they are: every knee inside its image, both knees per film
    lists = build_datalists(out, progress=False)
    assert len(lists.roi) == 3 and all(None not in it["knee_centres_px"].values() for it in lists.roi)
    assert main(["synth", str(tmp_path / "bad"), "--n", "1", "--real-knees", str(tmp_path / "none.json")]) == 2
