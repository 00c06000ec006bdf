"""Checkpoint files: read safely (one reader), always whole (written beside their target, then renamed over it), and
holding every process's random generator states, so a resumed run continues exactly like an uninterrupted one."""

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from src.distributed import gather_objects
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


def check_network_family(ckpt_path: str, hparams: dict, configured: Any) -> None:
    """The network class a ``--config`` gives must be the checkpoint's: say so before anything runs."""
    network = hparams.get("network")
    if not (isinstance(network, dict) and configured is not None and hasattr(configured, "class_path")):
        return
    trained, given = str(network.get("class_path")), str(configured.class_path)
    if trained != given:
        run_dir = run_dir_of(ckpt_path)
        own = run_dir / "config.yaml" if run_dir is not None else "the config it was trained with"
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a {trained.rsplit('.', 1)[-1]} network but the --config gives "
            f"{given.rsplit('.', 1)[-1]}: pass the run's own config ({own}) or that model's config."
        )


def apply_hparams(parser: Any, config: Any, ckpt_path: str, hparams: dict) -> Any:
    """``config`` with the checkpoint's hyper-parameters as the model's arguments (a checkpoint is the model); ones
    that do not parse (edited by hand, or from another version) are one line naming the key."""
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    exit_on_error, parser.exit_on_error = parser.exit_on_error, False
    try:
        return parser.parse_object({config.subcommand: {"model": hparams}}, config)
    except Exception as err:
        key = re.search(r'[Kk]ey "(?:[a-z_]+\.)?model\.([^"]+)"', str(err))
        value = re.search(r"class_path[ =]'([^']+)'", str(err))
        raise UserError(
            f"--ckpt_path {ckpt_path}: its hyper-parameter {key.group(1) if key else 'model'}"
            f"{f' (class_path {value.group(1)})' if value else ''} does not rebuild a model of this template. "
            "Use a checkpoint written by `python -m src.train fit`."
        ) from None
    finally:
        parser.exit_on_error = exit_on_error


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


def rng_states() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python generator states as tensors and plain numbers, so a checkpoint
    holding them still loads with ``torch.load(weights_only=True)`` (no pickled NumPy arrays)."""
    _, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class RngState(Callback):
    """Saves every process's generator states in each checkpoint and restores them when a run resumes, so the
    resumed epochs draw the same shuffles, dropout masks and augmentations as an uninterrupted run.

    Checkpoints are saved at an epoch's end, and nothing draws random numbers between that and the next epoch's
    first draw (its shuffle). A resumed run restores at ``on_fit_start``: after the model is built (its weight
    initialisation draws), before the first training loader is iterated (Lightning does that before the first
    ``on_train_epoch_start``); the sanity check in between runs with its own, isolated generator state.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Runs on every process while a checkpoint is dumped (only rank 0 writes it): gather all ranks' states."""
        return {"ranks": gather_objects(rng_states())}

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
        set_rng_states(ranks[trainer.global_rank])
