"""Callbacks the multi-process tests add from the command line (``--trainer.callbacks+=tests.probes.X``)."""

import os
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer


class RankProbe(Callback):
    """Every process saves its own parameters and buffers after each training epoch (``probe/rank<r>_epoch<e>.pt``,
    ``probe/rank<r>_start.pt``) and says it finished (``probe/rank<r>.done``): what rank 0's files cannot show."""

    def _save(self, trainer: Trainer, pl_module: LightningModule, tag: str) -> None:
        out = Path("probe")
        out.mkdir(exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, out / f"rank{trainer.global_rank}_{tag}.pt")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module, "start")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module, f"epoch{trainer.current_epoch}")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        Path("probe", f"rank{trainer.global_rank}.done").write_text(f"{os.getpid()}\n")
