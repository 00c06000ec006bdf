"""Command-line entry point: ``python -m src.train {fit,validate,test,predict,lr_find} --config configs/<model>.yaml``
and ``python -m src.train export --ckpt_path CKPT``.

Every knob is a LightningCLI argument: ``--print_config`` shows them all, and any can be overridden on the command
line (``--model.optimizer.lr 0.01``). A flag always beats a config file, wherever it stands on the line.
"""

import os
import re
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
from src.checkpoint_io import AtomicCheckpointIO, RngState, read_checkpoint, run_dir_of
from src.errors import UserError
from src.loggers import TensorBoardLogger, readable_hparams
from src.models.classifier import ImageClassifier
from src.models.finetuning import TransferFinetuning
from src.trainer import ClassifierTrainer, check_range

#: LightningCLI's subcommands plus the Trainer subclass's: each one's arguments not taken from the config.
SUBCOMMANDS = {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}
#: Subcommands that evaluate a trained model: without --ckpt_path they would report on random weights.
EVALUATING = ("validate", "test", "predict")
#: Model arguments that come from the data when training from scratch, and from the checkpoint otherwise.
LINKED = {"class_names": "class_names", "input_shape": "input_shape", "mean": "input_mean", "std": "input_std"}

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, on every run: not actionable here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def config_files_first(argv: list[str]) -> list[str]:
    """``argv`` with every config file (``--config F``, ``--data F.yaml``, ...) before every flag, each group in
    its own order: jsonargparse applies arguments left to right, so a config named after a flag would silently
    undo it (a run's ``config.yaml`` holds ``ckpt_path: null``)."""
    head = argv[:1] if argv[:1] and not argv[0].startswith("-") else []
    files: list[str] = []
    flags: list[str] = []
    i = len(head)
    while i < len(argv):
        option, value, i = argv[i], None, i + 1
        if option.startswith("--") and "=" not in option and i < len(argv) and not argv[i].startswith("--"):
            value, i = argv[i], i + 1
        key, _, inline = option.partition("=")
        given = inline if "=" in option else value
        is_file = key == "--config" or ("." not in key and re.search(r"\.(ya?ml|json)$", str(given or "")))
        (files if is_file else flags).extend([option] if value is None else [option, value])
    return head + files + flags


class QuietUsageParser(LightningArgumentParser):
    """On a bad argument, print a one-line usage instead of all ~150 options (``--help`` still lists them)."""

    def print_usage(self, file: TextIO | None = None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} --config CONFIG [--<section>.<key> VALUE ...]\n")


