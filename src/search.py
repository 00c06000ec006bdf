"""Hyper-parameter search with Optuna, over the same configs as the training CLI.

``python -m src.search --config configs/cnn.yaml --space configs/search/cnn.yaml --trials 20 [--sampler tpe|random|grid]
[any --trainer/--model/--data override]``

Every trial is an ordinary ``fit`` through ``src.train.cli_main``: the base arguments plus the trial's values as
overrides, with a run directory like any fit's. Trials are ranked by ``val/acc_best``; ``val/acc`` is reported after
every epoch, and ``optuna_integration.PyTorchLightningPruningCallback`` prunes a trial below the median of earlier ones.
For a config that logs to ``logs/<name>/`` (``--study`` defaults to ``<name>``)::

    logs/search-<study>/study.db      the Optuna study (SQLite): rerunning the same command continues it
    logs/search-<study>/trials.csv    one row per trial: number, state, val/acc_best, duration, values, run directory
    logs/search-<study>/best.yaml     the best trial's config: ``python -m src.train fit --config <it>`` re-runs it
    logs/search-<study>/version_N/    the trials' run directories (``tensorboard --logdir logs/search-<study>``)

``--trials N`` counts trials that ran to a result (completed, pruned, or diverged). A trial left RUNNING by a killed
search is marked FAIL ("interrupted") by the next run, which runs its values again first (as for a trial stopped by
an error). A study continues only with the space and training arguments it started with. One search process per
study, on one device: under DDP, Lightning would start the whole search again in every process. The space (format:
configs/search/cnn.yaml) is checked before the study exists, by building (not running) the model, data and trainer
with its lowest and highest values: a key the CLI does not have, or a value it refuses, is one line and exit 2, like
any user mistake.
"""

import argparse
import contextlib
import csv
import io
import logging
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

try:  # the `search` extra: without it, one line saying how to install it (not an import traceback)
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
        distribution_to_json,
    )
    from optuna.trial import FrozenTrial, TrialState
    from optuna_integration import PyTorchLightningPruningCallback
except ModuleNotFoundError as missing:
    print(f"error: the search needs {missing.name}: pip install -e '.[search]'", file=sys.stderr)
    raise SystemExit(2) from None

from src.errors import UserError
from src.train import ClassifierCLI, cli_main

#: What the pruner watches after every epoch, and what ranks the trials.
MONITOR, SCORE = "val/acc", "val/acc_best"
FIELDS = ("type", "low", "high", "log", "step", "choices", "grid", "when")
EXAMPLE = "e.g. `model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}`"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; read it as the number it is (as jsonargparse does for configs)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


@dataclass(frozen=True)
class Param:
    """One searched setting. ``name`` is the space key and Optuna's parameter name; ``key`` is the CLI key, the name
    without its ``@label`` (``lr@Adadelta``: a second entry for the same key, under another ``when``)."""

    name: str
    distribution: BaseDistribution
    grid: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name.split("@", 1)[0]

    def active(self, values: dict[str, Any]) -> bool:
        """Whether a trial with these (earlier) values samples it: every ``when`` key took one of its values."""
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())

    def end(self, high: bool) -> Any:
        d: Any = self.distribution
        return d.choices[-1 if high else 0] if isinstance(d, CategoricalDistribution) else d.high if high else d.low

    def suggest(self, trial: optuna.Trial) -> Any:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, d.choices)
        suggest = trial.suggest_float if isinstance(d, FloatDistribution) else trial.suggest_int
        return suggest(self.name, d.low, d.high, log=d.log, step=d.step)


