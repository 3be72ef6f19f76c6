"""Training glue over MONAI engines: the paper's mixup iteration, batches, checkpoints that resume.

Everything here is wired by the bundle's ``train.json``; nothing holds geometry or network code.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, ValidationHandler
from torch import nn

from ..metrics import LandmarkErrorHandler
from ..transforms.mixup import mixup_loss

__all__ = ["prepare_landmark_batch", "MixupIteration", "latest_checkpoint", "build_evaluator", "build_trainer",
           "transfer_weights"]


def prepare_landmark_batch(batchdata: dict, device=None, non_blocking: bool = False, **kwargs: Any):
    """``(image (B, C, H, W), target (B, M, 2))`` plain tensors on ``device`` from a collated batch."""
    image, target = batchdata["image"], batchdata["target"]
    image = image.as_tensor() if hasattr(image, "as_tensor") else image
    return (image.to(device=device, non_blocking=non_blocking),
            torch.as_tensor(target).to(device=device, non_blocking=non_blocking))


class MixupIteration:
    """``iteration_update`` for ``SupervisedTrainer``: one optimisation step, with the paper's mixup.

    With ``alpha`` set: ``λ·L(p, f(x)) + (1 − λ)·L(p[perm], f(x′))`` (two forward passes, targets
    not mixed); with ``alpha=None`` a plain step. Returns MONAI's output dict.
    """

    def __init__(self, alpha: float | None = 0.75) -> None:
        self.alpha = alpha

    def __call__(self, engine: SupervisedTrainer, batchdata: dict) -> dict:
        images, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        if self.alpha and images.shape[0] > 1:
            loss, pred = mixup_loss(engine.network, engine.loss_function, images, targets, self.alpha)
        else:
            pred = engine.network(images)
            loss = engine.loss_function(pred, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at iteration {engine.state.iteration}")
        loss.backward()
        engine.optimizer.step()
        return {"image": images, "label": targets, "pred": pred.detach(), "loss": loss.detach()}


def _loss_value(output: dict) -> float:
    return float(output["loss"])


def latest_checkpoint(folder: str | os.PathLike, prefix: str = "last") -> str | None:
    """The newest ``<prefix>_checkpoint_epoch=N.pt`` (or ``_final_iteration=N``) in ``folder``, if any."""
    paths = glob.glob(os.path.join(str(folder), f"{prefix}_*.pt"))

    def step(p: str) -> int:
        m = re.search(r"=(\d+)\.pt$", p)
        return int(m.group(1)) if m else -1

    return max(paths, key=step) if paths else None


def transfer_weights(network: nn.Module, checkpoint: str | os.PathLike, skip_prefixes: Sequence[str] = ("out_conv.",)
                     ) -> list[str]:
    """Initialise ``network`` from another model's weights, all layers but the last (method.md §4 transfer).

    ``checkpoint``: a MONAI checkpoint (``{"network": state_dict}``), a plain state dict, or a
    project model directory. Returns the names of the tensors copied; nothing is frozen.
    """
    path = Path(checkpoint)
    if path.is_dir() or path.suffix == ".json":
        from ..model_io import load_model

        source = load_model(path).networks[0].state_dict()
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        source = payload.get("network", payload) if isinstance(payload, dict) else payload
    own = network.state_dict()
    copied = [k for k, v in source.items()
              if not k.startswith(tuple(skip_prefixes)) and k in own and own[k].shape == v.shape]
    missing = [k for k in own if not k.startswith(tuple(skip_prefixes)) and k not in copied]
    if missing:
        raise ValueError(f"{checkpoint}: cannot transfer into this network; no matching tensor for "
                         f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    own = {k: v.clone() for k, v in own.items()}  # the skipped tensors are kept on purpose (ZooNetwork checks)
    own.update({k: source[k] for k in copied})
    network.load_state_dict(own)
    return copied


def build_evaluator(network: nn.Module, loader, device, output_dir: str | os.PathLike, spacing_mm: float,
                    image_size: Sequence[int], subset: str | None = "model_selection", key_radius: float = 2.5,
                    key_aggregation: str = "pck_then_error", tensorboard: bool = True) -> SupervisedEvaluator:
    """Validation engine: the PCK key metric in mm, the best epoch's network kept as ``best.pt``.

    ``key_aggregation``: ``"pck_then_error"`` (default; PCK with ties broken by the mean error, so
    the best checkpoint keeps improving after the validation PCK saturates) or ``"pck_mean"``
    (PCK alone, as the paper). See :class:`~kneel_monai.metrics.LandmarkErrorMetric`.
    """
    metric = LandmarkErrorHandler(spacing_mm=spacing_mm, image_size=tuple(image_size), subset=subset,
                                  key_radius=key_radius, aggregation=key_aggregation)
    handlers: list[Any] = [
        StatsHandler(iteration_log=False, output_transform=lambda x: None),
        CheckpointSaver(save_dir=str(output_dir), save_dict={"network": network}, save_key_metric=True,
                        key_metric_filename="best.pt"),
    ]
    writer = _tensorboard_writer(output_dir) if tensorboard else None
    if writer is not None:
        from monai.handlers import TensorBoardStatsHandler

        # MONAI's evaluator runs with the trainer's epoch as its own, so the curve's x is the epoch
        handlers.append(TensorBoardStatsHandler(summary_writer=writer, iteration_log=False,
                                                output_transform=lambda x: None))
    return SupervisedEvaluator(
        device=device, val_data_loader=loader, network=network, prepare_batch=prepare_landmark_batch,
        key_val_metric={"val_pck": metric}, val_handlers=handlers,
    )


_WRITERS: dict[str, Any] = {}


def _tensorboard_writer(output_dir: str | os.PathLike):
    """One ``SummaryWriter`` per output folder (trainer and evaluator share it), or None without TensorBoard."""
    key = str(Path(output_dir).resolve())
    if key not in _WRITERS:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is in the [bundle] extra; training works without it
            warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=2)
            return None
        _WRITERS[key] = SummaryWriter(log_dir=str(Path(key) / "tensorboard"))
    return _WRITERS[key]



def build_trainer(network: nn.Module, train_loader, evaluator: SupervisedEvaluator | None, device,
                  output_dir: str | os.PathLike, max_epochs: int, loss_function: nn.Module,
                  optimizer: torch.optim.Optimizer, mixup_alpha: float | None = 0.75,
                  lr_scheduler: Any = None, resume: bool = True, epoch_length: int | None = None,
                  progress: bool = True, tensorboard: bool = True) -> SupervisedTrainer:
    """Training engine with progress, per-epoch validation, TensorBoard logs and checkpoints that resume.

    Every epoch writes ``last_checkpoint_epoch=N.pt`` (network, optimizer, scheduler, trainer
    state; only the newest kept). With ``resume`` and such a file in ``output_dir``, training
    continues from it — the epoch count included. The learning-rate milestones of *this* call win
    over the checkpoint's, so a resumed run can add a learning-rate drop. ``progress``: a tqdm bar
    per epoch; ``tensorboard``: loss, learning rate and validation metric under
    ``output_dir/tensorboard``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_dict: dict[str, Any] = {"network": network, "optimizer": optimizer}
    if lr_scheduler is not None:
        save_dict["lr_scheduler"] = lr_scheduler
    handlers: list[Any] = [
        StatsHandler(tag_name="train_loss", output_transform=_loss_value),
    ]
    if evaluator is not None:
        handlers.append(ValidationHandler(validator=evaluator, interval=1, epoch_level=True))
    trainer = SupervisedTrainer(
        device=device, max_epochs=max_epochs, epoch_length=epoch_length, train_data_loader=train_loader,
        network=network,
        optimizer=optimizer, loss_function=loss_function, prepare_batch=prepare_landmark_batch,
        iteration_update=MixupIteration(mixup_alpha), train_handlers=handlers,
    )
    save_dict["trainer"] = trainer
    if lr_scheduler is not None:
        from monai.handlers import LrScheduleHandler

        # attached before the checkpoint saver: the saved schedule has already stepped past its epoch
        LrScheduleHandler(lr_scheduler, print_lr=False).attach(trainer)
    CheckpointSaver(save_dir=str(output_dir), save_dict=save_dict, save_interval=1, epoch_level=True,
                    n_saved=1, file_prefix="last").attach(trainer)
    last = latest_checkpoint(output_dir) if resume else None
    if last is not None:
        CheckpointLoader(load_path=last, load_dict=save_dict, map_location=device).attach(trainer)
        if lr_scheduler is not None and hasattr(lr_scheduler, "milestones"):
            milestones = type(lr_scheduler.milestones)(lr_scheduler.milestones)
            # attached after the loader, so it runs after the checkpoint's schedule was restored
            trainer.add_event_handler(Events.STARTED, lambda _: setattr(lr_scheduler, "milestones", milestones))
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=True).attach(trainer, output_transform=lambda out: {"loss": _loss_value(out)})
    writer = _tensorboard_writer(output_dir) if tensorboard else None
    if writer is not None:
        from monai.handlers import TensorBoardStatsHandler

        TensorBoardStatsHandler(summary_writer=writer, tag_name="train_loss", output_transform=_loss_value,
                                state_attributes=None).attach(trainer)

        def log_epoch(engine) -> None:
            writer.add_scalar("learning_rate", optimizer.param_groups[0]["lr"], engine.state.epoch)
            # after validation (attached earlier): an epoch's curves are on disk even if the run stops next
            writer.flush()

        trainer.add_event_handler(Events.EPOCH_COMPLETED, log_epoch)
    return trainer
