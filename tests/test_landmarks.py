import numpy as np
import pytest
import torch

from kneel_monai.landmarks import (
    FEMUR_IDS,
    FLIP_PERMUTATION,
    KNEE_CENTRE_ID,
    LANDMARKS,
    MODEL_SELECTION_SUBSET,
    TEST_SUBSET,
    TIBIA_IDS,
    bone_of,
    flip_landmark_ids,
)


def test_ids_bones_and_names():
    assert [lm.id for lm in LANDMARKS] == list(range(16))
    assert [bone_of(i) for i in TIBIA_IDS] == ["tibia"] * 9
    assert [bone_of(i) for i in FEMUR_IDS] == ["femur"] * 7
    assert len({lm.name for lm in LANDMARKS}) == 16, "names must be unique"
    assert LANDMARKS[KNEE_CENTRE_ID].name == "tibial centre"
    assert LANDMARKS[0].colour != LANDMARKS[9].colour
    assert set(MODEL_SELECTION_SUBSET) < set(TEST_SUBSET)
    with pytest.raises(ValueError, match="0..15"):
        bone_of(16)


def test_flip_permutation_pairs_lateral_with_medial():
    expected = {0: 8, 1: 7, 2: 6, 3: 5, 4: 4, 9: 15, 10: 14, 11: 13, 12: 12}
    for a, b in expected.items():
        assert FLIP_PERMUTATION[a] == b and FLIP_PERMUTATION[b] == a
    # a permutation that keeps each bone's ids within the bone
    assert sorted(FLIP_PERMUTATION.tolist()) == list(range(16))
    assert set(FLIP_PERMUTATION[list(TIBIA_IDS)]) == set(TIBIA_IDS)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_mirror_plus_reorder_twice_is_identity(as_tensor):
    rng = np.random.default_rng(0)
    width = 466.0
    points = rng.uniform(0, width, size=(3, 16, 2))
    data = torch.from_numpy(points) if as_tensor else points

    def flip(p):
        mirrored = p.clone() if as_tensor else p.copy()
        mirrored[..., 0] = width - 1 - p[..., 0]
        return flip_landmark_ids(mirrored)

    once = flip(data)
    twice = flip(once)
    np.testing.assert_allclose(np.asarray(twice), points)
    # after one flip, the lateral tibial margin (id 0) is the old medial margin (id 8) mirrored
    np.testing.assert_allclose(np.asarray(once)[:, 0, 0], width - 1 - points[:, 8, 0])


def test_flip_rejects_wrong_count():
    with pytest.raises(ValueError, match="16 landmarks"):
        flip_landmark_ids(np.zeros((4, 15, 2)))