def parse_param(name: str, spec: Any, earlier: dict[str, Param], where: str) -> Param:
    """One entry of the space file: a list of choices, or a mapping of ``FIELDS``."""
    spec = {"choices": spec} if isinstance(spec, list) else spec
    if not isinstance(spec, dict) or set(spec) - set(FIELDS):
        raise UserError(f"{where}: give a list of choices or a mapping of {', '.join(FIELDS)}, {EXAMPLE}")
    kind, log = spec.get("type", "categorical"), bool(spec.get("log"))
    try:
        if kind == "float":
            dist: Any = FloatDistribution(float(spec["low"]), float(spec["high"]), log=log, step=spec.get("step"))
        elif kind == "int":
            dist = IntDistribution(int(spec["low"]), int(spec["high"]), log=log, step=int(spec.get("step", 1)))
        elif kind == "categorical" and isinstance(spec["choices"], list):
            dist = CategoricalDistribution(spec["choices"])
        else:
            raise UserError(f"{where}: `type` is float or int, or give `choices: [...]`, {EXAMPLE}")
        choices = getattr(dist, "choices", None)
        grid = spec.get("grid", list(choices or []))
        if not isinstance(grid, list) or not all(v in choices if choices else dist.low <= v <= dist.high for v in grid):
            raise UserError(f"{where}: `grid` lists values of its range or choices for --sampler grid, e.g. [1, 2]")
    except KeyError as missing:
        raise UserError(f"{where} needs `{missing.args[0]}`, {EXAMPLE}") from None
    except (ValueError, TypeError) as err:
        raise UserError(f"{where}: {err}") from None
    when = spec.get("when") or {}
    if not isinstance(when, dict) or not set(when) <= set(earlier):
        raise UserError(f"{where}: `when` maps keys above it to values, e.g. {{model.optimizer: torch.optim.SGD}}")
    when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}
    for other, allowed in when.items():
        if not set(allowed) <= set(getattr(earlier[other].distribution, "choices", allowed)):
            raise UserError(f"{where}: `when` value(s) {list(allowed)} are not all choices of {other}")
    return Param(name, dist, tuple(grid), when)


def load_space(path: str) -> list[Param]:
    """The parameters of a space file, in file order (a ``when`` refers to keys above it)."""
    if not Path(path).is_file():
        raise UserError(f"--space {path}: no such file. Spaces live in configs/search/, e.g. configs/search/cnn.yaml")
    try:
        spec = yaml.load(Path(path).read_text(), Loader=_Loader)
    except yaml.YAMLError as err:
        raise UserError(f"--space {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(spec, dict) or not spec:
        raise UserError(f"--space {path}: expected a mapping of dotted CLI keys to ranges, {EXAMPLE}")
    space: dict[str, Param] = {}
    for name, entry in spec.items():
        space[str(name)] = parse_param(str(name), entry, space, f"--space {path}: {name}")
    return list(space.values())


def assignment(space: list[Param], value: Any) -> dict[str, Any]:
    """Values in file order, each ``value(param)``; a parameter whose ``when`` does not hold is left out."""
    values: dict[str, Any] = {}
    for param in space:
        if param.active(values):
            values[param.name] = value(param)
    return values


def grid_points(space: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the grid values, first key slowest; a conditional key only where its ``when`` holds."""
    points: list[dict[str, Any]] = [{}]
    for param in space:
        points = [
            new for p in points for new in ([{**p, param.name: v} for v in param.grid] if param.active(p) else [p])
        ]
    return points


def cli_value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, float) else str(value)


def overrides(space: list[Param], values: dict[str, Any]) -> list[tuple[str, str]]:
    """(space key, ``--key=value``) of the values; a class (``model.optimizer``) before its ``init_args``."""
    params = sorted((p for p in space if p.name in values), key=lambda p: p.key.count("."))
    return [(p.name, f"--{p.key}={cli_value(values[p.name])}") for p in params]


def build(args: list[str]) -> tuple[ClassifierCLI | None, str]:
    """The training CLI with model, data and trainer built from ``args`` but not run (nothing is written), quietly;
    or None and the error the CLI printed."""
    err = io.StringIO()
    logging.disable(logging.INFO)  # Lightning's device lines at every build
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cli_main(args, run=False), ""
    except SystemExit:
        return None, err.getvalue()
    finally:
        logging.disable(logging.NOTSET)


def cli_reason(error: str) -> str:
    """The telling line of the CLI's error (of jsonargparse's, the last one that is not a listing of values)."""
    lines = [line.strip() for line in error.split("error:", 1)[-1].splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Given value", "Subtypes", "Errors", "- Exp"))]
    return re.sub(r"\s*Got value: Namespace\(.*$", "", lines[-1] if lines else error.strip()).rstrip(".")


def check_space(space: list[Param], base: list[str], where: str) -> None:
    """Build the CLI with the space's lowest values, its highest, and the lowest with each choice that brings in
    other keys: a key the CLI lacks, or a value it refuses, is named before the study starts, not in trial 7."""

    def probe(high: bool, forced: dict[str, Any]) -> dict[str, Any]:
        return assignment(space, lambda p: forced.get(p.name, p.end(high)))

    probes = [probe(False, {}), probe(True, {})]
    for param in space:
        for choice in getattr(param.distribution, "choices", ()):
            values = probe(False, {param.name: choice})
            if set(values) not in [set(other) for other in probes]:  # keys no probe has set together yet
                probes.append(values)
    for values in probes:
        args = overrides(space, values)
        if build([*base, *(arg for _, arg in args)])[0] is not None:
            continue
        for i, (name, arg) in enumerate(args):  # the first override the CLI refuses, and the class it applies to
            cli, error = build([*base, *(a for _, a in args[: i + 1])])
            if cli is None:
                key = arg.split("=", 1)[0] + "."
                after = "".join(f" after {a}" for _, a in args[:i] if key.startswith(a.split("=", 1)[0] + "."))
                hint = "keys: see `--print_config`; a key of only some choices needs `when:`"  # jsonargparse's error
                hint = hint if "usage:" in error else "narrow its range or choices"  # else the model or data refused
                raise UserError(f"{where}: {name}: the CLI refuses {arg}{after} ({cli_reason(error)}); {hint}")


def trial_cli(trial: optuna.Trial, built: list[ClassifierCLI]) -> type[ClassifierCLI]:
    """The training CLI plus the trial's pruning callback; it records itself in ``built`` and its run directory in
    the trial (config.yaml, checkpoints and error handling stay the CLI's own)."""

    class TrialCLI(ClassifierCLI):
        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=MONITOR))
            built.append(self)
            return trainer

        def before_fit(self) -> None:
            super().before_fit()
            trial.set_user_attr("run_dir", shown(self.trainer.log_dir))

    return TrialCLI


