"""``python -m src.train {fit,validate,test,predict,lr_find,export} --config configs/<model>.yaml``: every knob is a
LightningCLI argument (``--print_config`` shows them); a flag always beats a config file, wherever it stands."""

import re
import sys
import warnings
from functools import partial
from typing import Any, Literal, NoReturn, TextIO

import torch
from jsonargparse import Namespace, lazy_instance
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from src.callbacks.dashboard import Dashboard
from src.callbacks.evaluation import PredictionWriter, TestReport, check_top_k
from src.errors import UserError, argument_problem, exception_chain, exit_if_user_error
from src.loggers import RunConfig, TensorBoardLogger, check_writable
from src.models.classifier import ImageClassifier
from src.models.finetuning import TransferFinetuning
from src.resume import AtomicCheckpointIO, RngState

#: LightningCLI's subcommands plus ClassifierTrainer's: each one's arguments not taken from the config.
SUBCOMMANDS = {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}
#: Subcommands that evaluate a trained model: without --ckpt_path they would report on random weights.
EVALUATING = ("validate", "test", "predict")
#: Model arguments that come from the data when training from scratch, and from the checkpoint otherwise.
LINKED = {"class_names": "class_names", "input_shape": "input_shape", "mean": "input_mean", "std": "input_std",
          "task": "task"}  # fmt: skip

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates, on every run: not actionable here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def config_files_first(argv: list[str]) -> list[str]:
    """``argv`` with every config file (``--config F``, ``--data F.yaml``) before every flag, each group in order:
    jsonargparse applies them left to right, so a later config undoes a flag (a run's holds ``ckpt_path: null``)."""
    head = argv[:1] if argv[:1] and not argv[0].startswith("-") else []
    parts: dict[bool, list[str]] = {True: [], False: []}  # is a config file: its arguments
    i = len(head)
    while i < len(argv):
        option, value, i = argv[i], None, i + 1
        if option.startswith("--") and "=" not in option and i < len(argv) and not argv[i].startswith("--"):
            value, i = argv[i], i + 1
        key, _, inline = option.partition("=")  # a value given inline, or as the next argument
        is_file = key == "--config" or ("." not in key and re.search(r"\.(ya?ml|json)$", inline or value or ""))
        parts[bool(is_file)].extend([option] if value is None else [option, value])
    return head + parts[True] + parts[False]


def pop_option(argv: list[str], option: str) -> tuple[str | None, list[str]]:
    """The last value of ``option`` (``--o v`` or ``--o=v``) and ``argv`` without it."""
    value, rest, args = None, [], iter(argv)
    for arg in args:
        if arg == option or arg.startswith(option + "="):
            value = arg.partition("=")[2] if "=" in arg else next(args, None)
        else:
            rest.append(arg)
    return value, rest


class ClassifierTrainer(Trainer):
    """Lightning's Trainer plus ``lr_find``: LightningCLI makes a subcommand of it, whose arguments are the method's."""

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
    ) -> float:
        """Train ``num_training`` batches at rates rising from ``min_lr`` to ``max_lr``: print where the loss falls
        fastest as a flag for ``fit``, plot it in ``lr_find.png``. No checkpoint; ``lr_multipliers`` are not applied."""
        from src.lr_find import range_test  # only this subcommand needs the tuner and matplotlib

        return range_test(self, model, datamodule, min_lr, max_lr, num_training, mode, early_stop_threshold)


class QuietUsageParser(LightningArgumentParser):
    """On a bad argument, print a one-line usage instead of all ~150 options (``--help`` still lists them)."""

    def print_usage(self, file: TextIO | None = None) -> None:
        (file or sys.stdout).write(f"usage: {self.prog} --config CONFIG [--<section>.<key> VALUE ...]\n")

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """A bad value inside a section is one line (option, value, reason), not the parser's tree of alternatives.
        Only where it exits: nested parsers raise, and the outer message holds their original text."""
        tree = self.exit_on_error and "\n" in message.strip()
        option, value, reason = argument_problem(message) if tree else ("", "", "")
        super().error(f"--{option}{f' {value}' if value else ''}: {reason}" if option else message, ex)


