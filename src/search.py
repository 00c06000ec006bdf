"""Hyper-parameter search with Optuna, over the same configs as the training CLI.

``python -m src.search --config configs/cnn.yaml --space configs/search/cnn.yaml --trials 20 [--sampler tpe]
[any --trainer/--model/--data override]``

Every trial is an ordinary ``fit``: the base arguments, plus the trial's sampled values as command-line overrides,
run through ``src.train.cli_main``; its run directory (``config.yaml``, checkpoints, TensorBoard events) is made the
same way. Trials are ranked by ``val/acc_best``; ``val/acc`` is reported after every epoch and
``optuna_integration.PyTorchLightningPruningCallback`` stops a trial that falls below the median of earlier ones.

Files, for a config whose logger writes ``logs/<name>/`` (study name: ``--study``, default ``<name>``)::

    logs/search-<study>/study.db      the Optuna study (SQLite): rerunning the same command continues it
    logs/search-<study>/trials.csv    one row per trial: number, state, val/acc_best, duration, values, run directory
    logs/search-<study>/best.yaml     the best trial's config: ``python -m src.train fit --config <it>`` re-runs it
    logs/search-<study>/version_N/    the trials' run directories (``tensorboard --logdir logs/search-<study>``)

``--trials N`` is the study's total: trials that ran to a result (completed, pruned, or failed by diverging). A
search killed mid-trial leaves that trial RUNNING; the next run marks it FAIL ("interrupted") and runs its values
again first, as a new trial (so does a trial stopped by an error). Completed trials are never re-run. One search
process per study; trials run one after another in it, on one device (``devices: auto`` becomes 1: under DDP,
Lightning would start the whole search again in every process).

The space (``configs/search/*.yaml``) maps dotted CLI keys to how they are sampled; see configs/search/cnn.yaml.
Before the study exists, the model, data and trainer are built (not run) with the space's lowest and highest
values: a key the CLI does not have, or a value it refuses, is one line and exit 2, like any user mistake.
"""

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Iterator
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
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
#: Fields a parameter of the space may have.
FIELDS = ("type", "low", "high", "log", "step", "choices", "grid", "when")
EXAMPLE = "e.g. `model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}`"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; read it as the number it is (as jsonargparse does for configs)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


