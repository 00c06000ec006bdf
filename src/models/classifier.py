"""The one LightningModule: network + input pipeline + loss + metrics + optimiser/scheduler, and the one forward
that training, evaluation, ``Predictor`` and export run. Networks only map images to logits (``networks.py``)."""

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import CatMetric, MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MultilabelExactMatch

from src.errors import UserError
from src.models.networks import InitScheme, NetworkFactory, SimpleCNN, check_network, init_weights, param_groups
from src.models.preprocess import InputSpec, Preprocess
from src.models.tasks import (
    Task,
    balanced_weights,
    class_averages,
    class_weight_tensor,
    per_class_accuracy,
    probabilities,
)


class ImageClassifier(LightningModule):
    """Trains any network that maps images to logits. Logs ``{train,val,test}/{loss,acc}``, ``val/acc_best``, and
    ``{val,test}/acc_per_class/<class>``."""

    def __init__(
        self,
        class_names: Sequence[str],
        input_shape: tuple[int, int, int],
        input_mean: Sequence[float] = (0.0,),
        input_std: Sequence[float] = (1.0,),
        network: NetworkFactory | None = None,
        loss: Literal["cross_entropy", "nll"] = "cross_entropy",
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        lr_multipliers: dict[str, float] | None = None,
        init: InitScheme = "default",
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        label_smoothing: float = 0.0,
        decay_norms_and_biases: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        tta_hflip: bool = False,
        task: Task = "multiclass",
        class_weights: Literal["balanced"] | list[float] | dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            class_names: one name per class, in label order (linked from the data module).
            input_shape: (channels, height, width) of one image (linked from the data module).
            input_mean: per-channel mean of the [0, 1] training images, used to normalise (linked from the data).
            input_std: per-channel standard deviation, likewise.
            network: network class, called as ``network(input_shape, num_classes, **init_args)``; empty: SimpleCNN.
            loss: ``cross_entropy`` on logits, or ``nll`` on a log-softmax head (same optimum, the classic pairing).
            optimizer: optimiser class and its arguments, e.g. Adam, SGD (momentum), AdamW, Adadelta.
            scheduler: learning-rate scheduler class and its arguments; none = constant.
            lr_multipliers: parameter-name prefix (e.g. ``backbone``) -> factor on the lr of the parameters under it.
            init: weight initialisation outside a pretrained backbone: ``default`` (PyTorch's), ``kaiming``, ``xavier``.
            scheduler_interval: step the scheduler every ``epoch`` or ``step``; empty ``total_steps``: the run's length.
            label_smoothing: target probability moved from the true class to all classes (0 = one-hot).
            decay_norms_and_biases: apply ``weight_decay`` to 1-D parameters (BatchNorm, biases) too.
            channels_last: NHWC conv weights and activations, usually faster convolutions.
            compile: ``torch.compile`` the network (the first batches are slower while it compiles).
            tta_hflip: in val, test and predict, average the logits of each image and its mirror image.
            task: ``multiclass`` (softmax: one class per image) or ``multilabel`` (a sigmoid per class, several per
                image, each with its own threshold tuned on validation); linked from the data's labels.
            class_weights: loss weight per class against imbalance: ``balanced`` (n / (classes x images of the class)
                on the training split; multi-label: negatives / positives per label), a list in class order, or
                ``{class: weight}`` (others 1). Stored in the checkpoint.
        """
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        num_classes, self.multilabel = len(self.class_names), task == "multilabel"
        if self.multilabel and loss == "nll":
            raise UserError(
                "--model.loss nll is a log-softmax head (one class per image), but this data is multi-label: use "
                "--model.loss cross_entropy (a sigmoid and binary cross-entropy per label)"
            )
        #: The loss weight per class (``pos_weight`` per label when multi-label); a buffer, so it is in checkpoints.
        self.class_weight: torch.Tensor | None
        self.register_buffer("class_weight", class_weight_tensor(class_weights, self.class_names))
        self.net = check_network((network or SimpleCNN)(tuple(input_shape), num_classes))
        # Pretrained weights bring their own channels, size and statistics; other networks get the data's.
        data_spec = InputSpec(input_shape[0], tuple(input_shape[1:]), input_mean, input_std)
        self.preprocess = Preprocess(getattr(self.net, "input_spec", None) or data_spec)
        init_weights(self.net, init)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()  # in place: parameter names, and so checkpoints, stay those of the plain network
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        keywords = getattr(scheduler, "keywords", {})  # jsonargparse hands a partial of the init_args
        #: The scheduler's length (``total_steps`` left empty, as OneCycleLR allows) comes from the run.
        self.scheduler_spans_run = keywords.get("total_steps", 0) is None and keywords.get("epochs") is None
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"--model.label_smoothing {label_smoothing} must be in [0, 1), e.g. 0.1 (0 = off)")
        self.example_input_array = torch.zeros(2, *input_shape)
        try:  # a bad lr_multipliers prefix or optimiser/scheduler argument (``lr: -1``) fails before any run directory
            self.configure_optimizers(steps=100)
        except (ValueError, TypeError) as err:
            raise UserError(f"--model.optimizer / --model.scheduler: {err}") from None
        # Validation runs inside a training epoch, a test never overlaps it. No NaN filtering: divergence must show.
        self.train_loss, self.eval_loss = MeanMetric(nan_strategy="disable"), MeanMetric(nan_strategy="disable")
        if self.multilabel:  # every image's probabilities: thresholds, AP and F1 are exact (gathered on compute)
            self.train_acc = MultilabelExactMatch(num_classes)
            self.eval_probs, self.eval_targets = CatMetric(nan_strategy="disable"), CatMetric(nan_strategy="disable")
            self.register_buffer("thresholds", torch.full((num_classes,), 0.5))  # tuned on each validation
        else:
            self.train_acc = MulticlassAccuracy(num_classes, average="micro")
            # The validation or test epoch's, synchronised on compute(): its accuracies, the report, the dashboard.
            self.confusion = MulticlassConfusionMatrix(num_classes)
        # Kept in checkpoints (torchmetrics states are not by default): a resumed run remembers its best epoch.
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | dict, label: str | None = None, **overrides) -> "ImageClassifier":
        """The model a checkpoint (a path, or a dict from ``read_checkpoint``; no ``state_dict``: untrained) holds, on
        the CPU in eval mode, from its hyper-parameters (``overrides`` replace some); ``label`` names it in errors."""
        from src.models.restore import from_checkpoint  # not needed by a fit from scratch

        return from_checkpoint(cls, checkpoint, label, **overrides)

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (log-probabilities with ``loss='nll'``) of uint8 or [0, 1] float images, any channels and size, a
        batch or a list. Float32 at the trained channels and size is plain tensor code (no resize): export traces it."""
        x = self.preprocess(images)
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if self.hparams.get("tta_hflip") and not self.training:
            out = (out + self.net(x.flip(-1))) / 2
        return F.log_softmax(out, dim=1) if self.hparams.loss == "nll" else out

    @property
    def task(self) -> Task:
        return "multilabel" if self.multilabel else "multiclass"

    def criterion(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on logits (on the nll head's log-probabilities it is their NLL), or for multi-label targets
        binary cross-entropy per label; class weights and label smoothing apply to both."""
        smoothing = self.hparams.get("label_smoothing", 0.0)
        if self.multilabel:
            soft = targets.float() * (1 - smoothing) + smoothing / 2
            return F.binary_cross_entropy_with_logits(out, soft, pos_weight=self.class_weight)
        return F.cross_entropy(out, targets, weight=self.class_weight, label_smoothing=smoothing)

    def setup(self, stage: str) -> None:
        """``class_weights: balanced`` from the training split's counts (every process counts the same split)."""
        data = self.trainer.datamodule if self.trainer is not None else None
        if stage == "fit" and self.hparams.get("class_weights") == "balanced" and hasattr(data, "split_labels"):
            self.class_weight.copy_(balanced_weights(data.split_labels("train"), len(self.class_names)))
            shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(self.class_names, self.class_weight.tolist(), strict=True))
            rank_zero_info(f"class weights (balanced, from the training split): {shown}")

    @property
    def input_spec(self) -> InputSpec:
        """Channels, size and statistics the network was trained with (what ``preprocess`` converts images to)."""
        p = self.preprocess
        return InputSpec(p.channels, p.size, p.mean.flatten().tolist(), p.std.flatten().tolist())

    def on_fit_start(self) -> None:
        if isinstance(self.logger, TensorBoardLogger):  # train and val loss on one chart
            charts = {"Loss": {"Training vs. Validation Loss": ["Multiline", ["train/loss", "val/loss"]]}}
            self.logger.experiment.add_custom_scalars(charts)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch[0])
        loss = self.criterion(out, batch[1])
        self.train_loss.update(loss.detach())
        self.train_acc.update(out.detach(), batch[1].long())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % 20 == 0:  # every 20 steps, and at every epoch end
            self._stop_if_diverged()

    def _stop_if_diverged(self) -> None:
        """Stop a NaN/inf loss before NaN weights are saved. Not every step: reading the loss syncs with the host."""
        diverged = not bool(torch.isfinite(self.train_loss.mean_value).all())
        if not self.trainer.strategy.reduce_boolean_decision(diverged, all=False):  # every rank decides alike
            return
        lr = self.trainer.optimizers[0].defaults.get("lr", float("nan"))  # as configured, before any schedule
        raise UserError(
            f"training diverged: train/loss is {self.train_loss.mean_value.item()} in epoch {self.current_epoch} "
            f"(step {self.global_step}). Lower the learning rate (--model.optimizer.lr {lr:g}); "
            "stopped before this epoch's checkpoint, earlier checkpoints are intact."
        )

    def on_train_epoch_end(self) -> None:
        """Before this epoch's checkpoint; Lightning computes (synchronised) and resets the logged metrics."""
        self._stop_if_diverged()
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log("train/acc", self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Also ``test_step``: the epoch's metrics; the probabilities are for callbacks (the dashboard)."""
        out, y = self(batch[0]), batch[1]
        stage, probs = "test" if self.trainer.testing else "val", probabilities(out, self.task)
        self.eval_loss.update(self.criterion(out, y))
        if self.multilabel:
            self.eval_probs.update(probs)
            self.eval_targets.update(y.float())
        else:
            self.confusion.update(out, y)
        self.log(f"{stage}/loss", self.eval_loss, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return {"probs": probs}

    def on_validation_epoch_start(self) -> None:
        for metric in (self.eval_probs, self.eval_targets) if self.multilabel else (self.confusion,):
            metric.reset()  # also before the sanity check's batches

    def multilabel_scores(self, tune: bool) -> dict[str, Any]:
        """This epoch's multi-label scores: at thresholds tuned on its images (``tune``), or at the model's own."""
        from src.models.multilabel import scores

        probs, targets = self.eval_probs.compute(), self.eval_targets.compute()  # every rank: gathers
        return scores(probs, targets, self.class_names, None if tune else self.thresholds)

    def on_validation_epoch_end(self) -> None:
        """Metrics alike on every rank; multi-label validation tunes the thresholds the checkpoint keeps. The best
        val accuracy is never the sanity check's."""
        stage = "test" if self.trainer.testing else "val"
        if self.multilabel:
            from src.models.multilabel import logged

            result = self.multilabel_scores(tune=stage == "val")
            if stage == "val" and not self.trainer.sanity_checking:
                self.thresholds.copy_(result["thresholds"])
            metrics, accuracy = logged(result, stage), torch.tensor(result["exact_match"])
        else:
            confusion = self.confusion.compute()
            accuracy = confusion.diag().sum() / confusion.sum().clamp(min=1)
            metrics = per_class_accuracy(confusion, self.class_names, stage) | class_averages(confusion, stage)
        self.log(f"{stage}/acc", accuracy, prog_bar=stage == "val", sync_dist=True, reduce_fx="max")
        self.log_dict({k: v for k, v in metrics.items() if k != f"{stage}/acc"}, sync_dist=True, reduce_fx="max")
        if stage == "val" and not self.trainer.sanity_checking:
            self.val_acc_best(accuracy)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True, reduce_fx="max")

    test_step, on_test_epoch_start = validation_step, on_validation_epoch_start
    on_test_epoch_end = on_validation_epoch_end

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Probabilities of images, ``(images, targets)`` or files' ``{"image", "index"}``: targets, index passed on."""
        if isinstance(batch, dict):
            return {"probs": probabilities(self(batch["image"]), self.task), "index": batch["index"]}
        images, *targets = batch if isinstance(batch, (tuple, list)) else [batch]
        return {"probs": probabilities(self(images), self.task), **({"target": targets[0]} if targets else {})}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint holds every weight: its hyper-parameters rebuild the network without weight files."""
        network = checkpoint.get("hyper_parameters", {}).get("network")
        if getattr(self.net, "restore_args", None) and isinstance(network, dict) and "init_args" in network:
            hparams = checkpoint["hyper_parameters"] = copy.deepcopy(checkpoint["hyper_parameters"])
            hparams["network"]["init_args"].update(self.net.restore_args())

    def configure_optimizers(self, steps: float | None = None) -> dict:
        """The optimiser over named parameter groups (per-layer learning rates), plus the scheduler if any; ``steps``:
        the length of a scheduler spanning the run (default: the trainer's run)."""
        hparams = self.hparams
        groups = param_groups(self.net, hparams.lr_multipliers or {}, hparams.get("decay_norms_and_biases", True))
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_multiplier", 1.0)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        interval = hparams.get("scheduler_interval", "epoch")
        if self.scheduler_spans_run and steps is None:  # only then are the trainer and its run length needed
            self.check_run_length(self.trainer.max_epochs, self.trainer.max_steps)
            steps = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
        length = {"total_steps": int(steps)} if self.scheduler_spans_run else {}
        scheduler = {"scheduler": self.scheduler_factory(optimizer, **length), "interval": interval}
        return {"optimizer": optimizer, "lr_scheduler": {**scheduler, "monitor": "val/loss"}}

    def check_run_length(self, max_epochs: int | None, max_steps: int) -> None:
        """A scheduler spanning the run needs a finite one: refuse an endless run before anything is written."""
        finite = (max_epochs or 0) > 0 or (self.hparams.get("scheduler_interval") == "step" and max_steps > 0)
        if self.scheduler_spans_run and not finite:
            raise UserError(
                f"--model.scheduler spans the whole run (total_steps is empty) but --trainer.max_epochs {max_epochs} "
                f"and --trainer.max_steps {max_steps} set no end: set --trainer.max_epochs (or max_steps, with "
                "--model.scheduler_interval step), or give --model.scheduler.total_steps"
            )