class RunConfig(SaveConfigCallback):
    """``config.yaml`` for a training run; an evaluation of one of its checkpoints writes ``<stage>_config.yaml``
    beside it, a resumed fit ``resume_config.yaml``. No saved config names a checkpoint: given back as
    ``--config``, it must never decide which weights are evaluated."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a str enum
        if stage != "fit":
            self.config_filename, self.overwrite = f"{stage}_config.yaml", True
        if self.config.get("ckpt_path") is not None:
            self.config = self.config.clone()
            self.config.ckpt_path = None
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
        argv = list(sys.argv[1:] if kwargs.get("args") is None else kwargs["args"])
        kwargs["args"] = config_files_first(argv)
        #: The subcommand named first on the command line (``fit ...``), the only one whose parser is built.
        self.requested = argv[0] if argv and argv[0] in SUBCOMMANDS else None
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")  # args: reordered
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Only the subcommand being run (each parser holds every argument: building all is slow); all of them
        when none is named first (``--help``)."""
        return {self.requested: SUBCOMMANDS[self.requested]} if self.requested else SUBCOMMANDS

    def _linked(self, attribute: str, data: LightningDataModule) -> Any:
        """A linked model argument: the checkpoint's value when one is loaded (a checkpoint is the model: its
        statistics and input size are never re-derived from the data configured now), else the data's."""
        if self.ckpt_hparams and LINKED[attribute] in self.ckpt_hparams:
            return self.ckpt_hparams[LINKED[attribute]]
        return getattr(data, attribute)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute, target in LINKED.items():  # shapes come from the data; nobody types them twice
            compute = partial(self._linked, attribute)
            parser.link_arguments("data", f"model.{target}", compute_fn=compute, apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:02d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                # A resume re-running an epoch a killed run saved writes the same file, not a "-v1" copy.
                "checkpoint.enable_version_counter": False,
            }
        )
        # save_last on a monitored checkpoint refreshes last.ckpt only when the score improves; an unmonitored
        # checkpoint saves every epoch, so last.ckpt is truly the latest.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(Dashboard, "dashboard")
        parser.add_lightning_class_args(TransferFinetuning, "finetuning")  # a no-op for networks without backbone
        parser.set_defaults({"trainer.logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="default")})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check the subcommand's inputs and read ``--ckpt_path`` before anything is built."""
        super().parse_arguments(parser, args)
        self.ckpt_hparams: dict | None = None  # read by the links, at instantiation
        self.ckpt_step = 0
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if subcommand == "lr_find":
            check_range(config["min_lr"], config["max_lr"], config["num_training"])
        if str((config.get("data") or {}).get("class_path", "")).endswith("FilesDataModule") and (
            subcommand != "predict" or not ckpt_path
        ):
            raise UserError(
                "--data configs/data/files.yaml classifies image files with a trained model: use it with "
                "`predict --ckpt_path <run>/checkpoints/<best or last>.ckpt`."
            )
        if subcommand in EVALUATING and not ckpt_path:
            raise UserError(
                f"`{subcommand}` evaluates a trained model: pass --ckpt_path logs/<name>/version_<n>/checkpoints/"
                "<best or last>.ckpt (train one first with `python -m src.train fit --config ...`)."
            )
        if ckpt_path in ("best", "last") and subcommand != "fit":
            raise UserError(
                f"--ckpt_path {ckpt_path} means the checkpoint of a fit in the same process; from the command line "
                f"give its file, e.g. logs/<name>/version_<n>/checkpoints/last.ckpt."
            )
        if not ckpt_path or ckpt_path in ("best", "last", "hpc", "registry"):  # Lightning resolves these itself
            return
        checkpoint = read_checkpoint(ckpt_path)
        self.ckpt_hparams, self.ckpt_step = checkpoint["hyper_parameters"], checkpoint.get("global_step", 0)
        self._check_network_family(ckpt_path)
        self._apply_ckpt_hparams(ckpt_path)
        if subcommand == "predict" and "class_names" in self.ckpt_hparams:
            check_top_k(config["predictions"]["top_k"], self.ckpt_hparams["class_names"])

    def _apply_ckpt_hparams(self, ckpt_path: str) -> None:
        """The checkpoint's hyper-parameters become the model's arguments (a checkpoint is the model); one that
        does not parse (edited by hand, or from another version) is one line naming the key."""
        hparams = {k: v for k, v in (self.ckpt_hparams or {}).items() if k != "_instantiator"}
        exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except Exception as err:
            message = str(err)
            key = re.search(r'[Kk]ey "(?:[a-z_]+\.)?model\.([^"]+)"', message)
            value = re.search(r"class_path[ =]'([^']+)'", message)
            shown = f" (class_path {value.group(1)})" if value else ""
            raise UserError(
                f"--ckpt_path {ckpt_path}: its hyper-parameter {key.group(1) if key else 'model'!s}{shown} does not "
                "rebuild a model of this template. Use a checkpoint written by `python -m src.train fit`."
            ) from None
        finally:
            self.parser.exit_on_error = exit_on_error

    def _parse_ckpt_path(self) -> None:
        """Adapter (no public hook): LightningCLI 2.6 would read ``--ckpt_path`` a second time here and apply its
        hyper-parameters, printing a jsonargparse error of many lines when they do not parse. ``parse_arguments``
        has already done both, through the one checkpoint reader. Guarded by tests/test_cli.py."""

    def _check_network_family(self, ckpt_path: str) -> None:
        """A ``--config`` for another network than the checkpoint's is a mix-up: say so before anything runs."""
        config = self.config[self.config["subcommand"]]
        network = self.ckpt_hparams.get("network") if self.ckpt_hparams else None
        configured = (config.get("model") or {}).get("network")
        if not (isinstance(network, dict) and isinstance(configured, Namespace) and config.config):
            return  # no --config: the checkpoint alone says what the model is
        trained, given = str(network.get("class_path")), str(configured.get("class_path"))
        if trained != given:
            run_dir = run_dir_of(ckpt_path)
            own = run_dir / "config.yaml" if run_dir is not None else "the config it was trained with"
            raise UserError(
                f"--ckpt_path {ckpt_path} holds a {trained.rsplit('.', 1)[-1]} network but the --config gives "
                f"{given.rsplit('.', 1)[-1]}: pass the run's own config ({own}) or that model's config."
            )

    def before_instantiate_classes(self) -> None:
        """Where the run's files go: runs of a checkpoint into its own run directory (a resumed fit continues it,
        its TensorBoard events from the checkpoint's step on purged; an evaluation adds to it), a run without a
        logger into a fresh ``logs/no_logger/version_<n>``."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        trainer = self.config[subcommand]["trainer"]
        logger = trainer.get("logger")
        init = (logger.get("init_args") or {}) if isinstance(logger, Namespace) else {}
        check_writable(init.get("save_dir") or "logs")
        run_dir = run_dir_of(self.config[subcommand]["ckpt_path"]) if self.ckpt_hparams is not None else None
        if logger in (None, False) and trainer.get("default_root_dir") is None:
            trainer.default_root_dir = str(run_dir or next_version(Path("logs", "no_logger")))
        elif subcommand == "lr_find" and trainer.get("default_root_dir") is None:
            trainer.default_root_dir = init.get("save_dir")  # Lightning stages its checkpoint there, not in cwd
        if run_dir is None or "save_dir" not in init:
            return
        init.save_dir, init.name, init.version = str(run_dir.parent.parent), run_dir.parent.name, run_dir.name
        if subcommand == "fit" and str(logger.class_path).endswith("TensorBoardLogger"):
            init.purge_step = self.ckpt_step
        if subcommand == "fit" and (run_dir / "config.yaml").is_file():  # resuming: keep the run's config
            self.save_config_kwargs.update(config_filename="resume_config.yaml", overwrite=True)
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
        """Lightning's trainer, plus what every run needs: checkpoints written atomically, random generator states
        saved in them (exact resume), and learning rates logged when there is a logger to log them to."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.logger is None:
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        trainer.callbacks.append(RngState())
        return trainer

    def after_instantiate_classes(self) -> None:
        """A checkpoint only fits data with the same classes; a schedule spanning the run needs the run to end."""
        if self.subcommand == "fit" and isinstance(self.model, ImageClassifier):
            self.model.check_run_length(self.trainer.max_epochs, self.trainer.max_steps)
        trained, data = (self.ckpt_hparams or {}).get("class_names"), self.datamodule
        if data.class_names is not None and trained is not None and list(trained) != list(data.class_names):
            raise UserError(
                f"the checkpoint was trained on classes {list(trained)} but the data module "
                f"{type(data).__name__} has {list(data.class_names)}. Pass the --data config the model was "
                "trained with (it is saved as config.yaml in the run directory)."
            )

    def before_fit(self) -> None:
        """The HPARAMS table from the whole config (data, finetuning, epochs, seed), not just the model's."""
        if isinstance(self.trainer.logger, TensorBoardLogger):
            config = self.config[self.subcommand].as_dict()
            trainer = {k: config["trainer"].get(k) for k in ("max_epochs", "precision", "accumulate_grad_batches")}
            finetuning = config.get("finetuning") if hasattr(self.model.net, "backbone") else None
            sections = {**config["model"], "data": config["data"], "finetuning": finetuning, "trainer": trainer,
                        "seed": config.get("seed_everything")}  # fmt: skip
            self.trainer.logger.hparams_table = readable_hparams(sections)

    def _at_checkpoint_step(self) -> None:
        """Evaluation metrics go into the run at the checkpoint's step, not at step 0 of its curves."""
        if isinstance(self.trainer.logger, TensorBoardLogger):
            self.trainer.logger.eval_step = self.ckpt_step

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


def check_writable(save_dir: str) -> None:
    """A logs folder that cannot be written fails now, in one line, not after the data is prepared."""
    existing = Path(save_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is a file" if not existing.is_dir() else "is not writable"
        raise UserError(
            f"cannot write logs to --trainer.logger.init_args.save_dir {save_dir}: {existing} {problem}. "
            "Pass a folder you can write to."
        )


def next_version(folder: Path) -> Path:
    """``folder/version_<n>`` for the first unused n (as TensorBoardLogger numbers its runs)."""
    taken = [int(p.name.split("_")[1]) for p in folder.glob("version_*") if p.name.split("_")[1].isdigit()]
    return folder / f"version_{max(taken, default=-1) + 1}"


def cli_main(
    args: list[str] | None = None, run: bool = True, cli_class: type[ClassifierCLI] = ClassifierCLI
) -> ClassifierCLI | None:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one clear line.
    ``cli_class``: a subclass adding to every run (``src.search`` adds Optuna's pruning callback).
    ``run=False`` only builds the model, data module and trainer (e.g. for notebooks and benchmarks)."""
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
            args=argv,
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