@dataclass(frozen=True)
class Param:
    """One searched setting: ``name`` is the space key (Optuna's parameter name), ``key`` the CLI key it sets."""

    name: str
    distribution: BaseDistribution
    grid: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``model.optimizer.init_args.lr`` for ``model.optimizer.init_args.lr@Adadelta``: a second range."""
        return self.name.split("@", 1)[0]

    def active(self, values: dict[str, Any]) -> bool:
        """Whether this trial samples it: every ``when`` key took one of its values (file order: earlier keys)."""
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, d.choices)
        suggest = trial.suggest_float if isinstance(d, FloatDistribution) else trial.suggest_int
        return suggest(self.name, d.low, d.high, log=d.log, step=d.step)


def _param(name: Any, spec: Any, earlier: dict[str, "Param"], where: str) -> Param:
    """One entry of the space file: a list of choices, or a mapping with ``type`` and its fields."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.]*(@\w+)?", name):
        raise UserError(f"{where}: key {name!r} is not a dotted CLI key, {EXAMPLE}")
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: {name}: give a list of choices or a mapping, {EXAMPLE}")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: {name}: unknown field(s) {unknown}; a parameter has {', '.join(FIELDS)}")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    try:
        if kind == "float":
            distribution: BaseDistribution = FloatDistribution(
                float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)), step=spec.get("step")
            )
        elif kind == "int":
            distribution = IntDistribution(
                int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step", 1))
            )
        elif kind == "categorical":
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise UserError(f"{where}: {name}: `choices` must be a non-empty list, e.g. [32, 64, 128]")
            bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise UserError(
                    f"{where}: {name}: choice {bad[0]!r} is not a number or a string; write it as the command line "
                    f"would, quoted, e.g. '{json.dumps(bad[0])}'"
                )
            distribution = CategoricalDistribution(choices)
        else:
            raise UserError(f"{where}: {name}: `type` must be float, int or categorical (got {kind!r}), {EXAMPLE}")
    except KeyError as missing:
        raise UserError(f"{where}: {name} needs `{missing.args[0]}`, {EXAMPLE}") from None
    except (ValueError, TypeError) as err:
        raise UserError(f"{where}: {name}: {err}") from None

    grid = spec.get("grid", list(getattr(distribution, "choices", [])))
    if not isinstance(grid, list):
        raise UserError(f"{where}: {name}: `grid` is a list of the values --sampler grid tries, e.g. [0.001, 0.01]")
    for value in grid:
        inside = (
            value in distribution.choices
            if isinstance(distribution, CategoricalDistribution)
            else isinstance(value, (int, float)) and distribution.low <= value <= distribution.high
        )
        if not inside:
            raise UserError(f"{where}: {name}: grid value {value!r} is outside the parameter's range or choices")

    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise UserError(
            f"{where}: {name}: `when` maps an earlier key to its value(s), e.g. when: {{model.optimizer: "
            "torch.optim.SGD}"
        )
    conditions = {}
    for other, allowed in when.items():
        if other not in earlier:
            raise UserError(f"{where}: {name}: `when` names {other!r}, which is not a key above it in the space")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        choices = getattr(earlier[other].distribution, "choices", None)
        if choices is not None and not set(allowed) <= set(choices):
            missing = [a for a in allowed if a not in choices]
            raise UserError(f"{where}: {name}: `when` value {missing[0]!r} is not a choice of {other} {list(choices)}")
        conditions[other] = allowed
    return Param(name, distribution, tuple(grid), conditions)


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
        space[name] = _param(name, entry, space, f"--space {path}")
    return list(space.values())


def space_record(space: list[Param]) -> dict:
    """What a study remembers of its space (JSON): the distributions and conditions, not the grid."""
    return {
        p.name: {"distribution": distribution_to_json(p.distribution), "when": {k: list(v) for k, v in p.when.items()}}
        for p in space
    }


def sample(trial: optuna.Trial, space: list[Param]) -> dict[str, Any]:
    """The trial's values, in file order; a parameter whose ``when`` does not hold is not sampled."""
    values: dict[str, Any] = {}
    for param in space:
        if param.active(values):
            values[param.name] = param.suggest(trial)
    return values


