"""Command-line entry point: ``python -m src.train {fit,validate,test,predict,lr_find} --config configs/<model>.yaml``
and ``python -m src.train export --ckpt_path CKPT`` (ONNX and torch.export files of a trained checkpoint).

Everything is a LightningCLI argument, so ``--print_config`` shows every knob and any of them can be overridden
on the command line (``--model.optimizer.lr 0.01``, ``--trainer.max_epochs 3``, ``--data.batch_size 128``).
"""

import os
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import torch
from jsonargparse import Namespace, lazy_instance
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from src.callbacks.dashboard import Dashboard
from src.callbacks.predictions import PredictionWriter, check_top_k
from src.callbacks.report import TestReport
from src.callbacks.rng import RngState
from src.checkpoint_io import AtomicCheckpointIO, read_checkpoint, run_dir_of
from src.errors import UserError
from src.loggers import TensorBoardLogger, readable_hparams
from src.models.classifier import ImageClassifier
from src.models.finetuning import TransferFinetuning
from src.trainer import ClassifierTrainer, check_range

#: LightningCLI's subcommands plus the Trainer subclass's: each one's arguments not taken from the config.
SUBCOMMANDS = {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

#: Model arguments that come from the data when training from scratch, and from the checkpoint otherwise.
LINKED = {"class_names": "class_names", "input_shape": "input_shape", "mean": "input_mean", "std": "input_std"}

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, on every run: not actionable here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class QuietUsageParser(LightningArgumentParser):
    """On a bad argument, print a one-line usage instead of all ~150 options (``--help`` still lists them)."""

    def print_usage(self, file: TextIO | None = None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} --config CONFIG [--<section>.<key> VALUE ...]\n")


class RunConfig(SaveConfigCallback):
    """``config.yaml`` for a training run. Anything else logged into an existing run keeps that file as it is and
    writes its own beside it: ``<stage>_config.yaml`` for an evaluation of one of its checkpoints
    (``test``/``validate``/``predict``), ``resume_config.yaml`` for a resumed ``fit``."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a str enum
        if stage != "fit":
            self.config_filename, self.overwrite = f"{stage}_config.yaml", True
        super().setup(trainer, pl_module, stage)


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from, outermost first (jsonargparse and Lightning wrap what they call)."""
    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    return chain


class ClassifierCLI(LightningCLI):
    """LightningCLI with the template's wiring: shapes from the data, best + last checkpoints, LR logging,
    evaluations logged into the checkpoint's own run, test report and TensorBoard images."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        first = argv[0] if isinstance(argv, (list, tuple)) and argv else None
        #: The subcommand named first on the command line (``fit ...``), the only one whose parser is built.
        self._requested = first if first in SUBCOMMANDS else None
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Only the subcommand being run: each one's parser holds every Trainer, model, data and callback argument
        (building all four took ~0.7 s of every start, one ~0.3 s). All of them when none is named first
        (``--help``, ``--config`` before the subcommand)."""
        return {self._requested: SUBCOMMANDS[self._requested]} if self._requested else SUBCOMMANDS

    def _linked(self, attribute: str, data: LightningDataModule) -> Any:
        """A linked model argument: the checkpoint's value when one is loaded (a checkpoint is the model: its
        statistics and input size are never re-derived from the data configured now), else the data's."""
        if self._ckpt_hparams and LINKED[attribute] in self._ckpt_hparams:
            return self._ckpt_hparams[LINKED[attribute]]
        return getattr(data, attribute)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Shapes come from the data and are stored in the checkpoint; nobody types them twice.
        for attribute, target in LINKED.items():
            compute = partial(self._linked, attribute)
            parser.link_arguments("data", f"model.{target}", compute_fn=compute, apply_on="instantiate")

        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:02d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                # A resumed run re-running an epoch that a killed run already saved writes the same file again
                # (same epoch and score: runs are deterministic), instead of a "-v1" copy beside it.
                "checkpoint.enable_version_counter": False,
            }
        )
        # In Lightning 2.6, save_last=True on a monitored checkpoint only refreshes last.ckpt when the monitored
        # value improves. An unmonitored one saves after every epoch, so last.ckpt is truly the latest.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(Dashboard, "dashboard")
        # Freeze/unfreeze schedule for networks with a backbone (TransferNet); a no-op for the others.
        parser.add_lightning_class_args(TransferFinetuning, "finetuning")
        parser.set_defaults({"trainer.logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="default")})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``--ckpt_path`` before anything is built or written."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self._ckpt_hparams: dict | None = None  # read by the links, at instantiation
        self._ckpt_step = 0
        if subcommand == "lr_find":
            lr_find = self.config[subcommand]
            check_range(lr_find["min_lr"], lr_find["max_lr"], lr_find["num_training"])
        data_class = str((self.config[subcommand].get("data") or {}).get("class_path", "")) if subcommand else ""
        if data_class.endswith("FilesDataModule") and (subcommand != "predict" or not ckpt_path):
            raise UserError(
                "--data configs/data/files.yaml classifies image files with a trained model: use it with "
                "`predict --ckpt_path <run>/checkpoints/<best or last>.ckpt`."
            )
        if ckpt_path in ("best", "last") and subcommand != "fit":
            raise UserError(
                f"--ckpt_path {ckpt_path} means the checkpoint of a fit in the same process; from the command line "
                f"give its file, e.g. logs/<name>/version_<n>/checkpoints/last.ckpt."
            )
        if not ckpt_path or ckpt_path in ("best", "last", "hpc", "registry"):  # Lightning resolves these itself
            return
        checkpoint = read_checkpoint(ckpt_path)
        self._ckpt_hparams = checkpoint.get("hyper_parameters", {})
        self._ckpt_step = checkpoint.get("global_step", 0)
        self._check_network_family(ckpt_path)
        if subcommand == "predict" and "class_names" in self._ckpt_hparams:  # before anything is built
            check_top_k(self.config[subcommand]["predictions"]["top_k"], self._ckpt_hparams["class_names"])

    def _check_network_family(self, ckpt_path: str) -> None:
        """A ``--config`` for another network than the checkpoint's is a mix-up: say so before anything runs."""
        subcommand = self.config["subcommand"]
        network = self._ckpt_hparams.get("network") if self._ckpt_hparams else None
        configured = (self.config[subcommand].get("model") or {}).get("network")
        if not (isinstance(network, dict) and isinstance(configured, Namespace) and self.config[subcommand].config):
            return  # no --config: the checkpoint alone says what the model is
        trained, given = str(network.get("class_path")), str(configured.get("class_path"))
        if trained != given:
            run_dir = run_dir_of(ckpt_path)
            config = run_dir / "config.yaml" if run_dir is not None else "the config it was trained with"
            raise UserError(
                f"--ckpt_path {ckpt_path} holds a {trained.rsplit('.', 1)[-1]} network but the --config gives "
                f"{given.rsplit('.', 1)[-1]}: pass the run's own config ({config}) or that model's config."
            )

    def _check_logs_writable(self, subcommand: str) -> None:
        """A logs folder that cannot be written fails now, in one line, not after the data is prepared."""
        logger = self.config[subcommand]["trainer"].get("logger")
        save_dir = (logger.get("init_args") or {}).get("save_dir") if isinstance(logger, Namespace) else None
        if not save_dir:
            return
        existing = Path(save_dir).absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            problem = "is a file" if not existing.is_dir() else "is not writable"
            raise UserError(
                f"cannot write logs to --trainer.logger.init_args.save_dir {save_dir}: {existing} {problem}. "
                "Pass a folder you can write to."
            )

    def before_instantiate_classes(self) -> None:
        """Runs of a checkpoint go into the checkpoint's own run directory: a resumed ``fit`` continues it (its
        TensorBoard events from the checkpoint's step on are purged and logged again), an evaluation adds its
        metrics, reports and predictions to it, instead of a new ``version_N`` holding nothing but itself."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        self._check_logs_writable(subcommand)
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or self._ckpt_hparams is None:
            return
        logger, run_dir = self.config[subcommand]["trainer"].get("logger"), run_dir_of(ckpt_path)
        if run_dir is not None and isinstance(logger, Namespace) and "save_dir" in (logger.get("init_args") or {}):
            logger.init_args.save_dir, logger.init_args.version = str(run_dir.parent.parent), run_dir.name
            logger.init_args.name = run_dir.parent.name
            if subcommand == "fit" and str(logger.class_path).endswith("TensorBoardLogger"):
                logger.init_args.purge_step = self._ckpt_step
            if subcommand == "fit" and (run_dir / "config.yaml").is_file():  # resuming: keep the run's config
                self.save_config_kwargs.update(config_filename="resume_config.yaml", overwrite=True)
                # Lightning warns that the checkpoint directory is not empty: resuming into it is the point.
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    def instantiate_classes(self) -> None:
        """A value the model, data or trainer refuses while being built (``--trainer.max_epochs -5``, a dropout of
        1.5, ``--trainer.accelerator gpu`` without one) is a configuration mistake: say it in one line."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, IndexError, MisconfigurationException) as err:
            chain = exception_chain(err)
            if any(isinstance(e, UserError) for e in chain):
                raise  # already a readable message
            root = str(chain[-1]).strip()
            reason = root.splitlines()[-1].rstrip(".!") if root else type(chain[-1]).__name__
            raise UserError(f"invalid configuration: {reason}. Check the values given for it.") from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's trainer, plus what every run needs: checkpoints written atomically in their own directory
        and random generator states saved in them (an interrupted run resumes exactly)."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks.append(RngState())
        return trainer

    def after_instantiate_classes(self) -> None:
        """A checkpoint only fits data with the same classes; say so instead of failing on tensor shapes. A
        schedule spanning the run needs the run to end."""
        if self.subcommand == "fit" and isinstance(self.model, ImageClassifier):
            self.model.check_run_length(self.trainer.max_epochs, self.trainer.max_steps)
        data: LightningDataModule = self.datamodule
        trained = (self._ckpt_hparams or {}).get("class_names")
        if data.class_names is None or trained is None:  # files to predict on: the checkpoint brings the classes
            return
        if list(trained) != list(data.class_names):
            raise UserError(
                f"the checkpoint was trained on classes {list(trained)} but the data module "
                f"{type(data).__name__} has {list(data.class_names)}. Pass the --data config the model was "
                "trained with (it is saved as config.yaml in the run directory)."
            )

    def before_fit(self) -> None:
        """The HPARAMS table from the whole config (data class, finetuning, epochs, seed), not just the model's;
        written when Lightning logs the hyper-parameters (after the data is prepared: a failed run leaves nothing)."""
        if isinstance(self.trainer.logger, TensorBoardLogger):
            config = self.config[self.subcommand].as_dict()
            trainer = {k: config["trainer"].get(k) for k in ("max_epochs", "precision", "accumulate_grad_batches")}
            finetuning = config.get("finetuning") if hasattr(self.model.net, "backbone") else None
            sections = {**config["model"], "data": config["data"], "finetuning": finetuning, "trainer": trainer,
                        "seed": config.get("seed_everything")}  # fmt: skip
            self.trainer.logger.hparams_table = readable_hparams(sections)

    def _at_checkpoint_step(self) -> None:
        """Evaluation metrics go into the run at the checkpoint's step, not at step 0 of its curves."""
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self._ckpt_step

    before_validate = before_test = _at_checkpoint_step

    def after_fit(self) -> None:
        """Say where the run went: the best and last checkpoints are what ``test``/``predict`` need next."""
        run_dir = self.trainer.log_dir  # on every rank: it broadcasts
        if not self.trainer.is_global_zero:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
                score = f" ({callback.monitor}={float(callback.best_model_score):.4f})" if callback.monitor else ""
                print(f"{'best' if callback.monitor else 'last'} checkpoint{score}: {callback.best_model_path}")
        print(f"run directory: {run_dir}")


def cli_main(
    args: list[str] | None = None, run: bool = True, cli_class: type[ClassifierCLI] = ClassifierCLI
) -> ClassifierCLI | None:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one clear line.
    ``cli_class``: a subclass adding to every run (``src.search`` adds Optuna's pruning callback to the trainer).

    ``run=False`` only builds the model, data module and trainer from the config (no subcommand), e.g. for
    benchmarks or notebooks that want to call ``cli.trainer.fit(cli.model, cli.datamodule)`` themselves.
    """
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv[:1] == ["export"]:  # a checkpoint in, files out: no trainer, data or config involved
            from src.export import main as export_main

            export_main(argv[1:])
            return None
        return cli_class(
            ImageClassifier,
            LightningDataModule,
            trainer_class=ClassifierTrainer,
            subclass_mode_data=True,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": False},
            parser_class=QuietUsageParser,
            args=args,
            run=run,
        )
    except Exception as err:  # a UserError may come wrapped, e.g. by jsonargparse's instantiation
        cause = next((e for e in exception_chain(err) if isinstance(e, UserError)), None)
        if cause is None:
            raise
        message = str(cause)
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the user's message
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process stops; one says why
            print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    try:
        cli_main()
    finally:  # DDP: shut the process group down before exit (left to exit, gloo's threads may abort the process)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