class ClassifierCLI(LightningCLI):
    """LightningCLI with the template's wiring: shapes from the data, checkpoints, evaluations logged into their run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = list(sys.argv[1:] if kwargs.get("args") is None else kwargs["args"])
        #: ``--model.task``: the data's labels decide the task (a link); a task given is checked against them.
        self.task_given, argv = pop_option(argv, "--model.task")
        kwargs["args"] = config_files_first(argv)
        #: The subcommand named first on the command line (``fit ...``), the only one whose parser is built.
        self.requested = argv[0] if argv and argv[0] in SUBCOMMANDS else None
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")  # args: reordered
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Only the subcommand being run (building every parser is slow); all when none is named (``--help``)."""
        return {self.requested: SUBCOMMANDS[self.requested]} if self.requested else SUBCOMMANDS

    def _linked(self, attribute: str, data: LightningDataModule) -> Any:
        """The checkpoint's value if one is loaded (a checkpoint is the model: nothing re-derived), else the data's."""
        if self.ckpt_hparams and LINKED[attribute] in self.ckpt_hparams:
            return self.ckpt_hparams[LINKED[attribute]]
        return getattr(data, attribute)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute, target in LINKED.items():  # shapes come from the data; nobody types them twice
            compute = partial(self._linked, attribute)
            parser.link_arguments("data", f"model.{target}", compute_fn=compute, apply_on="instantiate")
        baseline = "validate/test/predict the network's initial weights on purpose (a baseline)"
        parser.add_argument("--untrained", type=bool, default=False, help=baseline)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # last.ckpt from an unmonitored checkpoint, saved every epoch (save_last would refresh it only on a new best)
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        for section, callback in (
            ("lr_monitor", LearningRateMonitor),
            ("predictions", PredictionWriter),
            ("report", TestReport),
            ("dashboard", Dashboard),
            ("finetuning", TransferFinetuning),
        ):
            parser.add_lightning_class_args(callback, section)  # finetuning: a no-op for networks without backbone
        parser.set_defaults({
            "checkpoint.monitor": "val/acc", "checkpoint.mode": "max", "checkpoint.auto_insert_metric_name": False,
            "checkpoint.filename": "best-epoch{epoch:02d}-acc{val/acc:.4f}", "last_checkpoint.filename": "last",
            # A resume re-saving an epoch a killed run saved writes the same file, not a "-v1" copy.
            "checkpoint.enable_version_counter": False, "last_checkpoint.enable_version_counter": False,
            "lr_monitor.logging_interval": "epoch",
            "trainer.logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="default"),
        })  # fmt: skip

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check the subcommand's inputs and read ``--ckpt_path`` before anything is built."""
        super().parse_arguments(parser, args)
        self.ckpt_hparams: dict | None = None  # read by the links, at instantiation
        self.ckpt_step, self.ckpt_run_dir = 0, None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path, untrained = config.get("ckpt_path"), config.get("untrained")
        files = str((config.get("data") or {}).get("class_path", "")).endswith("FilesDataModule")
        if files and (subcommand != "predict" or not ckpt_path):
            raise UserError(
                "--data configs/data/files.yaml classifies image files with a trained model: use it with "
                "`predict --ckpt_path <run>/checkpoints/<best or last>.ckpt`."
            )
        if subcommand in EVALUATING and not ckpt_path and not untrained:
            raise UserError(
                f"`{subcommand}` evaluates a trained model: pass --ckpt_path logs/<name>/version_<n>/checkpoints/"
                "<best or last>.ckpt (or --untrained true for a baseline of initial weights)."
            )
        if untrained and (ckpt_path or subcommand not in EVALUATING):
            raise UserError(f"--untrained true evaluates initial weights: drop it (with {subcommand} --ckpt_path)")
        if untrained:
            print(f"note: {subcommand} of an UNTRAINED network (--untrained true): a baseline, not a trained model")
        if ckpt_path in ("best", "last") and subcommand != "fit":
            raise UserError(f"--ckpt_path {ckpt_path} means the checkpoint of a fit in the same process; give its "
                            "file, e.g. logs/<name>/version_<n>/checkpoints/last.ckpt.")  # fmt: skip
        if not ckpt_path or ckpt_path in ("best", "last", "hpc", "registry"):  # Lightning resolves these itself
            return
        from src.checkpoint_io import apply_hparams, read_checkpoint, run_dir_of
        from src.models.restore import check_hparams

        checkpoint = read_checkpoint(ckpt_path)
        self.ckpt_hparams, self.ckpt_step = checkpoint["hyper_parameters"], checkpoint.get("global_step", 0)
        self.ckpt_run_dir = run_dir_of(ckpt_path)
        check_hparams(self.ckpt_hparams, f"--ckpt_path {ckpt_path}", ImageClassifier)  # nothing named is called
        self.config = apply_hparams(self.parser, self.config, ckpt_path, self.ckpt_hparams, self.ckpt_run_dir)

    def _parse_ckpt_path(self) -> None:
        """Adapter (no public hook): LightningCLI would read ``--ckpt_path`` again here, with an error of many lines;
        ``parse_arguments`` did it through the one checkpoint reader. Guarded by tests/test_never_silently_wrong.py."""

    def before_instantiate_classes(self) -> None:
        """A checkpoint's runs log into its run (a resumed fit purges later events); no logger: logs/no_logger."""
        if not (subcommand := self.subcommand):
            return
        trainer, run_dir = self.config[subcommand]["trainer"], self.ckpt_run_dir
        logger = trainer.get("logger")
        init = (logger.get("init_args") or {}) if isinstance(logger, Namespace) else {}
        check_writable(init.get("save_dir") or "logs")
        if logger in (None, False) and trainer.get("default_root_dir") is None:  # numbered as TensorBoard's runs
            trainer.default_root_dir = str(run_dir or LightningTensorBoardLogger("logs", "no_logger").log_dir)
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
        """A value refused while the classes are built (``--trainer.max_epochs -5``) is a mistake: one line."""
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
        """Lightning's, with checkpoints written atomically and holding RNG states; LRs logged if there is a logger."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own CheckpointIO plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.logger is None:
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        trainer.callbacks.append(RngState())
        return trainer

    def after_instantiate_classes(self) -> None:
        """Before any file is written: the run ends, top_k fits the classes, the data has the checkpoint's classes."""
        if self.subcommand == "fit":
            self.model.check_run_length(self.trainer.max_epochs, self.trainer.max_steps)
        if self.subcommand == "predict":
            check_top_k(self.config.predict.predictions.top_k, self.model.class_names)
        if self.task_given not in (None, task := self.model.task):  # the labels decide: ``--model.task`` only checks
            raise UserError(f"--model.task {self.task_given}: the {'checkpoint' if self.ckpt_hparams else 'data'} is "
                            f"{task} (its labels say so): drop --model.task")  # fmt: skip
        trained, data = (self.ckpt_hparams or {}).get("class_names"), self.datamodule
        if data.class_names is not None and trained is not None and list(trained) != list(data.class_names):
            raise UserError(f"the checkpoint was trained on classes {list(trained)} but the data module "
                            f"{type(data).__name__} has {list(data.class_names)}. Pass the --data config the model "
                            "was trained with (it is saved as config.yaml in the run directory).")  # fmt: skip

    def before_test(self) -> None:
        """Evaluation metrics go into the run at the checkpoint's step, not at step 0 of its curves."""
        if isinstance(self.trainer.logger, TensorBoardLogger):
            self.trainer.logger.eval_step = self.ckpt_step

    before_validate = before_test

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


CLI_OPTIONS: dict[str, Any] = {
    "trainer_class": ClassifierTrainer, "subclass_mode_data": True, "seed_everything_default": 42,
    "auto_configure_optimizers": False, "save_config_callback": RunConfig, "parser_class": QuietUsageParser,
}  # fmt: skip


def cli_main(
    args: list[str] | None = None, run: bool = True, cli_class: type[ClassifierCLI] = ClassifierCLI
) -> ClassifierCLI | None:
    """Run the CLI (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one clear line. ``run=False``
    only builds the model, data and trainer; ``cli_class`` adds to every run (``src.search``: Optuna's pruning)."""
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv[:1] == ["export"]:  # a checkpoint in, files out: no trainer, data or config involved
            from src.export import main as export_main

            export_main(argv[1:])
            return None
        return cli_class(ImageClassifier, LightningDataModule, args=argv, run=run, **CLI_OPTIONS)
    except Exception as err:  # a UserError may come wrapped, e.g. by jsonargparse's instantiation
        exit_if_user_error(err)
        raise


if __name__ == "__main__":
    try:
        cli_main()
    finally:  # DDP: shut the process group down before exit (left to exit, gloo's threads may abort the process)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
