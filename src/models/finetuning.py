"""Finetuning strategies for networks with a ``backbone`` (see ``TransferNet``), on Lightning's ``BaseFinetuning``.

The optimiser holds the backbone's parameters from the start, in their own parameter group (``lr_multipliers``
gives them the discriminative learning rate). Freezing turns their gradients off; unfreezing turns them back on, so
the groups, their learning rates and the scheduler stay the same throughout and are visible in
``LearningRateMonitor`` from the first epoch.
"""

from typing import Literal

from lightning import LightningModule
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

Strategy = Literal["none", "freeze", "freeze_unfreeze", "milestones"]


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in input-to-output order (``features[i]`` for MobileNet/EfficientNet/CNN, else
    the top-level children with parameters, e.g. ResNet's stem layers and ``layer1``..``layer4``)."""
    container = backbone.features if isinstance(getattr(backbone, "features", None), nn.Sequential) else backbone
    return [m for m in container.children() if any(True for _ in m.parameters())]


class TransferFinetuning(BaseFinetuning):
    """Which backbone layers train when.

    - ``none``: everything trains from the start.
    - ``freeze``: the backbone never trains (feature extractor); only the head learns.
    - ``freeze_unfreeze``: head only until ``unfreeze_at_epoch``, then everything.
    - ``milestones``: head only, then the top ``top_stages`` backbone blocks from ``milestones[0]``, then all from
      ``milestones[1]``.

    Networks without a ``backbone`` attribute (FC, CNN) are left alone whatever the strategy.
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
            train_bn: keep BatchNorm layers of a frozen backbone trainable (affine parameters learn, running
                statistics update). Off by default: a frozen backbone's BatchNorm neither learns nor updates its
                running statistics (in train mode it still normalises with batch statistics, as Lightning does).
        """
        super().__init__()
        self.strategy = strategy
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.milestones = milestones
        self.top_stages = top_stages
        self.train_bn = train_bn

    @staticmethod
    def _backbone(pl_module: LightningModule) -> nn.Module | None:
        return getattr(getattr(pl_module, "net", None), "backbone", None)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Runs at setup, before the optimiser exists: freeze the backbone unless the strategy is ``none``."""
        backbone = self._backbone(pl_module)
        if backbone is not None and self.strategy != "none":
            self.freeze(backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Runs at the start of every training epoch (also after a resume, hence ``>=``)."""
        backbone = self._backbone(pl_module)
        if backbone is None:
            return
        if self.strategy == "freeze_unfreeze" and epoch >= self.unfreeze_at_epoch:
            self.make_trainable(backbone)
        elif self.strategy == "milestones":
            if epoch >= self.milestones[1]:
                self.make_trainable(backbone)
            elif epoch >= self.milestones[0]:
                self.make_trainable(backbone_stages(backbone)[-self.top_stages :])
