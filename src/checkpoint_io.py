"""The one checkpoint reader (weights-only: no code in the file runs) and its checks against the command line."""

from pathlib import Path
from typing import Any

import torch

from src.errors import UserError, argument_problem


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """``logs/<name>/<version>`` for ``logs/<name>/<version>/checkpoints/x.ckpt``; None for a loose checkpoint."""
    path = Path(ckpt_path)  # as given: ModelCheckpoint compares its saved dirpath with the new one as strings
    return path.parent.parent if path.parent.name == "checkpoints" else None


def read_checkpoint(ckpt_path: str | Path, option: str = "--ckpt_path", template: bool = True) -> dict[str, Any]:
    """The checkpoint at ``ckpt_path`` (given as ``option``); a folder, a missing file or a non-checkpoint is one line
    naming the fix. ``template=False`` also accepts any dict of tensors (e.g. a torchvision ``state_dict``)."""
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


def apply_hparams(parser: Any, config: Any, ckpt_path: str, hparams: dict, run_dir: Path | None) -> Any:
    """``config`` with the checkpoint's hyper-parameters as the model's; another network or bad ones are one line."""
    section = config[config.subcommand]
    network, given = hparams.get("network"), (section.get("model") or {}).get("network")
    trained = str(network.get("class_path")) if isinstance(network, dict) else None
    if section.config and trained and hasattr(given, "class_path") and trained != str(given.class_path):
        own = run_dir / "config.yaml" if run_dir is not None else "the config it was trained with"
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a {trained.rsplit('.', 1)[-1]} network but the --config gives "
            f"{str(given.class_path).rsplit('.', 1)[-1]}: pass the run's own config ({own}) or that model's config."
        )
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    exit_on_error, parser.exit_on_error = parser.exit_on_error, False
    try:
        return parser.parse_object({config.subcommand: {"model": hparams}}, config)
    except Exception as err:
        option, _, reason = argument_problem(str(err))
        key = option.partition("model.")[2] or "model"
        raise UserError(
            f"--ckpt_path {ckpt_path}: its hyper-parameter {key} does not rebuild a model of this template "
            f"({reason.partition(' (')[0]}). Use a checkpoint written by `python -m src.train fit`."
        ) from None
    finally:
        parser.exit_on_error = exit_on_error
