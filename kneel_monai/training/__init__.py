"""Training: MONAI engines with the paper's mixup iteration, stage geometry, datasets, export."""

from .cross_validation import cross_validate, fold_training_argv
from .engine import (
    MixupIteration,
    build_evaluator,
    build_trainer,
    latest_checkpoint,
    prepare_landmark_batch,
    transfer_weights,
)
from .stages import (
    STAGES,
    StageConfig,
    check_init_from,
    check_network_fits,
    default_network_args,
    export_stage_model,
    prepare_datalist,
    stage_config,
    stage_datasets,
    stage_loaders,
)

__all__ = [
    "cross_validate",
    "fold_training_argv",
    "MixupIteration",
    "build_evaluator",
    "build_trainer",
    "latest_checkpoint",
    "prepare_landmark_batch",
    "transfer_weights",
    "STAGES",
    "StageConfig",
    "check_init_from",
    "check_network_fits",
    "default_network_args",
    "export_stage_model",
    "prepare_datalist",
    "stage_config",
    "stage_datasets",
    "stage_loaders",
]