def shown(path: str | Path) -> str:
    """A path relative to the working directory when under it (shorter in messages and trials.csv)."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def run_trial(study: optuna.Study, trial: optuna.Trial, space: list[Param], base: list[str]) -> None:
    """Fit one trial and tell the study how it ended. A run that diverged is a FAIL and the search goes on; a user
    mistake (exit 2, the CLI's line already printed), Ctrl-C or a crash fail the trial and stop the search."""

    def fail(failure: str) -> None:
        trial.set_user_attr("failure", failure)
        study.tell(trial, state=TrialState.FAIL)

    built: list[ClassifierCLI] = []
    args = [arg for _, arg in overrides(space, assignment(space, lambda p: p.suggest(trial)))]
    try:
        cli = cli_main(["fit", *base, *args], cli_class=trial_cli(trial, built))
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except SystemExit as stop:
        if stop.code == 2 and built and built[0].trainer.global_step > 0:  # a UserError once training ran: NaN loss
            fail("diverged")
            return
        if stop.code == 1 and built:  # Lightning turns Ctrl-C in a fit into exit 1
            fail("interrupted")
            raise KeyboardInterrupt from None
        fail("error")
        raise
    except BaseException as err:
        fail("interrupted" if isinstance(err, KeyboardInterrupt) else "error")
        raise
    score = cli.trainer.callback_metrics.get(SCORE)  # type: ignore[union-attr]
    if score is None:
        fail("error")
        raise UserError(f"trials are ranked by {SCORE} but the run logged none: keep validation on")
    study.tell(trial, float(score))


def failure(t: FrozenTrial) -> str | None:
    """Why a trial failed; a FAIL without a reason was left RUNNING by a killed search and marked by ``recover``."""
    return t.user_attrs.get("failure", "interrupted") if t.state == TrialState.FAIL else None


def counted(study: optuna.Study) -> int:
    """Trials that ran to a result: completed, pruned, or failed by diverging (not interrupted, not errors)."""
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or failure(t) == "diverged" for t in trials)


def recover(study: optuna.Study) -> None:
    """A trial left RUNNING (its search was killed: one search process per study) becomes FAIL, and the values of
    every interrupted or errored trial are queued once, to run first as a new trial."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        print(f"trial {t.number} was interrupted: marked FAIL, queued again")
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if failure(t) != "diverged" and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def open_study(
    storage: str, name: str, space: list[Param], pruner: optuna.pruners.BasePruner, fit_args: list[str]
) -> optuna.Study:
    """Create the study, or load it when it exists: its space and training arguments must be the same (trials of
    another epoch count or dataset would be ranked against each other)."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True, pruner=pruner
    )
    record = {
        p.name: {"distribution": distribution_to_json(p.distribution), "when": {k: list(v) for k, v in p.when.items()}}
        for p in space
    }
    if "space" not in study.user_attrs:
        study.set_user_attr("space", record)
    elif study.user_attrs["space"] != record:
        raise UserError(
            f"study {name!r} ({storage}) was run with another search space: continue it with the same --space, "
            "start a new study with --study NAME, or delete its study.db to start again"
        )
    if "fit_args" not in study.user_attrs:
        study.set_user_attr("fit_args", fit_args)
    elif study.user_attrs["fit_args"] != fit_args:
        raise UserError(
            f"study {name!r} ran its trials with `{' '.join(study.user_attrs['fit_args'])}`, not "
            f"`{' '.join(fit_args)}`: continue it with the same arguments, or start a new study with --study NAME"
        )
    return study


