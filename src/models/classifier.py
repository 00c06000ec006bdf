"""The one LightningModule: network + loss + metrics + optimiser/scheduler.

Networks only map images to logits; everything about *training* them lives here, once.
"""

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.wrappers import ClasswiseWrapper

from src.errors import UserError
from src.models.init import InitScheme, init_weights
from src.models.networks import NetworkFactory, SimpleCNN
from src.models.preprocess import InputSpec, Preprocess

#: Training steps between checks for a diverged (NaN/inf) loss; also checked at every epoch end.
DIVERGENCE_CHECK_EVERY = 20


class ImageClassifier(LightningModule):
    """Trains any network that maps (B, C, H, W) images to (B, num_classes) logits.

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``,
    ``val/acc_per_class/<class>``, ``test/acc`` and ``test/acc_per_class/<class>``.
    """

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
    ) -> None:
        """
        Args:
            class_names: one name per class, in label order (linked from the data module).
            input_shape: (channels, height, width) of one image (linked from the data module).
            input_mean: per-channel mean of the [0, 1] training images, used to normalise (linked from the data).
            input_std: per-channel standard deviation, likewise.
            network: network class, called as ``network(input_shape, num_classes, **its YAML init_args)``;
                ``SimpleCNN`` when empty. (Empty rather than ``SimpleCNN`` by default: jsonargparse would carry the
                default class's arguments, e.g. its dropout 0.25, into any other network class a config names.)
            loss: ``cross_entropy`` on logits, or ``nll`` on a log-softmax head (same optimum, the classic pairing).
            optimizer: optimiser class and its arguments, e.g. Adam, SGD (momentum), AdamW, Adadelta.
            scheduler: learning-rate scheduler class and its arguments (the configs use MultiStepLR); none = constant.
            lr_multipliers: per-layer learning rates: parameter-name prefix (e.g. ``features``) -> factor applied
                to the optimiser's lr for the parameters under it. Each prefix becomes a named parameter group.
            init: weight initialisation of the network: ``default`` (PyTorch's), ``kaiming`` or ``xavier``.
            scheduler_interval: step the scheduler after every ``epoch`` (MultiStepLR milestones are epochs) or every
                optimiser ``step`` (OneCycleLR). A scheduler with a ``total_steps`` argument left empty (OneCycleLR:
                warm-up, then cosine or linear decay) gets the run's length from the trainer, in those units.
            label_smoothing: target probability moved from the true class to all classes (0 = classic one-hot).
            decay_norms_and_biases: apply the optimiser's ``weight_decay`` to BatchNorm weights and biases too
                (classic). False puts every 1-D parameter in a group without weight decay (modern recipes).
            channels_last: store conv weights and activations as NHWC, usually faster convolutions on CPU and GPU.
            compile: ``torch.compile`` the network (first batches slower while it compiles).
            tta_hflip: test-time augmentation: in evaluation (val, test, predict), average the logits of each image
                and its mirror image. Pays off only for data trained with ``--data.random_hflip true``.
        """
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        self.net = (network or SimpleCNN)(tuple(input_shape), num_classes)
        # The one input pipeline: to the network's channels, size and statistics. Pretrained backbones declare
        # their own (``input_spec``: the weights' size and statistics); other networks get the data's.
        channels, height, width = input_shape
        spec = getattr(self.net, "input_spec", None) or InputSpec(channels, (height, width), input_mean, input_std)
        self.preprocess = Preprocess(spec)
        # A pretrained backbone keeps its weights: only a new head is (re)initialised.
        init_weights(self.net.head if hasattr(self.net, "backbone") else self.net, init)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()  # in place: parameter names, and so checkpoints, stay those of the plain network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"--model.label_smoothing {label_smoothing} must be in [0, 1), e.g. 0.1 (0 = off)")
        # On log-probabilities (the nll head) cross-entropy equals NLL, so smoothing works for both heads.
        plain_nll = loss == "nll" and not label_smoothing
        self.criterion = nn.NLLLoss() if plain_nll else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.example_input_array = torch.zeros(2, *input_shape)
        self._param_groups()  # a bad lr_multipliers prefix fails here, before any run directory exists
        self._check_optimizer_arguments()

        # One metric object per stage: their states must never mix.
        # No NaN filtering (the default drops NaNs with a warning, and checks on the host every step): a diverged
        # loss must show as NaN, and is caught by ``_stop_if_diverged``.
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(3))
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(num_classes, average="micro") for _ in range(3)
        )
        self.val_acc_per_class, self.test_acc_per_class = (
            ClasswiseWrapper(
                MulticlassAccuracy(num_classes, average=None),
                labels=self.class_names,
                prefix=f"{stage}/acc_per_class/",
            )
            for stage in ("val", "test")
        )
        # Kept in checkpoints (torchmetrics states are not by default), so a resumed run remembers its best epoch.
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)
        # Synchronised across processes on compute(); read by the report and dashboard callbacks.
        self.val_confusion, self.test_confusion = (MulticlassConfusionMatrix(num_classes) for _ in range(2))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (log-probabilities when ``loss='nll'``) of uint8 or [0, 1] float images of any channel count
        and size (a batch, or a list of images of different sizes)."""
        x = self.preprocess(x)  # uint8 batches travel as bytes (4x less) and are converted here
        if self.hparams.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if self.hparams.get("tta_hflip") and not self.training:
            out = (out + self.net(x.flip(-1))) / 2
        return F.log_softmax(out, dim=1) if self.hparams.loss == "nll" else out

    @property
    def input_spec(self) -> InputSpec:
        """Channels, size and statistics the network was trained with (what ``preprocess`` converts images to)."""
        p = self.preprocess
        return InputSpec(p.channels, p.size, p.mean.flatten().tolist(), p.std.flatten().tolist())

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        out = self(x)
        return self.criterion(out, y), out, y

    def on_fit_start(self) -> None:
        """Runs once before the first epoch: draw train and val loss on one TensorBoard chart."""
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_custom_scalars(
                {"Loss": {"Training vs. Validation Loss": ["Multiline", ["train/loss", "val/loss"]]}}
            )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; only accumulates metrics (logging every step costs ~5% of a small CNN's epoch)."""
        loss, out, y = self._step(batch)
        self.train_loss.update(loss.detach())
        self.train_acc.update(out.detach(), y)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % DIVERGENCE_CHECK_EVERY == 0:
            self._stop_if_diverged()

    def _stop_if_diverged(self) -> None:
        """Stop a diverged run (NaN/inf loss) with a message instead of training on, and saving, NaN weights.

        Reads the epoch's running loss sum: a host sync every ``DIVERGENCE_CHECK_EVERY`` steps, not every step.
        Every rank takes the same decision (a collective), so all processes stop together.
        """
        diverged = not bool(torch.isfinite(self.train_loss.mean_value).all())
        if not self.trainer.strategy.reduce_boolean_decision(diverged, all=False):
            return
        lr = self.trainer.optimizers[0].defaults.get("lr", float("nan"))  # as configured, before any schedule
        raise UserError(
            f"training diverged: train/loss is {self.train_loss.mean_value.item()} in epoch {self.current_epoch} "
            f"(step {self.global_step}). Lower the learning rate (--model.optimizer.lr {lr:g}); "
            "stopped before this epoch's checkpoint, earlier checkpoints are intact."
        )

    def on_train_epoch_end(self) -> None:
        """Runs after the last training batch (before this epoch's checkpoint): the epoch's loss and accuracy."""
        self._stop_if_diverged()
        # Metric objects: Lightning computes them (synchronised across processes) and resets them for the next epoch.
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log("train/acc", self.train_acc)

    def on_validation_epoch_start(self) -> None:
        """Runs before the first val batch (also of the sanity check): a fresh confusion matrix."""
        self.val_confusion.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Accumulates val loss, accuracy, per-class accuracy and the confusion matrix over the epoch; returns the
        class probabilities for callbacks (e.g. the misclassified-images dashboard)."""
        loss, out, y = self._step(batch)
        self.val_loss(loss)
        self.val_acc(out, y)
        self.val_acc_per_class.update(out, y)
        self.val_confusion.update(out, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        return {"probs": self._probs(out)}

    def on_validation_epoch_end(self) -> None:
        """Runs after the last val batch: best-so-far accuracy and the per-class breakdown."""
        if not self.trainer.sanity_checking:  # the sanity check's few batches are not an epoch
            self.val_acc_best(self.val_acc.compute())
            # Already the same on every process (val/acc is synchronised); "max" keeps it exact while saying so.
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log_dict(self.val_acc_per_class.compute(), sync_dist=True, reduce_fx="max")  # synchronised already
        self.val_acc_per_class.reset()

    def on_test_epoch_start(self) -> None:
        """Runs before the first test batch: a fresh confusion matrix."""
        self.test_confusion.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Accumulates test loss, accuracy, per-class accuracy and the confusion matrix; returns probabilities."""
        loss, out, y = self._step(batch)
        self.test_loss(loss)
        self.test_acc(out, y)
        self.test_acc_per_class.update(out, y)
        self.test_confusion.update(out, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        return {"probs": self._probs(out)}

    def on_test_epoch_end(self) -> None:
        """Runs after the last test batch: logs one accuracy per class name (printed in Lightning's table)."""
        self.log_dict(self.test_acc_per_class.compute(), sync_dist=True, reduce_fx="max")  # synchronised already
        self.test_acc_per_class.reset()

    def _probs(self, out: torch.Tensor) -> torch.Tensor:
        """Class probabilities from the network's output (logits, or log-probabilities with ``loss='nll'``)."""
        return F.softmax(out.detach().float(), dim=1)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities per image. Batches are images, ``(images, targets)`` (targets passed through) or
        ``{"image": images, "index": indices}`` from files (indices passed through)."""
        if isinstance(batch, dict):
            return {"probs": self._probs(self(batch["image"])), "index": batch["index"]}
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = {"probs": self._probs(self(x))}
        if isinstance(batch, (tuple, list)) and len(batch) > 1:
            out["target"] = batch[1]
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint is the model: its hyper-parameters rebuild the network without fetching or reading any
        pretrained weights file (the checkpoint holds every weight), e.g. offline, after the file is gone."""
        restore_args = getattr(self.net, "restore_args", None)
        network = checkpoint.get("hyper_parameters", {}).get("network")
        if callable(restore_args) and isinstance(network, dict) and "init_args" in network:
            hparams = checkpoint["hyper_parameters"] = copy.deepcopy(checkpoint["hyper_parameters"])
            hparams["network"]["init_args"].update(restore_args())

    def configure_optimizers(self) -> dict:
        """The optimiser over named parameter groups (per-layer learning rates), plus the scheduler if any."""
        optimizer = self.optimizer_factory(self._param_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_multiplier", 1.0)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        interval = self.hparams.get("scheduler_interval", "epoch")
        steps = 0
        if self.scheduler_spans_run:  # only then is the run's length needed (and a trainer attached)
            steps = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
            steps = int(steps) if steps is not None and math.isfinite(steps) else 0
        scheduler = self._scheduler(optimizer, steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": "val/loss"},
        }

    @property
    def scheduler_spans_run(self) -> bool:
        """Whether the scheduler's length (``total_steps`` left empty, as OneCycleLR allows) comes from the run."""
        keywords = getattr(self.scheduler_factory, "keywords", {})  # jsonargparse hands a partial of the init_args
        return "total_steps" in keywords and keywords["total_steps"] is None and keywords.get("epochs") is None

    def check_run_length(self, max_epochs: int | None, max_steps: int) -> None:
        """A scheduler spanning the run needs a finite one: refuse an endless run before anything is written."""
        interval = self.hparams.get("scheduler_interval", "epoch")
        finite = (max_epochs or 0) > 0 or (interval == "step" and max_steps > 0)
        if self.scheduler_spans_run and not finite:
            raise UserError(
                f"--model.scheduler spans the whole run (total_steps is empty) but --trainer.max_epochs {max_epochs} "
                f"and --trainer.max_steps {max_steps} set no end: set --trainer.max_epochs (or max_steps, with "
                "--model.scheduler_interval step), or give --model.scheduler.total_steps"
            )

    def _scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        """The configured scheduler; one that spans the run (OneCycleLR) gets ``total_steps``."""
        if self.scheduler_spans_run:
            if total_steps < 1:
                self.check_run_length(-1, -1)
            return self.scheduler_factory(optimizer, total_steps=total_steps)
        return self.scheduler_factory(optimizer)

    def _check_optimizer_arguments(self) -> None:
        """Build the optimiser and scheduler once on a stand-in parameter: a bad argument (``lr: -1``, a
        milestone list that is not a list) fails now, in one line, not after a run directory exists."""
        try:
            optimizer = self.optimizer_factory([nn.Parameter(torch.zeros(1))])
            if self.scheduler_factory is not None:
                self._scheduler(optimizer, total_steps=100)
        except (ValueError, TypeError) as err:
            raise UserError(f"--model.optimizer / --model.scheduler: {err}") from None

    def _param_groups(self) -> list[dict]:
        """Split the network's parameters by ``lr_multipliers`` prefix; the rest form the ``default`` group."""
        multipliers = self.hparams.lr_multipliers or {}
        groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in multipliers}
        groups["default"] = []
        for name, param in self.net.named_parameters():
            prefix = next((p for p in multipliers if name == p or name.startswith(p + ".")), "default")
            groups[prefix].append(param)
        unused = [p for p in multipliers if not groups[p]]
        if unused:
            parts = [n.split(".")[:-1] for n, _ in self.net.named_parameters()]
            names = sorted({".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)})
            raise UserError(f"--model.lr_multipliers: prefix {unused} matches no parameter; use one of {names}")
        if not multipliers and self.hparams.get("decay_norms_and_biases", True):
            return [{"params": groups["default"]}]  # one unnamed group: LearningRateMonitor logs ``lr-<Optimizer>``
        out = []
        for prefix, params in groups.items():
            group = {"name": prefix, "lr_multiplier": multipliers.get(prefix, 1.0)}
            if self.hparams.get("decay_norms_and_biases", True):
                out.append({"params": params, **group})
                continue
            # BatchNorm weights, biases (every 1-D tensor) are not decayed: shrinking them only fights the norm.
            decayed, kept = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
            out.append({"params": decayed, **group})
            out.append({"params": kept, **group, "name": f"{prefix}/no_decay", "weight_decay": 0.0})
        return [g for g in out if g["params"]]
