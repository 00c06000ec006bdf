"""The Trainer of the CLI: Lightning's, plus the ``lr_find`` subcommand (``python -m src.train lr_find ...``).

LightningCLI turns every public Trainer method named in ``ClassifierCLI.subcommands()`` into a subcommand whose
arguments are the method's own, so ``lr_find --num_training 200`` needs no parsing code here.
"""

from typing import Literal

from lightning import LightningDataModule, LightningModule, Trainer


class ClassifierTrainer(Trainer):
    """Lightning's Trainer with a learning-rate range test as a subcommand."""

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
    ) -> float:
        """Find a learning rate: train ``num_training`` batches with the rate rising from ``min_lr`` to ``max_lr``.

        Prints the rate where the loss falls fastest as the flag to paste into ``fit`` and saves the loss-vs-rate
        plot as ``lr_find.png`` in the run directory (and as a TensorBoard figure). The model is left as it was:
        no checkpoint is written. Per-layer ``lr_multipliers`` are not applied during the test (one rate for all).
        """
        from src.lr_find import range_test  # only this subcommand needs the tuner and matplotlib

        return range_test(self, model, datamodule, min_lr, max_lr, num_training, mode, early_stop_threshold)
