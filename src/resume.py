"""Checkpoints a run resumes from exactly: always whole, and holding every process's random generator states."""

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from src.distributed import gather_objects


class AtomicCheckpointIO(TorchCheckpointIO):
    """Never a truncated file: staged beside the target (the temp dir may be another filesystem), synced, renamed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left behind by a killed run
            stale.unlink(missing_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
            directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(directory)
            os.close(directory)


class RngState(Callback):
    """Every process's torch, CUDA, NumPy and Python generator states, saved at an epoch's end and restored at fit
    start (after the model's initialisation, before the first shuffle): resumed epochs draw as uninterrupted ones."""

    _pending: list[dict[str, Any]] | None = None  # the checkpoint's states until the fit starts

    def state_dict(self) -> dict[str, Any]:
        """All ranks' states (a collective), as tensors and plain values: ``weights_only=True`` still loads them."""
        _, key, *numpy_rest = np.random.get_state()  # ("MT19937", key, pos, has_gauss, cached)
        numpy_state = [torch.from_numpy(key.astype(np.int64)), *numpy_rest]
        states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state()  # this process's device
        return {"ranks": gather_objects(states)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("ranks")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending is None:
            return
        ranks, self._pending = self._pending, None
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint was saved by {len(ranks)} process(es) and resumes on {trainer.world_size}: random "
                "streams start afresh, so this run will not match an uninterrupted one exactly."
            )
            return
        states = ranks[trainer.global_rank]
        torch.set_rng_state(states["torch"])
        key, *numpy_rest = states["numpy"]
        np.random.set_state(("MT19937", key.numpy().astype(np.uint32), *numpy_rest))
        version, inner, gauss = states["python"]  # older checkpoints hold lists, not tuples
        random.setstate((version, tuple(inner), gauss))
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])
