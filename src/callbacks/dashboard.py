"""TensorBoard images: ``train/samples`` once per run (as the model sees them), then per validation epoch and test
``{val,test}/confusion_matrix`` and ``/mistakes`` (the most confident), from all processes; rank 0 draws them."""

import heapq
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from src.distributed import gather_objects
from src.loggers import TensorBoardLogger


def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Counts with true classes as rows and predicted classes as columns, class names on both axes."""
    n = len(class_names)
    side = min(max(4.0, 0.5 * n + 2.5), 20.0)
    fig = Figure(figsize=(side, side * 0.9), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.subplots()
    counts = confusion.cpu().long()
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    if n <= 30:  # beyond that, numbers would overlap
        threshold = counts.max().item() / 2
        for (i, j), value in ((ij, counts[ij].item()) for ij in itertools.product(range(n), repeat=2)):
            ax.text(j, i, str(value), ha="center", va="center", color="wk"[value <= threshold], fontsize=7)
    fig.tight_layout()
    return fig


def image_grid_figure(images: torch.Tensor, captions: Sequence[str], title: str, columns: int = 8) -> Figure:
    """[0, 1] float images (N, C, H, W), grey or RGB, captioned, in a grid: one mosaic (an Axes each is far slower)."""
    pixels = images.detach().float().clamp(0, 1).cpu()
    ppi = max(pixels.shape[-2:]) / 1.45  # mosaic pixels per inch: each image's longer side spans 1.45 inches
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    above, pad = math.ceil((0.14 * lines + 0.08) * ppi), round(0.15 * ppi)  # room for a caption above each image
    cells = torch.nn.functional.pad(pixels, (0, 0, above, 0), value=1.0)  # white
    mosaic = make_grid(cells, nrow=columns, padding=pad, pad_value=1.0)  # RGB, (pad + cell) per image
    width, height = mosaic.shape[2] / ppi, mosaic.shape[1] / ppi + 0.4  # inches: 0.4 for the title
    fig = Figure(figsize=(width, height), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.add_axes((0.0, 0.0, 1.0, 1 - 0.4 / height))
    ax.set_axis_off()
    grid = mosaic[0] if pixels.shape[1] == 1 else mosaic.permute(1, 2, 0)  # one grey channel draws faster
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, aspect="auto", extent=(0, mosaic.shape[2], mosaic.shape[1], 0))
    cell_h, cell_w = cells.shape[-2] + pad, cells.shape[-1] + pad
    for i, caption in enumerate(captions):
        x, y = pad + cell_w * (i % columns) + pixels.shape[-1] / 2, pad + cell_h * (i // columns) + above
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=7)
    fig.suptitle(title, y=1 - 0.2 / height, va="center", fontsize=9)
    return fig


def label_set(row: Sequence[float] | torch.Tensor, names: Sequence[str]) -> str:
    """The labels of a multi-hot row (or of a row of decisions), ``a|b``."""
    return "|".join(name for name, on in zip(names, row, strict=True) if on)


def label_figure(labels: Sequence[dict[str, Any]], title: str) -> Figure:
    """Per-label F1 (at the thresholds) and average precision, one pair of bars per label."""
    names, height = [label["class"] for label in labels], 0.28 * len(labels) + 1.2
    fig = Figure(figsize=(6, min(height, 30)), dpi=100)
    ax = fig.subplots()
    rows = torch.arange(len(labels), dtype=torch.float)
    for shift, key in ((-0.2, "f1"), (0.2, "ap")):
        values = [0.0 if label[key] != label[key] else label[key] for label in labels]  # AP of an absent label: 0
        ax.barh(rows + shift, values, height=0.4, label=key.upper())
    ax.set(yticks=rows.tolist(), xlim=(0, 1), title=title, xlabel="score")
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


class Dashboard(Callback):
    """Draws the dashboard's images into the TensorBoard run (nothing without a TensorBoard logger)."""

    def __init__(self, samples: int = 32, mistakes: int = 16, every_n_epochs: int = 1) -> None:
        """
        Args:
            samples: training images shown once per run (0 = none).
            mistakes: most confidently misclassified val/test images shown per epoch (0 = none).
            every_n_epochs: draw the validation confusion matrix and mistakes every n epochs (0 = never).
        """
        self.samples, self.every_n_epochs, self.keep = samples, every_n_epochs, mistakes
        self.mistakes: list[tuple] = []  # this process's most confident so far: (confidence, caption, image)

    @staticmethod
    def _logger(trainer: Trainer) -> TensorBoardLogger | None:
        return trainer.logger if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero else None

    def _draws(self, trainer: Trainer) -> bool:
        """Not in the sanity check; during a fit, every ``every_n_epochs`` epochs; in ``validate``/``test``, always."""
        due = self.every_n_epochs > 0 and trainer.current_epoch % self.every_n_epochs == 0
        return not trainer.sanity_checking and (due or trainer.state.fn != TrainerFn.FITTING)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """The first batch of a run, after augmentation (this hook sees the batch on the device, augmented)."""
        if self.samples == 0 or batch_idx or trainer.global_step or (logger := self._logger(trainer)) is None:
            return  # on every step: the cheap tests first
        images, labels, classes = batch[0][: self.samples], batch[1][: self.samples], pl_module.class_names
        names = [label_set(row, classes) if row.dim() else classes[row] for row in labels]
        title = "training samples as the model sees them"
        logger.add_figure("train/samples", image_grid_figure(pl_module.preprocess.pixels(images), names, title), 0)

    def _end(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self._draws(trainer):
            return
        multilabel = getattr(pl_module, "multilabel", False)  # every rank: synchronising collectives
        result = pl_module.multilabel_scores(tune=stage == "val") if multilabel else pl_module.confusion.compute()
        mistakes = heapq.nlargest(self.keep, itertools.chain(*gather_objects(self.mistakes)), key=lambda m: m[0])
        if (logger := self._logger(trainer)) is None:
            return
        # The step of this epoch's scalars (the last training step: a resumed run purges everything after it).
        names, step = pl_module.class_names, trainer.global_step
        epoch = f"{stage} epoch {trainer.current_epoch}" if stage == "val" else "test"
        if multilabel:
            title = f"{epoch}: mean AP {result['map']:.4f}, exact match {result['exact_match']:.4f}"
            logger.add_figure(f"{stage}/per_label", label_figure(result["labels"], title), step)
        else:
            accuracy = (result.diag().sum() / result.sum().clamp(min=1)).item()
            title = f"{epoch}: accuracy {accuracy:.4f}" if stage == "val" else "test"
            logger.add_figure(f"{stage}/confusion_matrix", confusion_figure(result, names, title), step)
        if mistakes:
            captions = [caption for _, caption, _ in mistakes]
            images = torch.stack([image for *_, image in mistakes])
            figure = image_grid_figure(images, captions, f"{stage}: most confident mistakes")
            logger.add_figure(f"{stage}/mistakes", figure, step)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.mistakes = []

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if not (self.keep and self._draws(trainer) and isinstance(outputs, dict) and "probs" in outputs):
            return
        images, targets, probs, names = batch[0], batch[1], outputs["probs"], pl_module.class_names
        if getattr(pl_module, "multilabel", False):  # how sure the worst wrong decision was, of either kind
            decided = probs >= pl_module.thresholds
            confidence = torch.where(decided != targets.bool(), (probs - targets).abs(), 0).amax(1)
            wrong = (confidence > 0).nonzero().flatten()
            caption = lambda i: f"true {label_set(targets[i], names)}\npred {label_set(decided[i], names)}"  # noqa: E731
        else:
            confidence, predicted = probs.max(1)
            wrong = (predicted != targets).nonzero().flatten()
            caption = lambda i: f"true {names[targets[i]]}\npred {names[predicted[i]]} {confidence[i]:.2f}"  # noqa: E731
        best = wrong[confidence[wrong].argsort(descending=True)[: self.keep]]
        pixels = pl_module.preprocess.pixels(images[best]).cpu() if len(best) else []  # only these are copied
        found = zip(confidence[best].tolist(), map(caption, best.tolist()), pixels, strict=True)
        self.mistakes = heapq.nlargest(self.keep, [*self.mistakes, *found], key=lambda m: m[0])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, pl_module, "test" if trainer.testing else "val")

    on_test_epoch_start, on_test_batch_end = on_validation_epoch_start, on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end
