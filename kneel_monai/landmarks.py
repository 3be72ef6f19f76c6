"""The 16 KNEEL knee landmarks: ids, names, bones, display colours, evaluation subsets.

Landmarks are defined on a knee shown as a **right** knee (left knees are mirrored before a
model sees them). In image order, left to right, a right knee runs lateral to medial:

* tibia ids 0-8 along the tibial plateau (0 lateral margin, 4 centre between the spines,
  8 medial margin);
* femur ids 9-15 along the distal condyles (9 lateral margin, 12 notch centre, 15 medial).

A horizontal flip swaps lateral and medial, so every flip must also re-order the ids with
:data:`FLIP_PERMUTATION` (the original release did not; that mislabels flipped knees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Landmark",
    "LANDMARKS",
    "NUM_LANDMARKS",
    "TIBIA_IDS",
    "FEMUR_IDS",
    "KNEE_CENTRE_ID",
    "SIDES",
    "MODEL_SELECTION_SUBSET",
    "TEST_SUBSET",
    "BONE_COLOURS",
    "FLIP_PERMUTATION",
    "flip_landmark_ids",
    "bone_of",
]

NUM_LANDMARKS = 16
TIBIA_IDS: tuple[int, ...] = tuple(range(0, 9))
FEMUR_IDS: tuple[int, ...] = tuple(range(9, 16))

#: Landmark 4 (tibial centre) is the knee-joint centre; ROIs are centred on it.
KNEE_CENTRE_ID = 4
#: The knees of a radiograph, the patient's right first (on a bilateral film the image's left half,
#: radiological convention); every side key in the project ("R"/"L") is one of these.
SIDES: tuple[str, str] = ("R", "L")

#: Subset used for model selection in cross-validation (method.md §1, §5).
MODEL_SELECTION_SUBSET: tuple[int, ...] = (0, 8, 9, 15)
#: Subset used for the full-pipeline test (method.md §1, §5).
TEST_SUBSET: tuple[int, ...] = (0, 4, 8, 9, 12, 15)

#: Display colours of the paper's figures, as RGB in [0, 1].
BONE_COLOURS: dict[str, tuple[float, float, float]] = {
    "tibia": (1.0, 0.0, 0.0),
    "femur": (0.0, 0.8, 0.0),
}


@dataclass(frozen=True)
class Landmark:
    """One landmark of a knee shown as a right knee."""

    id: int
    name: str
    bone: str  # "tibia" or "femur"

    @property
    def colour(self) -> tuple[float, float, float]:
        return BONE_COLOURS[self.bone]

    @property
    def label(self) -> str:
        """Short label for markups and overlays, e.g. ``"T4 tibial centre"``."""
        return f"{self.bone[0].upper()}{self.id} {self.name}"


def _tibia_name(i: int) -> str:
    if i == 0:
        return "tibia lateral margin"
    if i == 8:
        return "tibia medial margin"
    if i == 4:
        return "tibial centre"
    side = "lateral" if i < 4 else "medial"
    return f"tibial plateau {side} {abs(i - 4)}"


def _femur_name(i: int) -> str:
    if i == 9:
        return "femur lateral margin"
    if i == 15:
        return "femur medial margin"
    if i == 12:
        return "femoral notch centre"
    side = "lateral" if i < 12 else "medial"
    return f"femoral condyle {side} {abs(i - 12)}"


LANDMARKS: tuple[Landmark, ...] = tuple(
    [Landmark(i, _tibia_name(i), "tibia") for i in TIBIA_IDS]
    + [Landmark(i, _femur_name(i), "femur") for i in FEMUR_IDS]
)


def _flip_permutation() -> np.ndarray:
    perm = np.empty(NUM_LANDMARKS, dtype=np.int64)
    for i in TIBIA_IDS:  # tibia i <-> 8 - i
        perm[i] = 8 - i
    for j in range(len(FEMUR_IDS)):  # femur 9 + j <-> 15 - j
        perm[9 + j] = 15 - j
    return perm


#: ``flipped_points = mirror(points)[FLIP_PERMUTATION]`` keeps ids anatomically right after
#: a horizontal flip. It is an involution: applying it twice is the identity.
FLIP_PERMUTATION: np.ndarray = _flip_permutation()
FLIP_PERMUTATION.setflags(write=False)


def flip_landmark_ids(points):
    """Re-order a ``(..., 16, D)`` array/tensor of points after a horizontal flip.

    Only the ids are permuted; mirroring the coordinates is the caller's (the transform's) job.
    """
    if points.shape[-2] != NUM_LANDMARKS:
        raise ValueError(
            f"flip_landmark_ids expects {NUM_LANDMARKS} landmarks on axis -2, got shape {tuple(points.shape)}"
        )
    return points[..., FLIP_PERMUTATION.tolist(), :]


def bone_of(landmark_id: int) -> str:
    """``"tibia"`` or ``"femur"`` for a landmark id (0-15)."""
    if not 0 <= landmark_id < NUM_LANDMARKS:
        raise ValueError(f"landmark id must be in 0..{NUM_LANDMARKS - 1}, got {landmark_id}")
    return LANDMARKS[landmark_id].bone