def grid_points(space: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the grid values, first key slowest; conditional keys only where their ``when`` holds."""
    points: list[dict[str, Any]] = [{}]
    for param in space:
        points = [
            expanded
            for p in points
            for expanded in ([{**p, param.name: v} for v in param.grid] if param.active(p) else [p])
        ]
    return points


def cli_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def assigned(space: list[Param], values: dict[str, Any]) -> list[tuple[str, str]]:
    """(CLI key, space key) of the sampled values; a class switch (``model.optimizer``) before its ``init_args``."""
    keys: dict[str, str] = {}
    for param in space:
        if param.name in values:
            if param.key in keys:
                raise UserError(
                    f"--space: {keys[param.key]} and {param.name} both set {param.key} in one trial: give them "
                    "exclusive `when:` conditions"
                )
            keys[param.key] = param.name
    return sorted(keys.items(), key=lambda item: item[0].count("."))


def overrides(space: list[Param], values: dict[str, Any]) -> list[str]:
    """The trial's values as command-line overrides, ``--key=value``."""
    return [f"--{key}={cli_value(values[name])}" for key, name in assigned(space, values)]


# ---------------------------------------------------------------------------------------------------------------------
# The training CLI, driven


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Lightning's info lines, warnings and the CLI's output held back (the CLI's error output is yielded)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    err = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield err
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def built_config(args: list[str]) -> tuple[dict | None, str]:
    """The training CLI built from ``args`` without running (model, data and trainer made, nothing written, as
    ``cli_main(run=False)`` does): its resolved config, or None and what the CLI said was wrong."""
    with quiet() as err:
        try:
            cli = cli_main(args, run=False)
        except SystemExit:
            return None, err.getvalue()
    return cli.config.as_dict(), ""  # type: ignore[union-attr]


def cli_reason(error: str) -> str:
    """The telling line of the CLI's error (for jsonargparse's, the last one that is not a listing of values)."""
    lines = [line.strip() for line in error.split("error:", 1)[-1].splitlines()]
    listing = ("Given value", "Subtypes", "Errors", "- Expected")
    lines = [line for line in lines if line and not line.startswith(listing)]
    reason = lines[-1] if lines else error.strip()
    return re.sub(r"\s*Got value: Namespace\(.*$", "", reason).rstrip(".")


def check_space(space: list[Param], base: list[str], where: str) -> None:
    """Build the model, data and trainer with values of every key, before the study exists: a key the CLI does not
    have, or a value the model refuses, is named now instead of failing a trial. The probes take the lowest values,
    the highest, and the lowest with each choice of a key that others depend on or that switches a class."""

    def end(param: Param, high: bool) -> Any:
        d = param.distribution
        if isinstance(d, CategoricalDistribution):
            return d.choices[-1 if high else 0]
        return d.high if high else d.low  # type: ignore[attr-defined]

    def assignment(forced: dict[str, Any], high: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in space:
            if param.active(values):
                values[param.name] = forced.get(param.name, end(param, high))
        return values

    switches = [
        p
        for p in space
        if isinstance(p.distribution, CategoricalDistribution)
        and any(p.name in q.when or q.key.startswith(p.key + ".") for q in space)
    ]
    probes = [assignment({}, False), assignment({}, True)]
    for values in (assignment({p.name: c}, False) for p in switches for c in p.distribution.choices):
        if set(values) not in [set(probe) for probe in probes]:  # keys no probe has set together yet
            probes.append(values)
    for values in probes:
        pairs = assigned(space, values)
        args = overrides(space, values)
        if built_config([*base, *args])[0] is not None:
            continue
        for i, (key, name) in enumerate(pairs):  # the first override the CLI refuses
            config, error = built_config([*base, *args[: i + 1]])
            if config is None:
                switched = [args[j] for j, (other, _) in enumerate(pairs[:i]) if key.startswith(other + ".")]
                parsing = "usage:" in error  # jsonargparse's: the key or the type; else the model or data refused
                hint = (
                    "Space keys are the dotted keys that `python -m src.train fit --config ... --print_config` "
                    "shows; a key that only one choice of another key has needs `when:`"
                    if parsing
                    else "Narrow its range or choices"
                )
                raise UserError(
                    f"{where}: {name}: the CLI refuses {args[i]}{' after ' + switched[0] if switched else ''} "
                    f"({cli_reason(error)}). {hint}."
                )
        raise UserError(f"{where}: the CLI refuses these values together: {' '.join(args)}")


def trial_cli(trial: optuna.Trial, built: list[ClassifierCLI]) -> type[ClassifierCLI]:
    """The CLI with the trial's pruning callback in its trainer, recording itself in ``built`` and its run
    directory in the trial; everything else (config.yaml, checkpoints, errors) is the CLI's own."""

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
    """A path as short as it is clear: relative to the working directory when under it."""
    path = Path(path).absolute()
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd().resolve()))
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def run_trial(study: optuna.Study, trial: optuna.Trial, space: list[Param], base: list[str]) -> None:
    """Fit one trial and tell the study how it ended. A user mistake stops the search (exit 2, the CLI's line
    already printed); a run that diverged is a FAIL and the search goes on; Ctrl-C or a crash stops it."""
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", socket.gethostname())
    built: list[ClassifierCLI] = []
    try:
        values = sample(trial, space)
        cli = cli_main(["fit", *base, *overrides(space, values)], cli_class=trial_cli(trial, built))
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except SystemExit as exit:
        trained = bool(built) and built[0].trainer.global_step > 0
        if exit.code == 2 and trained:  # a UserError once training ran: the training diverged
            trial.set_user_attr("failure", "diverged")
            study.tell(trial, state=TrialState.FAIL)
            return
        interrupted = exit.code == 1 and bool(built)  # Lightning turns Ctrl-C in a fit into exit 1
        trial.set_user_attr("failure", "interrupted" if interrupted else "error")
        study.tell(trial, state=TrialState.FAIL)
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    except BaseException as err:
        trial.set_user_attr("failure", "interrupted" if isinstance(err, KeyboardInterrupt) else "error")
        study.tell(trial, state=TrialState.FAIL)
        raise
    score = cli.trainer.callback_metrics.get(SCORE)
    if score is None:
        trial.set_user_attr("failure", "error")
        study.tell(trial, state=TrialState.FAIL)
        raise UserError(f"trials are ranked by {SCORE} but the run logged none: keep validation on")
    study.tell(trial, float(score))


# ---------------------------------------------------------------------------------------------------------------------
# The study


def counted(study: optuna.Study) -> int:
    """Trials that ran to a result: completed, pruned, or failed by diverging (not interrupted, not errors)."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) or t.user_attrs.get("failure") == "diverged"
        for t in study.get_trials(deepcopy=False)
    )


def alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def recover(study: optuna.Study) -> None:
    """A trial left RUNNING by a search process that is gone (killed) becomes FAIL, "interrupted"; every
    interrupted or errored trial's values are queued once, to run first as a new trial."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host and not alive(t.user_attrs.get("pid")):
            optuna.trial.Trial(study, t._trial_id).set_user_attr("failure", "interrupted")
            study.tell(t.number, state=TrialState.FAIL)
            print(f"trial {t.number} was interrupted (its search process is gone): marked FAIL, queued again")
        else:
            print(
                f"note: trial {t.number} is RUNNING in process {t.user_attrs.get('pid')} on "
                f"{t.user_attrs.get('host')}: one search process per study is supported"
            )
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("failure") in ("interrupted", "error") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def next_grid_point(study: optuna.Study, points: list[dict]) -> dict | None:
    """The first grid combination no trial has (or is queued to run)."""
    trials = study.get_trials(deepcopy=False)
    seen = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials]
    return next((p for p in points if p not in seen), None)


