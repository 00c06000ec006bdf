"""``python -m src.train lr_find``: Lightning's range test, a suggestion per decade, the flag to paste and the plot."""

import math
from pathlib import Path

import torch
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from src.errors import UserError
from src.loggers import TensorBoardLogger

#: The smoothing of Lightning's loss record (its LR-finder callback's ``beta``).
BETA = 0.98
#: The suggestion skips the first 10 batches (smoothing warm-up) and needs a slope after them.
MIN_BATCHES = 20


def debiased(losses: list[float]) -> list[float]:
    """Adapter for Lightning 2.6's LR-finder loss record (raw losses are not public): its bias correction is off by one
    (Lightning #14167), so the curve starts at half the loss. tests/test_lr_find.py fails when Lightning changes it."""
    return [loss * (1 - BETA ** (n + 2)) / (1 - BETA ** (n + 1)) for n, loss in enumerate(losses)]


def steepest_descent(lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1) -> int | None:
    """Index of the rate where the loss falls fastest per decade, before the loss minimum (then it diverges); not
    Lightning's slope per unit of rate, which magnifies the noise at the smallest rates (Lightning PR #21171)."""
    points = [(n, math.log10(lr), loss) for n, (lr, loss) in enumerate(zip(lrs, losses, strict=True))]
    points = [p for p in points[skip_begin : len(points) - skip_end] if math.isfinite(p[2])]
    if len(points) < 3:
        return None
    lowest = min(range(len(points)), key=lambda i: points[i][2])
    points = points[: max(lowest + 1, 3)]
    slopes = torch.gradient(torch.tensor([p[2] for p in points]), spacing=[torch.tensor([p[1] for p in points])])
    return points[int(torch.argmin(slopes[0]))][0]


def paste_flag(model: LightningModule, lr: float) -> str:
    """The override that applies ``lr``: OneCycleLR's ``max_lr`` (it ignores the optimiser's), else the optimiser's."""
    keywords = getattr(getattr(model, "scheduler_factory", None), "keywords", {})
    key = "model.scheduler.init_args.max_lr" if "max_lr" in keywords else "model.optimizer.init_args.lr"
    return f"--{key} {lr:.3g}"


def range_test(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule | None, min_lr: float,
               max_lr: float, num_training: int, mode: str, early_stop_threshold: float | None) -> float:  # fmt: skip
    """``ClassifierTrainer.lr_find``: Lightning's range test; the suggestion and its flag printed, then plotted."""
    if not 0 < min_lr < max_lr:  # checked before any run directory exists
        raise UserError(f"--min_lr {min_lr} and --max_lr {max_lr}: need 0 < min_lr < max_lr, e.g. 1e-8 and 1")
    if num_training < MIN_BATCHES:
        raise UserError(f"--num_training {num_training}: the test needs at least {MIN_BATCHES} batches, e.g. 100")
    run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # on every rank: log_dir broadcasts
    # Only the number of batches bounds the test: a short recipe (1 epoch) must not end it early.
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs or 0, num_training)
    try:
        finder = Tuner(trainer).lr_find(
            model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training, mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=False,  # an OptimizerCallable has no `lr` attribute to update: the flag is printed
        )  # fmt: skip
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    if finder is None:
        raise UserError("lr_find does not run with --trainer.fast_dev_run (Lightning skips it): drop that flag")
    lrs, losses = finder.results["lr"], debiased(finder.results["loss"])
    finder.results["loss"] = losses
    best = steepest_descent(lrs, losses)
    if best is None:
        raise UserError(
            f"lr_find: too few finite losses ({len(losses)} batches) to suggest a rate: raise "
            "--num_training, or pass --early_stop_threshold null if the loss stopped it early"
        )
    if trainer.is_global_zero:
        ax = Figure(figsize=(7, 4.5)).subplots()  # no pyplot figure: works headless, nothing left open
        finder.plot(ax=ax)
        ax.plot(lrs[best], losses[best], "o", color="red", markersize=10)
        finite = [loss for loss in losses if math.isfinite(loss)]
        ax.set_ylim(min(finite) * 0.9, max(finite[: finite.index(min(finite)) + 1]) * 1.25)  # divergence off the chart
        ax.set_title("Learning-rate range test: training loss per batch (red: suggestion)")
        ax.grid(True, which="both", alpha=0.3)
        run_dir.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(run_dir / "lr_find.png", dpi=100, bbox_inches="tight")
        if isinstance(trainer.logger, TensorBoardLogger):  # after the fit closed its writer: flush the one this opens
            trainer.logger.add_figure("lr_find", ax.figure, 0)
            trainer.logger.experiment.flush()
        note = " (lr_multipliers still scale it per group)" if getattr(model.hparams, "lr_multipliers", None) else ""
        print(
            f"suggested learning rate: {lrs[best]:.3g}{note}, where the loss falls fastest "
            f"({len(losses)} batches, {min_lr:g} to {max_lr:g}).\n"
            f"loss vs learning rate: {run_dir / 'lr_find.png'}\n"
            f"train with it: python -m src.train fit <the same --config and flags> {paste_flag(model, lrs[best])}"
        )
    return lrs[best]
