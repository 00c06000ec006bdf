"""Checkpoint files: always whole (written beside their target, then renamed over it), and read safely."""

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.errors import UserError


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """``logs/<name>/<version>`` for ``logs/<name>/<version>/checkpoints/x.ckpt``; None for a loose checkpoint."""
    path = Path(ckpt_path)  # as given: ModelCheckpoint compares its saved dirpath with the new one as strings
    return path.parent.parent if path.parent.name == "checkpoints" else None


def read_checkpoint(ckpt_path: str | Path, option: str = "--ckpt_path", template: bool = True) -> dict[str, Any]:
    """The checkpoint at ``ckpt_path`` (given as ``option``), unpickled weights-only (no code in the file runs); a
    folder, a missing file or one that is not a checkpoint is one line naming the fix. ``template=False`` also
    accepts any dict of tensors (e.g. a torchvision ``state_dict``)."""
    path = Path(ckpt_path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        raise UserError(
            f"{option} {ckpt_path} is a directory; give a checkpoint file in it, e.g. "
            f"{folder / 'last.ckpt'} (runs keep theirs in <run>/checkpoints/)."
        )
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {option} {ckpt_path}. Give the path of a .ckpt file, e.g. "
            "logs/<name>/version_<n>/checkpoints/last.ckpt."
        )
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        problem = None if isinstance(checkpoint, dict) else type(checkpoint).__name__
    except Exception as err:
        problem = type(err).__name__
    if problem is None and template and not {"state_dict", "hyper_parameters"} <= set(checkpoint):  # e.g. plain weights
        problem = "no model hyper-parameters"
    if problem is not None:
        raise UserError(
            f"{option} {ckpt_path} is not a checkpoint this template can read safely ({problem}). "
            "Use a .ckpt written by `python -m src.train fit`."
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """A process killed at any moment leaves the previous checkpoint or the new one, never a truncated file.

    Lightning's default stages the file in the *system* temp dir and moves it into place; across filesystems that
    move is a copy, and a kill mid-copy truncates ``last.ckpt``. Here the temporary file sits in the checkpoint's
    own directory, is flushed to disk, and ``os.replace`` swaps it in (atomic within one filesystem). Remote paths
    (``s3://...``) keep Lightning's behaviour.
    """

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
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
