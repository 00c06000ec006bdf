"""Finetuning strategies for networks with a ``backbone`` (see ``TransferNet``), on Lightning's ``BaseFinetuning``.

The optimiser holds the backbone's parameters from the start, in their own parameter group (``lr_multipliers``
gives them the discriminative learning rate), so groups, learning rates and the scheduler stay the same throughout
and ``LearningRateMonitor`` shows them from the first epoch.

DDP-safe by construction: ``requires_grad`` only changes at setup, before DDP wraps the model (DDP all-reduces
exactly the parameters that required a gradient when it wrapped it; turning one on later leaves every process
training its own copy). A backbone that never trains (``freeze``) is frozen there. A backbone that unfreezes later
(``freeze_unfreeze``, ``milestones``) keeps its gradients on: while a block is frozen its gradients are dropped
after backward (and after DDP's all-reduce), before the optimiser step, so it gets no update at all (no momentum,
no weight decay). That costs the backbone's backward pass during the frozen epochs, and buys identical weights on
every rank and a resume that lands in the right phase (the phase follows the epoch, checked every epoch).
A frozen block's BatchNorm layers run in eval mode (the pretrained running statistics, not batch statistics).
"""

from typing import Literal

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
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

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Runs at setup, before DDP wraps the model: a backbone that never trains stops needing gradients."""
        backbone = self._backbone(pl_module)
        self._frozen_params: list[nn.Parameter] = []
        if backbone is not None and self.strategy == "freeze":
            self.freeze(backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Runs at the start of every training epoch, also the first one after a resume: set this epoch's phase."""
        backbone = self._backbone(pl_module)
        if backbone is None:
            return
        frozen = {id(m) for block in self.frozen_blocks(backbone, epoch) for m in block.modules()}
        self._frozen_params = []
        for module in backbone.modules():
            is_bn = isinstance(module, _BatchNorm)
            if is_bn:  # frozen: the stored statistics, unless BatchNorm is meant to keep training (train_bn)
                module.train(id(module) not in frozen or self.train_bn)
            if id(module) in frozen and not (is_bn and self.train_bn):
                self._frozen_params += [p for p in module.parameters(recurse=False) if p.requires_grad]

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        """After backward and DDP's all-reduce, before the step (and before gradient clipping): frozen blocks get no
        gradient, so the optimiser skips them entirely, identically on every rank."""
        for param in self._frozen_params:
            param.grad = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """``BaseFinetuning`` re-applies, on resume, the parameter groups it saw at the last epoch start (for
        callbacks that add groups when unfreezing). This one never adds groups, and those copies hold the
        learning rates from before the last scheduler step: keep the optimiser state the checkpoint restored."""
        self._restarting = False
