"""Finetuning strategies for networks with a ``backbone`` (see ``TransferNet``): which backbone blocks train when.

The optimiser holds the backbone's parameters from the start, in their own group (``lr_multipliers``), so groups,
learning rates and the scheduler never change. DDP all-reduces exactly the parameters that required a gradient when
it wrapped the model, so ``requires_grad`` changes only in ``setup``, before that (a backbone that never trains).
Otherwise a frozen block keeps its gradients on and they are dropped after backward (after DDP's all-reduce), before
the optimiser step: it gets no update at all (no momentum, no weight decay), identically on every rank. The phase
follows the epoch, so a resumed run lands in the right one. Frozen BatchNorm layers keep their running statistics.
"""

from typing import Literal

from lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.optim import Optimizer

Strategy = Literal["none", "freeze", "freeze_unfreeze", "milestones"]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in input-to-output order (``features[i]`` for MobileNet/EfficientNet/CNN, else
    the top-level children with parameters, e.g. ResNet's stem layers and ``layer1``..``layer4``)."""
    container = backbone.features if isinstance(getattr(backbone, "features", None), nn.Sequential) else backbone
    return [m for m in container.children() if any(True for _ in m.parameters())]


class TransferFinetuning(Callback):
    """Which backbone layers train when; networks without a ``backbone`` (FC, CNN) are left alone.

    ``none``: everything trains from the start. ``freeze``: only the head ever trains (a feature extractor).
    ``freeze_unfreeze``: the head only until ``unfreeze_at_epoch``, then everything. ``milestones``: the head only,
    then also the top ``top_stages`` backbone blocks from ``milestones[0]``, then everything from ``milestones[1]``.
    """

    def __init__(
        self,
        strategy: Strategy = "none",
        unfreeze_at_epoch: int = 1,
        milestones: tuple[int, int] = (1, 3),
        top_stages: int = 2,
        train_bn: bool = False,
    ) -> None:
        """
        Args:
            strategy: ``none``, ``freeze``, ``freeze_unfreeze`` or ``milestones`` (see the class docstring).
            unfreeze_at_epoch: epoch at which ``freeze_unfreeze`` unfreezes the backbone.
            milestones: epochs at which ``milestones`` unfreezes the top blocks, then the rest.
            top_stages: how many of the backbone's last blocks the first milestone unfreezes.
            train_bn: frozen blocks' BatchNorm layers keep training (parameters and running statistics).
        """
        self.strategy = strategy
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.milestones = milestones
        self.top_stages = top_stages
        self.train_bn = train_bn
        self._frozen_params: list[nn.Parameter] = []

    @staticmethod
    def _backbone(pl_module: LightningModule) -> nn.Module | None:
        backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
        return backbone if isinstance(backbone, nn.Module) else None

    def frozen_blocks(self, backbone: nn.Module, epoch: int) -> list[nn.Module]:
        """The backbone blocks that do not train in ``epoch``."""
        everything = self.strategy == "freeze"
        everything |= self.strategy == "freeze_unfreeze" and epoch < self.unfreeze_at_epoch
        everything |= self.strategy == "milestones" and epoch < self.milestones[0]
        if everything:
            return [backbone]
        if self.strategy == "milestones" and epoch < self.milestones[1]:
            stages = backbone_stages(backbone)
            return stages[: max(len(stages) - self.top_stages, 0)]
        return []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Before DDP wraps the model: a backbone that never trains stops needing gradients."""
        backbone = self._backbone(pl_module)
        if stage == "fit" and backbone is not None and self.strategy == "freeze":
            for module in backbone.modules():
                if not (self.train_bn and isinstance(module, BATCH_NORMS)):
                    for param in module.parameters(recurse=False):
                        param.requires_grad = False

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every training epoch, also the first after a resume: set this epoch's phase."""
        backbone = self._backbone(pl_module)
        self._frozen_params = []
        if backbone is None:
            return
        frozen = {id(m) for block in self.frozen_blocks(backbone, trainer.current_epoch) for m in block.modules()}
        for module in backbone.modules():
            is_bn = isinstance(module, BATCH_NORMS)
            if is_bn:  # frozen: the stored statistics, unless BatchNorm is meant to keep training (train_bn)
                module.train(id(module) not in frozen or self.train_bn)
            if id(module) in frozen and not (is_bn and self.train_bn):
                self._frozen_params += [p for p in module.parameters(recurse=False) if p.requires_grad]

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        """After backward and DDP's all-reduce, before the step (and gradient clipping): frozen blocks get no
        gradient, so the optimiser skips them entirely, identically on every rank."""
        for param in self._frozen_params:
            param.grad = None