def open_study(storage: str, name: str, space: list[Param], base: list[str], pruner: Any) -> optuna.Study:
    """Create the study, or load it when it exists (its space must be the same)."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True, pruner=pruner
    )
    record = space_record(space)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", record)
        study.set_user_attr("train_args", base)
    elif json.dumps(study.user_attrs["space"], sort_keys=True) != json.dumps(record, sort_keys=True):
        raise UserError(
            f"study {name!r} ({storage}) was run with another search space: continue it with the same --space, "
            "start a new study with --study NAME, or delete its study.db to start again"
        )
    elif study.user_attrs.get("train_args") != base:
        print(f"note: study {name!r} was started with other training arguments: {study.user_attrs['train_args']}")
    return study


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE or random, seeded; grid trials are all queued (see ``next_grid_point``) so its sampler never draws."""
    return optuna.samplers.TPESampler(seed=seed) if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed)


# ---------------------------------------------------------------------------------------------------------------------
# Results


def score_of(t: FrozenTrial) -> float | None:
    """val/acc_best: the trial's value; for a pruned or failed one, the best val/acc it reported."""
    if t.state == TrialState.COMPLETE:
        return t.value
    return max(t.intermediate_values.values()) if t.intermediate_values else None


def note_of(t: FrozenTrial) -> str:
    notes = []
    if "retry_of" in t.user_attrs:
        notes.append(f"re-run of trial {t.user_attrs['retry_of']}")
    if t.state == TrialState.PRUNED and t.intermediate_values:
        notes.append(f"pruned after epoch {max(t.intermediate_values)}")
    if t.state == TrialState.FAIL:
        notes.append(t.user_attrs.get("failure", "failed"))
    return "; ".join(notes)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(study: optuna.Study, space: list[Param], folder: Path, name: str) -> FrozenTrial | None:
    """trials.csv (every trial that started) and best.yaml (the best completed trial's config, to re-fit)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "state", SCORE, "duration_s", *(p.name for p in space), "run_dir", "note"])
    for t in trials:
        score = score_of(t)
        finished = t.datetime_complete and t.user_attrs.get("failure") != "interrupted"
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if finished else None
        writer.writerow(
            [
                t.number,
                t.state.name,
                "" if score is None else f"{score:.6f}",
                "" if duration is None else f"{duration:.1f}",
                *(cli_value(t.params[p.name]) if p.name in t.params else "" for p in space),
                t.user_attrs.get("run_dir", ""),
                note_of(t),
            ]
        )
    write_atomically(folder / "trials.csv", out.getvalue())

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = max(complete, key=lambda t: (t.value, -t.number))
    config_file = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
    if not config_file.is_file():
        print(f"note: the best trial's config {config_file} is gone: best.yaml not written")
        return best
    config = yaml.safe_load(config_file.read_text())
    logger = config["trainer"]["logger"]["init_args"]
    logger["name"], logger["version"] = name, None  # a re-fit is a new plain run, logs/<name>/version_<next>
    header = (
        f"# Best trial of study {study.study_name}: trial {best.number}, {SCORE} {best.value:.4f}, run "
        f"{best.user_attrs['run_dir']} (every trial: {shown(folder / 'trials.csv')}).\n"
        f"# Its config, logged as a new run: python -m src.train fit --config {shown(folder / 'best.yaml')}\n"
    )
    write_atomically(folder / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    return best


# ---------------------------------------------------------------------------------------------------------------------
# Command line


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
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (default), random, or grid")
    p.add_argument("--pruner", choices=PRUNERS, default="median", help="median (default) or none")
    p.add_argument("--pruner-startup", type=int, default=5, help="completed trials before any is pruned (5)")
    p.add_argument("--pruner-warmup", type=int, default=0, help="epochs a trial runs before it can be pruned (0)")
    p.add_argument("--study", help="study name (default: the config's logger name); files in <logs>/search-<study>/")
    p.add_argument("--storage", help="Optuna storage URL or SQLite file (default <logs>/search-<study>/study.db)")
    p.add_argument("--seed", type=int, help="sampler seed (default: the config's seed_everything)")
    return p


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """The search's own options, and the rest for the training CLI (order kept)."""
    flags = {a for action in parser()._actions for a in action.option_strings}
    own, rest, i = [], [], 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in flags:
            takes_value = "=" not in argv[i] and flag not in ("-h", "--help")
            own += argv[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            rest.append(argv[i])
            i += 1
    return own, rest[1:] if rest[:1] == ["fit"] else rest


def device_count(devices: Any) -> int | None:
    """Processes a ``--trainer.devices`` value starts (-1: every device; None: ``auto``)."""
    if isinstance(devices, list):
        return len(devices)
    text = str(devices).strip()
    if text == "auto":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return len([d for d in text.split(",") if d.strip()])  # "0,1"


def check_base(config: dict) -> tuple[str, str]:
    """The logs folder and run name of the config; refuse what a search cannot do."""
    logger = config.get("trainer", {}).get("logger")
    init = logger.get("init_args") if isinstance(logger, dict) else None
    if not isinstance(init, dict) or not init.get("save_dir") or not init.get("name"):
        raise UserError(
            "a search needs the config's TensorBoard logger (each trial is a run directory): do not "
            "override --trainer.logger"
        )
    if not config.get("data"):
        raise UserError("no data to train on: give the training config, e.g. --config configs/cnn.yaml")
    trainer = config["trainer"]
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if device_count(devices) not in (None, 1) or nodes > 1:
        given = f"--trainer.num_nodes {nodes}" if nodes > 1 else f"--trainer.devices {devices}"
        raise UserError(
            f"a search runs its trials in one process, on one device: drop {given} (under DDP, Lightning would "
            "start the whole search again in every process)"
        )
    return init["save_dir"], init["name"]


def search(argv: list[str]) -> optuna.Study | None:
    own, base = split_args(argv)
    opts = parser().parse_args(own)
    if opts.trials < 1:
        raise UserError(f"--trials {opts.trials}: give the number of trials the study should hold, e.g. 20")
    space = load_space(opts.space)
    if opts.sampler == "grid":
        ranged = [p.name for p in space if not p.grid]
        if ranged:
            raise UserError(
                f"--sampler grid: {ranged[0]} is a range; give it the values to try, e.g. "
                f"`grid: [0.001, 0.01]` in {opts.space}"
            )

    # cli_main is given each trial's arguments while sys.argv holds the search's: intended here.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    if any(a.split("=", 1)[0] == "--ckpt_path" for a in base):
        raise UserError("--ckpt_path: every trial trains from scratch; a search does not resume a checkpoint")
    config, error = built_config(base)
    if config is None:  # a mistake in the training arguments: the CLI's own message, as `src.train` prints it
        sys.stderr.write(error)
        raise SystemExit(2)
    save_dir, name = check_base(config)
    check_space(space, base, f"--space {opts.space}")

    study_name = opts.study or name
    if not re.fullmatch(r"[\w.-]+", study_name):
        raise UserError(f"--study {study_name!r}: use letters, digits, '.', '-' or '_' (it names a folder)")
    folder = Path(save_dir) / f"search-{study_name}"
    folder.mkdir(parents=True, exist_ok=True)
    storage = opts.storage or str(folder / "study.db")
    if "://" not in storage:
        storage = f"sqlite:///{Path(storage).absolute()}"
    # Trials are runs of their own folder (tensorboard --logdir <it> compares them), never a pinned version.
    trial_args = [*base, f"--trainer.logger.init_args.name={folder.name}", "--trainer.logger.init_args.version=null"]
    if str(config["trainer"].get("devices")) == "auto":
        trial_args.append("--trainer.devices=1")  # auto would take every GPU, and launch DDP

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=opts.pruner_startup, n_warmup_steps=opts.pruner_warmup)
        if opts.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = open_study(storage, study_name, space, base, pruner)
    recover(study)
    # Seeded by the study's length too: a resumed search does not draw its first values again.
    seed = config.get("seed_everything") if opts.seed is None else opts.seed
    study.sampler = make_sampler(opts.sampler, (seed or 0) + len(study.trials))
    points = grid_points(space) if opts.sampler == "grid" else []

    print(f"study {study_name} ({shown(folder)}): {counted(study)} of {opts.trials} trials done", flush=True)
    try:
        while counted(study) < opts.trials:
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if opts.sampler == "grid" and not waiting:
                point = next_grid_point(study, points)
                if point is None:
                    print(f"the grid's {len(points)} combinations have all run")
                    break
                study.enqueue_trial(point)
            trial = study.ask()
            start = time.monotonic()
            run_trial(study, trial, space, trial_args)
            report(study.trials[trial.number], time.monotonic() - start)
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


def report(t: FrozenTrial, seconds: float) -> None:
    score, note = score_of(t), note_of(t)
    shown_score = f"{SCORE}={score:.4f}" if score is not None and math.isfinite(score) else f"no {SCORE}"
    print(
        f"trial {t.number} {t.state.name}, {shown_score}, {seconds:.1f} s{'; ' + note if note else ''}: "
        f"{t.user_attrs.get('run_dir', '')}",
        flush=True,
    )


def main(args: list[str] | None = None) -> optuna.Study | None:
    """Run a search (``args`` instead of ``sys.argv`` for tests); user mistakes exit 2 with one line."""
    try:
        return search(sys.argv[1:] if args is None else list(args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
