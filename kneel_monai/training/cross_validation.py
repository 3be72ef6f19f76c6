"""Cross-validation: every fold of a stage trained in turn, out-of-fold evaluation, a fold ensemble.

``python -m monai.bundle run cross_validation --config_file configs/train.json <overrides>`` calls
:func:`cross_validate`, which runs ``monai.bundle run training <the same overrides> --fold k`` for
each fold in its own process (a fresh network, optimiser and cache per fold, the same resume
behaviour as a single run), then pools the out-of-fold errors into one report and writes the fold
models as one ensemble model directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..metrics import release_aggregation
from .evaluation import model_errors, write_evaluation_report
from .stages import export_stage_model, stage_config

__all__ = ["fold_training_argv", "cross_validate"]

# options the cross-validation sets per fold; the user's values of these are dropped
_PER_FOLD_OPTIONS = ("--fold", "--output_dir", "--export_dir", "--cv_folds", "--cv_dir")


def fold_training_argv(argv: Sequence[str], fold: int, fold_dir: str | os.PathLike) -> list[str]:
    """The ``monai.bundle`` arguments that train one fold, from those of the ``cross_validation`` run.

    ``argv`` is what followed ``python -m monai.bundle`` (``run cross_validation --config_file …``);
    the run id becomes ``training`` and the fold, its output and export folders are set.
    """
    args = list(argv)
    if "cross_validation" not in args:
        raise ValueError(f"not the arguments of a 'cross_validation' bundle run: {' '.join(args)}")
    args[args.index("cross_validation")] = "training"
    kept: list[str] = []
    skip_value = False
    for a in args:
        if skip_value:
            skip_value = False
            continue
        name = a.split("=", 1)[0]
        if name in _PER_FOLD_OPTIONS:
            skip_value = "=" not in a
            continue
        kept.append(a)
    fold_dir = Path(fold_dir)
    return kept + ["--fold", str(fold), "--output_dir", str(fold_dir), "--export_dir", str(fold_dir / "model")]


def _bundle_argv() -> list[str]:
    """This process's ``monai.bundle`` arguments, when it is ``python -m monai.bundle run cross_validation``."""
    args = sys.argv[1:]
    if "cross_validation" not in args:
        raise ValueError("cross_validate(argv=None) reads the command line of `python -m monai.bundle run "
                         "cross_validation ...`; called another way, pass the bundle arguments as argv")
    return args


def cross_validate(stage: str, datalist: str | os.PathLike, folds: Sequence[int],
                   network_args: dict[str, Any], cv_dir: str | os.PathLike, argv: Sequence[str] | None = None,
                   device: Any = "cpu", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Train every fold, evaluate each fold's model on the fold it did not see, pool the errors.

    Args:
        stage: the stage name trained (its geometry is checked against every fold model).
        datalist: the stage's datalist (prepared once here, so the fold runs share it).
        folds: the validation folds to run (``[0 … n_folds-1]`` for a full cross-validation).
        network_args: the network's arguments, written with the fold ensemble.
        cv_dir: output folder: ``fold<k>/`` (checkpoints, ``best.pt``, ``model/``), ``eval/``
            (the paper's tables over the pooled out-of-fold errors), ``folds.csv``/``.md`` (key
            figures per fold) and ``model_ensemble/`` (every fold's best network: an ensemble).
        argv: the ``cross_validation`` run's ``monai.bundle`` arguments; default this process's.
        device: for the out-of-fold evaluation.
        env: environment of the fold processes (default this process's).

    A fold whose training fails is reported and the others still run; the function then raises
    naming the failed folds (after writing what the finished folds allow). Re-running resumes each
    unfinished fold from its last checkpoint.
    """
    cfg = stage_config(stage)
    args = list(argv) if argv is not None else _bundle_argv()
    cv_dir = Path(cv_dir)
    cv_dir.mkdir(parents=True, exist_ok=True)
    folds = [int(k) for k in folds]
    if not folds:
        raise ValueError("cross_validate: no folds to run")

    failed: dict[int, str] = {}
    for k in folds:
        fold_dir = cv_dir / f"fold{k}"
        command = [sys.executable, "-m", "monai.bundle"] + fold_training_argv(args, k, fold_dir)
        print(f"cross-validation: training fold {k} ({folds.index(k) + 1}/{len(folds)})", flush=True)
        done = subprocess.run(command, check=False, env=env)
        if done.returncode != 0 or not (fold_dir / "model" / "model.json").is_file():
            failed[k] = f"training exited with code {done.returncode}"

    errors, records, per_fold = [], [], []
    for k in folds:
        if k in failed:
            continue
        e, r, _, _ = model_errors(cv_dir / f"fold{k}" / "model", datalist, fold=k, stage=cfg, device=device,
                                         progress=False)
        errors.append(e)
        records.extend(r)
        per_fold.append(_fold_row(k, e))
    summary: dict[str, Any] = {"stage": stage, "folds": folds, "failed": {str(k): v for k, v in failed.items()}}
    if errors:
        pooled = np.concatenate(errors)
        context = {"kind": "cross-validation", "task": cfg.task, "datalist": str(datalist), "folds": folds}
        summary["evaluation"] = write_evaluation_report(
            pooled, records, cv_dir / "eval", title=f"{cfg.task} model, {len(errors)}-fold cross-validation "
            "(each knee predicted by the model that did not train on it)", context=context)
        _write_rows(per_fold, cv_dir / "folds")
        done_folds = [k for k in folds if k not in failed]
        ensemble = export_stage_model([str(cv_dir / f"fold{k}" / "best.pt") for k in done_folds], network_args, cfg,
                                      cv_dir / "model_ensemble",
                                      provenance={"trained_with": "bundles/kneel_landmarks/configs/train.json "
                                                  "(cross_validation)", "folds": done_folds})
        summary["ensemble"] = str(ensemble)
        summary["per_fold"] = per_fold
    if failed:
        raise RuntimeError(f"cross-validation of {stage}: fold(s) {sorted(failed)} failed "
                           f"({'; '.join(f'{k}: {v}' for k, v in failed.items())}); re-run to resume them")
    return summary


def _fold_row(fold: int, errors: np.ndarray) -> dict[str, Any]:
    """Key figures of one fold's out-of-fold errors (16 landmarks: the test subset; 1 point: that point)."""
    row: dict[str, Any] = {"fold": fold, "knees": int(errors.shape[0])}
    if errors.shape[1] == 1:
        e = errors[:, 0]
        row.update({"median error (mm)": round(float(np.median(e)), 3),
                    "within 10 mm (%)": round(100 * float(np.mean(e < 10)), 2)})
        return row
    agg = release_aggregation(errors, "test", (1.0, 2.5))
    row.update({"PCK@1 mm (%)": round(float(agg["mean"][1.0]), 2), "PCK@2.5 mm (%)": round(float(agg["mean"][2.5]), 2),
                "outliers (%)": round(float(agg["outliers"]), 2),
                "median error (mm)": round(float(np.median(errors)), 3)})
    return row


def _write_rows(rows: list[dict[str, Any]], stem: Path) -> None:
    """``stem.csv`` and ``stem.md``: one row per fold."""
    header = list(rows[0])
    csv_text = "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n"
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    atomic_write_text(stem.with_suffix(".csv"), csv_text)
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
