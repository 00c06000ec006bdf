"""Finetuning strategies for networks with a ``backbone``: which backbone blocks train when. The optimiser holds
every parameter throughout (its groups and the scheduler never change). DDP reduces what required a gradient when it
wrapped the model, so ``requires_grad`` changes only in ``setup``; later, frozen blocks' gradients are dropped before
the step, alike on every rank. The phase follows the epoch, so a resumed run lands in the right one."""

from typing import Literal

from lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.optim import Optimizer

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class TransferFinetuning(Callback):
    """Which backbone layers train when; networks without a ``backbone`` (FC, CNN) are left alone."""

    def __init__(
        self,
        strategy: Literal["none", "freeze", "freeze_unfreeze", "milestones"] = "none",
        unfreeze_at_epoch: int = 1,
        milestones: tuple[int, int] = (1, 3),
        top_stages: int = 2,
        train_bn: bool = False,
    ) -> None:
        """
        Args:
            strategy: ``none`` (everything trains), ``freeze`` (only the head ever trains), ``freeze_unfreeze`` (the
                head only, until ``unfreeze_at_epoch``) or ``milestones`` (the head, then the top blocks, then all).
            unfreeze_at_epoch: epoch at which ``freeze_unfreeze`` unfreezes the backbone.
            milestones: epochs at which ``milestones`` unfreezes the ``top_stages`` top blocks, then the rest.
            top_stages: how many of the backbone's last blocks the first milestone unfreezes.
            train_bn: frozen blocks' BatchNorm layers keep training (parameters and running statistics).
        """
        self.strategy, self.unfreeze_at_epoch, self.milestones = strategy, unfreeze_at_epoch, milestones
        self.top_stages, self.train_bn = top_stages, train_bn
        self._frozen_params: list[nn.Parameter] = []

    def frozen_modules(self, pl_module: LightningModule, epoch: int) -> tuple[nn.Module | None, set[nn.Module]]:
        """The backbone, if any, and its modules that do not train in ``epoch`` (BatchNorm trains with ``train_bn``)."""
        backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
        if not isinstance(backbone, nn.Module):
            return None, set()
        until = {"freeze": float("inf"), "freeze_unfreeze": self.unfreeze_at_epoch, "milestones": self.milestones[0]}
        blocks = [backbone] if epoch < until.get(self.strategy, 0) else []
        if self.strategy == "milestones" and self.milestones[0] <= epoch < self.milestones[1]:
            # Blocks in order: features[i] (MobileNet, EfficientNet, CNN), else the children with parameters (ResNet).
            parts = backbone.features if isinstance(getattr(backbone, "features", None), nn.Sequential) else backbone
            stages = [m for m in parts.children() if any(True for _ in m.parameters())]
            blocks = stages[: max(len(stages) - self.top_stages, 0)]
        modules = {m for block in blocks for m in block.modules()}
        return backbone, {m for m in modules if not (self.train_bn and isinstance(m, BATCH_NORMS))}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Before DDP wraps the model: a backbone that never trains stops needing gradients."""
        if stage == "fit" and self.strategy == "freeze":
            for param in (p for m in self.frozen_modules(pl_module, 0)[1] for p in m.parameters(recurse=False)):
                param.requires_grad = False

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every training epoch, also the first after a resume: set this epoch's phase."""
        backbone, frozen = self.frozen_modules(pl_module, trainer.current_epoch)
        for module in backbone.modules() if backbone is not None else []:
            if isinstance(module, BATCH_NORMS):  # frozen BatchNorm keeps its stored statistics
                module.train(module not in frozen)
        self._frozen_params = [p for m in frozen for p in m.parameters(recurse=False) if p.requires_grad]

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        """After DDP's all-reduce, before clipping and the step: the optimiser skips gradient-less frozen blocks."""
        for param in self._frozen_params:
            param.grad = None
