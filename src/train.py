"""Command-line entry point: ``python -m src.train {fit,validate,test,predict} --config configs/<model>.yaml``.

Everything is a LightningCLI argument, so ``--print_config`` shows every knob and any of them can be overridden
on the command line (``--model.optimizer.lr 0.01``, ``--trainer.max_epochs 3``, ``--data.batch_size 128``).
"""

import sys
import warnings
from pathlib import Path
from typing import TextIO

import torch
from jsonargparse import lazy_instance
from lightning import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from src.callbacks import PredictionWriter
from src.errors import UserError
from src.models import ImageClassifier, TransferFinetuning

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, on every run: not actionable here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class QuietUsageParser(LightningArgumentParser):
    """On a bad argument, print a one-line usage instead of all ~150 options (``--help`` still lists them)."""

    def print_usage(self, file: TextIO | None = None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} --config CONFIG [--<section>.<key> VALUE ...]\n")


class ClassifierCLI(LightningCLI):
    """LightningCLI with the template's wiring: shapes from the data, best + last checkpoints, LR logging."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Shapes come from the data and are stored in the checkpoint; nobody types them twice.
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.link_arguments("data.mean", "model.input_mean", apply_on="instantiate")
        parser.link_arguments("data.std", "model.input_std", apply_on="instantiate")

        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:02d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # In Lightning 2.6, save_last=True on a monitored checkpoint only refreshes last.ckpt when the monitored
        # value improves. An unmonitored one saves after every epoch, so last.ckpt is truly the latest.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # Freeze/unfreeze schedule for networks with a backbone (TransferNet); a no-op for the others.
        parser.add_lightning_class_args(TransferFinetuning, "finetuning")
        parser.set_defaults({"trainer.logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="default")})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``--ckpt_path`` before anything is built or written."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self._ckpt_class_names = None
        if not ckpt_path or ckpt_path in ("best", "last", "hpc", "registry"):  # Lightning resolves these itself
            return
        if not Path(ckpt_path).is_file():
            raise UserError(
                f"checkpoint not found: --ckpt_path {ckpt_path}. Give the path of a .ckpt file, e.g. "
                "logs/<name>/version_<n>/checkpoints/last.ckpt."
            )
        try:
            checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        except Exception as err:
            raise UserError(
                f"--ckpt_path {ckpt_path} is not a checkpoint this CLI can read safely "
                f"({type(err).__name__}). Use a .ckpt written by `python -m src.train fit`."
            ) from None
        self._ckpt_class_names = checkpoint.get("hyper_parameters", {}).get("class_names")

    def after_instantiate_classes(self) -> None:
        """A checkpoint only fits data with the same classes; say so instead of failing on tensor shapes."""
        data: LightningDataModule = self.datamodule
        if self._ckpt_class_names is not None and list(self._ckpt_class_names) != list(data.class_names):
            raise UserError(
                f"the checkpoint was trained on classes {list(self._ckpt_class_names)} but the data module "
                f"{type(data).__name__} has {list(data.class_names)}. Pass the --data config the model was "
                "trained with (it is saved as config.yaml in the run directory)."
            )

    def after_fit(self) -> None:
        """Say where the run went: the best and last checkpoints are what ``test``/``predict`` need next."""
        if not self.trainer.is_global_zero:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
                score = f" ({callback.monitor}={float(callback.best_model_score):.4f})" if callback.monitor else ""
                print(f"{'best' if callback.monitor else 'last'} checkpoint{score}: {callback.best_model_path}")
        print(f"run directory: {self.trainer.log_dir}")


def cli_main(args: list[str] | None = None, run: bool = True) -> ClassifierCLI:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one clear line.

    ``run=False`` only builds the model, data module and trainer from the config (no subcommand), e.g. for
    benchmarks or notebooks that want to call ``cli.trainer.fit(cli.model, cli.datamodule)`` themselves.
    """
    try:
        return ClassifierCLI(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": False},
            parser_class=QuietUsageParser,
            args=args,
            run=run,
        )
    except UserError as err:
        message = str(err)
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the user's message
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli_main()