def summary(t: FrozenTrial) -> tuple[str, str, str]:
    """A trial's val/acc_best (for a pruned or failed one, the best val/acc it reported), duration and note."""
    score = t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=None)
    notes = [f"re-run of trial {t.user_attrs['retry_of']}"] if "retry_of" in t.user_attrs else []
    if t.state == TrialState.PRUNED and t.intermediate_values:
        notes.append(f"pruned after epoch {max(t.intermediate_values)}")
    if t.state == TrialState.FAIL:
        notes.append(str(failure(t)))
    score_text = f"{score:.6f}" if score is not None and math.isfinite(score) else ""
    # An interrupted trial "ended" when the next search marked it; its duration means nothing.
    duration = "" if t.duration is None or failure(t) == "interrupted" else f"{t.duration.total_seconds():.1f}"
    return score_text, duration, "; ".join(notes)


def write_results(study: optuna.Study, space: list[Param], folder: Path, name: str) -> FrozenTrial | None:
    """trials.csv (every trial that started) and best.yaml (the best completed trial's config, to re-fit)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["trial", "state", SCORE, "duration_s", *(p.name for p in space), "run_dir", "note"])
    for t in trials:
        score, duration, note = summary(t)
        values = [cli_value(t.params[p.name]) if p.name in t.params else "" for p in space]
        writer.writerow([t.number, t.state.name, score, duration, *values, t.user_attrs.get("run_dir", ""), note])
    replace(folder / "trials.csv", table.getvalue())

    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number), default=None)
    if best is None:
        return None
    config_file = Path(best.user_attrs["run_dir"], "config.yaml")
    if not config_file.is_file():
        print(f"note: the best trial's config {config_file} is gone: best.yaml not written")
        return best
    config = yaml.safe_load(config_file.read_text())
    logger = config["trainer"]["logger"]["init_args"]
    logger["name"], logger["version"] = name, None  # a re-fit is a new plain run, logs/<name>/version_<next>
    header = (
        f"# Best trial of study {study.study_name}: trial {best.number}, {SCORE} {best.value:.4f}, run "
        f"{config_file.parent} (every trial: {shown(folder / 'trials.csv')}).\n"
        f"# Its config, logged as a new run: python -m src.train fit --config {shown(folder / 'best.yaml')}\n"
    )
    replace(folder / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    return best


def replace(path: Path, text: str) -> None:
    """Write beside ``path``, then rename over it: a search killed mid-write leaves the previous file whole."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


