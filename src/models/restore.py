"""A checkpoint back into the model it holds, built from its hyper-parameters as the CLI built it. Imported only when
a checkpoint is opened (``ImageClassifier.from_checkpoint``), not by a fit from scratch."""

import contextvars
import copy
import pydoc
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning import LightningModule
from lightning.pytorch.cli import instantiate_module
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from src.checkpoint_io import read_checkpoint
from src.errors import UserError, argument_problem

ALTERED = "; the checkpoint was changed or written by other code: use one written by `python -m src.train fit`."


def check_hparams(hparams: dict[str, Any], label: str, model_class: type = LightningModule) -> None:
    """Each class the hyper-parameters name is of the expected kind before anything is built: else one line."""
    kinds = {
        "network": (nn.Module, "network class (nn.Module)"),
        "optimizer": (Optimizer, "torch.optim optimizer class"),
        "scheduler": (LRScheduler, "learning-rate scheduler class"),
        "_class_path": (model_class, f"subclass of {model_class.__name__}"),
    }
    for key, (base, kind) in kinds.items():
        value = hparams.get(key)
        path = value.get("class_path") if isinstance(value, dict) else value
        try:
            found = pydoc.locate(path) if isinstance(path, str) else base
        except pydoc.ErrorDuringImport:  # the module exists but its import fails
            found = None
        if not (isinstance(found, type) and issubclass(found, base)):
            key += ".class_path" if isinstance(value, dict) else ""
            raise UserError(f"{label}: hyper-parameter {key} {path!r} is not a {kind}{ALTERED}")


def from_checkpoint(
    model_class: type[LightningModule], checkpoint: str | Path | dict, label: str | None = None, **overrides: Any
) -> LightningModule:
    """See ``ImageClassifier.from_checkpoint``; in eval mode, on the CPU."""
    if not isinstance(checkpoint, dict):
        label = label or f"--ckpt_path {checkpoint}"
        checkpoint = read_checkpoint(checkpoint)
    label = label or "the checkpoint"
    hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k != "_instantiator"} | overrides
    check_hparams(hparams, label, model_class)
    try:
        # Adapter: built inside a model that LightningCLI instantiates (a TransferNet on this checkpoint), Lightning's
        # save_hyperparameters would take that outer model's hyper-parameters, which it keeps in a ContextVar (no
        # public switch; see Lightning-AI/pytorch-lightning#13181 for nested modules). A fresh context has none.
        # Guarded by tests/test_transfer.py::test_cli_transfers_a_template_checkpoint_with_discriminative_lrs.
        model = contextvars.Context().run(instantiate_module, model_class, copy.deepcopy(hparams))
    except (ArgumentError, TypeError, ValueError) as err:
        option, _, reason = argument_problem(str(err))
        key, reason = option.partition("module.")[2] or option, reason.partition(" (")[0]
        raise UserError(f"{label}: hyper-parameter {key} is not valid ({reason}){ALTERED}") from None
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint.get("state_dict", model.state_dict()))  # none: the architecture only
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].strip()
        raise UserError(f"{label}: its weights do not fit the network it names ({reason}){ALTERED}") from None
    return model.eval()
