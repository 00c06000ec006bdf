"""A run's saved config, and Lightning's TensorBoard logger with one HPARAMS table per run of readable knobs."""

import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from src.errors import UserError

#: The metrics of the HPARAMS table; values come from the run's own scalars of the same names.
HPARAM_METRICS = ("val/acc_best", "test/acc")
#: Keys that are not hyper-parameters a person compares runs by (internal, paths, statistics, loader plumbing).
SKIP = {
    "class_names", "input_mean", "input_std", "data_dir", "path", "test_path", "num_workers", "pin_memory",
    "persistent_workers", "download", "in_memory", "skip_corrupt", "images_key", "labels_key", "label_names", "source",
    "capturable", "differentiable", "maximize", "foreach", "fused", "last_epoch",  # optimiser/scheduler plumbing
}  # fmt: skip


def readable_hparams(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config flattened to ``{"network": "SimpleCNN", "optimizer.lr": 0.001}``: classes by name, no paths, no SKIP."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("_") or key in SKIP or value is None:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "class_path" in value:
            flat[name] = str(value["class_path"]).rsplit(".", 1)[-1]
            value = value.get("init_args") or {}
        if isinstance(value, dict):
            flat.update(readable_hparams(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = "x".join(map(str, value)) if key == "input_shape" else str(list(value))
        elif isinstance(value, (bool, int, float)):
            flat[name] = value
        elif not (os.sep in str(value) or str(value).endswith((".ckpt", ".pth", ".pt", ".npz", ".h5"))):
            flat[name] = str(value)
    return flat


class RunConfig(SaveConfigCallback):
    """``config.yaml`` of a fit, ``<stage>_config.yaml`` of an evaluation, ``resume_config.yaml`` of a resumed fit;
    none names a checkpoint: given back as ``--config``, it must never decide which weights are evaluated."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Also the HPARAMS table of a fit, from the whole config (data, finetuning, epochs, seed)."""
        stage = getattr(stage, "value", stage)  # Lightning passes a str enum
        if stage != "fit":
            self.config_filename, self.overwrite = f"{stage}_config.yaml", True
        elif isinstance(trainer.logger, TensorBoardLogger):
            config = self.config.as_dict()
            knobs = {k: config["trainer"].get(k) for k in ("max_epochs", "precision", "accumulate_grad_batches")}
            finetuning = config.get("finetuning") if hasattr(pl_module.net, "backbone") else None
            sections = {"data": config["data"], "finetuning": finetuning, "seed": config.get("seed_everything")}
            trainer.logger.hparams_table = readable_hparams({**config["model"], **sections, "trainer": knobs})
        if self.config.get("ckpt_path") is not None:  # a copy: the run itself still needs it
            self.config = self.config.clone().update(None, "ckpt_path")
        super().setup(trainer, pl_module, stage)


def check_writable(save_dir: str) -> None:
    """A logs folder that cannot be written fails now, in one line, not after the data is prepared."""
    path = Path(save_dir).absolute()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is a file" if not existing.is_dir() else "is not writable"
        raise UserError(
            f"cannot write logs to --trainer.logger.init_args.save_dir {save_dir}: {existing} {problem}. "
            "Pass a folder you can write to."
        )


class TensorBoardLogger(LightningTensorBoardLogger):
    """TensorBoard events in ``save_dir/name/version_N`` (or ``save_dir/name/<version>``), as Lightning's logger."""

    def __init__(self, save_dir: str = "logs", name: str | None = "default", version: int | str | None = None,
                 purge_step: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        """
        Args:
            save_dir: root folder of all runs (made absolute: a resumed run finds its checkpoints from anywhere).
            name: experiment folder under ``save_dir`` (one per config: cnn, fc, transfer).
            version: run folder name; ``None`` = the next free ``version_N``.
            purge_step: hide this run's events from this step on (set by the CLI on resume: they are logged again).
        """
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(os.path.realpath(save_dir), name=name, version=version, purge_step=purge_step, **kwargs)
        self.hparams_table: dict[str, Any] | None = None  # the HPARAMS table's rows; None: what Lightning logs
        self.eval_step: int | None = None  # when set, the step of all that is logged (an evaluation: its checkpoint's)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Lightning adds ``epoch`` to every logged dict; as a chart it only restates the x-axis."""
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, self.step(step))

    def step(self, step: int | None) -> int | None:
        return step if self.eval_step is None else self.eval_step

    @rank_zero_only
    def add_figure(self, tag: str, figure: Any, step: int | None) -> None:
        """A matplotlib figure in the IMAGES tab, at ``step`` (or the evaluated checkpoint's)."""
        self.experiment.add_figure(tag, figure, self.step(step), close=False)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, metrics: Any = None, step: int | None = None) -> None:
        """``hparams.yaml`` gets everything; the HPARAMS table the readable knobs, once per run directory."""
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        self.hparams.update(params)
        if os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)):
            return  # this run has its table already: Lightning saves hparams.yaml right after this call
        table = self.hparams_table if self.hparams_table is not None else readable_hparams(params)
        for summary in hparams(table, dict.fromkeys(HPARAM_METRICS, 0.0)):
            self.experiment.file_writer.add_summary(summary)  # add_hparams would open a second run folder
