"""Patient-wise cross-validation folds stratified by KL grade (method.md §4: 5 folds, seed 42)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["patient_folds"]


def patient_folds(subjects: Sequence[str], kl_grades: Sequence[int | None], n_folds: int = 5,
                  seed: int = 42) -> dict[str, int]:
    """Assign every subject to one of ``n_folds`` folds, balancing KL grades across folds.

    All knees of a subject share a fold (no patient is in training and validation at once).
    A subject is stratified by its highest KL grade (``None`` counts as its own stratum).
    Within each stratum subjects are shuffled with ``seed`` and dealt to the folds that have
    the fewest subjects so far, so every fold's per-grade count differs by at most one.

    Args:
        subjects: one subject id per knee (or per image).
        kl_grades: the KL grade of each of those knees (or ``None``).

    Returns:
        ``{subject: fold}``.
    """
    if len(subjects) != len(kl_grades):
        raise ValueError(f"subjects ({len(subjects)}) and kl_grades ({len(kl_grades)}) differ in length")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    grade: dict[str, int] = {}
    for subject, kl in zip(subjects, kl_grades):
        value = -1 if kl is None else int(kl)
        grade[subject] = max(grade.get(subject, -1), value)
    strata: dict[int, list[str]] = defaultdict(list)
    for subject in sorted(grade):
        strata[grade[subject]].append(subject)
    rng = np.random.default_rng(seed)
    sizes = [0] * n_folds
    folds: dict[str, int] = {}
    for stratum in sorted(strata):
        members = list(strata[stratum])
        rng.shuffle(members)
        # start each stratum at the emptiest folds so totals stay balanced too
        order = sorted(range(n_folds), key=lambda f: (sizes[f], f))
        for i, subject in enumerate(members):
            fold = order[i % n_folds]
            folds[subject] = fold
            sizes[fold] += 1
    return folds