class OneLineParser(argparse.ArgumentParser):
    """A bad search option is one line, like the training CLI's mistakes (``--help`` still lists them all)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see python -m src.search --help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m src.search",
        usage="python -m src.search --config CONFIG --space SPACE [--trials N] [options] [--<section>.<key> VALUE ...]",
        description="Optuna search over a training config; every trial is a `python -m src.train fit` run.",
        epilog="Every other argument (--config, --trainer.*, --model.*, --data.*) goes to each trial's fit.",
        allow_abbrev=False,
    )
    p.add_argument("--space", required=True, help="search space YAML: dotted CLI keys -> ranges (configs/search/)")
    p.add_argument("--trials", type=int, default=20, help="trials the study holds when done (default 20)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe", help="tpe (default), random, grid")
    p.add_argument("--pruner", choices=("median", "none"), default="median", help="median (default) or none")
    p.add_argument("--pruner-startup", type=int, default=5, help="completed trials before any is pruned (5)")
    p.add_argument("--pruner-warmup", type=int, default=0, help="epochs a trial runs before it can be pruned (0)")
    p.add_argument("--study", help="study name (default: the config's logger name); files in <logs>/search-<study>/")
    p.add_argument("--seed", type=int, help="sampler seed (default: the config's seed_everything)")
    return p


def check_base(cli: ClassifierCLI) -> tuple[str, str]:
    """The logs folder and run name of the training config; refuse what a search cannot do."""
    logger = cli.config.as_dict()["trainer"].get("logger")
    init = logger.get("init_args") if isinstance(logger, dict) else None
    if not isinstance(init, dict) or not init.get("save_dir") or not init.get("name"):
        raise UserError("a search needs the config's TensorBoard logger (a trial is a run): do not override it")
    devices, nodes = cli.config.trainer.devices, cli.trainer.num_nodes
    if str(devices) != "auto" and (cli.trainer.num_devices > 1 or nodes > 1):
        given = f"--trainer.num_nodes {nodes}" if nodes > 1 else f"--trainer.devices {devices}"
        raise UserError(
            f"a search runs its trials in one process, on one device: drop {given} (under DDP, Lightning would "
            "start the whole search again in every process)"
        )
    return init["save_dir"], init["name"]


def search(argv: list[str]) -> optuna.Study:
    opts, base = parser().parse_known_args(argv)  # the rest, in order, goes to every trial's fit
    base = base[1:] if base[:1] == ["fit"] else base
    if opts.trials < 1:
        raise UserError(f"--trials {opts.trials}: give the number of trials the study should hold, e.g. 20")
    if opts.study is not None and not re.fullmatch(r"[\w.-]+", opts.study):
        raise UserError(f"--study {opts.study!r}: use letters, digits, '.', '-' or '_' (it names a folder)")
    if any(a.split("=", 1)[0] == "--ckpt_path" for a in base):
        raise UserError("--ckpt_path: every trial trains from scratch; a search does not resume a checkpoint")
    space = load_space(opts.space)
    ranged = [p.name for p in space if not p.grid]
    if opts.sampler == "grid" and ranged:
        raise UserError(f"--sampler grid: {ranged[0]} is a range; give it values to try, e.g. `grid: [0.001, 0.01]`")

    # cli_main is given each trial's arguments while sys.argv holds the search's: intended here.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    cli, error = build(base)
    if cli is None:  # a mistake in the training arguments: the CLI's own message, as `src.train` prints it
        sys.stderr.write(error)
        raise SystemExit(2)
    save_dir, name = check_base(cli)
    check_space(space, base, f"--space {opts.space}")

    study_name = opts.study or name
    folder = Path(save_dir) / f"search-{study_name}"
    folder.mkdir(parents=True, exist_ok=True)
    # Trials are new runs in the study's folder (tensorboard --logdir <it> compares them), never a pinned version.
    trial_args = [*base, f"--trainer.logger.init_args.name={folder.name}", "--trainer.logger.init_args.version=null"]
    if str(cli.config.trainer.devices) == "auto":
        trial_args.append("--trainer.devices=1")  # auto would take every GPU, and launch DDP

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    median = optuna.pruners.MedianPruner(n_startup_trials=opts.pruner_startup, n_warmup_steps=opts.pruner_warmup)
    pruner = median if opts.pruner == "median" else optuna.pruners.NopPruner()
    study = open_study(f"sqlite:///{(folder / 'study.db').absolute()}", study_name, space, pruner, base)
    recover(study)
    # Seeded by the study's length too, so a resumed search does not draw its first values again. Grid trials are
    # all enqueued: the sampler never draws for them.
    seed = (cli.config.seed_everything if opts.seed is None else opts.seed) or 0
    sampler = optuna.samplers.TPESampler if opts.sampler == "tpe" else optuna.samplers.RandomSampler
    study.sampler = sampler(seed=seed + len(study.trials))
    points = grid_points(space) if opts.sampler == "grid" else []

    print(f"study {study_name} ({shown(folder)}): {counted(study)} of {opts.trials} trials done", flush=True)
    try:
        while counted(study) < opts.trials:
            if points and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                seen = [t.params for t in study.get_trials(deepcopy=False)]
                point = next((p for p in points if p not in seen), None)
                if point is None:
                    print(f"the grid's {len(points)} combinations have all run")
                    break
                study.enqueue_trial(point)
            trial = study.ask()
            run_trial(study, trial, space, trial_args)
            t = study.trials[trial.number]
            score, duration, note = summary(t)
            line = f"{SCORE} {score or '-'}, {duration or '-'} s{note and '; ' + note}: {t.user_attrs.get('run_dir')}"
            print(f"trial {t.number} {t.state.name}, {line}", flush=True)
            write_results(study, space, folder, name)
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to continue study {study_name}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # also when a trial stops the search: the files show every trial so far
        best = write_results(study, space, folder, name)
    print(f"trials: {shown(folder / 'trials.csv')}")
    if best is not None:
        print(
            f"best: trial {best.number}, {SCORE}={best.value:.4f}, {best.user_attrs.get('run_dir')}; "
            f"re-fit: python -m src.train fit --config {shown(folder / 'best.yaml')}"
        )
    return study


def main(args: list[str] | None = None) -> optuna.Study | None:
    """Run a search (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one line."""
    try:
        return search(sys.argv[1:] if args is None else list(args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
